//! authflow's filter logic, free of proxy-wasm so it runs (and is tested) on
//! the host. The cdylib at the workspace root is thin glue around [`engine::Engine`].
// Indexing and slicing panic when out of range: the filter uses `get`, iterators and patterns.
#![deny(clippy::indexing_slicing)]

pub mod browser;
pub mod cache;
pub mod config;
pub mod deny;
pub mod device;
pub mod dpop;
pub mod engine;
pub mod extract;
pub mod fetch;
pub mod forward;
pub use authflow_contract::header_spellings;
pub mod json_text;
pub mod lease;
pub mod nonce;
pub mod path;
pub mod paused;
pub mod policy;
pub mod proof_keys;
pub mod provider_id;
pub mod replay;
pub mod request;
pub mod revocation;
pub mod revocation_sync;
pub mod schedule;
pub mod shared_slot;
pub mod signature;
pub mod streams;
pub mod timing;
mod unit_enum;
pub mod verify;

pub use config::FilterConfig;
pub use engine::{Engine, Outcome};
pub use provider_id::{PerProvider, ProviderId};
pub use request::Request;
