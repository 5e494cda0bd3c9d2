//! Carrying a decision out on the current (effective) request: forward it
//! with identity headers, or answer it, counting and logging what matters.
//! The request's method and path are logged escaped: they are the client's
//! bytes, and a control character in them must not forge a log line.

use std::rc::Rc;

use authflow_filter_core::device::DeviceCheck;
use authflow_filter_core::engine::Decision;
use authflow_filter_core::forward::{credential_edits, HeaderEdit};
use authflow_filter_core::header_spellings::is_one_of;
use authflow_filter_core::timing::{self, Piece};
use authflow_filter_core::verify::VerifiedToken;
use authflow_filter_core::Request;

use crate::host;
use crate::metrics::Metric;
use crate::shared;
use crate::vm::Vm;

/// What became of a request.
pub enum Carried {
    /// Answered here (refused).
    Answered,
    /// On its way upstream, with the token that verified, if one did: the
    /// stream is watched while open ([`Vm::watch`]).
    GoesOn(Option<Rc<VerifiedToken>>),
}

/// Applies a decision. `resume` is for requests that were paused.
pub fn carry_out(vm: &Vm, request: &Request, decision: Decision, resume: bool) -> Carried {
    let _span = timing::span(Piece::CarryOut);
    // A DPoP proof is good once per Envoy process: the last check, across workers.
    let decision = match decision {
        Decision::Allow(allowed) => match allowed.proof.map(|p| (p, shared::record_proof_once(&p)))
        {
            Some((proof, Err(e))) => vm.engine.proof_refused(&proof, e, vm.clock_ms / 1000),
            _ => Decision::Allow(allowed),
        },
        deny => deny,
    };
    match decision {
        Decision::Allow(allowed) => {
            let n = allowed.notes;
            vm.metrics.inc(if n.authenticated {
                Metric::Allowed
            } else {
                Metric::AllowedAnonymous
            });
            if n.authenticated {
                vm.metrics.inc(if n.cache_hit {
                    Metric::CacheHit
                } else {
                    Metric::CacheMiss
                });
            }
            if n.stale_revocations {
                vm.metrics.inc(Metric::RevocationStaleAllowed);
            }
            if n.failed_open {
                vm.metrics.inc(Metric::FailedOpen);
            }
            if let Some(reason) = n.public_invalid_token {
                vm.metrics.inc(Metric::PublicInvalidToken);
                log::debug!(
                    "authflow: public route {}: invalid token ({}), passed anonymously",
                    request.path().escape_default(),
                    reason.label()
                );
            }
            if let Some(check) = n.device_reported {
                vm.metrics.inc(Metric::DeviceMismatchReported);
                log_device(vm, check, "allowed (report mode)");
            }
            set_identity(vm, request, allowed.identity_headers());
            remove_spellings(vm, request);
            for edit in credential_edits(
                &vm.engine.config,
                request,
                allowed.verified_by,
                allowed.refused_token,
            ) {
                match edit {
                    HeaderEdit::Remove(name) => host::remove_request_header(&name),
                    HeaderEdit::Set(name, value) => host::set_request_header(&name, &value),
                }
            }
            if resume {
                host::resume_request();
            }
            Carried::GoesOn(allowed.token)
        }
        Decision::Deny(denied) => {
            vm.metrics.denied(denied.reason);
            if denied.browser_redirect {
                vm.metrics.inc(Metric::BrowserRedirect);
            }
            if let Some(check) = denied.device {
                log_device(vm, check, "denied");
            } else {
                // The reason label only: never the token, never claims.
                log::debug!(
                    "authflow: {} {} denied: {}",
                    request.method().escape_default(),
                    request.path().escape_default(),
                    denied.reason.label()
                );
            }
            let r = &denied.response;
            host::send_response(r.status, &r.headers, &r.body);
            Carried::Answered
        }
    }
}

/// Identity headers are the filter's alone: each configured one is set to
/// this request's value, replacing any copy the client sent, or removed when
/// this request has none and the client may have sent one (with the whole
/// header map read that is known: a removal costs a host call, and most
/// requests carry no identity header of their own).
fn set_identity(vm: &Vm, request: &Request, values: &[(String, String)]) {
    let whole_map = request.has_every_header(&vm.header_reads);
    for name in &vm.identity_names {
        match values.iter().find(|(n, _)| n == name) {
            Some((_, value)) => host::set_request_header(name, value),
            None if whole_map && !request.has_header(name) => {}
            None => host::remove_request_header(name),
        }
    }
}

/// The `_`/`-` spellings of the identity headers a backend would fold onto
/// them. With the whole header map read, only those the client actually
/// sent are removed (usually none: no host call); otherwise each by name.
fn remove_spellings(vm: &Vm, request: &Request) {
    if request.has_every_header(&vm.header_reads) {
        for (name, _) in request.headers().iter() {
            if is_one_of(name, &vm.identity_spellings) {
                host::remove_request_header(&String::from_utf8_lossy(name));
            }
        }
    } else {
        for name in &vm.identity_spellings {
            host::remove_request_header(name);
        }
    }
}

/// Device failures are logged with what the operator needs to tell a stolen
/// token from a configuration mismatch: the attributes in use, never values.
/// Not the method or path: the line is written at `info` for each such
/// request, and the client chooses their length (up to Envoy's header limit).
fn log_device(vm: &Vm, check: DeviceCheck, what: &str) {
    if check == DeviceCheck::SecretMissing {
        vm.metrics.inc(Metric::DeviceSecretMissing);
    }
    let attrs: Vec<&str> = vm
        .engine
        .config
        .device
        .attributes
        .iter()
        .map(|a| a.name())
        .collect();
    log::info!(
        "authflow: device check {}: {what}; attributes [{}] (as the auth service's?)",
        check.name(),
        attrs.join(", ")
    );
}
