//! One request: strip forged identity headers, decide, carry the decision out.

use std::cell::RefCell;
use std::rc::Rc;

use authflow_contract::fingerprint::DeviceAttribute;
use authflow_filter_core::deny::DenyReason;
use authflow_filter_core::device::DeviceCheck;
use authflow_filter_core::engine::Outcome;
use authflow_filter_core::request::{HeaderBlock, HeaderReads};
use authflow_filter_core::Request;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};

use crate::host;
use crate::metrics;
use crate::root::{Vm, Waiter};

pub struct AuthflowHttp {
    vm: Rc<RefCell<Vm>>,
    context_id: u32,
}

impl AuthflowHttp {
    pub fn new(vm: Rc<RefCell<Vm>>, context_id: u32) -> Self {
        AuthflowHttp { vm, context_id }
    }
}

impl Context for AuthflowHttp {}

/// The SDK drops the context when Envoy deletes the stream (`proxy_on_delete`,
/// which the module always exports; see `UNHANDLED_CALLBACKS`): a client that
/// went away while waiting for keys leaves nothing behind.
impl Drop for AuthflowHttp {
    fn drop(&mut self) {
        if let Ok(mut vm) = self.vm.try_borrow_mut() {
            if !vm.waiting.is_empty() {
                let id = self.context_id;
                vm.waiting.retain(|w| w.context_id != id);
            }
        }
    }
}

impl HttpContext for AuthflowHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Ok(mut vm) = self.vm.try_borrow_mut() else {
            let r = DenyReason::KeysUnavailable.response(1, None);
            host::send_response(r.status, &r.headers, &r.body);
            return Action::Pause;
        };
        let vm = &mut *vm;
        let headers = read_headers(&vm.header_reads, std::mem::take(&mut vm.header_buffer));
        let client = vm
            .engine
            .config
            .device
            .attributes
            .contains(&DeviceAttribute::ClientIpPrefix)
            .then(|| host::property_string(vec!["source", "address"]))
            .flatten();
        let request = Request::new(headers, client);
        let now = vm.clock_ms;
        match vm.engine.evaluate(&request, now, true) {
            Outcome::AwaitKeys { provider, unknown_kid } => {
                let generation = vm.jwks.get(provider).and_then(Option::as_ref).map_or(0, |f| f.generation);
                let deadline_ms = now + vm.engine.config.key_wait_ms;
                vm.waiting.push(Waiter { context_id: self.context_id, request, provider, generation, deadline_ms });
                vm.urgent.push((provider, unknown_kid));
                vm.metrics.inc(metrics::KEY_WAITS);
                Action::Pause
            }
            outcome => {
                let go_on = carry_out(vm, &request, outcome, false);
                vm.header_buffer = request.into_headers().into_buffer();
                if go_on {
                    Action::Continue
                } else {
                    Action::Pause
                }
            }
        }
    }
}

/// Applies a decision to the current (effective) request. Returns whether it
/// may continue upstream. `resume` is for requests that were paused.
pub fn carry_out(vm: &Vm, request: &Request, outcome: Outcome, resume: bool) -> bool {
    match outcome {
        Outcome::Allow(allowed) => {
            let n = allowed.notes;
            vm.metrics.inc(if n.authenticated { metrics::ALLOWED } else { metrics::ALLOWED_ANONYMOUS });
            if n.authenticated {
                vm.metrics.inc(if n.cache_hit { metrics::CACHE_HIT } else { metrics::CACHE_MISS });
            }
            if n.stale_revocations {
                vm.metrics.inc(metrics::REVOCATION_STALE_ALLOWED);
            }
            if n.failed_open {
                vm.metrics.inc(metrics::FAILED_OPEN);
            }
            if let Some(reason) = n.public_invalid_token {
                vm.metrics.inc(metrics::PUBLIC_INVALID_TOKEN);
                log::debug!("authflow: public route {} got an invalid token ({}), forwarded anonymously", request.path(), reason.label());
            }
            if let Some(check) = n.device_reported {
                vm.metrics.inc(metrics::DEVICE_MISMATCH_REPORTED);
                log_device(vm, check, request, "allowed (report mode)");
            }
            set_identity(&vm.identity_names, allowed.identity_headers());
            if resume {
                host::resume_request();
            }
            true
        }
        Outcome::Deny(denied) => {
            vm.metrics.denied(denied.reason);
            if let Some(check) = denied.device {
                log_device(vm, check, request, "denied");
            } else {
                // The reason label only: never the token, never claims.
                log::debug!("authflow: {} {} denied: {}", request.method(), request.path(), denied.reason.label());
            }
            let r = &denied.response;
            host::send_response(r.status, &r.headers, &r.body);
            false
        }
        // Only `evaluate(.., may_wait = true)` yields this, and its caller handles it.
        Outcome::AwaitKeys { .. } => {
            let r = DenyReason::KeysUnavailable.response(vm.engine.config.retry_after_secs, None);
            host::send_response(r.status, &r.headers, &r.body);
            false
        }
    }
}

/// The request headers the configuration's decisions read (see `HeaderReads`),
/// written into `buffer` (the previous request's, so no allocation per request).
fn read_headers(reads: &HeaderReads, buffer: Vec<u8>) -> HeaderBlock {
    match reads {
        HeaderReads::All => HeaderBlock::parse(&host::header_map_block(MapType::HttpRequestHeaders)).unwrap_or_default(),
        HeaderReads::Only(names) => {
            let mut block = HeaderBlock::reuse(buffer);
            for name in names {
                if let Some(value) = host::header_value(MapType::HttpRequestHeaders, name) {
                    block.push(name.as_bytes(), &value);
                }
            }
            block
        }
    }
}

/// Identity headers are the filter's alone: each configured one is set to
/// this request's value, replacing any copy the client sent, or removed when
/// this request has none. Without reading the client's headers first: one
/// host call per name, whatever arrived.
fn set_identity(owned: &[String], values: &[(String, String)]) {
    for name in owned {
        match values.iter().find(|(n, _)| n == name) {
            Some((_, value)) => host::set_request_header(name, value),
            None => host::remove_request_header(name),
        }
    }
}

/// Device failures are logged with what the operator needs to tell a stolen
/// token from a configuration mismatch: the attributes in use, never values.
fn log_device(vm: &Vm, check: DeviceCheck, request: &Request, what: &str) {
    if check == DeviceCheck::SecretMissing {
        vm.metrics.inc(metrics::DEVICE_SECRET_MISSING);
    }
    let attrs: Vec<&str> = vm.engine.config.device.attributes.iter().map(|a| a.name()).collect();
    log::info!(
        "authflow: device check {check:?} on {} {}: {what}. Fingerprint attributes here: {attrs:?}; if every request fails, compare them with the auth service's fingerprint attributes.",
        request.method(),
        request.path()
    );
}
