//! authflow's proxy-wasm filter: thin glue between Envoy and
//! `authflow_filter_core`.
//!
//! - `root`: the root context; configuration, ticks, callout answers.
//! - `http`: one request's context.
//! - `vm`: what a VM's contexts share; pausing and settling requests that wait for keys;
//!   watching open streams and resetting those whose token was revoked or expired.
//! - `provider`: one provider's key and revocation fetches.
//! - `outcome`: carrying a decision out on a request.
//! - `nonce_key`: where the DPoP nonce key comes from.
//! - `shared`: state shared between worker VMs; `metrics`: every statistic;
//!   `host`: every host call, through the raw ABI.
//!
//! `root` and `http` do not know each other: both work through `vm`.

// Indexing and slicing panic when out of range: the filter uses `get`, iterators and patterns.
#![deny(clippy::indexing_slicing)]

mod host;
mod http;
mod metrics;
mod nonce_key;
mod outcome;
mod provider;
mod root;
mod shared;
mod vm;

/// The proxy-wasm callbacks the SDK exports that this filter leaves at the
/// SDK's do-nothing defaults. `make wasm` removes them from the module's
/// exports (`crates/wasm-trim`): Envoy does not enter the VM for a callback
/// the module does not export, and a plain GET otherwise pays for
/// `proxy_on_response_headers`, `_response_body`, `_log` and `_done`, one VM
/// entry each, on every request. The untrimmed module (plain `cargo build`)
/// behaves the same, only slower.
///
/// `proxy_on_response_headers` is handled (a fresh DPoP nonce on success,
/// RFC 9449 §8.2, so a client with nonces is not refused every 120 s): two
/// interleaved runs against a module without it put its cost at about 1 %
/// and at 3–7 % of D's per request (docs/bench.md, "DPoP" and "Targets").
///
/// A context that starts handling one of these must take it off this list.
/// `proxy_on_request_body`/`_trailers` stay exported on purpose: a request
/// paused for keys must keep its body waiting with it.
pub const UNHANDLED_CALLBACKS: &[&str] = &[
    "proxy_on_done",
    "proxy_on_log",
    "proxy_on_response_body",
    "proxy_on_response_trailers",
    "proxy_on_queue_ready",
    "proxy_on_foreign_function",
    "proxy_on_new_connection",
    "proxy_on_downstream_data",
    "proxy_on_downstream_connection_close",
    "proxy_on_upstream_data",
    "proxy_on_upstream_connection_close",
    "proxy_on_grpc_receive_initial_metadata",
    "proxy_on_grpc_receive",
    "proxy_on_grpc_receive_trailing_metadata",
    "proxy_on_grpc_close",
];

proxy_wasm::main! {{
    // Our own logger, not the SDK's: its writer and panic hook unwrap host statuses.
    host::install_logger(log::LevelFilter::Info);
    // panic = "abort" takes the VM down; at least say why, at the highest level.
    std::panic::set_hook(Box::new(|info| {
        log::error!("authflow: panic (this is a bug): {info}");
    }));
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> { Box::new(root::AuthflowRoot::new()) });
}}
