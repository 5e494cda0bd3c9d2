//! Test harness for end-to-end tests: the real Envoy binary with the built
//! `authflow.wasm`, a JWKS server and an echo backend, all on 127.0.0.1;
//! `stack`: all of it with the real auth service and signed-in users.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code)]

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub mod link;
pub mod stack;
mod tokens;
#[allow(unused_imports)] // not every test binary signs tokens
pub use tokens::*;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `AUTHFLOW_ENVOY`, else the project venv's Envoy (`make test` installs it).
pub fn envoy_bin() -> PathBuf {
    std::env::var_os("AUTHFLOW_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/envoy"))
}

/// `AUTHFLOW_WASM`, else the release build `make wasm` produces.
pub fn wasm_path() -> PathBuf {
    std::env::var_os("AUTHFLOW_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/authflow.wasm"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        // Tests see each answer as sent: a 302 is what they check, not where it leads.
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(15)))
        .build()
        .into()
}

/// A response reduced to what tests look at.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    /// For echo-backend replies: the header the backend received.
    pub fn echoed(&self, name: &str) -> Option<String> {
        self.json()["headers"][name].as_str().map(str::to_owned)
    }
}

pub fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = http().get(url);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    reply(req.call().unwrap_or_else(|e| panic!("GET {url}: {e}")))
}

pub fn reply(mut resp: ureq::http::Response<ureq::Body>) -> Reply {
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    Reply {
        status,
        headers,
        body,
    }
}

pub fn post(url: &str, headers: &[(&str, &str)], body: &Value) -> Reply {
    let mut req = http().post(url).header("content-type", "application/json");
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    reply(
        req.send(body.to_string())
            .unwrap_or_else(|e| panic!("POST {url}: {e}")),
    )
}

/// The Envoy admin/listener pair of one test.
pub struct Envoy {
    child: Child,
    pub port: u16,
    pub admin_port: u16,
    dir: PathBuf,
}

pub struct EnvoyOptions {
    pub filter: Value,
    /// Extra routes before the catch-all to `backend`.
    pub routes: Vec<Value>,
    /// (cluster name, port on 127.0.0.1); `backend` is where requests go.
    pub clusters: Vec<(String, u16)>,
    pub concurrency: u32,
}

/// Path prefixes sent to another cluster than `backend` (the auth service, for the flow tests).
pub fn routes_to(cluster: &str, prefixes: &[&str]) -> Vec<Value> {
    prefixes
        .iter()
        .map(|p| json!({"match": {"prefix": p}, "route": {"cluster": cluster}}))
        .collect()
}

pub fn cluster(name: &str, port: u16) -> Value {
    json!({
        "name": name, "type": "STATIC", "connect_timeout": "0.5s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}
    })
}

pub fn envoy_config(
    filter: &Value,
    clusters: &[(String, u16)],
    port: u16,
    admin_port: u16,
) -> Value {
    envoy_config_with_routes(filter, clusters, &[], port, admin_port)
}

pub fn envoy_config_with_routes(
    filter: &Value,
    clusters: &[(String, u16)],
    extra_routes: &[Value],
    port: u16,
    admin_port: u16,
) -> Value {
    let mut routes: Vec<Value> = extra_routes.to_vec();
    routes.push(json!({"match": {"prefix": "/"}, "route": {"cluster": "backend"}}));
    let mut vm_config = json!({"vm_id": "authflow", "runtime": "envoy.wasm.runtime.v8",
        "code": {"local": {"filename": wasm_path().to_string_lossy()}}});
    // The variable the filter reads its DPoP nonce key from goes into the VM (as a deployment passes it).
    if let Some(name) = filter["dpop_nonce_key_env"].as_str() {
        vm_config["environment_variables"] = json!({"host_env_keys": [name]});
    }
    let wasm = json!({"name": "envoy.filters.http.wasm", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
    "config": {
        "name": "authflow", "root_id": "authflow", "fail_open": false,
        "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": filter.to_string()},
        "vm_config": vm_config
    }}});
    envoy_doc(wasm, &routes, clusters, port, admin_port)
}

/// Envoy on 127.0.0.1:`port` running `http_filter` and then the router over
/// `routes`, with `clusters` (each on 127.0.0.1).
pub fn envoy_doc(
    http_filter: Value,
    routes: &[Value],
    clusters: &[(String, u16)],
    port: u16,
    admin_port: u16,
) -> Value {
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "main",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "ingress",
                        // WebSocket handshakes pass through the filter as they do in most deployments.
                        "upgrade_configs": [{"upgrade_type": "websocket"}],
                        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]},
                        // An upstream that is down answers in the same JSON shape as the filter.
                        "local_reply_config": {"mappers": [{
                            "filter": {"response_flag_filter": {"flags": ["UF", "UH", "UO", "URX", "UT", "UC"]}},
                            "body_format_override": {"json_format": {"error": "temporarily_unavailable", "error_description": "upstream service unavailable"}},
                            "headers_to_add": [{"header": {"key": "retry-after", "value": "5"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
                        }]},
                        "http_filters": [
                            http_filter,
                            {"name": "envoy.filters.http.router", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
                        ]
                    }
                }]}]
            }],
            "clusters": clusters.iter().map(|(n, p)| cluster(n, *p)).collect::<Vec<_>>()
        }
    })
}

impl Envoy {
    /// Starts Envoy and waits until it is ready; `Err` carries Envoy's log when it is not.
    pub fn start(opts: EnvoyOptions) -> Result<Envoy, String> {
        let concurrency = opts.concurrency;
        Self::start_doc(concurrency, |port, admin_port| {
            envoy_config_with_routes(&opts.filter, &opts.clusters, &opts.routes, port, admin_port)
        })
    }

    /// Starts Envoy on a whole configuration document built by `doc(port, admin_port)`
    /// (for layouts `EnvoyOptions` does not cover, e.g. several listeners).
    ///
    /// A port found free can be taken by another test before Envoy binds it:
    /// then Envoy is started again on other ports (a few times).
    pub fn start_doc(concurrency: u32, doc: impl Fn(u16, u16) -> Value) -> Result<Envoy, String> {
        Self::start_doc_with(concurrency, &[], doc)
    }

    /// [`Self::start_doc`] with more command-line arguments for Envoy.
    pub fn start_doc_with(
        concurrency: u32,
        args: &[&str],
        doc: impl Fn(u16, u16) -> Value,
    ) -> Result<Envoy, String> {
        let mut tries = 0;
        loop {
            match Self::start_doc_once(concurrency, args, &doc) {
                Err(log) if log.contains("Address already in use") && tries < 3 => tries += 1,
                started => return started,
            }
        }
    }

    fn start_doc_once(
        concurrency: u32,
        args: &[&str],
        doc: &impl Fn(u16, u16) -> Value,
    ) -> Result<Envoy, String> {
        assert!(
            envoy_bin().exists(),
            "no Envoy at {} (run `make test`, which installs it)",
            envoy_bin().display()
        );
        assert!(
            wasm_path().exists(),
            "no filter at {} (run `make wasm`)",
            wasm_path().display()
        );
        let port = free_port();
        let admin_port = free_port();
        let dir = std::env::temp_dir().join(format!("authflow-e2e-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let config = dir.join("envoy.json");
        let doc = doc(port, admin_port);
        std::fs::write(&config, doc.to_string()).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.join("envoy.log")).map_err(|e| e.to_string())?;
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&config)
            .args([
                "--disable-hot-restart",
                "-l",
                "info",
                "--concurrency",
                &concurrency.to_string(),
            ])
            .args(["--base-id", &port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start Envoy: {e}"))?;
        let mut envoy = Envoy {
            child,
            port,
            admin_port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                return Err(format!("Envoy exited ({status}):\n{}", envoy.log()));
            }
            if envoy.ready() {
                return Ok(envoy);
            }
            if Instant::now() > deadline {
                return Err(format!("Envoy not ready in 30 s:\n{}", envoy.log()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn ready(&self) -> bool {
        let url = format!("http://127.0.0.1:{}/ready", self.admin_port);
        matches!(http().get(&url).call(), Ok(r) if r.status() == 200)
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.join("envoy.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Resident memory of the Envoy process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        get(&self.url(path), headers)
    }

    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> Reply {
        post(&self.url(path), headers, body)
    }

    /// A filter statistic (`wasmcustom.authflow.<name>`), summed over Envoy's output.
    /// Counters reach Envoy on the filter's next tick (≤ 100 ms): wait for it.
    pub fn stat(&self, name: &str) -> u64 {
        std::thread::sleep(Duration::from_millis(150));
        self.envoy_stat(&format!("wasmcustom.authflow.{name}"))
    }

    /// One of Envoy's own counters (e.g. `listener_manager.lds.update_success`),
    /// summed over its tags; 0 when Envoy has none of that name.
    pub fn envoy_stat(&self, full: &str) -> u64 {
        let r = get(
            &format!(
                "http://127.0.0.1:{}/stats?filter=^{}$",
                self.admin_port,
                regex_escape(full)
            ),
            &[],
        );
        r.body
            .lines()
            .filter_map(|l| l.split_once(": "))
            .filter(|(n, _)| *n == full)
            .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
            .sum()
    }

    pub fn prometheus(&self) -> String {
        get(
            &format!("http://127.0.0.1:{}/stats/prometheus", self.admin_port),
            &[],
        )
        .body
    }
}

fn regex_escape(s: &str) -> String {
    s.replace('.', "\\.")
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The directory goes with Envoy's log: kept where AUTHFLOW_E2E_LOGS
        // names a directory, and its end shown when the test failed.
        if let Some(keep) = std::env::var_os("AUTHFLOW_E2E_LOGS") {
            let name = format!("envoy-{}.log", self.port);
            let _ = std::fs::copy(self.dir.join("envoy.log"), Path::new(&keep).join(name));
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!("--- end of Envoy's log ---\n{}", tail.join("\n"));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits (bounded) until `check` holds; returns whether it did.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    check()
}

/// A JWKS endpoint whose document the test can change, or take down.
pub struct JwksServer {
    server: Option<Arc<tiny_http::Server>>,
    pub body: Arc<Mutex<String>>,
    pub hits: Arc<AtomicUsize>,
    /// The HTTP status every answer has (200 unless set).
    pub status: Arc<AtomicU16>,
    pub port: u16,
}

impl JwksServer {
    pub fn start(body: String) -> JwksServer {
        Self::start_on(0, Arc::new(Mutex::new(body)), Arc::new(AtomicUsize::new(0)))
    }

    /// One that takes `delay` to answer each request (a slow upstream).
    pub fn start_slow(body: String, delay: Duration) -> JwksServer {
        Self::serve(
            0,
            Arc::new(Mutex::new(body)),
            Arc::new(AtomicUsize::new(0)),
            delay,
        )
    }

    fn start_on(port: u16, body: Arc<Mutex<String>>, hits: Arc<AtomicUsize>) -> JwksServer {
        Self::serve(port, body, hits, Duration::ZERO)
    }

    fn serve(
        port: u16,
        body: Arc<Mutex<String>>,
        hits: Arc<AtomicUsize>,
        delay: Duration,
    ) -> JwksServer {
        let server = Arc::new(tiny_http::Server::http(("127.0.0.1", port)).expect("JWKS server"));
        let port = server.server_addr().to_ip().map(|a| a.port()).expect("ip");
        let status = Arc::new(AtomicU16::new(200));
        let (s, b, h, st) = (
            Arc::clone(&server),
            Arc::clone(&body),
            Arc::clone(&hits),
            Arc::clone(&status),
        );
        std::thread::spawn(move || {
            for req in s.incoming_requests() {
                h.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(delay);
                let doc = b.lock().map(|d| d.clone()).unwrap_or_default();
                let _ = req.respond(
                    tiny_http::Response::from_string(doc)
                        .with_status_code(st.load(Ordering::SeqCst)),
                );
            }
        });
        JwksServer {
            server: Some(server),
            body,
            hits,
            status,
            port,
        }
    }

    pub fn set(&self, body: String) {
        *self.body.lock().expect("lock") = body;
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Answers with `status` from now on (the body stays what `set` gave).
    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// Stops answering: connections to the port are refused.
    pub fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.unblock();
        }
        // Let the accept loop notice before the test carries on.
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn jwks_of(keys: &[String]) -> String {
    format!(r#"{{"keys":[{}]}}"#, keys.join(","))
}

/// `AUTHFLOW_AUTH_BIN`, else the debug build `make test` produces.
pub fn auth_bin() -> PathBuf {
    std::env::var_os("AUTHFLOW_AUTH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/debug/authflow-auth"))
}

/// The real auth service binary on a loopback port and its own data directory.
pub struct AuthService {
    child: Option<Child>,
    seen_mail: Mutex<Vec<String>>,
    pub port: u16,
    pub data_dir: PathBuf,
    env: Vec<(String, String)>,
    /// Another instance's directory is left to the instance that made it.
    owns_data_dir: bool,
}

impl AuthService {
    pub fn start(issuer: &str, env: &[(&str, &str)]) -> AuthService {
        assert!(
            auth_bin().exists(),
            "no auth service at {} (make test builds it)",
            auth_bin().display()
        );
        let port = free_port();
        let data_dir =
            std::env::temp_dir().join(format!("authflow-auth-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        // A key-encryption key generated for this run (never a committed one).
        let kek = Command::new(auth_bin())
            .args(["kek", "generate"])
            .output()
            .expect("authflow-auth kek generate");
        assert!(
            kek.status.success(),
            "kek generate: {}",
            String::from_utf8_lossy(&kek.stderr)
        );
        let mut all = vec![
            (
                "AUTHFLOW_KEK".to_owned(),
                String::from_utf8_lossy(&kek.stdout).trim().to_owned(),
            ),
            ("AUTHFLOW_LISTEN".to_owned(), format!("127.0.0.1:{port}")),
            (
                "AUTHFLOW_DATA_DIR".to_owned(),
                data_dir.to_string_lossy().into_owned(),
            ),
            ("AUTHFLOW_ISSUER".to_owned(), issuer.to_owned()),
            ("AUTHFLOW_AUDIENCES".to_owned(), "authflow-demo".to_owned()),
            ("AUTHFLOW_ENVIRONMENT".to_owned(), "development".to_owned()),
            ("AUTHFLOW_DEV_ENDPOINTS".to_owned(), "true".to_owned()),
            ("AUTHFLOW_MAILER".to_owned(), "dev-outbox".to_owned()),
            ("RUST_LOG".to_owned(), "warn".to_owned()),
        ];
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut svc = AuthService {
            child: None,
            seen_mail: Mutex::new(Vec::new()),
            port,
            data_dir,
            env: all,
            owns_data_dir: true,
        };
        svc.restart();
        svc
    }

    /// Runs the service's CLI on the same data directory and configuration.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(auth_bin())
            .args(args)
            .envs(self.env.iter().cloned())
            .output()
            .expect("auth CLI");
        assert!(
            out.status.success(),
            "authflow-auth {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// (Re)starts on the same port and data directory and waits for `/readyz`.
    pub fn restart(&mut self) {
        let child = Command::new(auth_bin())
            .arg("serve")
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start auth service");
        self.child = Some(child);
        let url = format!("http://127.0.0.1:{}/readyz", self.port);
        assert!(
            eventually(
                Duration::from_secs(30),
                || matches!(http().get(&url).call(), Ok(r) if r.status() == 200)
            ),
            "auth service not ready"
        );
    }

    /// Another instance of the same service on a port of its own: the same
    /// data directory (one SQLite database, one outbox) and key-encryption key.
    pub fn another_instance(&self) -> AuthService {
        let port = free_port();
        let mut env = self.env.clone();
        for (name, value) in &mut env {
            if name == "AUTHFLOW_LISTEN" {
                *value = format!("127.0.0.1:{port}");
            }
        }
        let mut svc = AuthService {
            child: None,
            seen_mail: Mutex::new(Vec::new()),
            port,
            data_dir: self.data_dir.clone(),
            env,
            owns_data_dir: false,
        };
        svc.restart();
        svc
    }

    /// `kill -9`: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The newest development-outbox message to `to` whose subject contains
    /// `subject`: its `field` (`code` or `token`). Mail may arrive just after
    /// the answer that caused it, so this waits (bounded) for one not seen before.
    pub fn latest_mail(&self, to: &str, subject: &str, field: &str) -> String {
        let seen = self.seen_mail.lock().expect("lock").clone();
        let mut found = None;
        eventually(Duration::from_secs(5), || {
            let r = get(&self.url(&format!("/v1/dev/outbox?to={to}")), &[]);
            found = r.json().as_array().and_then(|m| {
                m.iter().rev().find_map(|x| {
                    let value = x[field].as_str()?;
                    let fresh = x["subject"].as_str()?.contains(subject)
                        && !seen.contains(&value.to_owned());
                    fresh.then(|| value.to_owned())
                })
            });
            found.is_some()
        });
        let value =
            found.unwrap_or_else(|| panic!("no new mail '{subject}' with a {field} for {to}"));
        self.seen_mail.lock().expect("lock").push(value.clone());
        value
    }
}

impl Drop for AuthService {
    fn drop(&mut self) {
        self.kill();
        if self.owns_data_dir {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// A DNS server on 127.0.0.1 (UDP) that answers every A query with
/// 127.0.0.1, but only after `delay`: an Envoy `STRICT_DNS` cluster pointed
/// at it stays unresolved that long, as a cluster behind a slow resolver
/// does at startup (e.g. Docker's embedded DNS).
pub struct SlowDns {
    pub port: u16,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl SlowDns {
    pub fn start(delay: Duration) -> SlowDns {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("DNS socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let port = socket.local_addr().expect("addr").port();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stopped.load(Ordering::SeqCst) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let Some(answer) = dns_answer(&buf[..n]) else {
                    continue;
                };
                let socket = socket.try_clone().expect("clone");
                std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    let _ = socket.send_to(&answer, from);
                });
            }
        });
        SlowDns { port, stop }
    }
}

impl Drop for SlowDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The answer to a one-question query: the question echoed, then for an A
/// question one record 127.0.0.1 (TTL 300), for any other type no records.
fn dns_answer(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    // The question: labels up to the root label, then type and class.
    let mut end = 12;
    while *query.get(end)? != 0 {
        end += 1 + usize::from(query[end]);
    }
    let qtype = u16::from_be_bytes([*query.get(end + 1)?, *query.get(end + 2)?]);
    let question = query.get(12..end + 5)?;
    let is_a = qtype == 1;
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&query[..2]); // id
    out.extend_from_slice(&[0x81, 0x80]); // response, recursion desired + available, no error
    out.extend_from_slice(&[0, 1, 0, u8::from(is_a), 0, 0, 0, 0]);
    out.extend_from_slice(question);
    if is_a {
        out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x01, 0x2c, 0, 4, 127, 0, 0, 1]);
    }
    Some(out)
}
