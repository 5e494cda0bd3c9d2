//! Mail through a real SMTP relay on 127.0.0.1 (tokio + rustls, in this
//! file) that speaks STARTTLS or implicit TLS with a certificate from a CA
//! made for the test: the service's mail and credentials cross only over TLS,
//! and a relay that offers no STARTTLS, or shows a certificate the service
//! does not trust, gets neither.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use authflow_auth_service::config::{MailerConfig, SmtpTls};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::{rustls, TlsAcceptor};

use crate::common::*;
use crate::test_pki::{ServerCert, TestCa};

const RELAY_USER: &str = "authflow";
const RELAY_PASSWORD: &str = "relay-pass-Q7v2";

#[derive(Clone, Copy)]
enum Offer {
    /// Plain, with STARTTLS in the EHLO answer.
    StartTls,
    /// TLS from the first byte.
    Implicit,
    /// Plain only: no STARTTLS (but AUTH, as a careless relay would offer).
    PlainOnly,
}

/// One SMTP connection as the relay saw it; each entry says whether it came over TLS.
#[derive(Debug, Default)]
struct Session {
    commands: Vec<(String, bool)>,
    auth: Vec<(String, bool)>,
    messages: Vec<(String, bool)>,
    /// The name each EHLO gave for the client.
    ehlo: Vec<String>,
}

struct Relay {
    addr: SocketAddr,
    /// Every connection, once it has ended.
    sessions: mpsc::UnboundedReceiver<Session>,
}

impl Relay {
    async fn start(offer: Offer, cert: &ServerCert) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tls_acceptor(cert);
        let (tx, sessions) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (tx, acceptor) = (tx.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let mut session = Session::default();
                    // A failed handshake ends the session like a closed connection.
                    let _ = serve(tcp, offer, acceptor, &mut session).await;
                    let _ = tx.send(session);
                });
            }
        });
        Self { addr, sessions }
    }

    /// The next finished connection, waiting at most 20 s.
    async fn next_session(&mut self) -> Session {
        tokio::time::timeout(Duration::from_secs(20), self.sessions.recv())
            .await
            .expect("no SMTP connection ended within 20 s")
            .unwrap()
    }
}

fn tls_acceptor(cert: &ServerCert) -> TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

async fn serve(
    tcp: TcpStream,
    offer: Offer,
    acceptor: TlsAcceptor,
    session: &mut Session,
) -> std::io::Result<()> {
    match offer {
        Offer::Implicit => {
            let tls = acceptor.accept(tcp).await?;
            dialog(tls, true, false, true, session).await?;
        }
        Offer::StartTls | Offer::PlainOnly => {
            let offer_starttls = matches!(offer, Offer::StartTls);
            if let Some(plain) = dialog(tcp, false, offer_starttls, true, session).await? {
                let tls = acceptor.accept(plain).await?;
                dialog(tls, true, false, false, session).await?;
            }
        }
    }
    Ok(())
}

/// The relay's side of SMTP on `stream`. Returns the stream when the client
/// asked for STARTTLS and was told to go ahead (the caller upgrades it).
async fn dialog<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    tls: bool,
    offer_starttls: bool,
    greet: bool,
    session: &mut Session,
) -> std::io::Result<Option<S>> {
    let mut stream = BufReader::new(stream);
    if greet {
        stream.write_all(b"220 relay.test ESMTP\r\n").await?;
    }
    let mut line = String::new();
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        let command = line.trim_end().to_owned();
        let (verb, argument) = command.split_once(' ').unwrap_or((command.as_str(), ""));
        let verb = verb.to_ascii_uppercase();
        session.commands.push((verb.clone(), tls));
        let reply = match verb.as_str() {
            "EHLO" => {
                session.ehlo.push(argument.to_owned());
                let mut lines = vec!["relay.test"];
                if offer_starttls {
                    lines.push("STARTTLS");
                }
                lines.extend(["AUTH PLAIN LOGIN", "8BITMIME"]);
                let last = lines.len() - 1;
                lines
                    .iter()
                    .enumerate()
                    .map(|(i, l)| format!("250{}{l}\r\n", if i == last { ' ' } else { '-' }))
                    .collect()
            }
            "STARTTLS" if offer_starttls => {
                stream
                    .write_all(b"220 2.0.0 ready to start TLS\r\n")
                    .await?;
                stream.flush().await?;
                return Ok(Some(stream.into_inner()));
            }
            "AUTH" => {
                session.auth.push((argument.to_owned(), tls));
                "235 2.7.0 accepted\r\n".to_owned()
            }
            "MAIL" | "RCPT" | "RSET" | "NOOP" | "HELO" => "250 2.0.0 ok\r\n".to_owned(),
            "DATA" => {
                stream.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if stream.read_line(&mut line).await? == 0 {
                        return Ok(None);
                    }
                    if line == ".\r\n" {
                        break;
                    }
                    data.push_str(&line);
                }
                session.messages.push((data, tls));
                "250 2.0.0 queued\r\n".to_owned()
            }
            "QUIT" => {
                stream.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(None);
            }
            _ => "502 5.5.2 not implemented\r\n".to_owned(),
        };
        stream.write_all(reply.as_bytes()).await?;
        stream.flush().await?;
    }
}

/// The service sending its mail to `relay` with `tls`, trusting `ca_file`.
async fn app_mailing_through(relay: &Relay, tls: SmtpTls, ca_file: Option<PathBuf>) -> TestApp {
    let port = relay.addr.port();
    spawn_app_with(move |c| {
        c.mail.transport = MailerConfig::Smtp {
            host: "127.0.0.1".into(),
            port,
            username: Some(RELAY_USER.into()),
            password: Some(RELAY_PASSWORD.into()),
            tls,
            ca_file,
        };
    })
    .await
}

/// A sign-up: its verification mail goes out in the background.
async fn sign_up(app: &TestApp, email: &str) {
    let r = app
        .post(
            "/v1/auth/signup",
            json!({"email": email, "password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status(), 201);
}

fn assert_all_over_tls(session: &Session) {
    // In clear: the greeting's EHLO and STARTTLS, nothing else.
    for (verb, tls) in &session.commands {
        assert!(
            *tls || verb == "EHLO" || verb == "STARTTLS",
            "{verb} sent in clear: {session:?}"
        );
    }
    assert_eq!(session.messages.len(), 1, "{session:?}");
    let (message, over_tls) = &session.messages[0];
    assert!(over_tls, "{session:?}");
    assert!(message.contains("To: ada@example.com"), "{message}");
    // The credentials, over TLS (AUTH PLAIN: base64 of \0user\0password).
    use base64::Engine as _;
    let [(auth, over_tls)] = session.auth.as_slice() else {
        panic!("one AUTH expected: {session:?}")
    };
    assert!(over_tls);
    let plain = auth.strip_prefix("PLAIN ").unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(plain)
        .unwrap();
    assert_eq!(
        decoded,
        format!("\0{RELAY_USER}\0{RELAY_PASSWORD}").into_bytes()
    );
}

fn assert_nothing_sent(session: &Session) {
    assert!(
        session.auth.is_empty() && session.messages.is_empty(),
        "credentials or mail reached the relay: {session:?}"
    );
    for (verb, _) in &session.commands {
        assert!(
            ["EHLO", "STARTTLS", "QUIT"].contains(&verb.as_str()),
            "{verb} sent: {session:?}"
        );
    }
}

#[tokio::test]
async fn mail_reaches_a_starttls_relay_with_a_private_ca() {
    let ca = TestCa::new("authflow test relay CA");
    let mut relay = Relay::start(Offer::StartTls, &ca.server(&["127.0.0.1"])).await;
    let dir = tempfile::tempdir().unwrap();
    let app = app_mailing_through(
        &relay,
        SmtpTls::StartTls,
        Some(ca.write_pem(dir.path(), "relay-ca.pem")),
    )
    .await;
    sign_up(&app, "ada@example.com").await;
    let session = relay.next_session().await;
    assert!(
        session
            .commands
            .iter()
            .any(|(verb, tls)| verb == "STARTTLS" && !tls),
        "{session:?}"
    );
    assert_all_over_tls(&session);
}

#[tokio::test]
async fn mail_reaches_an_implicit_tls_relay() {
    let ca = TestCa::new("authflow test relay CA");
    let mut relay = Relay::start(Offer::Implicit, &ca.server(&["127.0.0.1"])).await;
    let dir = tempfile::tempdir().unwrap();
    let app = app_mailing_through(
        &relay,
        SmtpTls::Implicit,
        Some(ca.write_pem(dir.path(), "relay-ca.pem")),
    )
    .await;
    sign_up(&app, "ada@example.com").await;
    let session = relay.next_session().await;
    assert!(session.commands.iter().all(|(_, tls)| *tls), "{session:?}");
    assert_all_over_tls(&session);
}

/// `starttls` is required: a relay (or a man in the middle) that leaves
/// STARTTLS out of its EHLO answer gets no AUTH and no mail in clear.
#[tokio::test]
async fn a_relay_without_starttls_gets_no_credentials_and_no_mail() {
    let ca = TestCa::new("authflow test relay CA");
    let mut relay = Relay::start(Offer::PlainOnly, &ca.server(&["127.0.0.1"])).await;
    let dir = tempfile::tempdir().unwrap();
    let app = app_mailing_through(
        &relay,
        SmtpTls::StartTls,
        Some(ca.write_pem(dir.path(), "relay-ca.pem")),
    )
    .await;
    sign_up(&app, "ada@example.com").await;
    let session = relay.next_session().await;
    assert!(
        session.commands.iter().any(|(verb, _)| verb == "EHLO"),
        "the service never spoke: {session:?}"
    );
    assert_nothing_sent(&session);
}

/// A certificate from a CA the service was not given (only Mozilla's roots
/// and `smtp.ca_file` are trusted): the handshake fails, nothing is sent.
#[tokio::test]
async fn a_relay_with_an_untrusted_certificate_gets_nothing() {
    let (trusted, other) = (
        TestCa::new("authflow test relay CA"),
        TestCa::new("someone else's CA"),
    );
    let mut relay = Relay::start(Offer::StartTls, &other.server(&["127.0.0.1"])).await;
    let dir = tempfile::tempdir().unwrap();
    let app = app_mailing_through(
        &relay,
        SmtpTls::StartTls,
        Some(trusted.write_pem(dir.path(), "relay-ca.pem")),
    )
    .await;
    sign_up(&app, "ada@example.com").await;
    let session = relay.next_session().await;
    assert!(
        session
            .commands
            .iter()
            .any(|(verb, tls)| verb == "STARTTLS" && !tls),
        "{session:?}"
    );
    assert_nothing_sent(&session);
}

/// One mailbox, one account: `"ada"@example.com` (or `"\ada"`, `"a\da"`…)
/// is `ada@example.com` to the SMTP client, so it must not be an account of
/// its own beside `ada@example.com` (a second account, with a recipient mail
/// budget of its own, whose every mail reaches ada's mailbox).
#[tokio::test]
async fn a_quoted_spelling_of_an_address_is_not_a_second_account_for_its_mailbox() {
    let ca = TestCa::new("authflow test relay CA");
    let mut relay = Relay::start(Offer::StartTls, &ca.server(&["127.0.0.1"])).await;
    let dir = tempfile::tempdir().unwrap();
    let app = app_mailing_through(
        &relay,
        SmtpTls::StartTls,
        Some(ca.write_pem(dir.path(), "relay-ca.pem")),
    )
    .await;
    sign_up(&app, "ada@example.com").await;
    assert_all_over_tls(&relay.next_session().await);
    for spelling in [
        "\"ada\"@example.com",
        "\"\\ada\"@example.com",
        "\"a\\da\"@example.com",
    ] {
        let r = app
            .post(
                "/v1/auth/signup",
                json!({"email": spelling, "password": PASSWORD}),
            )
            .await;
        if r.status() == 201 {
            let session = relay.next_session().await;
            panic!(
                "{spelling} is a new account; its verification mail went to: {:?}",
                session.messages[0].0.lines().find(|l| l.starts_with("To:"))
            );
        }
        assert_eq!(r.status(), 400, "{spelling}");
    }
}

/// The relay (and, in its `Received:` header, every recipient) learns the
/// name the service gives in EHLO: the name of the mail's own domain, not
/// the machine's host name (a pod's or an internal host's name).
#[tokio::test]
async fn ehlo_does_not_give_the_machines_host_name() {
    let ca = TestCa::new("authflow test relay CA");
    let mut relay = Relay::start(Offer::StartTls, &ca.server(&["127.0.0.1"])).await;
    let dir = tempfile::tempdir().unwrap();
    let app = app_mailing_through(
        &relay,
        SmtpTls::StartTls,
        Some(ca.write_pem(dir.path(), "relay-ca.pem")),
    )
    .await;
    sign_up(&app, "ada@example.com").await;
    let session = relay.next_session().await;
    assert_all_over_tls(&session);
    let from = app.state.config.mail.from.clone();
    let domain = from.rsplit('@').next().unwrap().trim_end_matches('>');
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    assert!(!session.ehlo.is_empty());
    for name in &session.ehlo {
        assert_eq!(name, domain, "EHLO {name} (host name {:?})", host.trim());
    }
}

/// A relay that takes connections and never answers (a tarpit): each
/// accepted connection is held open, and its arrival reported.
async fn tarpit() -> (u16, mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, accepted) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
            let _ = tx.send(());
        }
    });
    (port, accepted)
}

/// Reset mails pile up behind a relay that never answers only up to
/// `limits.background_tasks` deliveries: two hanging password-reset mails
/// fill the two, and the third `forgot`'s mail is dropped, not a third
/// connection. Its answer is any other's: the deliveries do not hold the
/// lookups' slots (whose 503 would tell that an address has an account).
/// A service on `setup`'s database mailing through the tarpit at `port`,
/// with `background_tasks` slots and mail budgets out of the way.
async fn beside_a_tarpit(setup: &TestApp, port: u16, background_tasks: usize) -> TestApp {
    spawn_app_beside(setup, move |c| {
        c.mail.transport = MailerConfig::Smtp {
            host: "127.0.0.1".into(),
            port,
            username: None,
            password: None,
            tls: SmtpTls::None,
            ca_file: None,
        };
        c.limits.background_tasks = background_tasks;
        c.mail.max_per_client_per_hour = 100;
        c.mail.max_per_recipient_per_hour = 100;
    })
    .await
}

#[tokio::test]
async fn a_hanging_relay_gets_at_most_the_limit_of_reset_deliveries() {
    // The accounts, made with the development outbox (sign-up mails inline).
    let setup = spawn_app().await;
    for email in ["ada@example.com", "bob@example.com"] {
        sign_up(&setup, email).await;
    }
    let (port, mut accepted) = tarpit().await;
    let app = beside_a_tarpit(&setup, port, 2).await;
    for email in ["ada@example.com", "bob@example.com"] {
        let r = app
            .post("/v1/auth/password/forgot", json!({ "email": email }))
            .await;
        assert_eq!(r.status(), 202);
    }
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(10), accepted.recv())
            .await
            .expect("each reset mail reaches the relay")
            .unwrap();
    }
    // Both deliveries are hanging now (the relay sent no greeting).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = app
        .post(
            "/v1/auth/password/forgot",
            json!({ "email": "ada@example.com" }),
        )
        .await;
    assert_eq!(r.status(), 202);
    assert!(
        tokio::time::timeout(Duration::from_secs(1), accepted.recv())
            .await
            .is_err(),
        "a third delivery piled up behind the relay"
    );
    // The audit trail says so: the dropped mail is not `mail_sent` (an
    // operator asked why a user got no reset link looks there).
    let outcomes = || async {
        let log = app.state.store.audit_log(None, 100).await.unwrap();
        log.iter()
            .filter(|e| e.event == "password_forgot")
            .map(|e| e.outcome.clone())
            .collect::<Vec<_>>()
    };
    let mut seen = outcomes().await;
    for _ in 0..50 {
        if seen.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen = outcomes().await;
    }
    seen.sort();
    assert_eq!(seen, ["mail_dropped", "mail_sent", "mail_sent"]);
}

/// The slot a `forgot` task holds must not last longer for an address with
/// an account than for one without: a reset mail's delivery kept its slot
/// (a slow or hanging relay), a lookup that found nobody gave it back at
/// once. With the slots nearly full, whether the next `forgot` (anyone's,
/// for any address) is answered 503 told whether the earlier address had
/// an account, which the 202 of `forgot` itself is there to hide.
#[tokio::test]
async fn whether_a_reset_address_has_an_account_does_not_show_in_the_next_answer() {
    let setup = spawn_app().await;
    sign_up(&setup, "ada@example.com").await;
    let (port, mut accepted) = tarpit().await;
    let app = beside_a_tarpit(&setup, port, 1).await;
    let forgot = |email: &'static str| {
        app.http
            .post(app.url("/v1/auth/password/forgot"))
            .json(&json!({ "email": email }))
            .send()
    };
    let mut after = Vec::new();
    for probed in ["nobody@example.com", "ada@example.com"] {
        assert_eq!(forgot(probed).await.unwrap().status(), 202);
        // Time enough for a lookup, not for a delivery to the hanging relay.
        tokio::time::sleep(Duration::from_millis(500)).await;
        after.push(forgot("someone-else@example.net").await.unwrap().status());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), accepted.recv()).await;
    assert_eq!(
        after[0], after[1],
        "the answer after a reset for an unknown address, then after one for an account"
    );
}

/// The same for the verification link a sign-in sends again: a right
/// password on an unverified account started a task that held its slot
/// until the relay took the mail, a wrong one (what a taken address gives
/// someone who signed up with it) started none. So with the slots nearly
/// full, the next `forgot`'s 503 told whether a sign-up just made the
/// account, which sign-up's 201 and sign-in's 401 are there to hide.
#[tokio::test]
async fn whether_a_sign_in_sent_a_verification_link_again_does_not_show_in_the_next_answer() {
    let setup = spawn_app().await;
    sign_up(&setup, "ada@example.com").await;
    let (port, _accepted) = tarpit().await;
    let app = beside_a_tarpit(&setup, port, 1).await;
    let mut after = Vec::new();
    for password in ["not the password", PASSWORD] {
        let r = app
            .post(
                "/v1/auth/signin",
                json!({"email": "ada@example.com", "password": password}),
            )
            .await;
        assert_eq!(r.status(), 401);
        // Time enough for the resend to start, not for a delivery to the hanging relay.
        tokio::time::sleep(Duration::from_millis(500)).await;
        after.push(
            app.post(
                "/v1/auth/password/forgot",
                json!({ "email": "someone-else@example.net" }),
            )
            .await
            .status(),
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        after[0], after[1],
        "the answer after a wrong password, then after a right one on an unverified account"
    );
}
