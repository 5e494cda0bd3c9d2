//! The wire contract between the authflow filter (Wasm, inside Envoy) and the
//! auth service (native). One implementation, compiled for both sides, so the
//! two can never disagree about claim names, the fingerprint or the feed.

// Indexing and slicing panic when out of range: the filter uses `get`, iterators and patterns.
#![deny(clippy::indexing_slicing)]

pub mod authorization;
pub mod browser;
pub mod claims;
pub mod client_address;
pub mod cookie;
pub mod der;
pub mod dpop;
pub mod fingerprint;
pub mod header_spellings;
pub mod identity;
pub mod ip_text;
pub mod jose;
pub mod json;
pub mod jwk;
pub mod jws;
pub mod percent;
pub mod query;
pub mod return_to;
pub mod revocation;
pub mod text;

// The Wasm-tuned verifiers live in a crate of their own (see its documentation).
pub use authflow_verifiers::{ed25519_verify, p256_verify, rsa_verify};

pub use claims::{AccessClaims, Confirmation};
pub use fingerprint::{DeviceAttribute, FingerprintInput};
pub use jwk::{Algorithm, KeySet, PublicKey};
pub use revocation::RevocationFeed;
