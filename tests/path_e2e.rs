//! End to end: request paths, header spellings and repeated headers as a
//! hostile client sends them, byte for byte over a TCP socket (nothing on the
//! way normalizes), through the real Envoy with the built `authflow.wasm` and
//! the echo backend, which reports the path and headers it received.
//!
//! Every path test runs twice: with the HTTP connection manager settings the
//! shipped configs use (`normalize_path`, `merge_slashes`, escaped slashes
//! rejected, underscore headers rejected) and without them, to show that the
//! filter alone holds.
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use authflow_contract::AccessClaims;
use authflow_echo::EchoServer;
use jwt_simple::prelude::*;
use serde_json::{json, Value};
use support::*;

const ISS: &str = "https://auth.path.test";

/// What the shipped Envoy configs set on every HTTP connection manager.
fn shipped_hcm_settings() -> Value {
    json!({
        "normalize_path": true,
        "merge_slashes": true,
        "path_with_escaped_slashes_action": "REJECT_REQUEST",
        "common_http_protocol_options": {"headers_with_underscores_action": "REJECT_REQUEST"}
    })
}

fn token(key: &Ed25519KeyPair, subject: &str, roles: &[&str]) -> String {
    let jti = format!("jti-{subject}");
    let c = claims_for(user_with_roles(roles), ISS, subject, Some(&jti));
    key.sign(c).unwrap()
}

/// The rule set under test: `admin_match` is `prefix` or `path_prefix`.
fn filter_config(key: &Ed25519KeyPair, admin_match: &str, extra: Value) -> Value {
    let mut c = json!({
        "providers": [{
            "name": "path", "issuer": ISS, "audiences": ["api"], "algorithms": ["EdDSA"],
            "jwks": {"inline": serde_json::from_str::<Value>(&jwks_of(&[key.public_key().to_jwk()])).unwrap()}
        }],
        "token_sources": {"authorization_bearer": true, "cookies": ["access_token"]},
        "routes": [
            {"match": {"prefix": "/public"}, "policy": "public"},
            {"match": {"exact": "/healthz"}, "policy": "public"},
            {"match": {admin_match: "/api/admin"}, "policy": {"roles_any": ["admin"]}}
        ],
        "identity_headers": {"subject": "x-auth-user", "roles": "x-auth-roles", "scopes": "x-auth-scopes", "session": "x-auth-session"}
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

/// Envoy with the filter in front of the echo backend, with `hcm` fields
/// added to its HTTP connection manager.
fn start(filter: Value, backend: &EchoServer, hcm: &Value) -> Envoy {
    let clusters = vec![("backend".to_owned(), backend.addr.port())];
    Envoy::start_doc(1, |port, admin_port| {
        let mut doc = envoy_config(&filter, &clusters, port, admin_port);
        let manager = &mut doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
            [0]["typed_config"];
        for (k, v) in hcm.as_object().into_iter().flatten() {
            manager[k] = v.clone();
        }
        doc
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// A response read off the socket.
#[derive(Debug)]
struct Raw {
    status: u16,
    body: String,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    /// The path the echo backend received (only for a forwarded request).
    fn received_path(&self) -> String {
        self.json()["path"]
            .as_str()
            .unwrap_or_else(|| panic!("not an echo answer: {self:?}"))
            .to_owned()
    }
    fn echoed(&self, name: &str) -> Option<String> {
        self.json()["headers"][name].as_str().map(str::to_owned)
    }
}

/// Sends a request exactly as written: `target` and every header line go out
/// byte for byte (as `curl --path-as-is` would, and more).
fn send_raw(port: u16, target: &str, headers: &[(&str, &str)]) -> Raw {
    send_raw_request(port, "GET", target, headers, None)
}

/// Like [`send_raw`], any method, with an optional JSON body.
fn send_raw_request(
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Raw {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    let body = body.map(Value::to_string).unwrap_or_default();
    if !body.is_empty() {
        req.push_str(&format!(
            "content-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    s.write_all(req.as_bytes()).unwrap();
    let text = read_response(&mut s);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line for {target:?}: {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Raw { status, body }
}

/// One response: up to the end of its body (by `content-length` or the last
/// chunk), without waiting for the server to close the connection.
fn read_response(s: &mut std::net::TcpStream) -> String {
    let mut resp = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&resp).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let head = head.to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            let done = match length {
                Some(n) => body.len() >= n,
                None if head.contains("transfer-encoding: chunked") => body.ends_with("0\r\n\r\n"),
                None => false,
            };
            if done {
                return text;
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&resp).into_owned(),
            Ok(n) => resp.extend_from_slice(&buf[..n]),
        }
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

// ---- the oracle: what a lenient backend could make of the path it received ----

/// Policy strength: 0 public, 1 any valid token, 2 the admin role.
fn needed(reading: &str, segment_prefix: bool) -> u8 {
    let admin = if segment_prefix {
        reading == "/api/admin" || reading.starts_with("/api/admin/")
    } else {
        reading.starts_with("/api/admin")
    };
    if reading.starts_with("/public") || reading == "/healthz" {
        0
    } else if admin {
        2
    } else {
        1
    }
}

fn percent_decode_once(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

fn strip_params(s: &str) -> String {
    s.split('/')
        .map(|seg| seg.split(';').next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("/")
}

fn merge_slashes(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

fn resolve_dots(s: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segs: Vec<&str> = s.trim_start_matches('/').split('/').collect();
    let last = segs.len() - 1;
    for (i, seg) in segs.iter().enumerate() {
        match *seg {
            "." if i == last => out.push(""),
            "." => {}
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

/// Every reading a backend might act on: escapes decoded 0–3 times, `;`
/// parameters dropped before or after decoding or kept, `\` as `/`, cut at a
/// control character or a decoded `?` or `#`, case folded or not, slashes merged before or after dot
/// segments are resolved.
fn backend_readings(received: &str) -> Vec<String> {
    let path = received.split(['?', '#']).next().unwrap_or("");
    let mut out = vec![path.to_owned()];
    for path in [path.to_owned(), lenient_spellings(path)] {
        readings_of(&path, &mut out);
    }
    // Windows: a segment's trailing dots and spaces are not part of its name.
    let windows: Vec<String> = out
        .iter()
        .map(|r| {
            r.split('/')
                .map(|seg| match seg.trim_end_matches(['.', ' ']) {
                    "" => seg,
                    trimmed => trimmed,
                })
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect();
    out.extend(windows.iter().map(|w| resolve_dots(&merge_slashes(w))));
    out
}

/// What the most lenient decoders make of a few escapes: overlong UTF-8 of
/// `/`, `.` and `\` (old IIS and Tomcat), and the letters Java's and .NET's
/// case-insensitive comparisons take for `i` (`ı`, `İ`).
fn lenient_spellings(path: &str) -> String {
    let mut s = path.to_owned();
    for (from, to) in [
        ("%C0%AF", "/"),
        ("%E0%80%AF", "/"),
        ("%C0%AE", "."),
        ("%C1%9C", "\\"),
        ("%C4%B1", "i"),
        ("%C4%B0", "i"),
    ] {
        for spelled in [from.to_owned(), from.to_ascii_lowercase()] {
            s = s.replace(&spelled, to);
        }
    }
    s
}

fn readings_of(path: &str, out: &mut Vec<String>) {
    for rounds in 0..=3 {
        for params in 0..3 {
            let mut s = if params == 1 {
                strip_params(path)
            } else {
                path.to_owned()
            };
            for _ in 0..rounds {
                s = String::from_utf8_lossy(&percent_decode_once(s.as_bytes())).into_owned();
            }
            if params == 2 {
                s = strip_params(&s);
            }
            s = s.replace('\\', "/");
            // A NUL ends a C string; a decoded `?` or `#` ends the path for a
            // hop that splits it again.
            if let Some(at) = s.find(|c: char| c.is_control() || c == '?' || c == '#') {
                s.truncate(at);
            }
            for lower in [false, true] {
                let s = if lower {
                    s.to_ascii_lowercase()
                } else {
                    s.clone()
                };
                out.push(resolve_dots(&merge_slashes(&s)));
                out.push(merge_slashes(&resolve_dots(&s)));
            }
        }
    }
}

fn strongest_need(received: &str, segment_prefix: bool) -> (u8, String) {
    backend_readings(received)
        .into_iter()
        .map(|r| (needed(&r, segment_prefix), r))
        .max_by_key(|(n, _)| *n)
        .unwrap()
}

/// Spellings of the admin area (and of ways into it from public routes).
const SPELLINGS: &[&str] = &[
    "/api/admin",
    "/api/admin/",
    "/api/admin/users",
    "/api/x/../admin",
    "/api/x/../admin/users",
    "/api/./admin",
    "/api/././admin/users",
    "/api//admin",
    "//api/admin",
    "/api///admin/users",
    "/api/%61dmin",
    "/api/adm%69n/users",
    "/%61pi/admin",
    "/api%2Fadmin",
    "/api%2fadmin/users",
    "/api%5Cadmin",
    "/api\\admin",
    "/api;x/admin",
    "/api/admin;x",
    "/api/admin;jsessionid=1/users",
    "/api/%2561dmin",
    "/api%252Fadmin",
    "/api/x/%2e%2e/admin",
    "/api/x/%2E%2E/admin",
    "/api/x/.%2e/admin",
    "/api/x/..%2Fadmin",
    "/api/x%2F..%2Fadmin",
    "/api/x/..%5Cadmin",
    "/API/admin",
    "/api/ADMIN/users",
    "/Api/Admin",
    "/api/admin%00",
    "/api/admin%00/users",
    "/api/admin%0a",
    "/api/admin%3F",
    "/api/admin%3fx=1",
    "/api/admin%23",
    "/api/admin%253F/users",
    "/api/admin%2F",
    "/api/admin%zz",
    "/api/%zzadmin",
    "/api/admin%",
    "/api/%u0061dmin",
    "/api/admin?x=1",
    "/api/items?next=/api/admin",
    "/public/../api/admin",
    "/public/..;/api/admin",
    "/public/..%2Fapi/admin",
    "/public/%2e%2e/api/admin",
    "/public%2F..%2Fapi%2Fadmin",
    "/public/..%252Fapi/admin",
    "/api%2Fadmin/%252e%252e/x",
    "/api%252Fadmin/%25252e%25252e/x",
    "/healthz/../api/admin",
    "/healthz;/../api/admin",
    "/public\\..\\api\\admin",
    "/public/x/../../api/admin",
    "/api/adminx",
    "/api/items/a%2Fb",
    "/api/adm%C4%B1n",
    "/api/adm%C4%B0n/users",
    "/public/..%C0%AF../api/admin",
    "/api%C0%AFadmin",
    "/api%E0%80%AFadmin/users",
    "/public/%C0%AE%C0%AE/api/admin",
    "/api/admin.",
    "/api/admin%20",
    "/api./admin/users",
    "/api/admin.json",
];

/// Sends every spelling with no token, a user token and an admin token, and
/// checks the rule: whatever is forwarded was decided with a policy at least
/// as strong as the one the backend's path needs, however it reads it.
/// Returns the statuses seen with the user token, by spelling.
fn run_table(
    envoy: &Envoy,
    user: &str,
    admin: &str,
    segment_prefix: bool,
    label: &str,
) -> Vec<(&'static str, u16)> {
    let mut user_statuses = Vec::new();
    let mut forwarded = 0;
    for &spelling in SPELLINGS {
        for (rank, tok) in [(0u8, None), (1, Some(user)), (2, Some(admin))] {
            let auth = tok.map(|t| format!("Bearer {t}"));
            let headers: Vec<(&str, &str)> =
                auth.iter().map(|a| ("authorization", a.as_str())).collect();
            let r = send_raw(envoy.port, spelling, &headers);
            if rank == 1 {
                user_statuses.push((spelling, r.status));
            }
            match r.status {
                400 | 401 | 403 | 404 => {
                    if r.status == 400 && r.body.starts_with('{') {
                        assert_eq!(
                            r.json()["error"],
                            "invalid_request",
                            "{label}: 400 for {spelling:?} is RFC 6750 shaped: {r:?}"
                        );
                    }
                }
                200 => {
                    forwarded += 1;
                    let received = r.received_path();
                    let (need, reading) = strongest_need(&received, segment_prefix);
                    assert!(
                        need <= rank,
                        "{label}: {spelling:?} with a rank-{rank} token was forwarded as {received:?}, which a backend may read as {reading:?} (needs rank {need})"
                    );
                }
                other => panic!("{label}: {spelling:?} answered {other}: {r:?}"),
            }
        }
    }
    assert!(
        forwarded >= 20,
        "{label}: the table must also show legitimate requests passing ({forwarded} forwarded)"
    );
    user_statuses
}

fn status_of(table: &[(&str, u16)], spelling: &str) -> u16 {
    table
        .iter()
        .find(|(s, _)| *s == spelling)
        .map(|(_, c)| *c)
        .unwrap()
}

fn check_table(hcm: &Value, admin_match: &str, label: &str) -> Vec<(&'static str, u16)> {
    let key = Ed25519KeyPair::generate().with_key_id("k1");
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let envoy = start(filter_config(&key, admin_match, json!({})), &backend, hcm);
    let user = token(&key, "alice", &["user"]);
    let admin = token(&key, "root", &["admin"]);
    // The canonical spellings behave as configured.
    assert_eq!(
        send_raw(
            envoy.port,
            "/api/admin",
            &[("authorization", &format!("Bearer {admin}"))]
        )
        .status,
        200,
        "{label}"
    );
    assert_eq!(
        send_raw(
            envoy.port,
            "/api/admin/users",
            &[("authorization", &format!("Bearer {user}"))]
        )
        .status,
        403,
        "{label}"
    );
    assert_eq!(
        send_raw(
            envoy.port,
            "/api/items/1",
            &[("authorization", &format!("Bearer {user}"))]
        )
        .status,
        200,
        "{label}"
    );
    assert_eq!(
        send_raw(envoy.port, "/public/page", &[]).status,
        200,
        "{label}"
    );
    let table = run_table(&envoy, &user, &admin, admin_match == "path_prefix", label);
    // Harmless spellings are not refused just for looking odd.
    assert_eq!(
        status_of(&table, "/api/items?next=/api/admin"),
        200,
        "{label}"
    );
    table
}

#[test]
fn path_spellings_never_reach_a_stronger_policy_filter_alone() {
    let table = check_table(&json!({}), "prefix", "filter alone, prefix");
    // `%2F` in an id under a rule whose decision it does not change passes.
    assert_eq!(status_of(&table, "/api/items/a%2Fb"), 200);
}

#[test]
fn path_spellings_never_reach_a_stronger_policy_with_envoy_normalization() {
    check_table(
        &shipped_hcm_settings(),
        "prefix",
        "shipped Envoy settings, prefix",
    );
}

#[test]
fn segment_prefix_rules_filter_alone_and_with_envoy_normalization() {
    for (hcm, label) in [
        (json!({}), "filter alone, path_prefix"),
        (
            shipped_hcm_settings(),
            "shipped Envoy settings, path_prefix",
        ),
    ] {
        let table = check_table(&hcm, "path_prefix", label);
        // `path_prefix` stops at a segment boundary: /api/adminx is not the admin area.
        assert_eq!(status_of(&table, "/api/adminx"), 200, "{label}");
        assert_eq!(status_of(&table, "/api/admin/users"), 403, "{label}");
        assert_eq!(status_of(&table, "/api/admin"), 403, "{label}");
    }
}

#[test]
fn ambiguous_paths_are_refused_with_an_rfc6750_body() {
    let key = Ed25519KeyPair::generate().with_key_id("k1");
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let envoy = start(
        filter_config(&key, "path_prefix", json!({})),
        &backend,
        &json!({}),
    );
    let user = format!("Bearer {}", token(&key, "alice", &["user"]));
    for spelling in [
        "/api%2Fadmin",
        "/api;x/admin",
        "/api/%2561dmin",
        "/public/..;/api/admin",
        "/API/admin",
        "/api/admin%zz",
    ] {
        let r = send_raw(envoy.port, spelling, &[("authorization", &user)]);
        assert_eq!(r.status, 400, "{spelling}: {r:?}");
        assert_eq!(r.json()["error"], "invalid_request", "{spelling}");
        assert!(
            r.json()["error_description"]
                .as_str()
                .unwrap_or("")
                .contains("path"),
            "{spelling}: {r:?}"
        );
    }
}

/// One HTTP/2 request (prior knowledge, no TLS) whose `:path` goes out as
/// exactly these bytes (HPACK literals, no Huffman coding): HTTP/1's codec
/// refuses bytes above 0x7F in a request target, HTTP/2's lets them through.
/// The answer's `:status` when Envoy sends it from the static table (200,
/// 400, ...), else 0.
fn send_h2(port: u16, path: &[u8], headers: &[(&str, &str)]) -> u16 {
    fn frame(s: &mut std::net::TcpStream, kind: u8, flags: u8, payload: &[u8]) {
        let len = payload.len();
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            flags,
            0,
            0,
            0,
            1,
        ];
        if kind == 0x4 {
            f[8] = 0; // SETTINGS: stream 0
        }
        f.extend_from_slice(payload);
        s.write_all(&f).unwrap();
    }
    fn string(block: &mut Vec<u8>, bytes: &[u8]) {
        // A 7-bit prefix integer (RFC 7541 §5.1), no Huffman coding.
        let mut n = bytes.len();
        if n < 127 {
            block.push(n as u8);
        } else {
            block.push(127);
            n -= 127;
            while n >= 128 {
                block.push((n % 128 + 128) as u8);
                n /= 128;
            }
            block.push(n as u8);
        }
        block.extend_from_slice(bytes);
    }
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    frame(&mut s, 0x4, 0, &[]);
    let mut block = Vec::new();
    let fields = [
        (b":method".as_slice(), b"GET".as_slice()),
        (b":scheme", b"http"),
        (b":authority", b"127.0.0.1"),
        (b":path", path),
    ];
    let extra = headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
    for (name, value) in fields.into_iter().chain(extra) {
        block.push(0x00); // literal without indexing, new name
        string(&mut block, name);
        string(&mut block, value);
    }
    frame(&mut s, 0x1, 0x5, &block); // HEADERS, END_STREAM | END_HEADERS
    loop {
        let mut head = [0u8; 9];
        if s.read_exact(&mut head).is_err() {
            return 0;
        }
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).unwrap();
        let stream = u32::from_be_bytes([head[5] & 0x7f, head[6], head[7], head[8]]);
        match (head[3], stream) {
            (0x4, 0) if head[4] & 1 == 0 => frame(&mut s, 0x4, 1, &[]), // SETTINGS ACK
            (0x1, 1) => {
                return match payload.first() {
                    Some(0x88) => 200,
                    Some(0x8c) => 400,
                    Some(0x8d) => 404,
                    Some(0x8e) => 500,
                    _ => 0,
                };
            }
            (0x3, 1) | (0x7, _) => return 0, // RST_STREAM, GOAWAY
            _ => {}
        }
    }
}

/// `:path` in bytes that are not UTF-8, over HTTP/2: in the query they pass
/// `normalize_path`, and the filter read the path as U+FFFD, matched no rule
/// and decided on the default policy (public here: no token at all), while
/// the backend routes `/api/admin/users`. Refused by the filter, with and
/// without Envoy's normalization.
#[test]
fn a_path_in_bytes_that_are_not_utf8_is_refused_over_http2() {
    let key = Ed25519KeyPair::generate().with_key_id("k1");
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    for hcm in [shipped_hcm_settings(), json!({})] {
        let envoy = start(
            filter_config(&key, "path_prefix", json!({"default_policy": "public"})),
            &backend,
            &hcm,
        );
        assert_eq!(send_h2(envoy.port, b"/public?q=x", &[]), 200, "{hcm}");
        let before = envoy.stat("denied.ambiguous_path");
        assert_eq!(
            send_h2(envoy.port, b"/api/admin/users?q=\xff", &[]),
            400,
            "{hcm}"
        );
        assert_eq!(
            envoy.stat("denied.ambiguous_path"),
            before + 1,
            "{hcm}: refused by the filter, not by Envoy's codec"
        );
    }
}

/// A `POST` naming another method (`X-HTTP-Method-Override`, `_method`), as
/// Rails, Laravel, Symfony, Express, ASP.NET Core and Spring run it, is
/// judged as that method too: where a rule on `DELETE` asks for more, it is
/// refused, with headers read by name as with the whole map.
#[test]
fn a_method_override_does_not_reach_a_stronger_rule() {
    let key = Ed25519KeyPair::generate().with_key_id("k1");
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let routes = json!([
        {"match": {"path_prefix": "/api/items", "methods": ["DELETE"]}, "policy": {"roles_any": ["admin"]}},
        {"match": {"path_prefix": "/api/items"}, "policy": "authenticated"}
    ]);
    let user = format!("Bearer {}", token(&key, "alice", &["user"]));
    for (reads, extra) in [
        ("the whole map", json!({"routes": routes})),
        (
            "headers by name",
            json!({"routes": routes, "token_sources": {"authorization_bearer": true}, "forward_device_secret": true}),
        ),
    ] {
        let envoy = start(
            filter_config(&key, "path_prefix", extra),
            &backend,
            &json!({}),
        );
        let send = |target: &str, headers: &[(&str, &str)]| {
            let mut all = vec![("authorization", user.as_str())];
            all.extend_from_slice(headers);
            send_raw_request(envoy.port, "POST", target, &all, Some(&json!({})))
        };
        assert_eq!(
            send("/api/items/1", &[]).status,
            200,
            "{reads}: a plain POST"
        );
        for (target, headers) in [
            ("/api/items/1", &[("X-HTTP-Method-Override", "DELETE")][..]),
            ("/api/items/1", &[("x-method-override", "delete")]),
            ("/api/items/1?_method=DELETE", &[]),
        ] {
            let r = send(target, headers);
            assert_eq!(r.status, 400, "{reads}: {target} {headers:?}: {r:?}");
            assert_eq!(r.json()["error"], "invalid_request");
        }
    }
}

/// A request for a public path or host that names an admin one in
/// `X-Original-URL`, `X-Rewrite-URL`, `X-Forwarded-Host` or `Forwarded`
/// (headers some backends route by) is refused, as Envoy passes them on.
#[test]
fn a_path_or_host_named_in_headers_does_not_reach_a_stronger_rule() {
    let key = Ed25519KeyPair::generate().with_key_id("k1");
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let routes = json!([
        {"match": {"prefix": "/", "host": "admin.example"}, "policy": {"roles_any": ["admin"]}},
        {"match": {"path_prefix": "/api/admin"}, "policy": {"roles_any": ["admin"]}},
        {"match": {"prefix": "/public"}, "policy": "public"}
    ]);
    let envoy = start(
        filter_config(&key, "path_prefix", json!({"routes": routes})),
        &backend,
        &json!({}),
    );
    let user = format!("Bearer {}", token(&key, "alice", &["user"]));
    let ok = send_raw(envoy.port, "/public/x", &[("x-original-url", "/public/y")]);
    assert_eq!(ok.status, 200, "{ok:?}");
    for headers in [
        &[("X-Original-URL", "/api/admin/users")][..],
        &[("x-rewrite-url", "/api/%61dmin")],
        &[("X-Forwarded-Host", "admin.example")],
        &[("forwarded", "for=192.0.2.1;host=admin.example")],
    ] {
        for token in [None, Some(user.as_str())] {
            let mut all = headers.to_vec();
            all.extend(token.map(|t| ("authorization", t)));
            let r = send_raw(envoy.port, "/public/x", &all);
            assert_eq!(r.status, 400, "{all:?}: {r:?}");
            assert_eq!(r.json()["error"], "invalid_request");
        }
    }
}

/// Every `_`/`-` spelling of the identity headers a client sent, as the echo
/// backend received them (it lower-cases names).
fn forged_spellings_received(r: &Raw) -> Vec<String> {
    let headers = r.json()["headers"].as_object().cloned().unwrap_or_default();
    headers
        .keys()
        .filter(|k| k.replace('_', "-").starts_with("x-auth-") && k.contains('_'))
        .cloned()
        .collect()
}

#[test]
fn underscore_spellings_of_identity_headers_never_reach_the_backend() {
    let key = Ed25519KeyPair::generate().with_key_id("k1");
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let user = format!("Bearer {}", token(&key, "alice", &["user"]));
    let forged = [
        ("x_auth_user", "admin"),
        ("x_auth_roles", "admin"),
        ("x-auth_session", "s"),
        ("x_auth-scopes", "all"),
        ("X_Auth_User", "root"),
    ];
    // Bearer only: the filter reads a few headers by name and removes every spelling by name.
    // A token header configured by name: it reads the whole map and removes what is there.
    let reads = [
        json!({"token_sources": {"authorization_bearer": true}}),
        json!({"token_sources": {"headers": ["x-token"]}}),
    ];
    let settings = [
        (json!({}), "filter alone"),
        (shipped_hcm_settings(), "shipped Envoy settings"),
    ];
    for ((hcm, label), extra) in settings
        .iter()
        .flat_map(|s| reads.iter().map(move |r| (s, r)))
    {
        let label = *label;
        let envoy = start(
            filter_config(&key, "path_prefix", extra.clone()),
            &backend,
            hcm,
        );
        for (path, auth) in [
            ("/public/page", None),
            ("/healthz", None),
            ("/api/items/1", Some(user.as_str())),
        ] {
            let mut headers: Vec<(&str, &str)> = forged.to_vec();
            headers.extend(auth.map(|a| ("authorization", a)));
            let r = send_raw(envoy.port, path, &headers);
            if label == "filter alone" {
                assert_eq!(r.status, 200, "{label} {path}: {r:?}");
                assert_eq!(
                    forged_spellings_received(&r),
                    Vec::<String>::new(),
                    "{label} {path}: {r:?}"
                );
                let expected_user = auth.map(|_| "alice".to_owned());
                assert_eq!(r.echoed("x-auth-user"), expected_user, "{label} {path}");
            } else {
                // Envoy refuses the request before the filter sees it.
                assert_eq!(r.status, 400, "{label} {path}: {r:?}");
            }
        }
    }
}

/// A section of identity headers of one's own replaced the defaults, and the
/// default names it left out were neither set nor removed: a client's
/// `x-auth-roles: admin` reached a backend that still read it by habit. The
/// default names are the filter's in every configuration.
#[test]
fn default_identity_names_left_out_of_a_custom_section_never_reach_the_backend() {
    let key = Ed25519KeyPair::generate().with_key_id("k1");
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let user = format!("Bearer {}", token(&key, "alice", &["user"]));
    let forged = [
        ("x-auth-user", "admin"),
        ("x-auth-roles", "admin"),
        ("x_auth_scopes", "all"),
        ("x-auth-session", "s"),
        ("X-Auth-Client-Id", "svc:billing"),
        ("x_auth_issuer", "https://evil.example"),
    ];
    let sections = [
        json!({"subject": "x-user"}),
        json!({"claims": {"sub": "x-who"}}),
        json!({}),
    ];
    let reads = [
        json!({"authorization_bearer": true}),
        json!({"headers": ["x-token"]}),
    ];
    for (section, sources) in sections
        .iter()
        .flat_map(|s| reads.iter().map(move |r| (s, r)))
    {
        let envoy = start(
            filter_config(
                &key,
                "path_prefix",
                json!({"identity_headers": section, "token_sources": sources}),
            ),
            &backend,
            &json!({}),
        );
        for (path, auth) in [
            ("/public/page", None),
            ("/api/items/1", Some(user.as_str())),
        ] {
            let mut headers: Vec<(&str, &str)> = forged.to_vec();
            headers.extend(auth.map(|a| ("authorization", a)));
            let r = send_raw(envoy.port, path, &headers);
            assert_eq!(r.status, 200, "{section} {sources} {path}: {r:?}");
            let received: Vec<String> = r.json()["headers"]
                .as_object()
                .cloned()
                .unwrap_or_default()
                .keys()
                .filter(|k| k.replace('_', "-").starts_with("x-auth-"))
                .cloned()
                .collect();
            assert_eq!(received, Vec::<String>::new(), "{section} {sources} {path}");
        }
        let r = send_raw(envoy.port, "/api/items/1", &[("authorization", &user)]);
        if section.get("subject").is_some() {
            assert_eq!(r.echoed("x-user").as_deref(), Some("alice"), "{section}");
        }
    }
}

// ---- repeated cookies, device secret, repeated fingerprint headers ----

fn cookie_config(key: &Ed25519KeyPair) -> Value {
    filter_config(
        key,
        "path_prefix",
        json!({"token_sources": {"authorization_bearer": true, "cookies": ["access_token"]}}),
    )
}

#[test]
fn every_cookie_header_is_read_and_two_tokens_are_refused() {
    let key = Ed25519KeyPair::generate().with_key_id("k1");
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let user = token(&key, "alice", &["user"]);
    let admin = token(&key, "root", &["admin"]);
    for (hcm, label) in [
        (json!({}), "filter alone"),
        (shipped_hcm_settings(), "shipped Envoy settings"),
    ] {
        let envoy = start(cookie_config(&key), &backend, &hcm);
        let bearer = format!("Bearer {user}");
        let second = format!("access_token={admin}");
        // A token in a second Cookie header is seen: alone it is used …
        let r = send_raw(
            envoy.port,
            "/api/admin",
            &[("cookie", "a=1"), ("cookie", &second)],
        );
        assert_eq!(r.status, 200, "{label}: {r:?}");
        assert_eq!(r.echoed("x-auth-user").as_deref(), Some("root"), "{label}");
        // … but next to a bearer token the explicit token is the identity (a browser sends
        // its cookies with a page's own API call): the cookie's admin cannot lend its roles,
        // and the cookie token does not reach the backend.
        let r = send_raw(
            envoy.port,
            "/api/items/1",
            &[
                ("authorization", &bearer),
                ("cookie", "a=1"),
                ("cookie", &second),
            ],
        );
        assert_eq!(r.status, 200, "{label}: {r:?}");
        assert_eq!(r.echoed("x-auth-user").as_deref(), Some("alice"), "{label}");
        assert!(
            !r.body.contains(&admin),
            "{label}: the cookie token is not forwarded: {r:?}"
        );
        let r = send_raw(
            envoy.port,
            "/api/admin",
            &[
                ("authorization", &bearer),
                ("cookie", "a=1"),
                ("cookie", &second),
            ],
        );
        assert_eq!(
            r.status, 403,
            "{label}: the bearer user is no admin, whatever the cookie says: {r:?}"
        );
        // Two values for the cookie in one header, or across headers.
        let both = format!("access_token={user}; access_token={admin}");
        let r = send_raw(envoy.port, "/api/items/1", &[("cookie", &both)]);
        assert_eq!(r.status, 400, "{label}: {r:?}");
        let first = format!("access_token={user}");
        let r = send_raw(
            envoy.port,
            "/api/items/1",
            &[("cookie", &first), ("cookie", &second)],
        );
        assert_eq!(r.status, 400, "{label}: {r:?}");
        // The same token twice is one identity.
        let r = send_raw(
            envoy.port,
            "/api/items/1",
            &[
                ("authorization", &bearer),
                ("cookie", &first),
                ("cookie", &first),
            ],
        );
        assert_eq!(r.status, 200, "{label}: {r:?}");
        assert_eq!(r.echoed("x-auth-user").as_deref(), Some("alice"), "{label}");
    }
}

const UA: &str = "agent-one";

#[test]
fn an_empty_device_header_does_not_hide_the_device_cookie() {
    use authflow_contract::fingerprint::{FingerprintInput, DEVICE_COOKIE, DEVICE_HEADER};
    let key = Ed25519KeyPair::generate().with_key_id("k1");
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let secret = "device-secret-0123456789";
    let dfp = FingerprintInput {
        secret,
        attributes: vec![("user-agent", UA)],
    }
    .hash();
    let custom = AccessClaims {
        dfp: Some(dfp),
        ..user_with_roles(&["user"])
    };
    let c = claims_for(custom, ISS, "alice", None);
    let bound = format!("Bearer {}", key.sign(c).unwrap());
    let filter = filter_config(
        &key,
        "path_prefix",
        json!({"device_binding": {"mode": "enforce", "attributes": ["user-agent"]}}),
    );
    let envoy = start(filter, &backend, &json!({}));
    let cookie = format!("{DEVICE_COOKIE}={secret}");
    let r = send_raw(
        envoy.port,
        "/api/items/1",
        &[
            ("authorization", &bound),
            ("user-agent", UA),
            (DEVICE_HEADER, ""),
            ("cookie", &cookie),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    // The secret in a second Cookie header counts too.
    let r = send_raw(
        envoy.port,
        "/api/items/1",
        &[
            ("authorization", &bound),
            ("user-agent", UA),
            ("cookie", "a=1"),
            ("cookie", &cookie),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    // Another secret still fails.
    let r = send_raw(
        envoy.port,
        "/api/items/1",
        &[
            ("authorization", &bound),
            ("user-agent", UA),
            (DEVICE_HEADER, "another-secret"),
        ],
    );
    assert_eq!(r.status, 401, "{r:?}");
}

/// Sign-in at the real auth service with `User-Agent` and `Accept-Language`
/// each sent twice (as the service receives them from a proxy that does not
/// combine them), then the token through Envoy with the same headers: the
/// filter's fingerprint input equals the service's.
#[test]
fn repeated_fingerprint_headers_fingerprint_the_same_on_both_sides() {
    use authflow_contract::fingerprint::DEVICE_HEADER;
    const ISSUER: &str = "http://authflow.path.e2e";
    let auth = AuthService::start(ISSUER, &[]);
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let filter = json!({
        "providers": [{
            "name": "authflow", "issuer": ISSUER, "audiences": ["authflow-demo"], "algorithms": ["EdDSA", "ES256"],
            "jwks": {"remote": {"cluster": "authflow_auth", "path": "/.well-known/jwks.json", "refresh_interval_secs": 60}}
        }],
        "device_binding": {"mode": "enforce", "attributes": ["user-agent", "accept-language"]}
    });
    let clusters = vec![
        ("backend".to_owned(), backend.addr.port()),
        ("authflow_auth".to_owned(), auth.port),
    ];
    let envoy = Envoy::start_doc(1, |port, admin_port| {
        envoy_config(&filter, &clusters, port, admin_port)
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let device = [
        ("user-agent", UA),
        ("user-agent", "agent-two"),
        ("accept-language", "en"),
        ("accept-language", "fr"),
    ];
    let post =
        |path: &str, body: Value| send_raw_request(auth.port, "POST", path, &device, Some(&body));
    let (email, password) = ("repeat@e2e.test", "correct-horse-battery-staple-42");
    assert_eq!(
        post(
            "/v1/auth/signup",
            json!({"email": email, "password": password})
        )
        .status,
        201
    );
    let verify = auth.latest_mail(email, "Verify", "token");
    assert_eq!(
        post("/v1/auth/verify-email", json!({"token": verify})).status,
        200
    );
    let r = post(
        "/v1/auth/signin",
        json!({"email": email, "password": password}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let challenge = r.json()["challenge_id"].as_str().unwrap().to_owned();
    let code = auth.latest_mail(email, "sign-in code", "code");
    let r = post(
        "/v1/auth/signin/verify",
        json!({"challenge_id": challenge, "code": code}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let (access, secret) = (
        r.json()["access_token"].as_str().unwrap().to_owned(),
        r.json()["device_secret"].as_str().unwrap().to_owned(),
    );
    let bearer = format!("Bearer {access}");
    let mut headers = device.to_vec();
    headers.extend([
        ("authorization", bearer.as_str()),
        (DEVICE_HEADER, secret.as_str()),
    ]);
    let mut last = None;
    let ok = eventually(Duration::from_secs(10), || {
        let r = send_raw(envoy.port, "/api/items/1", &headers);
        let done = r.status == 200;
        last = Some(r);
        done
    });
    assert!(ok, "the device that signed in is refused: {last:?}");
    // The service agrees with itself, and a device with only the first copies is another device.
    let r = send_raw(
        envoy.port,
        "/api/items/1",
        &[
            ("authorization", &bearer),
            (DEVICE_HEADER, &secret),
            ("user-agent", UA),
            ("accept-language", "en"),
        ],
    );
    assert_eq!(r.status, 401, "{r:?}");
}
