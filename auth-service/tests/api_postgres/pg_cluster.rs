//! A throwaway PostgreSQL cluster for the tests: started once per test
//! binary, a fresh database per test, stopped when the binary exits.
//!
//! - `AUTHFLOW_TEST_PG_URL` (e.g. `postgres://user:pw@127.0.0.1:5432/postgres`)
//!   uses that server instead; each test still gets its own database.
//! - Otherwise the PostgreSQL binaries are taken from `AUTHFLOW_PG_BIN` or
//!   `/usr/lib/postgresql/<version>/bin` (Debian's `postgresql` package;
//!   `make test` installs it when missing). `initdb` refuses to run as root,
//!   so under root the cluster runs as the unprivileged user `authflow-pg`
//!   (created with `useradd` when missing). It listens on 127.0.0.1 on a free
//!   port only, with its socket in its own owner-only temp dir: trusted on
//!   that socket, a password made for the run (scram-sha-256) over TCP, so
//!   no other account of the machine gets in. It holds nothing but test
//!   data and lives for one run.
//! - Stopping: a small watchdog process, started with the cluster, waits for
//!   this test process to exit (however it exits, even `kill -9`), then stops
//!   the postmaster by its pid and deletes the temp dir.
//! - The TLS tests (`tls.rs`) get a second cluster, started on first use,
//!   always from the local binaries: `ssl=on` with a certificate for
//!   127.0.0.1 from a CA made for this run, and only `hostssl` connections
//!   accepted, so whatever works on it went over TLS.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use sqlx::Connection;

pub(crate) const OS_USER: &str = "authflow-pg";
pub(crate) const DB_USER: &str = "authflow";

struct Server {
    /// A URL of the server without the database name, e.g. `postgres://authflow:pw@127.0.0.1:5433`.
    base: String,
    /// The cluster's temp dir, when started here.
    dir: Option<PathBuf>,
}

static SERVER: OnceLock<Server> = OnceLock::new();

fn server() -> &'static Server {
    SERVER.get_or_init(|| match std::env::var("AUTHFLOW_TEST_PG_URL") {
        Ok(url) => Server {
            base: url
                .rsplit_once('/')
                .map(|(base, _)| base.to_owned())
                .unwrap_or(url),
            dir: None,
        },
        Err(_) => start_cluster(None),
    })
}

/// A new, empty database on the test server; its URL.
pub async fn fresh_database() -> String {
    create_database(&server().base, "").await
}

/// The TLS cluster: its URL without a database, and its CA's certificate.
struct TlsServer {
    server: Server,
    ca_file: PathBuf,
}

static TLS_SERVER: OnceLock<TlsServer> = OnceLock::new();

/// A database on the TLS cluster: a URL without query, e.g.
/// `postgres://authflow:pw@127.0.0.1:5433/t_…`, and the file of the CA that
/// signed the server's certificate.
pub struct TlsDatabase {
    pub url: String,
    pub port: u16,
    pub name: String,
    pub ca_file: PathBuf,
}

/// A new, empty database on the TLS cluster.
pub async fn fresh_tls_database() -> TlsDatabase {
    let tls = TLS_SERVER.get_or_init(|| {
        let ca = crate::test_pki::TestCa::new("authflow test PostgreSQL CA");
        let server = start_cluster(Some(&ca.server(&["127.0.0.1"])));
        let dir = server.dir.clone().expect("a local cluster");
        TlsServer {
            ca_file: ca.write_pem(&dir, "ca.pem"),
            server,
        }
    });
    let query = format!("?sslmode=verify-full&sslrootcert={}", tls.ca_file.display());
    let url = create_database(&tls.server.base, &query).await;
    let (_, name) = url.rsplit_once('/').unwrap();
    let port = tls.server.base.rsplit_once(':').unwrap().1.parse().unwrap();
    TlsDatabase {
        name: name.to_owned(),
        port,
        ca_file: tls.ca_file.clone(),
        url,
    }
}

/// A new database on the server at `base`, reached with the URL query `query`.
async fn create_database(base: &str, query: &str) -> String {
    let name = format!(
        "t_{}",
        authflow_auth_service::domain::random_id()
            .to_ascii_lowercase()
            .replace('-', "_")
    );
    let mut admin = sqlx::PgConnection::connect(&format!("{base}/postgres{query}"))
        .await
        .expect("connect to the test PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create a test database");
    let _ = admin.close().await;
    format!("{base}/{name}")
}

pub(crate) fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("AUTHFLOW_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!("PostgreSQL binaries not found: install postgresql-15 (make test does), or set AUTHFLOW_PG_BIN or AUTHFLOW_TEST_PG_URL")
    })
}

pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// Runs a PostgreSQL program, as `authflow-pg` when we are root.
pub(crate) fn run_pg(root: bool, program: &Path, args: &[&str]) {
    let mut cmd = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", OS_USER, "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    let out = cmd
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} failed: {}{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(crate) fn ensure_os_user() {
    let exists = Command::new("id")
        .arg(OS_USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !exists {
        let status = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                OS_USER,
            ])
            .status()
            .expect("run useradd");
        assert!(status.success(), "useradd {OS_USER} failed");
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes `contents` to `path`, owner-only, owned by the cluster's user.
fn write_for_cluster(root: bool, path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    if root {
        let status = Command::new("chown")
            .arg(format!("{OS_USER}:"))
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success(), "chown of {} failed", path.display());
    }
}

/// Makes a cluster in `data` (inside `dir`, the cluster's own owner-only
/// temp dir, where its socket goes) whose superuser `DB_USER` has a password
/// made for this run: scram-sha-256 for every TCP client, trust on the
/// socket only, which no other account can reach. Another account of the
/// machine that finds the port does not get in (a superuser of a cluster
/// runs programs as its owner). Returns the password.
pub(crate) fn init_cluster(root: bool, dir: &Path, data: &Path) -> String {
    let password = authflow_auth_service::domain::random_id();
    let pwfile = dir.join("pwfile");
    write_for_cluster(root, &pwfile, &password);
    run_pg(
        root,
        &bin_dir().join("initdb"),
        &[
            "-D",
            data.to_str().unwrap(),
            "-U",
            DB_USER,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            &format!("--pwfile={}", pwfile.display()),
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        ],
    );
    std::fs::remove_file(&pwfile).unwrap();
    password
}

/// A cluster; with `tls`, serving that certificate and refusing connections without TLS.
fn start_cluster(tls: Option<&crate::test_pki::ServerCert>) -> Server {
    let bin = bin_dir();
    let root = is_root();
    let dir = tempfile::Builder::new()
        .prefix("authflow-pg-")
        .tempdir()
        .unwrap()
        .keep();
    if root {
        ensure_os_user();
        let status = Command::new("chown")
            .arg(format!("{OS_USER}:"))
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success(), "chown of the cluster dir failed");
    }
    let data = dir.join("data");
    let data_s = data.to_str().unwrap();
    let password = init_cluster(root, &dir, &data);
    let port = free_port();
    // Durability settings off: a test cluster dies with its run.
    let mut options = format!(
        "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400",
        dir.display()
    );
    if let Some(cert) = tls {
        let (cert_file, key_file, hba_file) = (
            dir.join("server.crt"),
            dir.join("server.key"),
            dir.join("pg_hba.conf"),
        );
        write_for_cluster(root, &cert_file, &cert.cert_pem);
        write_for_cluster(root, &key_file, &cert.key_pem);
        // TCP only with TLS: a connection without it matches no line and is refused.
        write_for_cluster(
            root,
            &hba_file,
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
        );
        options.push_str(&format!(
            " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={} -c hba_file={}",
            cert_file.display(),
            key_file.display(),
            hba_file.display()
        ));
    }
    let log = dir.join("postgres.log");
    run_pg(
        root,
        &bin.join("pg_ctl"),
        &[
            "-D",
            data_s,
            "-l",
            log.to_str().unwrap(),
            "-o",
            &options,
            "-w",
            "-t",
            "60",
            "start",
        ],
    );
    let pid = std::fs::read_to_string(data.join("postmaster.pid"))
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
        .expect("postmaster.pid");
    start_watchdog(pid, &dir);
    // The server is up (pg_ctl -w waited); a first connection proves it.
    std::thread::sleep(Duration::from_millis(50));
    Server {
        base: format!("postgres://{DB_USER}:{password}@127.0.0.1:{port}"),
        dir: Some(dir),
    }
}

/// Stops the postmaster (by pid) and removes `dir` once this process is gone.
/// Each signal goes only to a process whose command line still names this
/// cluster's data dir: if the postmaster is already gone, its pid may be
/// reused by anything else on the machine, another test cluster included.
pub(crate) fn start_watchdog(pg_pid: u32, dir: &Path) {
    let me = std::process::id();
    let data = dir.join("data");
    let script = format!(
        "ours() {{ tr '\\0' ' ' < /proc/{pg_pid}/cmdline 2>/dev/null | grep -qF '{data}'; }}; \
         while kill -0 {me} 2>/dev/null; do sleep 0.5; done; \
         if ours; then kill -INT {pg_pid}; fi; \
         for _ in $(seq 1 100); do ours || break; sleep 0.1; done; \
         if ours; then kill -KILL {pg_pid}; fi; rm -rf '{dir}'",
        data = data.display(),
        dir = dir.display()
    );
    // Its own process group: whatever kills this run's group must not take the
    // watchdog with it. Never waited for: it outlives this process on purpose.
    #[allow(clippy::zombie_processes)]
    let _watchdog = Command::new("sh")
        .args(["-c", &script])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the cluster watchdog");
}
