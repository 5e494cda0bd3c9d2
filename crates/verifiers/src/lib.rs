//! Signature verifiers tuned for Wasm, for the two algorithms whose generic
//! Rust implementations are slowest there: ES256 ([`p256_verify`]) and RS256
//! ([`rsa_verify`]). Used through `authflow_contract::jws`, which re-exports
//! both modules; EdDSA is ed25519-dalek's.
//!
//! Apart from the contract so that the module's build (`[profile.wasm]` in
//! the workspace's Cargo.toml) can compile these loops for speed and the
//! contract's parsing code for size: Rust sets the optimization level per crate.

// Indexing and slicing panic when out of range: the filter uses `get`, iterators and patterns.
#![deny(clippy::indexing_slicing)]

pub mod ed25519_verify;
pub mod p256_verify;
pub mod rsa_verify;
