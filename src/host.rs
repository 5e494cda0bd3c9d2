//! The few host calls the filter needs, wrapped so that a host error is a
//! logged value, never a panic (the SDK's trait helpers unwrap).

use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{MapType, Status};

pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub fn request_headers() -> Vec<(String, String)> {
    hostcalls::get_map(MapType::HttpRequestHeaders).unwrap_or_default()
}

pub fn remove_request_header(name: &str) {
    if let Err(s) = hostcalls::remove_map_value(MapType::HttpRequestHeaders, name) {
        log::warn!("authflow: could not remove header {name}: {s:?}");
    }
}

pub fn add_request_header(name: &str, value: &str) {
    if let Err(s) = hostcalls::add_map_value(MapType::HttpRequestHeaders, name, value) {
        log::warn!("authflow: could not add header {name}: {s:?}");
    }
}

pub fn property_string(path: Vec<&str>) -> Option<String> {
    hostcalls::get_property(path).ok().flatten().and_then(|b| String::from_utf8(b).ok())
}

pub fn send_response(status: u32, headers: &[(String, String)], body: &str) {
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    if let Err(s) = hostcalls::send_http_response(status, headers, Some(body.as_bytes())) {
        log::warn!("authflow: could not send local reply: {s:?}");
    }
}

pub fn resume_request() {
    if let Err(s) = hostcalls::resume_http_request() {
        log::debug!("authflow: could not resume request: {s:?}");
    }
}

/// Makes later host calls act on another context (a paused request).
pub fn act_on(context_id: u32) -> bool {
    hostcalls::set_effective_context(context_id).is_ok()
}

pub fn dispatch_get(cluster: &str, authority: &str, path: &str, extra: &[(&str, &str)], timeout_ms: u64) -> Result<u32, Status> {
    let mut headers = vec![(":method", "GET"), (":path", path), (":authority", authority), ("accept", "application/json")];
    headers.extend_from_slice(extra);
    hostcalls::dispatch_http_call(cluster, headers, None, vec![], Duration::from_millis(timeout_ms))
}

pub fn call_response_headers() -> Vec<(String, String)> {
    hostcalls::get_map(MapType::HttpCallResponseHeaders).unwrap_or_default()
}

pub fn call_response_body(size: usize) -> Option<Vec<u8>> {
    hostcalls::get_buffer(proxy_wasm::types::BufferType::HttpCallResponseBody, 0, size).ok().flatten()
}
