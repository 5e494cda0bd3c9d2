//! Rewrites a Wasm module's export section without the named exports; every
//! other section is copied byte for byte.
//!
//! Why: the proxy-wasm SDK exports every callback the ABI has, and Envoy
//! enters the VM for each one the module exports, even when the SDK's
//! default does nothing. Dropping the ones authflow leaves unhandled
//! (`authflow::UNHANDLED_CALLBACKS`) saves those VM entries on every request.
//!
//! The custom sections for tools are dropped too: nothing at run time reads
//! them. `name` (function names, an eighth of the module): the untrimmed
//! build output keeps it, and function indices are unchanged, so a trap's
//! function index can still be looked up there; `producers` and
//! `target_features` (the compiler's name and version, the features it used:
//! `make wasm` gives `wasm-opt` those by flag).

use wasm_encoder::{ExportKind, ExportSection, Module, RawSection};
use wasmparser::{ExternalKind, Parser, Payload};

/// What [`trim`] did: the new module and the names it removed.
pub struct Trimmed {
    pub module: Vec<u8>,
    pub removed: Vec<String>,
}

/// `module` without the exports named in `remove`. Names that are not
/// exported are ignored, so the list may name callbacks an SDK version lacks.
pub fn trim(module: &[u8], remove: &[&str]) -> Result<Trimmed, String> {
    let mut out = Module::new();
    let mut removed = Vec::new();
    let mut saw_version = false;
    for payload in Parser::new(0).parse_all(module) {
        let payload = payload.map_err(|e| format!("not a valid Wasm module: {e}"))?;
        match &payload {
            Payload::Version { encoding, .. } => {
                if *encoding != wasmparser::Encoding::Module {
                    return Err("a Wasm component, not a module".into());
                }
                saw_version = true;
            }
            Payload::ExportSection(reader) => {
                let mut exports = ExportSection::new();
                for export in reader.clone() {
                    let export = export.map_err(|e| format!("bad export section: {e}"))?;
                    if remove.contains(&export.name) {
                        removed.push(export.name.to_string());
                    } else {
                        exports.export(export.name, kind(export.kind), export.index);
                    }
                }
                out.section(&exports);
            }
            Payload::CustomSection(reader) if TOOL_SECTIONS.contains(&reader.name()) => {}
            _ => {
                if let Some((id, range)) = payload.as_section() {
                    let data = slice(module, range).ok_or("section out of bounds")?;
                    out.section(&RawSection { id, data });
                }
            }
        }
    }
    if !saw_version {
        return Err("empty input".into());
    }
    Ok(Trimmed {
        module: out.finish(),
        removed,
    })
}

/// The custom sections for tools: debug names (function, local, … names),
/// the producing toolchain, the features it compiled with.
const TOOL_SECTIONS: [&str; 3] = ["name", "producers", "target_features"];

fn slice(module: &[u8], range: std::ops::Range<u64>) -> Option<&[u8]> {
    module.get(usize::try_from(range.start).ok()?..usize::try_from(range.end).ok()?)
}

fn kind(k: ExternalKind) -> ExportKind {
    match k {
        ExternalKind::Func | ExternalKind::FuncExact => ExportKind::Func,
        ExternalKind::Table => ExportKind::Table,
        ExternalKind::Memory => ExportKind::Memory,
        ExternalKind::Global => ExportKind::Global,
        ExternalKind::Tag => ExportKind::Tag,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use wasm_encoder::{
        CodeSection, CustomSection, Function, FunctionSection, Instruction, MemorySection,
        MemoryType, TypeSection,
    };

    /// The names a module exports, in order.
    fn exports(module: &[u8]) -> Result<Vec<String>, String> {
        let mut names = Vec::new();
        for payload in Parser::new(0).parse_all(module) {
            if let Payload::ExportSection(reader) = payload.map_err(|e| e.to_string())? {
                for export in reader {
                    names.push(export.map_err(|e| e.to_string())?.name.to_string());
                }
            }
        }
        Ok(names)
    }

    /// A module with three exported functions, a memory and a custom section.
    fn sample() -> Vec<u8> {
        let mut m = Module::new();
        let mut types = TypeSection::new();
        types.ty().function([], [wasm_encoder::ValType::I32]);
        m.section(&types);
        let mut funcs = FunctionSection::new();
        for _ in 0..3 {
            funcs.function(0);
        }
        m.section(&funcs);
        let mut mem = MemorySection::new();
        mem.memory(MemoryType {
            minimum: 1,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        m.section(&mem);
        let mut exports = ExportSection::new();
        exports.export("memory", ExportKind::Memory, 0);
        exports.export("proxy_on_request_headers", ExportKind::Func, 0);
        exports.export("proxy_on_log", ExportKind::Func, 1);
        exports.export("proxy_on_response_headers", ExportKind::Func, 2);
        m.section(&exports);
        let mut code = CodeSection::new();
        for n in 0..3 {
            let mut f = Function::new([]);
            f.instruction(&Instruction::I32Const(n));
            f.instruction(&Instruction::End);
            code.function(&f);
        }
        m.section(&code);
        m.section(&CustomSection {
            name: "producers".into(),
            data: b"rustc".as_slice().into(),
        });
        m.section(&CustomSection {
            name: "kept".into(),
            data: b"as is".as_slice().into(),
        });
        m.section(&CustomSection {
            name: "name".into(),
            data: b"\x01\x04\x01\x00\x01f".as_slice().into(),
        });
        m.finish()
    }

    #[test]
    fn removes_only_the_named_exports_and_keeps_everything_else() {
        let before = sample();
        let t = trim(
            &before,
            &[
                "proxy_on_log",
                "proxy_on_response_headers",
                "proxy_on_not_there",
            ],
        )
        .unwrap();
        assert_eq!(t.removed, ["proxy_on_log", "proxy_on_response_headers"]);
        assert_eq!(
            exports(&t.module).unwrap(),
            ["memory", "proxy_on_request_headers"]
        );
        wasmparser::validate(&t.module).unwrap();
        // Every other section but the names is byte-identical, in the same order.
        let sections = |m: &[u8]| -> Vec<(u8, Vec<u8>)> {
            Parser::new(0)
                .parse_all(m)
                .filter_map(|p| {
                    p.unwrap()
                        .as_section()
                        .map(|(id, r)| (id, slice(m, r).unwrap().to_vec()))
                })
                .filter(|(id, _)| *id != wasm_encoder::SectionId::Export as u8)
                .collect()
        };
        let without_names: Vec<_> = sections(&before)
            .into_iter()
            .filter(|(_, data)| {
                !data.starts_with(b"\x04name") && !data.starts_with(b"\x09producers")
            })
            .collect();
        assert_eq!(without_names, sections(&t.module));
    }

    #[test]
    fn the_sections_for_tools_are_dropped_and_nothing_else() {
        let before = sample();
        let custom = |m: &[u8]| -> Vec<String> {
            Parser::new(0)
                .parse_all(m)
                .filter_map(|p| match p.unwrap() {
                    Payload::CustomSection(c) => Some(c.name().to_string()),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(custom(&before), ["producers", "kept", "name"]);
        let after = trim(&before, &[]).unwrap().module;
        assert_eq!(custom(&after), ["kept"]);
        assert_eq!(exports(&after).unwrap(), exports(&before).unwrap());
        wasmparser::validate(&after).unwrap();
    }

    #[test]
    fn refuses_what_is_not_a_module() {
        assert!(trim(b"", &[]).is_err());
        assert!(trim(b"\0asm\x0d\0\x01\0", &[]).is_err(), "a component");
        assert!(trim(b"not wasm at all", &[]).is_err());
        let mut cut = sample();
        cut.truncate(cut.len() - 5);
        assert!(trim(&cut, &[]).is_err(), "truncated");
    }
}
