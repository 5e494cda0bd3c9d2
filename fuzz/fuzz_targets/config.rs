//! Arbitrary bytes (JSON, mostly, from the corpus) into the filter
//! configuration parser. A configuration that parses must also be usable:
//! an engine is built from it and decides a few requests without panicking.
#![no_main]

use authflow_filter_core::engine::Engine;
use authflow_filter_core::request::HeaderReads;
use authflow_filter_core::{FilterConfig, Request};
use libfuzzer_sys::fuzz_target;

fn requests() -> Vec<Request> {
    let base = [(":method", "GET"), (":authority", "api.test:8080")];
    let with = |extra: &[(&str, &str)]| {
        let pairs = base.iter().chain(extra).map(|(n, v)| (n.to_string(), v.to_string())).collect();
        Request::from_headers(pairs, Some("203.0.113.9:4000".into()))
    };
    vec![
        with(&[(":path", "/")]),
        with(&[(":path", "/admin/x?y=1"), ("authorization", "Bearer a.b.c")]),
        with(&[(":path", "/public"), ("cookie", "access_token=x.y.z; at=1"), ("x-token", "e30.e30.")]),
    ]
}

fuzz_target!(|data: &[u8]| {
    let Ok(config) = FilterConfig::from_json(data) else { return };
    // What the glue asks of a parsed configuration.
    let _ = HeaderReads::for_config(&config);
    for p in &config.providers {
        assert_eq!(config.provider_for_issuer(&p.issuer).and_then(|id| config.provider(id)).map(|p| &p.issuer), Some(&p.issuer));
    }
    let mut engine = Engine::new(config, 1_900_000_000_000);
    for r in requests() {
        let _ = engine.evaluate(&r, 1_900_000_000_000, true);
        let _ = engine.evaluate(&r, 1_900_000_000_000, false);
    }
});
