//! Prometheus counters, rendered in the text exposition format. Plain
//! atomics: the feed's 304 path counts too and must stay cheap.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($field:ident => $name:literal, $help:literal;)*) => {
        #[derive(Default)]
        pub struct Metrics {
            $(pub $field: AtomicU64,)*
        }

        impl Metrics {
            pub fn render(&self) -> String {
                let mut out = String::new();
                $(
                    out.push_str(concat!("# HELP ", $name, " ", $help, "\n# TYPE ", $name, " counter\n"));
                    out.push_str(&format!(concat!($name, " {}\n"), self.$field.load(Ordering::Relaxed)));
                )*
                out
            }
        }
    };
}

counters! {
    http_requests => "authflow_http_requests_total", "HTTP requests answered.";
    http_client_errors => "authflow_http_client_errors_total", "HTTP answers with a 4xx status.";
    http_server_errors => "authflow_http_server_errors_total", "HTTP answers with a 5xx status.";
    signups => "authflow_signups_total", "Sign-ups accepted (answered 201), whether the address was new or had an account already.";
    signup_throttled => "authflow_signup_throttled_total", "Sign-ups refused by the per-address limit.";
    signin_password_ok => "authflow_signin_password_ok_total", "Sign-ins whose password checked out.";
    signin_password_failed => "authflow_signin_password_failed_total", "Sign-ins refused (unknown email, wrong password, or an address not verified yet).";
    signin_throttled => "authflow_signin_throttled_total", "Sign-in attempts refused by throttling.";
    second_factor_ok => "authflow_second_factor_ok_total", "Second factors accepted.";
    second_factor_failed => "authflow_second_factor_failed_total", "Second factors refused.";
    tokens_issued => "authflow_access_tokens_issued_total", "Access tokens issued.";
    refresh_ok => "authflow_refresh_ok_total", "Refresh token rotations.";
    refresh_reuse => "authflow_refresh_reuse_detected_total", "Reused refresh tokens (session revoked).";
    refresh_throttled => "authflow_refresh_throttled_total", "Refreshes refused by the per-session limit (throttle.refresh_max_per_hour).";
    sessions_revoked => "authflow_sessions_revoked_total", "Sessions revoked (logout, reuse, reset, admin).";
    feed_not_modified => "authflow_feed_not_modified_total", "Revocation feed polls answered 304.";
    feed_deltas => "authflow_feed_deltas_total", "Revocation feed polls answered with a delta.";
    feed_snapshots => "authflow_feed_snapshots_total", "Revocation feed polls answered with a snapshot.";
    jwks_requests => "authflow_jwks_requests_total", "JWKS requests.";
    ext_authz_allowed => "authflow_ext_authz_allowed_total", "ext_authz checks allowed.";
    ext_authz_denied => "authflow_ext_authz_denied_total", "ext_authz checks denied.";
    dpop_bound_tokens => "authflow_dpop_bound_tokens_total", "Access tokens issued bound to a DPoP key.";
    dpop_refused => "authflow_dpop_proofs_refused_total", "DPoP proofs refused (invalid, replayed, wrong key or nonce).";
}

pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
