//! authflow's proxy-wasm filter: thin glue between Envoy and
//! `authflow_filter_core`. `root` owns configuration, timers and the key /
//! revocation fetches; `http` owns one request; `shared` moves state between
//! the worker VMs; `metrics` names every counter.

mod fetch;
mod host;
mod http;
mod metrics;
mod root;
mod shared;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    // panic = "abort" takes the VM down; at least say why, at the highest level.
    std::panic::set_hook(Box::new(|info| {
        log::error!("authflow: panic (this is a bug): {info}");
    }));
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> { Box::new(root::AuthflowRoot::new()) });
}}
