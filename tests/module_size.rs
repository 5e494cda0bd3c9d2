//! The module Envoy loads into every worker VM (and Istio pulls per sidecar)
//! stays small: `make wasm` builds it optimized for size, and this fails as
//! soon as it grows past the limit the project commits to (docs/bench.md,
//! "Module size"). Raising the limit is a decision, not a side effect.
//!
//! Nor may one function grow huge: Envoy compiles every function of the module
//! with V8's optimizing compiler when it loads it (no baseline tier), and the
//! memory that takes, kept by Envoy's allocator afterwards, grows with the
//! functions' size (docs/bench.md, "Memory per VM").
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

/// The footprint goal. The module is 448 603 bytes; it was 460 593 before
/// the configuration's mode enums shared one reader and structs stopped being
/// readable from JSON arrays, and 449 995 before its panic locations named
/// dependencies' files without the build machine's directories
/// (docs/bench.md, "Module size").
const MODULE_LIMIT_BYTES: u64 = 450_000;

#[test]
fn the_built_module_stays_within_its_size_limit() {
    let path = support::wasm_path();
    let size = std::fs::metadata(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (build it with `make wasm`)", path.display()))
        .len();
    assert!(
        size <= MODULE_LIMIT_BYTES,
        "{} is {size} bytes, over the {MODULE_LIMIT_BYTES}-byte limit: see docs/bench.md, \"Module size\"",
        path.display()
    );
}

/// The largest function body the module may hold. `wasm-opt -Oz` alone
/// inlines every function with one caller into it, which made functions of
/// 30–50 KB and cost about 12 MiB of Envoy RSS; `make wasm` limits that
/// inlining to small functions (`WASM_OPT_FLAGS`). A function past this limit
/// is better split (`#[inline(never)]` on a part with one caller).
const FUNCTION_LIMIT_BYTES: u64 = 16 * 1024;

#[test]
fn no_function_of_the_module_is_huge() {
    let path = support::wasm_path();
    let module = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (build it with `make wasm`)", path.display()));
    let mut sizes = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(&module) {
        if let wasmparser::Payload::CodeSectionEntry(body) = payload.unwrap() {
            let range = body.range();
            sizes.push(range.end - range.start);
        }
    }
    assert!(
        sizes.len() > 100,
        "{} holds only {} functions",
        path.display(),
        sizes.len()
    );
    let (index, largest) = sizes
        .iter()
        .copied()
        .enumerate()
        .max_by_key(|&(_, size)| size)
        .unwrap();
    assert!(
        largest <= FUNCTION_LIMIT_BYTES,
        "{}: function {index} (code entry) is {largest} bytes, over the {FUNCTION_LIMIT_BYTES}-byte limit: see docs/bench.md, \"Memory per VM\"",
        path.display()
    );
}

/// Panic locations name a dependency's file by its crate (`base64-0.22.1/src/…`),
/// never by where the machine that built the module keeps cargo's sources
/// (`make wasm` remaps them: `WASM_RUSTFLAGS`).
#[test]
fn the_module_names_no_directory_of_the_build_machine() {
    let path = support::wasm_path();
    let module = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (build it with `make wasm`)", path.display()));
    let home = std::env::var("CARGO_HOME")
        .ok()
        .or_else(|| std::env::var("HOME").ok().map(|h| format!("{h}/.cargo")));
    for needle in ["/registry/src/".to_owned(), "index.crates.io-".to_owned()]
        .into_iter()
        .chain(home)
    {
        assert!(
            !module.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{} holds {needle:?}",
            path.display()
        );
    }
}
