//! One request: read what the decision needs, let the VM decide, carry it out.

use std::cell::RefCell;
use std::rc::Rc;

use authflow_contract::dpop::NONCE_HEADER;
use authflow_contract::fingerprint::DeviceAttribute;
use authflow_filter_core::deny::DenyReason;
use authflow_filter_core::engine::Decision;
use authflow_filter_core::forward::{
    guards_response_cookies, sets_credential_cookie, withheld_trailer,
};
use authflow_filter_core::header_spellings::is_one_of;
use authflow_filter_core::request::{HeaderBlock, HeaderReads};
use authflow_filter_core::timing::{self, Piece};
use authflow_filter_core::Request;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use crate::host;
use crate::outcome::{carry_out, Carried};
use crate::vm::{Decided, Vm};

pub struct AuthflowHttp {
    vm: Rc<RefCell<Vm>>,
    context_id: u32,
    /// A fresh DPoP nonce for the response (its proof's nonce was getting old).
    response_nonce: Option<String>,
    /// The response may not set the credential cookies (`guards_response_cookies`).
    guard_cookies: bool,
    /// Paused, or let through with a token: in a list of the VM's to leave
    /// when deleted. The others skip its scans, which a user holding many
    /// streams would otherwise make long for every request.
    listed: bool,
}

impl AuthflowHttp {
    pub fn new(vm: Rc<RefCell<Vm>>, context_id: u32) -> Self {
        AuthflowHttp {
            vm,
            context_id,
            response_nonce: None,
            guard_cookies: false,
            listed: false,
        }
    }
}

impl Context for AuthflowHttp {}

/// The SDK drops the context when Envoy deletes the stream (`proxy_on_delete`,
/// which the module always exports; see `UNHANDLED_CALLBACKS`): a client that
/// went away while waiting for keys leaves nothing behind.
impl Drop for AuthflowHttp {
    fn drop(&mut self) {
        if !self.listed {
            return;
        }
        if let Ok(mut vm) = self.vm.try_borrow_mut() {
            vm.paused.remove(self.context_id);
            vm.streams.closed(self.context_id);
        }
    }
}

impl HttpContext for AuthflowHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(line) = timing::report() {
            log::warn!("{line}");
        }
        let _span = timing::span(Piece::Callback);
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
            .then(|| host::property_string(&["source", "address"]))
            .flatten();
        let now = vm.clock_ms;
        let request = Request::new(headers, client);
        self.guard_cookies = guards_response_cookies(&vm.engine.config, &request);
        match vm.decide(self.context_id, request, now) {
            Decided::Paused => {
                self.listed = true;
                Action::Pause
            }
            Decided::Now(request, decision) => {
                let nonce = match &decision {
                    Decision::Allow(allowed) => allowed.dpop_nonce.clone(),
                    Decision::Deny(_) => None,
                };
                let carried = carry_out(vm, &request, decision, false);
                vm.header_buffer = request.into_headers().into_buffer();
                if let Carried::GoesOn(token) = &carried {
                    self.listed = token.is_some();
                    vm.watch(self.context_id, carried);
                    // (A request that waited for keys gets none: it is resumed from the root context.)
                    self.response_nonce = nonce;
                    Action::Continue
                } else {
                    Action::Pause
                }
            }
        }
    }

    /// Identity headers are the filter's alone in the trailers too: a client's
    /// `x-auth-user` sent as a request trailer (HTTP/2, or chunked HTTP/1
    /// with trailers enabled) reaches the upstream after the headers the
    /// filter set, and a backend that folds trailers into the header section
    /// (RFC 9110 §6.5.1 forbids it, some do) reads it as the identity. So
    /// are the overrides and credentials the decision judged in the headers
    /// (`withheld_trailer`). Only requests with trailers enter here: no cost
    /// for the others.
    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        let Ok(vm) = self.vm.try_borrow() else {
            return Action::Continue;
        };
        let trailers = host::request_trailers();
        for (name, _) in trailers.iter() {
            let owned = vm
                .identity_names
                .iter()
                .any(|n| n.as_bytes().eq_ignore_ascii_case(name))
                || is_one_of(name, &vm.identity_spellings)
                || withheld_trailer(&vm.engine.config, name);
            if owned {
                host::remove_request_trailer(&String::from_utf8_lossy(name));
            }
        }
        Action::Continue
    }

    /// Exported only for this (see `UNHANDLED_CALLBACKS`): every response
    /// enters the VM once more, a few per cent of a warm request's cost.
    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(nonce) = self.response_nonce.take() {
            host::add_response_header_if_absent(NONCE_HEADER, &nonce);
        }
        if self.guard_cookies {
            self.drop_credential_cookies();
        }
        Action::Continue
    }
}

/// The request headers the configuration's decisions read (see `HeaderReads`),
/// written into `buffer` (the previous request's, so no allocation per request).
fn read_headers(reads: &HeaderReads, buffer: Vec<u8>) -> HeaderBlock {
    let _span = timing::span(Piece::HeaderRead);
    match reads {
        HeaderReads::All => host::request_headers(buffer),
        HeaderReads::Only(names) => {
            let mut block = HeaderBlock::reuse(buffer);
            for name in names {
                if let Some(value) = host::request_header(name) {
                    block.push(name.as_bytes(), &value);
                }
            }
            block
        }
    }
}

impl AuthflowHttp {
    /// A backend's `Set-Cookie` lines that set the credential cookies are
    /// dropped (`guards_response_cookies`); its other cookies pass.
    fn drop_credential_cookies(&self) {
        let Ok(vm) = self.vm.try_borrow() else {
            return;
        };
        let headers = host::response_headers();
        let set_cookies = || {
            headers
                .iter()
                .filter(|(name, _)| name.eq_ignore_ascii_case(b"set-cookie"))
                .map(|(_, value)| value)
        };
        let owned = |value: &&[u8]| sets_credential_cookie(&vm.engine.config, value);
        if set_cookies().any(|value| owned(&value)) {
            log::warn!("authflow: an upstream answer set a credential cookie: dropped");
            host::replace_response_header_values("set-cookie", set_cookies().filter(|v| !owned(v)));
        }
    }
}
