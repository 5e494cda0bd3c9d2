//! Envoy's connections to the auth service, as `envoy/local.yaml` ships them,
//! with the real service: Envoy must be the side that drops an idle one. The
//! service closes a keep-alive connection that sends no request for 10 s
//! (its slow-client guard); a request Envoy sent on such a connection at that
//! moment would fail with 503, so Envoy's idle timeout must come first.
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use support::stack::ShippedGateway;
use support::*;

/// The shipped local configuration's issuer: its filter configuration is used unchanged.
const ISSUER: &str = "http://127.0.0.1:8081";
/// A public route of the shipped configuration that goes to the auth service.
const AUTH_ROUTE: &str = "/.well-known/jwks.json";

/// One counter of Envoy's `authflow_auth` cluster.
fn auth_cluster_stat(envoy: &Envoy, name: &str) -> u64 {
    let full = format!("cluster.authflow_auth.{name}");
    let r = get(
        &format!(
            "http://127.0.0.1:{}/stats?filter=^{}$",
            envoy.admin_port,
            full.replace('.', "\\.")
        ),
        &[],
    );
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{full}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {full} in Envoy's stats: {}", r.body))
}

#[test]
fn envoy_drops_an_idle_connection_to_the_auth_service_before_the_service_does() {
    let gateway = ShippedGateway::start(ISSUER, &[]);
    let envoy = &gateway.envoy;

    let first = envoy.get(AUTH_ROUTE, &[]);
    assert_eq!(first.status, 200, "{}", first.body);
    // Past Envoy's idle timeout and past the service's: whichever side is
    // shorter has closed the connection by now.
    std::thread::sleep(Duration::from_secs(11));
    assert_eq!(
        auth_cluster_stat(envoy, "upstream_cx_destroy_remote"),
        0,
        "the auth service closed a connection Envoy still held as reusable"
    );
    assert!(
        auth_cluster_stat(envoy, "upstream_cx_idle_timeout") >= 1,
        "Envoy closed no idle connection to the auth service"
    );
    let again = envoy.get(AUTH_ROUTE, &[]);
    assert_eq!(again.status, 200, "{}", again.body);
}
