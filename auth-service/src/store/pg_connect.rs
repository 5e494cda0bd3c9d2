//! Connecting to PostgreSQL: the libpq parameters of the URL (`sslmode`,
//! `sslrootcert`, …, and libpq's `PGSSLMODE` / `PGSSLROOTCERT` when the URL
//! has none), TLS through rustls on ring, and start-up errors that say what
//! to fix without repeating the URL (it may carry the password).
//!
//! `sslmode` keeps libpq's default, `prefer`: TLS when the server offers it,
//! without checking who the server is, and plain otherwise — so a URL means
//! what it means to `psql`, and a database on a trusted network without TLS
//! (the compose profile's) keeps working. A database across a network wants
//! `sslmode=verify-full` (the chain to a trusted CA and the host name), with
//! `sslrootcert=PATH` for a private CA; the service warns at start when a
//! remote server's identity is not checked. As in libpq, `require` with a
//! root certificate given verifies the chain like `verify-ca`.
//!
//! `verify-ca` checks the host name as well, like `verify-full`: sqlx 0.8's
//! "chain only" verifier lets through rustls' older name-mismatch error but
//! not the one current rustls returns (sqlx issue #3793, fixed after 0.8.6).
//! It fails closed, and the start-up error says so.
//!
//! The `sslmode` of the URL, else of `PGSSLMODE`, is read here, not left to
//! the driver, which takes an unknown `PGSSLMODE` (`verify_full`) silently
//! for `prefer`: an unknown value stops the start, named (a mode is no secret).

use std::path::Path;

use sqlx::postgres::{PgConnectOptions, PgSslMode};

use super::StoreError;

/// What the URL connects to, for messages and the start-up log: never the
/// user or password.
pub(super) struct Target {
    /// Host name, address, or the Unix socket's path.
    host: String,
    port: u16,
    /// A Unix socket or a loopback address: nothing crosses a network.
    local: bool,
    mode: PgSslMode,
    /// The URL or `PGSSLMODE` names the mode (else libpq's default, `prefer`).
    explicit: bool,
}

impl Target {
    /// The server's certificate is checked against trusted CAs.
    pub(super) fn verifies(&self) -> bool {
        matches!(self.mode, PgSslMode::VerifyCa | PgSslMode::VerifyFull)
    }

    pub(super) fn is_local(&self) -> bool {
        self.local
    }

    /// In production, a database across a network under the default mode is
    /// refused: `prefer` takes whatever server answers, with or without TLS,
    /// and sends it the password. Verifying (`verify-full`) or a weaker mode
    /// named on purpose (a trusted network) starts; a weaker one is warned about.
    pub(super) fn check_production(&self) -> Result<(), StoreError> {
        if self.local || self.explicit {
            return Ok(());
        }
        Err(StoreError::Connect(format!(
            "PostgreSQL at {self}: in production a database across a network needs its sslmode named: \
             sslmode=verify-full (with sslrootcert=PATH for a private CA), or on a network you trust \
             sslmode=require, prefer or disable; libpq's default (prefer) does not check who answers"
        )))
    }

    fn mode_name(&self) -> &'static str {
        match self.mode {
            PgSslMode::Disable => "disable",
            PgSslMode::Allow => "allow",
            PgSslMode::Prefer => "prefer",
            PgSslMode::Require => "require",
            PgSslMode::VerifyCa => "verify-ca",
            PgSslMode::VerifyFull => "verify-full",
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{} (sslmode={})",
            self.host,
            self.port,
            self.mode_name()
        )
    }
}

/// The connect options of a `postgres://` URL, and what it connects to.
/// A root certificate file that verification will need is read here, so a
/// missing or empty one is named before any connection is tried.
pub(super) fn options(url: &str) -> Result<(PgConnectOptions, Target), StoreError> {
    check_parameters(url)?;
    let chosen = ssl_mode_of(url, std::env::var_os("PGSSLMODE").as_deref())?;
    // The store's row locks order its writes only under READ COMMITTED: a
    // statement that waited for a lock must see what the other transaction
    // committed. A database (or role) whose default an operator raised would
    // take each transaction's first snapshot instead (a sign-in would count
    // sessions without the one a racing sign-in just stored). Set last: it
    // wins over one the URL's `options` give (the space escaped for the server).
    // A transaction left idle (its instance lost before `COMMIT`) is ended by
    // the server, and its row locks (`feed_state`'s among them) freed, within
    // 15 s rather than when TCP keepalive gives up: no transaction of the
    // store waits on its client.
    let mut options: PgConnectOptions = url.parse::<PgConnectOptions>()?.options([
        ("default_transaction_isolation", r"read\ committed"),
        ("idle_in_transaction_session_timeout", "15s"),
    ]);
    if let Some(mode) = chosen {
        options = options.ssl_mode(mode);
    }
    let root_cert = root_cert_of(url);
    if root_cert.as_ref().is_some_and(|r| r.value == "system") {
        // libpq 16 reads it as "the system's CAs, verify-full": the driver
        // would look for a file named `system`.
        return Err(StoreError::Connect(
            "sslrootcert=system is not supported: for a server whose certificate a public CA signed, \
             give sslmode=verify-full without sslrootcert (Mozilla's roots are built in)"
                .into(),
        ));
    }
    let mut mode = options.get_ssl_mode();
    if matches!(mode, PgSslMode::Require) && root_cert.is_some() {
        // libpq: "if a root CA file exists, the behavior of sslmode=require
        // will be the same as that of verify-ca" (sqlx alone would not check).
        mode = PgSslMode::VerifyCa;
        options = options.ssl_mode(mode);
    }
    let target = match options.get_socket() {
        Some(socket) => Target {
            host: socket.display().to_string(),
            port: options.get_port(),
            local: true,
            mode,
            explicit: chosen.is_some(),
        },
        None => {
            let host = options.get_host().to_owned();
            Target {
                local: crate::tls::is_loopback_host(&host),
                host,
                port: options.get_port(),
                mode,
                explicit: chosen.is_some(),
            }
        }
    };
    if let Some(root) = root_cert.filter(|_| target.verifies()) {
        // sqlx also takes the certificate itself in place of a path.
        if !root.value.trim_start().starts_with("-----BEGIN") {
            crate::tls::read_ca_file(Path::new(&root.value)).map_err(|e| {
                // A value from the URL is not repeated: a mistyped URL
                // (`sslrootcert=/ca.pem?password=…`) can carry the password into it.
                let e = if root.from_url {
                    "the file the URL names cannot be read or holds no CA certificate".into()
                } else {
                    e
                };
                StoreError::Connect(format!(
                    "cannot connect to PostgreSQL at {target}: sslrootcert: {e}"
                ))
            })?;
        }
    }
    Ok((options, target))
}

/// `sslrootcert` (or the aliases sqlx reads) from the URL, else `PGSSLROOTCERT`.
/// The URL's parameters, each under one of its names, at most once.
const PARAMETERS: &[&[&str]] = &[
    &["sslmode", "ssl-mode"],
    &["sslrootcert", "ssl-root-cert", "ssl-ca"],
    &["sslcert", "ssl-cert"],
    &["sslkey", "ssl-key"],
    &["statement-cache-capacity"],
    &["host"],
    &["hostaddr"],
    &["port"],
    &["dbname"],
    &["user"],
    &["password"],
    &["application_name"],
    &["options"],
];

/// Refuses a parameter the driver would ignore (it would log it with its
/// value: a mistyped `pasword=` would put the password in the log) and one
/// given twice (`sslmode=verify-full&sslmode=disable`: one reading takes the
/// first, another the last). Names only, never values, in the error.
fn check_parameters(url: &str) -> Result<(), StoreError> {
    let Ok(parsed) = url::Url::parse(url) else {
        return Ok(());
    };
    let mut seen: Vec<usize> = Vec::new();
    for (key, _) in parsed.query_pairs() {
        if key.starts_with("options[") {
            continue;
        }
        let Some(at) = PARAMETERS.iter().position(|names| names.contains(&&*key)) else {
            return Err(StoreError::Connect(format!(
                "the database URL has a parameter `{key}` PostgreSQL connections do not take (a misspelling?)"
            )));
        };
        if seen.contains(&at) {
            return Err(StoreError::Connect(format!(
                "the database URL gives `{key}` more than once"
            )));
        }
        seen.push(at);
    }
    Ok(())
}

/// The `sslmode` values libpq knows (any case, as the driver reads them).
const SSL_MODES: &[(&str, PgSslMode)] = &[
    ("disable", PgSslMode::Disable),
    ("allow", PgSslMode::Allow),
    ("prefer", PgSslMode::Prefer),
    ("require", PgSslMode::Require),
    ("verify-ca", PgSslMode::VerifyCa),
    ("verify-full", PgSslMode::VerifyFull),
];

/// The `sslmode` the URL gives (under any of its names), else `PGSSLMODE`
/// (`env`; unset or empty: none, the driver's default `prefer`). An unknown
/// value in either is refused with the value and the accepted ones; a
/// `PGSSLMODE` the URL overrides is checked too (a typo there misleads
/// whoever reads the environment).
fn ssl_mode_of(url: &str, env: Option<&std::ffi::OsStr>) -> Result<Option<PgSslMode>, StoreError> {
    let known = || {
        SSL_MODES
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    // The URL's value is not repeated: a mistyped URL (`sslmode=verify-full?password=…`)
    // carries the rest of itself in it.
    let parse = |value: &str, source: &str, show: bool| {
        SSL_MODES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(value))
            .map(|(_, mode)| *mode)
            .ok_or_else(|| {
                let shown = if show {
                    format!(" is `{}`, which", value.escape_debug())
                } else {
                    String::new()
                };
                StoreError::Connect(format!(
                    "{source}{shown} is not an sslmode; use one of {}",
                    known()
                ))
            })
    };
    let from_env = match env.filter(|v| !v.is_empty()) {
        None => None,
        Some(value) => Some(match value.to_str() {
            Some(text) => parse(text, "PGSSLMODE", true)?,
            None => {
                return Err(StoreError::Connect(format!(
                    "PGSSLMODE is not text; use one of {}",
                    known()
                )))
            }
        }),
    };
    let from_url = url::Url::parse(url).ok().and_then(|parsed| {
        parsed
            .query_pairs()
            .find(|(key, _)| matches!(&**key, "sslmode" | "ssl-mode"))
            .map(|(_, value)| value.into_owned())
    });
    match from_url {
        Some(value) => parse(&value, "the database URL's sslmode", false).map(Some),
        None => Ok(from_env),
    }
}

/// The root certificate setting, and whether the URL gave it.
struct RootCert {
    value: String,
    from_url: bool,
}

fn root_cert_of(url: &str) -> Option<RootCert> {
    let from_url = url::Url::parse(url).ok().and_then(|parsed| {
        parsed
            .query_pairs()
            .filter(|(key, _)| matches!(&**key, "sslrootcert" | "ssl-root-cert" | "ssl-ca"))
            .map(|(_, value)| value.into_owned())
            .last()
    });
    match from_url {
        Some(value) => Some(RootCert {
            value,
            from_url: true,
        }),
        None => std::env::var("PGSSLROOTCERT").ok().map(|value| RootCert {
            value,
            from_url: false,
        }),
    }
    .filter(|r| !r.value.is_empty())
}

/// A failed first connection, in words: which server, which `sslmode`, and
/// what to change. The text holds no part of the URL but host and port.
pub(super) fn connect_error(target: &Target, error: sqlx::Error) -> StoreError {
    let why = match &error {
        sqlx::Error::Tls(inner) if inner.to_string().contains("does not support TLS") => format!(
            "the server does not offer TLS, which sslmode={} requires: turn ssl on at the server \
             (or, on a trusted network only, choose sslmode=prefer or disable)",
            target.mode_name()
        ),
        _ => match crate::tls::rustls_error_in(&error) {
            Some(handshake) => {
                let mut why = crate::tls::explain(
                    handshake,
                    &target.host,
                    "give the CA that signed it with sslrootcert=PATH in the URL",
                );
                if matches!(
                    handshake,
                    rustls::Error::InvalidCertificate(
                        rustls::CertificateError::NotValidForName
                            | rustls::CertificateError::NotValidForNameContext { .. }
                    )
                ) {
                    why.push_str(match target.mode {
                        PgSslMode::VerifyFull => "; sslmode=verify-full checks the name: connect by a name the certificate holds",
                        // sqlx 0.8 skips only rustls' older name-mismatch error, so
                        // verify-ca fails closed on a name too (sqlx issue #3793).
                        _ => "; the PostgreSQL driver of this build checks the name under sslmode=verify-ca too: \
                              connect by a name the certificate holds",
                    });
                }
                why
            }
            None => error.to_string(),
        },
    };
    StoreError::Connect(format!("cannot connect to PostgreSQL at {target}: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn require_with_a_root_certificate_verifies_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("ca.pem");
        let url = format!(
            "postgres://u:pw@db.internal:5433/app?sslmode=require&sslrootcert={}",
            missing.display()
        );
        // Upgraded to verify-ca, so the file is needed, and its absence named.
        let e = options(&url).err().unwrap().to_string();
        assert!(
            e.contains("db.internal:5433 (sslmode=verify-ca)")
                && e.contains("sslrootcert")
                && !e.contains("pw@"),
            "{e}"
        );
        let (_, target) = options("postgres://u:pw@db.internal/app?sslmode=require").unwrap();
        assert_eq!(target.to_string(), "db.internal:5432 (sslmode=require)");
        assert!(!target.verifies() && !target.is_local());
        let (_, target) = options("postgres://u@127.0.0.1:5433/app?sslmode=verify-full").unwrap();
        assert!(target.verifies() && target.is_local());
    }

    /// An instance lost inside a transaction (its node gone, its network
    /// cut before `COMMIT`) left the server holding the transaction's row
    /// locks until TCP keepalive gave up, about two hours: the feed's
    /// `feed_state` row among them, so every other instance's logout, ban
    /// and revocation waited, pooled connections filled, and the service
    /// answered 500. No transaction of the store waits on its client, so one
    /// idle in a transaction for 15 s is ended by the server, its locks freed.
    #[test]
    fn a_transaction_left_idle_is_ended_by_the_server() {
        let (options, _) = options("postgres://u@db.internal/app?sslmode=disable").unwrap();
        let set = options.get_options().unwrap_or_default();
        assert!(
            set.contains("idle_in_transaction_session_timeout=15s")
                && set.contains(r"default_transaction_isolation=read\ committed"),
            "{set}"
        );
    }

    /// A parameter the driver would ignore (and log with its value), or one
    /// given twice, is refused by its name alone.
    #[test]
    fn unknown_and_repeated_parameters_are_refused_without_their_values() {
        let e = options("postgres://u@db.internal/app?sslmode=verify-full&pasword=hunter2-secret")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("`pasword`") && !e.contains("hunter2"), "{e}");
        for url in [
            "postgres://u@db.internal/app?sslmode=verify-full&sslmode=disable",
            "postgres://u@db.internal/app?ssl-mode=disable&sslmode=verify-full",
            "postgres://u@db.internal/app?sslrootcert=/a.pem&ssl-ca=/b.pem",
        ] {
            let e = options(url).err().unwrap().to_string();
            assert!(e.contains("more than once"), "{url}: {e}");
        }
        let url = "postgres://u:pw@db.internal/app?sslmode=disable&application_name=authflow&options[statement_timeout]=5s&port=5433";
        assert!(options(url).is_ok());
    }

    /// An unknown sslmode, in the URL or in `PGSSLMODE`, is refused and
    /// named; `PGSSLMODE` applies when the URL has none.
    #[test]
    fn unknown_ssl_modes_are_refused() {
        use std::ffi::OsStr;
        let url = "postgres://u:pw@db.internal/app";
        let e = ssl_mode_of(url, Some(OsStr::new("verify_full")))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("PGSSLMODE")
                && e.contains("`verify_full`")
                && e.contains("verify-full")
                && !e.contains("pw"),
            "{e}"
        );
        assert!(matches!(
            ssl_mode_of(url, Some(OsStr::new("verify-full"))),
            Ok(Some(PgSslMode::VerifyFull))
        ));
        assert!(matches!(
            ssl_mode_of(url, Some(OsStr::new("Require"))),
            Ok(Some(PgSslMode::Require))
        ));
        assert!(matches!(ssl_mode_of(url, Some(OsStr::new(""))), Ok(None)));
        assert!(matches!(ssl_mode_of(url, None), Ok(None)));
        // The URL's wins over PGSSLMODE, and is checked the same way.
        let with_mode = "postgres://u:pw@db.internal/app?sslmode=disable";
        assert!(matches!(
            ssl_mode_of(with_mode, Some(OsStr::new("verify-full"))),
            Ok(Some(PgSslMode::Disable))
        ));
        assert!(ssl_mode_of(with_mode, Some(OsStr::new("verify_full"))).is_err());
        for url in [
            "postgres://u:pw@db.internal/app?sslmode=verify_full",
            "postgres://u:pw@db.internal/app?ssl-mode=on",
            // A second `?` for `&`: the value runs on into the password.
            "postgres://u@db.internal/app?sslmode=verify-full?password=hunter2-secret",
        ] {
            let e = options(url).err().unwrap().to_string();
            assert!(
                e.contains("the database URL's sslmode")
                    && !e.contains("pw@")
                    && !e.contains("hunter2"),
                "{url}: {e}"
            );
        }
    }

    /// A root certificate path from the URL is not repeated either.
    #[test]
    fn a_root_certificate_value_from_the_url_is_not_repeated() {
        let url = "postgres://u@db.internal/app?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem?password=hunter2-secret";
        let e = options(url).err().unwrap().to_string();
        assert!(
            e.contains("sslrootcert") && e.contains("cannot be read") && !e.contains("hunter2"),
            "{e}"
        );
    }

    /// libpq's `sslrootcert=system` is refused with what to use instead,
    /// not taken for a file, nor for no verification.
    #[test]
    fn sslrootcert_system_is_refused_with_its_replacement() {
        for url in [
            "postgres://u@db.internal/app?sslrootcert=system",
            "postgres://u@db.internal/app?sslmode=prefer&sslrootcert=system",
        ] {
            let e = options(url).err().unwrap().to_string();
            assert!(
                e.contains("sslrootcert=system")
                    && e.contains("sslmode=verify-full without sslrootcert"),
                "{url}: {e}"
            );
        }
    }

    /// Production refuses a remote database under libpq's default mode,
    /// and takes a mode named on purpose, or a local database.
    #[test]
    fn production_needs_a_named_mode_for_a_remote_database() {
        let (_, target) = options("postgres://u:pw@db.internal/app").unwrap();
        let e = target.check_production().err().unwrap().to_string();
        assert!(
            e.contains("db.internal:5432 (sslmode=prefer)")
                && e.contains("sslmode=verify-full")
                && !e.contains("pw"),
            "{e}"
        );
        for url in [
            "postgres://u@db.internal/app?sslmode=verify-full",
            "postgres://u@db.internal/app?sslmode=prefer",
            "postgres://u@127.0.0.1/app",
        ] {
            options(url).unwrap().1.check_production().unwrap();
        }
    }
}
