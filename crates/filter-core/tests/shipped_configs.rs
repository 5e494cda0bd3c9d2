//! Every filter configuration the repository ships is accepted by the filter's own parser —
//! the same `FilterConfig::from_json` that `on_configure` runs — so a deployment file cannot
//! carry a configuration the filter would refuse at load (and fail closed on) in production.
//!
//! Covered: the wasm filter in every Envoy config under `envoy/` (local run, compose) and the
//! `pluginConfig` of every Istio `WasmPlugin` under `deploy/`. Istio hands `pluginConfig` to
//! the filter as the JSON of a `google.protobuf.Struct`, which is what is re-serialised here.
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use authflow_contract::browser::{ACCESS_COOKIE, REFRESH_PATH};
use authflow_contract::client_address::ADDRESS_HEADERS;
use authflow_filter_core::browser;
use authflow_filter_core::config::{FilterConfig, JwksSource, Policy};
use authflow_filter_core::deny::DenyReason;
use authflow_filter_core::policy::policy_for;
use authflow_filter_core::Request;
use serde::Deserialize;
use serde_json::{json, Value};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(yaml_files(&path));
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// Every `http_filters` entry named `envoy.filters.http.wasm`, with the filter list it sits in.
fn wasm_filters(v: &Value, found: &mut Vec<(Value, Vec<Value>)>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(filters)) = map.get("http_filters") {
                for f in filters {
                    if f["name"] == "envoy.filters.http.wasm" {
                        found.push((f.clone(), filters.clone()));
                    }
                }
            }
            map.values().for_each(|x| wasm_filters(x, found));
        }
        Value::Array(items) => items.iter().for_each(|x| wasm_filters(x, found)),
        _ => {}
    }
}

fn upstream_clusters(cfg: &FilterConfig) -> Vec<String> {
    cfg.providers
        .iter()
        .flat_map(|p| {
            let jwks = match &p.jwks {
                JwksSource::Remote(u) => Some(u.cluster.clone()),
                JwksSource::Inline(_) => None,
            };
            jwks.into_iter()
                .chain(p.revocations.as_ref().map(|u| u.cluster.clone()))
        })
        .collect()
}

/// A backend behind a shipped configuration may trust `x-auth-client-id`
/// (the calling service account): the filter must own it, or a client's
/// copy would reach the backend.
fn owns_the_client_id_header(name: &str, config: &FilterConfig) {
    assert_eq!(
        config.identity.client_id.as_deref(),
        Some("x-auth-client-id"),
        "{name}: identity_headers.client_id"
    );
}

/// Browser sign-in works out of the box (issue #16): the access cookie the
/// auth service's pages set is a token source, the demo pages under `/app`
/// send a browser without a valid token to the refresh page, and the pages
/// under `/auth/` are public (the refresh page itself must never redirect).
fn sends_browsers_to_sign_in(name: &str, config: &FilterConfig) {
    assert!(
        config
            .token_sources
            .cookies
            .iter()
            .any(|c| c == ACCESS_COOKIE),
        "{name}: token_sources.cookies lacks {ACCESS_COOKIE}"
    );
    assert_eq!(
        config.browser.as_ref().map(|b| b.refresh_path.as_str()),
        Some(REFRESH_PATH),
        "{name}: browser.refresh_path"
    );
    let get = |path: &str, accept: &str| {
        let headers = [
            (":method", "GET"),
            (":path", path),
            (":authority", "app.example"),
            ("accept", accept),
        ];
        Request::from_headers(
            headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            None,
        )
    };
    for page in [
        "/auth/refresh?return_to=/app/hello",
        "/auth/signin",
        "/auth/signin/code",
    ] {
        assert_eq!(
            policy_for(config, &get(page, "text/html")).map(|r| r.policy),
            Ok(&Policy::Public),
            "{name}: {page}"
        );
    }
    let refused = DenyReason::MissingToken.response(5, None);
    let page = browser::redirect(
        config,
        &get("/app/hello?x=1", "text/html"),
        DenyReason::MissingToken,
        &refused,
    );
    let location = page
        .as_ref()
        .and_then(|r| r.headers.iter().find(|(n, _)| n == "location"))
        .map(|(_, v)| v.as_str());
    assert_eq!(
        location,
        Some("/auth/refresh?return_to=/app/hello%3Fx%3D1"),
        "{name}: a browser on /app/hello"
    );
    let api = browser::redirect(
        config,
        &get("/app/hello", "application/json"),
        DenyReason::MissingToken,
        &refused,
    );
    assert_eq!(api, None, "{name}: an API call keeps its 401");
}

#[test]
fn the_standalone_filter_configuration_is_valid_and_owns_the_client_id_header() {
    let path = repo_root().join("envoy/authflow-filter.json");
    let parsed = FilterConfig::from_json(&std::fs::read(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    owns_the_client_id_header(&path.display().to_string(), &parsed);
    sends_browsers_to_sign_in(&path.display().to_string(), &parsed);
}

#[test]
fn every_envoy_config_carries_a_valid_filter_configuration() {
    let files = yaml_files(&repo_root().join("envoy"));
    let mut checked = 0;
    for path in &files {
        let name = path.display();
        for doc in documents(path) {
            let mut found = Vec::new();
            wasm_filters(&doc, &mut found);
            assert_eq!(
                found.len(),
                1,
                "{name}: expected one authflow wasm filter, found {}",
                found.len()
            );
            let (filter, chain) = &found[0];
            let config = &filter["typed_config"]["config"];
            assert_eq!(config["root_id"], "authflow", "{name}: root_id");
            assert_eq!(config["vm_config"]["vm_id"], "authflow", "{name}: vm_id");
            assert_eq!(
                config["vm_config"]["runtime"], "envoy.wasm.runtime.v8",
                "{name}: runtime"
            );
            assert_eq!(
                config["fail_open"], false,
                "{name}: the filter must fail closed"
            );
            assert_eq!(
                chain.last().map(|f| &f["name"]),
                Some(&Value::from("envoy.filters.http.router")),
                "{name}: router last"
            );
            let configuration = &config["configuration"];
            assert_eq!(
                configuration["@type"], "type.googleapis.com/google.protobuf.StringValue",
                "{name}: configuration type"
            );
            let json = configuration["value"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: configuration.value is not a string"));

            let parsed =
                FilterConfig::from_json(json.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
            owns_the_client_id_header(&name.to_string(), &parsed);
            sends_browsers_to_sign_in(&name.to_string(), &parsed);

            // The pages the filter sends browsers to are served by the auth service.
            let mut managers = Vec::new();
            connection_managers(&doc, &mut managers);
            let routes: Vec<&Value> = managers
                .iter()
                .flat_map(|hcm| {
                    hcm["route_config"]["virtual_hosts"]
                        .as_array()
                        .into_iter()
                        .flatten()
                })
                .flat_map(|v| v["routes"].as_array().into_iter().flatten())
                .collect();
            let pages = routes
                .iter()
                .find(|r| r["match"]["prefix"] == "/auth/")
                .unwrap_or_else(|| panic!("{name}: no route for /auth/"));
            assert!(
                upstream_clusters(&parsed)
                    .iter()
                    .any(|c| pages["route"]["cluster"] == c.as_str()),
                "{name}: /auth/ goes to {}",
                pages["route"]
            );

            // The callouts name clusters this Envoy config defines.
            let clusters: Vec<&str> = doc["static_resources"]["clusters"]
                .as_array()
                .map(|cs| cs.iter().filter_map(|c| c["name"].as_str()).collect())
                .unwrap_or_default();
            for cluster in upstream_clusters(&parsed) {
                assert!(
                    clusters.contains(&cluster.as_str()),
                    "{name}: the filter calls cluster `{cluster}`, which is not defined"
                );
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 2,
        "expected the local and compose Envoy configs under envoy/, checked {checked}"
    );
}

/// The edge listener is bounded against slow and flooding clients (Envoy's
/// edge best practices): header and idle timeouts, HTTP/2 streams and
/// windows, buffers per connection, and a cap on client connections.
#[test]
fn every_edge_listener_is_bounded() {
    let mut checked = 0;
    for path in yaml_files(&repo_root().join("envoy")) {
        let name = path.display();
        for doc in documents(&path) {
            let Some(listeners) = doc["static_resources"]["listeners"].as_array() else {
                continue;
            };
            let monitors = doc["overload_manager"]["resource_monitors"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert!(
                monitors
                    .iter()
                    .any(|m| m["name"]
                        == "envoy.resource_monitors.global_downstream_max_connections"),
                "{name}: no cap on client connections"
            );
            for listener in listeners {
                let limit = listener["per_connection_buffer_limit_bytes"].as_u64();
                assert!(
                    limit.is_some_and(|b| b <= 65_536),
                    "{name}: per_connection_buffer_limit_bytes {limit:?}"
                );
                let mut found = Vec::new();
                connection_managers(listener, &mut found);
                for hcm in found {
                    assert!(
                        hcm["request_headers_timeout"].is_string(),
                        "{name}: request_headers_timeout"
                    );
                    assert!(
                        hcm["stream_idle_timeout"].is_string(),
                        "{name}: stream_idle_timeout"
                    );
                    let streams = hcm["http2_protocol_options"]["max_concurrent_streams"].as_u64();
                    assert!(
                        streams.is_some_and(|n| n <= 1_000),
                        "{name}: http2 max_concurrent_streams {streams:?}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(
        checked >= 2,
        "expected the local and compose Envoy configs under envoy/, checked {checked}"
    );
}

#[test]
fn every_wasmplugin_plugin_config_is_a_valid_filter_configuration() {
    let mut checked = 0;
    for path in yaml_files(&repo_root().join("deploy")) {
        let name = path.display();
        for doc in documents(&path) {
            if doc["kind"] != "WasmPlugin" {
                continue;
            }
            let plugin_config = &doc["spec"]["pluginConfig"];
            assert!(
                plugin_config.is_object(),
                "{name}: WasmPlugin without pluginConfig"
            );
            let json = serde_json::to_vec(plugin_config).unwrap();
            let parsed = FilterConfig::from_json(&json).unwrap_or_else(|e| panic!("{name}: {e}"));
            owns_the_client_id_header(&name.to_string(), &parsed);
            sends_browsers_to_sign_in(&name.to_string(), &parsed);
            for cluster in upstream_clusters(&parsed) {
                // Istio names a Service's outbound cluster `outbound|PORT||FQDN`.
                let parts: Vec<&str> = cluster.split('|').collect();
                assert!(
                    parts.len() == 4
                        && parts[0] == "outbound"
                        && parts[1].parse::<u16>().is_ok()
                        && parts[2].is_empty()
                        && parts[3].ends_with(".svc.cluster.local"),
                    "{name}: callout cluster `{cluster}` is not an Istio outbound cluster name"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 1, "expected a WasmPlugin under deploy/");
}

#[test]
fn a_broken_configuration_is_refused_by_the_same_path() {
    // Guards the test itself: the extraction above reaches the parser, which refuses unknown keys.
    let path = repo_root().join("envoy/local.yaml");
    let mut found = Vec::new();
    for doc in documents(&path) {
        wasm_filters(&doc, &mut found);
    }
    let json = found[0].0["typed_config"]["config"]["configuration"]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut v: Value = serde_json::from_str(&json).unwrap();
    v["revocation"]["on_stal"] = Value::from("deny");
    let e = FilterConfig::from_json(v.to_string().as_bytes()).unwrap_err();
    assert!(e.0.contains("on_stal"), "{e}");
}

/// Every HTTP connection manager in a document, wherever it sits.
fn connection_managers(v: &Value, found: &mut Vec<Value>) {
    match v {
        Value::Object(map) => {
            if map
                .get("@type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with(".HttpConnectionManager"))
            {
                found.push(v.clone());
            }
            map.values().for_each(|x| connection_managers(x, found));
        }
        Value::Array(items) => items.iter().for_each(|x| connection_managers(x, found)),
        _ => {}
    }
}

/// The filter decides on the path the upstream acts on and owns every spelling
/// of its identity headers; the proxy in front does its part (docs/deploy.md).
#[test]
fn every_connection_manager_normalizes_paths_and_refuses_underscore_headers() {
    let mut checked = 0;
    for path in yaml_files(&repo_root().join("envoy")) {
        let name = path.display();
        for doc in documents(&path) {
            let mut found = Vec::new();
            connection_managers(&doc, &mut found);
            for hcm in found {
                assert_eq!(hcm["normalize_path"], true, "{name}: normalize_path");
                assert_eq!(hcm["merge_slashes"], true, "{name}: merge_slashes");
                assert_eq!(
                    hcm["path_with_escaped_slashes_action"], "REJECT_REQUEST",
                    "{name}: path_with_escaped_slashes_action"
                );
                assert_eq!(
                    hcm["common_http_protocol_options"]["headers_with_underscores_action"],
                    "REJECT_REQUEST",
                    "{name}: common_http_protocol_options.headers_with_underscores_action"
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 2,
        "expected the local and compose Envoy configs under envoy/, checked {checked}"
    );
}

/// A backend learns the client's address from the x-forwarded-for Envoy writes,
/// never from a `forwarded` or `x-real-ip` the client wrote (docs/deploy.md).
#[test]
fn every_public_connection_manager_drops_client_written_addresses() {
    let mut checked = 0;
    for path in yaml_files(&repo_root().join("envoy")) {
        let name = path.display();
        for doc in documents(&path) {
            for hcm in public_connection_managers(&doc) {
                let removed = hcm["route_config"]["request_headers_to_remove"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                for header in std::iter::once("forwarded").chain(ADDRESS_HEADERS) {
                    assert!(
                        removed.iter().any(|h| h == header),
                        "{name}: route_config.request_headers_to_remove lacks {header}"
                    );
                }
                assert_eq!(
                    hcm["use_remote_address"], true,
                    "{name}: use_remote_address"
                );
                let early =
                    &hcm["early_header_mutation_extensions"][0]["typed_config"]["mutations"];
                assert_eq!(
                    early[0]["remove"], "x-forwarded-for",
                    "{name}: the client's x-forwarded-for is not dropped before Envoy appends the peer"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 2, "checked {checked} connection managers");
}

const RATE_LIMIT_FILTER: &str = "envoy.filters.http.local_ratelimit";
/// The local_ratelimit before the authflow filter (`before_auth` in envoy/rate-limits.json).
const BEFORE_AUTH_FILTER: &str = "authflow.rate_limit.before_auth";

/// The listener in front of Envoy's loopback admin (deploy/generate.py): no application traffic.
const ADMIN_READONLY: &str = "admin_readonly";

/// The connection managers of the listeners that carry requests to the application.
fn public_connection_managers(doc: &Value) -> Vec<Value> {
    let mut found = Vec::new();
    let listeners = doc["static_resources"]["listeners"]
        .as_array()
        .into_iter()
        .flatten();
    listeners
        .filter(|l| l["name"] != ADMIN_READONLY)
        .for_each(|l| connection_managers(l, &mut found));
    found
}

/// Envoy's admin never listens beyond loopback (the local stack's: not even there, but on a
/// unix socket other accounts of the host cannot open); where it must be reached, the
/// read-only listener in front passes GETs to it and nothing else (check_envoy.py sends it
/// the requests that would stop or dump Envoy).
#[test]
fn envoy_admin_listens_on_loopback_and_is_published_read_only() {
    let mut fronted = 0;
    for path in yaml_files(&repo_root().join("envoy")) {
        let name = path.display();
        for doc in documents(&path) {
            if doc.get("admin").is_none() {
                continue;
            }
            // On loopback, or on a unix socket only its owner may open (mode 0600).
            let address = &doc["admin"]["address"];
            if address.get("pipe").is_some() {
                assert_eq!(address["pipe"]["mode"], 0o600, "{name}: admin socket mode");
            } else {
                assert_eq!(
                    address["socket_address"]["address"], "127.0.0.1",
                    "{name}: admin address"
                );
            }
            let listeners = doc["static_resources"]["listeners"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let Some(front) = listeners.iter().find(|l| l["name"] == ADMIN_READONLY) else {
                continue;
            };
            let mut hcms = Vec::new();
            connection_managers(front, &mut hcms);
            assert_eq!(
                hcms.len(),
                1,
                "{name}: one connection manager on the read-only admin listener"
            );
            let filters: Vec<&str> = hcms[0]["http_filters"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|f| f["name"].as_str())
                .collect();
            assert_eq!(
                filters,
                ["envoy.filters.http.router"],
                "{name}: read-only admin filters"
            );
            let routes: Vec<&Value> = hcms[0]["route_config"]["virtual_hosts"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|v| v["routes"].as_array().unwrap())
                .collect();
            let (last, to_admin) = routes.split_last().unwrap();
            assert_eq!(
                last["direct_response"]["status"], 403,
                "{name}: the read-only admin's last route refuses"
            );
            for route in to_admin {
                assert_eq!(route["route"]["cluster"], "envoy_admin", "{name}: {route}");
                let on_get = route["match"]["headers"].as_array().is_some_and(|h| {
                    h.iter()
                        .any(|m| m["name"] == ":method" && m["string_match"]["exact"] == "GET")
                });
                assert!(
                    on_get,
                    "{name}: a read-only admin route matches GET only: {route}"
                );
                assert!(
                    route["match"]["path_separated_prefix"].is_string(),
                    "{name}: whole path segments only: {route}"
                );
            }
            fronted += 1;
        }
    }
    assert!(
        fronted >= 2,
        "expected the compose configs to publish their admin read-only, found {fronted}"
    );
}

/// Every local_ratelimit configuration of a connection manager: the filter's own and each route's.
fn rate_limit_configs(hcm: &Value) -> Vec<Value> {
    let on_filter = hcm["http_filters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["name"] == RATE_LIMIT_FILTER)
        .map(|f| f["typed_config"].clone());
    let routes = hcm["route_config"]["virtual_hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|v| v["routes"].as_array().into_iter().flatten());
    let on_routes =
        routes.filter_map(|r| r["typed_per_filter_config"].get(RATE_LIMIT_FILTER).cloned());
    on_filter.chain(on_routes).collect()
}

/// Request budgets (envoy/rate-limits.json) are Envoy's local_ratelimit AFTER the authflow
/// filter: they key on the subject header that filter sets on a verified request and removes
/// from every other one, which holds only once it has run — placed before it, a client would
/// choose its own bucket by sending the header. Anonymous requests are keyed on the address.
/// A budget per address alone also runs before the filter, for the requests it refuses.
#[test]
fn every_envoy_config_limits_requests_after_the_filter_by_its_identity_header() {
    let mut checked = 0;
    for path in yaml_files(&repo_root().join("envoy")) {
        let name = path.display();
        for doc in documents(&path) {
            for hcm in public_connection_managers(&doc) {
                let names: Vec<&str> = hcm["http_filters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|f| f["name"].as_str())
                    .collect();
                let at = |n: &str| {
                    names
                        .iter()
                        .position(|x| *x == n)
                        .unwrap_or_else(|| panic!("{name}: no {n} in {names:?}"))
                };
                assert!(
                    at("envoy.filters.http.wasm") < at(RATE_LIMIT_FILTER),
                    "{name}: local_ratelimit must come after the authflow filter: {names:?}"
                );
                assert!(
                    at(RATE_LIMIT_FILTER) < at("envoy.filters.http.router"),
                    "{name}: local_ratelimit must come before the router: {names:?}"
                );
                // And one budget per client address before the filter, for the requests it
                // refuses: keyed on the address alone (no header is trustworthy before it).
                assert!(
                    at(BEFORE_AUTH_FILTER) < at("envoy.filters.http.wasm"),
                    "{name}: the per-address budget must come before the authflow filter: {names:?}"
                );
                let before = &hcm["http_filters"][at(BEFORE_AUTH_FILTER)]["typed_config"];
                assert_eq!(
                    before["rate_limits"],
                    json!([{"actions": [{"masked_remote_address": {"v4_prefix_mask_len": 32, "v6_prefix_mask_len": 64}}]}]),
                    "{name}: the budget before the filter keys on the client's address alone"
                );

                let mut wasm = Vec::new();
                wasm_filters(&hcm, &mut wasm);
                let json = wasm[0].0["typed_config"]["config"]["configuration"]["value"]
                    .as_str()
                    .unwrap();
                let identity = FilterConfig::from_json(json.as_bytes()).unwrap().identity;
                let subject = identity
                    .subject
                    .unwrap_or_else(|| panic!("{name}: no identity_headers.subject"));
                // A subject is unique per issuer only: the bucket is (subject, issuer).
                let issuer = identity
                    .issuer
                    .unwrap_or_else(|| "x-auth-issuer".to_owned());
                let configs = rate_limit_configs(&hcm);
                assert!(
                    configs.len() >= 2,
                    "{name}: expected budgets on the filter and on routes"
                );
                for c in configs {
                    let prefix = &c["stat_prefix"];
                    let actions: Vec<&Value> = c["rate_limits"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .flat_map(|r| r["actions"].as_array().unwrap())
                        .collect();
                    let keyed_on: Vec<&str> = actions
                        .iter()
                        .filter_map(|a| a["request_headers"]["header_name"].as_str())
                        .collect();
                    assert_eq!(
                        keyed_on,
                        [subject.as_str(), issuer.as_str()],
                        "{name} {prefix}: per-user buckets must key on the filter's subject and issuer headers"
                    );
                    // By its network for IPv6: one client holds a whole /64.
                    assert!(
                        actions.iter().any(|a| a["masked_remote_address"]["v6_prefix_mask_len"]
                            .as_u64()
                            .is_some_and(|len| len <= 64)),
                        "{name} {prefix}: anonymous requests keyed on the address (IPv6 by its /64)"
                    );
                    assert_eq!(
                        c["descriptors"].as_array().map(Vec::len),
                        Some(3),
                        "{name} {prefix}: per-user buckets (one issuer, several) and a per-address bucket"
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 2,
        "expected the local and compose Envoy configs under envoy/, checked {checked}"
    );
}
