//! The client's address as the shipped gateway (`envoy/local.yaml`) passes it
//! on: a backend learns it from the `x-forwarded-for` Envoy writes, the peer
//! alone, never from an address the client wrote itself (in `forwarded`,
//! `x-real-ip` and the like, or at the head of its own `x-forwarded-for`).
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::stack::ShippedGateway;

/// The shipped local configuration's issuer: its filter configuration is used unchanged.
const ISSUER: &str = "http://127.0.0.1:8081";

#[test]
fn a_client_cannot_name_its_own_address_to_the_backend() {
    let gateway = ShippedGateway::start(ISSUER, &[]);
    let envoy = &gateway.envoy;

    let forged = "203.0.113.9";
    let named = [
        "forwarded",
        "Forwarded",
        "x-real-ip",
        "X-Real-IP",
        "x-forwarded-for",
        "x-client-ip",
        "true-client-ip",
        "cf-connecting-ip",
        "fastly-client-ip",
        "x-cluster-client-ip",
        "x-original-forwarded-for",
    ];
    let sent: Vec<(&str, String)> = named
        .iter()
        .map(|n| (*n, forged.to_string()))
        .chain([("forwarded", format!("for={forged};proto=https"))])
        .collect();
    let headers: Vec<(&str, &str)> = sent.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let r = envoy.get("/healthz", &headers);
    assert_eq!(r.status, 200, "{r:?}");
    let body = r.json();
    let received = body["headers"].as_object().unwrap();
    let reached: Vec<_> = received
        .iter()
        .filter(|(_, v)| v.as_str().is_some_and(|v| v.contains(forged)))
        .collect();
    assert!(
        reached.is_empty(),
        "the client's own address reached the backend: {reached:?}"
    );
    // Envoy's own record of the peer is what goes on, alone (from loopback, the host's address).
    let xff = r.echoed("x-forwarded-for").unwrap_or_default();
    assert!(
        !xff.is_empty() && !xff.contains(','),
        "x-forwarded-for: {xff}"
    );
}
