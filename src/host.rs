//! Every host call the filter makes, straight through the proxy-wasm ABI.
//!
//! Not through the SDK's `hostcalls`: those wrappers `panic!` on any status
//! they do not expect (and read the status into a Rust enum, which is
//! undefined for a value the enum lacks), and with `panic = "abort"` a panic
//! takes the worker VM down. Here every status is a plain `u32`; a host
//! error becomes a value (`None`, `false`, `Err`) or a log line, never a panic.
//!
//! The one call left to the SDK is `dispatch_http_call` (see [`dispatch_get`]).

use std::time::Duration;

use authflow_filter_core::request::HeaderBlock;
use proxy_wasm::types::Status;

/// The ABI's imports. Statuses come back as `u32`; 0 is success.
mod abi {
    #[link(wasm_import_module = "env")]
    extern "C" {
        pub fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
        pub fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
        pub fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
        pub fn proxy_get_buffer_bytes(
            buffer_type: u32,
            start: usize,
            max_size: usize,
            return_buffer_data: *mut *mut u8,
            return_buffer_size: *mut usize,
        ) -> u32;
        pub fn proxy_get_header_map_pairs(
            map_type: u32,
            return_map_data: *mut *mut u8,
            return_map_size: *mut usize,
        ) -> u32;
        pub fn proxy_get_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
        ) -> u32;
        pub fn proxy_replace_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
            value_data: *const u8,
            value_size: usize,
        ) -> u32;
        pub fn proxy_remove_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
        ) -> u32;
        pub fn proxy_add_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
            value_data: *const u8,
            value_size: usize,
        ) -> u32;
        pub fn proxy_get_property(
            path_data: *const u8,
            path_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
        ) -> u32;
        pub fn proxy_send_local_response(
            status_code: u32,
            status_code_details_data: *const u8,
            status_code_details_size: usize,
            body_data: *const u8,
            body_size: usize,
            headers_data: *const u8,
            headers_size: usize,
            grpc_status: i32,
        ) -> u32;
        pub fn proxy_continue_stream(stream_type: u32) -> u32;
        pub fn proxy_close_stream(stream_type: u32) -> u32;
        pub fn proxy_set_effective_context(context_id: u32) -> u32;
        pub fn proxy_get_shared_data(
            key_data: *const u8,
            key_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
            return_cas: *mut u32,
        ) -> u32;
        pub fn proxy_set_shared_data(
            key_data: *const u8,
            key_size: usize,
            value_data: *const u8,
            value_size: usize,
            cas: u32,
        ) -> u32;
        pub fn proxy_define_metric(
            metric_type: u32,
            name_data: *const u8,
            name_size: usize,
            return_id: *mut u32,
        ) -> u32;
        pub fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
        pub fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
        pub fn proxy_call_foreign_function(
            function_name_data: *const u8,
            function_name_size: usize,
            arguments_data: *const u8,
            arguments_size: usize,
            return_results_data: *mut *mut u8,
            return_results_size: *mut usize,
        ) -> u32;
    }

    // WASI's random source (Envoy implements it from its own CSPRNG).
    #[link(wasm_import_module = "wasi_snapshot_preview1")]
    extern "C" {
        pub fn random_get(buf: *mut u8, buf_len: usize) -> i32;
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

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;

/// The ABI's map and buffer numbers the filter uses.
const MAP_REQUEST_HEADERS: u32 = 0;
const MAP_REQUEST_TRAILERS: u32 = 1;
const MAP_RESPONSE_HEADERS: u32 = 2;
const MAP_CALL_RESPONSE_HEADERS: u32 = 6;
const BUFFER_CALL_RESPONSE_BODY: u32 = 4;
const BUFFER_PLUGIN_CONFIGURATION: u32 = 7;
const STREAM_HTTP_REQUEST: u32 = 0;

// ---- log ----

/// The `log` crate's backend: one `proxy_log` per record, its status ignored
/// (a log line that cannot be written is not worth stopping for).
struct HostLogger;

impl log::Log for HostLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level: u32 = match record.level() {
            log::Level::Trace => 0,
            log::Level::Debug => 1,
            log::Level::Info => 2,
            log::Level::Warn => 3,
            log::Level::Error => 4,
        };
        let message = record.args().to_string();
        // SAFETY: the slice is valid for reads for the duration of the call.
        let _ = unsafe { abi::proxy_log(level, message.as_ptr(), message.len()) };
    }

    fn flush(&self) {}
}

static LOGGER: HostLogger = HostLogger;

/// Routes `log::…!` to the host. Envoy filters again by its own level.
pub fn install_logger(max: log::LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(max);
}

// ---- time, ticks, configuration ----

/// The host's clock in nanoseconds (0 when it cannot be read).
pub fn now_ns() -> u64 {
    let mut nanos: u64 = 0;
    // SAFETY: the out-pointer is valid for writes.
    if unsafe { abi::proxy_get_current_time_nanoseconds(&mut nanos) } != OK {
        return 0;
    }
    nanos
}

pub fn now_ms() -> u64 {
    now_ns() / 1_000_000
}

/// Fills `buf` with random bytes from the host; false when it cannot.
pub fn random_bytes(buf: &mut [u8]) -> bool {
    // SAFETY: the buffer is valid for writes of its length.
    unsafe { abi::random_get(buf.as_mut_ptr(), buf.len()) == 0 }
}

/// Two random words from the host; from the clock when it has none (they
/// key hashes and tell VMs apart, nothing secret is made from them).
pub fn random_key() -> [u64; 2] {
    let mut bytes = [0u8; 16];
    if !random_bytes(&mut bytes) {
        bytes[..8].copy_from_slice(&now_ns().to_le_bytes());
    }
    let (a, b) = bytes.split_at(8);
    [a, b].map(|half| half.try_into().map_or(0, u64::from_le_bytes))
}

pub fn set_tick_period(period: Duration) -> bool {
    let ms = u32::try_from(period.as_millis()).unwrap_or(u32::MAX);
    // SAFETY: no pointers.
    unsafe { abi::proxy_set_tick_period_milliseconds(ms) == OK }
}

fn buffer(buffer_type: u32, max_size: usize) -> Option<Vec<u8>> {
    buffer_range(buffer_type, 0, max_size)
}

/// Up to `max_size` bytes of a buffer from `start`.
fn buffer_range(buffer_type: u32, start: usize, max_size: usize) -> Option<Vec<u8>> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the out-pointers are valid for writes; the buffer is taken back only on success.
    unsafe {
        match abi::proxy_get_buffer_bytes(buffer_type, start, max_size, &mut data, &mut size) {
            OK => Some(abi::take_host_buffer(data, size)),
            _ => None,
        }
    }
}

/// The plugin configuration (empty when there is none or on a host error).
pub fn plugin_configuration() -> Vec<u8> {
    buffer(BUFFER_PLUGIN_CONFIGURATION, usize::MAX).unwrap_or_default()
}

/// The body of the callout being answered, up to `size` bytes.
///
/// A large one (a revocation snapshot: 23 MiB for a million entries) is read
/// in chunks into one buffer with the spare room the list built on it keeps
/// (`blob::spare_room`): taken whole, the host would allocate it at its exact
/// size, and the list's first merge would have to grow it — which can move
/// it, holding two copies for a moment in a VM whose memory never shrinks.
pub fn call_response_body(size: usize) -> Option<Vec<u8>> {
    const CHUNK: usize = 256 * 1024;
    if size <= CHUNK {
        return buffer(BUFFER_CALL_RESPONSE_BODY, size);
    }
    let mut body = Vec::with_capacity(
        size.saturating_add(authflow_contract::revocation::blob::spare_room(size)),
    );
    while body.len() < size {
        let chunk = buffer_range(
            BUFFER_CALL_RESPONSE_BODY,
            body.len(),
            CHUNK.min(size - body.len()),
        )?;
        if chunk.is_empty() {
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Some(body)
}

// ---- headers ----

/// A whole header map as one buffer in the proxy-wasm map encoding (empty on any host error).
fn header_map_block(map_type: u32) -> Vec<u8> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the out-pointers are valid for writes; the buffer is taken back only on success.
    unsafe {
        if abi::proxy_get_header_map_pairs(map_type, &mut data, &mut size) != OK {
            return Vec::new();
        }
        abi::take_host_buffer(data, size)
    }
}

/// Every request header, written into `buffer` (empty on a host error or a malformed map).
pub fn request_headers(buffer: Vec<u8>) -> HeaderBlock {
    HeaderBlock::parse_into(buffer, &header_map_block(MAP_REQUEST_HEADERS)).unwrap_or_default()
}

/// The headers of the callout being answered.
pub fn call_response_headers() -> HeaderBlock {
    HeaderBlock::parse(&header_map_block(MAP_CALL_RESPONSE_HEADERS)).unwrap_or_default()
}

/// The first value of one request header, as bytes; `None` if absent (or on a host error).
pub fn request_header(name: &str) -> Option<Vec<u8>> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: as in `header_map_block`.
    unsafe {
        if abi::proxy_get_header_map_value(
            MAP_REQUEST_HEADERS,
            name.as_ptr(),
            name.len(),
            &mut data,
            &mut size,
        ) != OK
        {
            return None;
        }
        Some(abi::take_host_buffer(data, size))
    }
}

/// Sets a request header to exactly this one value (replacing every copy).
pub fn set_request_header(name: &str, value: &str) {
    // SAFETY: both slices are valid for reads for the duration of the call.
    let status = unsafe {
        abi::proxy_replace_header_map_value(
            MAP_REQUEST_HEADERS,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    };
    if status != OK {
        log::warn!("authflow: could not set header {name}: status {status}");
    }
}

/// Removes every copy of `name` from one of the stream's maps; the host's status.
fn remove_from(map_type: u32, name: &str) -> u32 {
    // SAFETY: the slice is valid for reads for the duration of the call.
    unsafe { abi::proxy_remove_header_map_value(map_type, name.as_ptr(), name.len()) }
}

pub fn remove_request_header(name: &str) {
    let status = remove_from(MAP_REQUEST_HEADERS, name);
    if status != OK {
        log::warn!("authflow: cannot remove header {name}: {status}");
    }
}

/// Every request trailer (empty on a host error or a malformed map).
pub fn request_trailers() -> HeaderBlock {
    HeaderBlock::parse(&header_map_block(MAP_REQUEST_TRAILERS)).unwrap_or_default()
}

pub fn remove_request_trailer(name: &str) {
    let status = remove_from(MAP_REQUEST_TRAILERS, name);
    if status != OK {
        log::warn!("authflow: cannot remove trailer {name}: {status}");
    }
}

/// Every response header (empty on a host error or a malformed map).
pub fn response_headers() -> HeaderBlock {
    HeaderBlock::parse(&header_map_block(MAP_RESPONSE_HEADERS)).unwrap_or_default()
}

/// Replaces every copy of response header `name` with `values` (none: removed).
pub fn replace_response_header_values<'a>(name: &str, values: impl Iterator<Item = &'a [u8]>) {
    let mut status = remove_from(MAP_RESPONSE_HEADERS, name);
    for value in values {
        if status != OK {
            break;
        }
        // SAFETY: both slices are valid for reads for the duration of the call.
        status = unsafe {
            abi::proxy_add_header_map_value(
                MAP_RESPONSE_HEADERS,
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            )
        };
    }
    if status != OK {
        log::warn!("authflow: cannot rewrite response header {name}: {status}");
    }
}

/// Sets a response header unless the response already has one (the upstream's own wins).
pub fn add_response_header_if_absent(name: &str, value: &str) {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: as in `header_map_block`; a value found is taken back and dropped.
    unsafe {
        if abi::proxy_get_header_map_value(
            MAP_RESPONSE_HEADERS,
            name.as_ptr(),
            name.len(),
            &mut data,
            &mut size,
        ) == OK
        {
            drop(abi::take_host_buffer(data, size));
            return;
        }
    }
    // SAFETY: both slices are valid for reads for the duration of the call.
    let status = unsafe {
        abi::proxy_replace_header_map_value(
            MAP_RESPONSE_HEADERS,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    };
    if status != OK {
        log::warn!("authflow: cannot set response header {name}: {status}");
    }
}

/// A property (e.g. `["source", "address"]`) as text; `None` when absent, not UTF-8 or on a host error.
pub fn property_string(path: &[&str]) -> Option<String> {
    // The ABI's path encoding: the parts joined by NUL bytes.
    let encoded = path.join("\0");
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: as in `header_map_block`.
    let bytes = unsafe {
        if abi::proxy_get_property(encoded.as_ptr(), encoded.len(), &mut data, &mut size) != OK {
            return None;
        }
        abi::take_host_buffer(data, size)
    };
    String::from_utf8(bytes).ok()
}

// ---- the current stream ----

/// The proxy-wasm map encoding: the pair count, each name's and value's
/// length (u32 LE), then each name and value followed by a NUL byte.
fn encode_map(pairs: &[(String, String)]) -> Vec<u8> {
    let len32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    let size = 4 + pairs
        .iter()
        .map(|(n, v)| n.len() + v.len() + 10)
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&len32(pairs.len()));
    for (n, v) in pairs {
        out.extend_from_slice(&len32(n.len()));
        out.extend_from_slice(&len32(v.len()));
    }
    for (n, v) in pairs {
        out.extend_from_slice(n.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// Answers the current request locally.
pub fn send_response(status: u32, headers: &[(String, String)], body: &str) {
    let headers = encode_map(headers);
    // SAFETY: every slice is valid for reads for the duration of the call.
    let result = unsafe {
        abi::proxy_send_local_response(
            status,
            std::ptr::null(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    };
    if result != OK {
        log::warn!("authflow: could not send local reply: status {result}");
    }
}

/// Lets a paused request go on upstream.
pub fn resume_request() {
    // SAFETY: no pointers.
    let status = unsafe { abi::proxy_continue_stream(STREAM_HTTP_REQUEST) };
    if status != OK {
        // The stream may have been reset meanwhile.
        log::debug!("authflow: could not resume request: status {status}");
    }
}

/// Resets the request's stream (Envoy's `resetStream`): an open one ends,
/// its connection too for HTTP/1.
pub fn reset_request() {
    // SAFETY: no pointers.
    let status = unsafe { abi::proxy_close_stream(STREAM_HTTP_REQUEST) };
    if status != OK {
        log::debug!("authflow: could not reset a stream: status {status}");
    }
}

/// Makes later host calls act on another context (a paused request).
pub fn act_on(context_id: u32) -> bool {
    // SAFETY: no pointers.
    unsafe { abi::proxy_set_effective_context(context_id) == OK }
}

// ---- callouts ----

/// Starts a GET through an Envoy cluster; the answer comes to the root
/// context's `on_http_call_response` with the returned token.
///
/// This is the one call made through the SDK: its dispatcher must record the
/// token to route the answer back to this context, and that record is not
/// reachable otherwise. Its wrapper handles every status Envoy's `httpCall`
/// returns (`BadArgument` for an unknown or not yet ready cluster,
/// `InternalFailure` when the request cannot start).
pub fn dispatch_get(
    cluster: &str,
    authority: &str,
    path: &str,
    extra: &[(&str, &str)],
    timeout_ms: u64,
) -> Result<u32, Status> {
    let mut headers = vec![
        (":method", "GET"),
        (":path", path),
        (":authority", authority),
        ("accept", "application/json"),
    ];
    headers.extend_from_slice(extra);
    proxy_wasm::hostcalls::dispatch_http_call(
        cluster,
        headers,
        None,
        vec![],
        Duration::from_millis(timeout_ms),
    )
}

// ---- shared data ----

/// A shared-data value and its compare-and-swap token (0: any).
pub fn shared_get(key: &str) -> Option<(Option<Vec<u8>>, u32)> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    let mut cas: u32 = 0;
    // SAFETY: as in `header_map_block`.
    unsafe {
        match abi::proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) {
            OK => Some((Some(abi::take_host_buffer(data, size)), cas)),
            NOT_FOUND => Some((None, 0)),
            _ => None,
        }
    }
}

/// Writes a shared-data value; `cas` 0 writes whatever is there. `Err` is
/// the host's status (8: someone else wrote since `cas` was read).
pub fn shared_set(key: &str, value: &[u8], cas: u32) -> Result<(), u32> {
    // SAFETY: both slices are valid for reads for the duration of the call.
    match unsafe {
        abi::proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    } {
        OK => Ok(()),
        status => Err(status),
    }
}

// ---- foreign functions ----

/// Calls one of the host's foreign functions; `None` on any status but
/// success (absent function, refused arguments).
pub fn call_foreign_function(name: &str, arguments: &[u8]) -> Option<Vec<u8>> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: both slices are valid for reads and the out-pointers for writes;
    // the result is reclaimed as in `header_map_block`.
    unsafe {
        match abi::proxy_call_foreign_function(
            name.as_ptr(),
            name.len(),
            arguments.as_ptr(),
            arguments.len(),
            &mut data,
            &mut size,
        ) {
            OK => Some(abi::take_host_buffer(data, size)),
            _ => None,
        }
    }
}

// ---- metrics ----

#[derive(Clone, Copy, Debug)]
pub enum MetricKind {
    Counter = 0,
    Gauge = 1,
}

/// Defines (or finds) a statistic; `None` on a host error (it is then not exported).
pub fn define_metric(kind: MetricKind, name: &str) -> Option<u32> {
    let mut id: u32 = 0;
    // SAFETY: the name is valid for reads and the out-pointer for writes.
    let status =
        unsafe { abi::proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) };
    (status == OK).then_some(id)
}

pub fn increment_metric(id: u32, by: u64) {
    // SAFETY: no pointers.
    let _ = unsafe { abi::proxy_increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX)) };
}

pub fn record_metric(id: u32, value: u64) {
    // SAFETY: no pointers.
    let _ = unsafe { abi::proxy_record_metric(id, value) };
}
