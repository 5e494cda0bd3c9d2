//! The client's address as the shipped gateway (`envoy/local.yaml`) passes it
//! on: a backend learns it from the `x-forwarded-for` Envoy writes, never from
//! a `forwarded` or `x-real-ip` the client sent itself.
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use authflow_echo::EchoServer;
use support::*;

/// The shipped local configuration's issuer: its filter configuration is used unchanged.
const ISSUER: &str = "http://127.0.0.1:8081";

#[test]
fn a_client_cannot_name_its_own_address_to_the_backend() {
    let auth = AuthService::start(ISSUER, &[]);
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let (auth_port, backend_port) = (auth.port, backend.addr.port());
    let envoy = Envoy::start_doc(1, |port, admin_port| {
        stack::shipped_local_config(port, admin_port, auth_port, backend_port)
    })
    .unwrap_or_else(|e| panic!("{e}"));

    let forged = "203.0.113.9";
    let r = envoy.get(
        "/healthz",
        &[
            ("x-real-ip", forged),
            ("forwarded", &format!("for={forged};proto=https")),
            ("Forwarded", "for=\"[2001:db8::9]\""),
            ("X-Real-IP", forged),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.echoed("x-real-ip"), None, "{r:?}");
    assert_eq!(r.echoed("forwarded"), None, "{r:?}");
    // Envoy's own record of the peer is what goes on (from loopback, the host's address).
    let xff = r.echoed("x-forwarded-for").unwrap_or_default();
    assert!(
        !xff.is_empty() && !xff.contains(forged),
        "x-forwarded-for: {xff}"
    );
}
