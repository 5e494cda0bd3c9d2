//! The service on PostgreSQL over TLS, with the libpq parameters of the URL:
//! against the TLS cluster (`pg_cluster`: a certificate for 127.0.0.1 from a
//! CA made for this run; connections without TLS refused) and, for a server
//! without TLS, the main test cluster. Every refusal must say what failed
//! and never repeat the URL's password.

use std::sync::Arc;
use std::time::Duration;

use authflow_auth_service::startup::spawn;

use crate::common::*;
use crate::pg_cluster::{self, fresh_tls_database};
use crate::test_pki::TestCa;

const DB_PASSWORD: &str = "db-pass-8Jr3";

/// The service's start-up error for `url` (it must not start), within 30 s.
async fn start_error(url: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path(), Some(url), |_| {});
    match tokio::time::timeout(Duration::from_secs(30), spawn(config))
        .await
        .expect("start-up hung")
    {
        Ok(_) => panic!("the service started with {url}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn verify_full_with_the_servers_ca_connects_and_serves() {
    let db = fresh_tls_database().await;
    // The cluster refuses every connection without TLS: what works here went over TLS.
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        db.url,
        db.ca_file.display()
    );
    let app = spawn_app_in(Arc::new(tempfile::tempdir().unwrap()), Some(url), |_| {}).await;
    app.verified_user("ada@example.com").await;
    let tokens = app.signin("ada@example.com", PASSWORD).await;
    let r = app.logout(&tokens).await;
    assert_eq!(r.status(), 200);
    assert_eq!(app.get("/readyz").await.status(), 200);
}

/// A certificate from a CA other than the one given: refused by
/// `verify-full`, `verify-ca`, and `require` with a root certificate (libpq
/// checks the chain then too).
#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let db = fresh_tls_database().await;
    let dir = tempfile::tempdir().unwrap();
    let other_ca = TestCa::new("someone else's CA").write_pem(dir.path(), "other-ca.pem");
    for mode in ["verify-full", "verify-ca", "require"] {
        let url = format!(
            "postgres://authflow:{DB_PASSWORD}@127.0.0.1:{}/{}?sslmode={mode}&sslrootcert={}",
            db.port,
            db.name,
            other_ca.display()
        );
        let e = start_error(&url).await;
        let shown_mode = if mode == "require" { "verify-ca" } else { mode };
        for needle in [
            format!("127.0.0.1:{} (sslmode={shown_mode})", db.port),
            "not signed by a trusted CA".into(),
            "sslrootcert".into(),
        ] {
            assert!(e.contains(&needle), "{mode}: `{needle}` missing from: {e}");
        }
        assert!(
            !e.contains(DB_PASSWORD),
            "{mode}: the password shows in: {e}"
        );
    }
}

/// `verify-full` checks the host name: the certificate names 127.0.0.1, so
/// the same server reached as `localhost` is refused.
///
/// `verify-ca` should check the chain only, but sqlx 0.8 on current rustls
/// checks the name too (sqlx issue #3793): it fails closed, with a message
/// that says so. Once the driver is fixed, this test fails here: then
/// `verify-ca` to `localhost` connects, and the README's note on it goes.
#[tokio::test]
async fn verify_full_checks_the_host_name() {
    let db = fresh_tls_database().await;
    let ca = db.ca_file.display();
    let e = start_error(&format!(
        "postgres://authflow@localhost:{}/{}?sslmode=verify-full&sslrootcert={ca}",
        db.port, db.name
    ))
    .await;
    assert!(
        e.contains("not valid for the name `localhost`")
            && e.contains("sslmode=verify-full checks the name"),
        "{e}"
    );
    let e = start_error(&format!(
        "postgres://authflow@localhost:{}/{}?sslmode=verify-ca&sslrootcert={ca}",
        db.port, db.name
    ))
    .await;
    assert!(
        e.contains("not valid for the name `localhost`")
            && e.contains("under sslmode=verify-ca too"),
        "{e}"
    );
    // By the name in the certificate, verify-ca connects.
    let url = format!("{}?sslmode=verify-ca&sslrootcert={ca}", db.url);
    let app = spawn_app_in(Arc::new(tempfile::tempdir().unwrap()), Some(url), |_| {}).await;
    assert_eq!(app.get("/readyz").await.status(), 200);
}

/// A missing root certificate file is reported before any connection is
/// tried (by its parameter: a value from the URL is not repeated).
#[tokio::test]
async fn a_missing_root_certificate_is_named() {
    let db = fresh_tls_database().await;
    let e = start_error(&format!(
        "{}?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        db.url
    ))
    .await;
    assert!(
        e.contains("sslrootcert: the file the URL names cannot be read")
            && !e.contains("/nonexistent"),
        "{e}"
    );
}

/// `require` against a server without TLS (the main test cluster) stops the
/// start with a message that says so, not a plaintext fallback.
#[tokio::test]
async fn require_fails_against_a_server_without_tls() {
    let url = pg_cluster::fresh_database().await;
    if std::env::var("AUTHFLOW_TEST_PG_URL").is_ok() {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&format!("{url}?sslmode=disable"))
            .await
            .unwrap();
        let ssl: String = sqlx::query_scalar("SHOW ssl")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        if ssl == "on" {
            eprintln!("skipped: the server of AUTHFLOW_TEST_PG_URL has TLS on");
            return;
        }
    }
    // The URL's password (the test cluster's; one made up for a server given without).
    let url = url.replacen("://authflow@", &format!("://authflow:{DB_PASSWORD}@"), 1);
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, password)| password.to_owned())
        .unwrap();
    let e = start_error(&format!("{url}?sslmode=require")).await;
    assert!(
        e.contains("does not offer TLS") && e.contains("sslmode=require"),
        "{e}"
    );
    assert!(!e.contains(&password), "the password shows in: {e}");
}
