//! The few host calls the filter needs, wrapped so that a host error is a
//! logged value, never a panic (the SDK's trait helpers unwrap).

use std::time::{Duration, UNIX_EPOCH};

use authflow_filter_core::request::HeaderBlock;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{MapType, Status};

pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The ABI's header-map calls, declared here rather than used through the
/// SDK: its wrappers copy every pair into a `String` and abort the VM on a
/// value that is not UTF-8 or on any status they do not expect. These return
/// plain values; a host error is logged and never stops the VM.
mod abi {
    #[link(wasm_import_module = "env")]
    extern "C" {
        pub fn proxy_get_header_map_pairs(map_type: u32, return_map_data: *mut *mut u8, return_map_size: *mut usize) -> u32;
        pub fn proxy_get_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
        ) -> u32;
        pub fn proxy_replace_header_map_value(map_type: u32, key_data: *const u8, key_size: usize, value_data: *const u8, value_size: usize) -> u32;
        pub fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    }

    /// Takes back a buffer the host wrote through the SDK's exported
    /// `proxy_on_memory_allocate` (a leaked `Vec<u8>` of capacity `size`).
    ///
    /// # Safety
    /// `data`/`size` must come from such a host call that returned success.
    pub unsafe fn take_host_buffer(data: *mut u8, size: usize) -> Vec<u8> {
        if data.is_null() {
            return Vec::new();
        }
        // SAFETY: per the function contract, exactly how the SDK's own getters reclaim it.
        unsafe { Vec::from_raw_parts(data, size, size) }
    }
}

const OK: u32 = Status::Ok as u32;

/// A whole header map as one buffer in the proxy-wasm map encoding (empty on any host error).
pub fn header_map_block(map: MapType) -> Vec<u8> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the out-pointers are valid for writes; the buffer is taken back only on success.
    unsafe {
        if abi::proxy_get_header_map_pairs(map as u32, &mut data, &mut size) != OK {
            return Vec::new();
        }
        abi::take_host_buffer(data, size)
    }
}

/// The first value of one header, as bytes; `None` if absent (or on a host error).
pub fn header_value(map: MapType, name: &str) -> Option<Vec<u8>> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: as in `header_map_block`.
    unsafe {
        if abi::proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), &mut data, &mut size) != OK {
            return None;
        }
        Some(abi::take_host_buffer(data, size))
    }
}

/// Sets a request header to exactly this one value (replacing every copy).
pub fn set_request_header(name: &str, value: &str) {
    // SAFETY: both slices are valid for reads for the duration of the call.
    let status = unsafe {
        abi::proxy_replace_header_map_value(MapType::HttpRequestHeaders as u32, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    };
    if status != OK {
        log::warn!("authflow: could not set header {name}: status {status}");
    }
}

pub fn remove_request_header(name: &str) {
    // SAFETY: the slice is valid for reads for the duration of the call.
    let status = unsafe { abi::proxy_remove_header_map_value(MapType::HttpRequestHeaders as u32, name.as_ptr(), name.len()) };
    if status != OK {
        log::warn!("authflow: could not remove header {name}: status {status}");
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

pub fn call_response_headers() -> HeaderBlock {
    HeaderBlock::parse(&header_map_block(MapType::HttpCallResponseHeaders)).unwrap_or_default()
}

pub fn call_response_body(size: usize) -> Option<Vec<u8>> {
    hostcalls::get_buffer(proxy_wasm::types::BufferType::HttpCallResponseBody, 0, size).ok().flatten()
}
