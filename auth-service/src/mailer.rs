//! Outgoing mail. Development: every message is a JSON file under
//! `<data_dir>/outbox/` (readable through `GET /v1/dev/outbox` when the dev
//! endpoints are on). Production: SMTP to a relay, over TLS (STARTTLS,
//! required, by default; implicit TLS; or none, only when configured so).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};

use secrecy::ExposeSecret;

use crate::config::{Config, MailerConfig, SmtpTls};

/// One message. `code` / `token` repeat the secret in the body so that the
/// development outbox can expose it to scripts; SMTP sends only the body.
#[derive(Clone, Serialize, Deserialize)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default)]
    pub sent_at: i64,
}

impl std::fmt::Debug for Mail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mail")
            .field("to", &self.to)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

#[async_trait]
pub trait Mailer: Send + Sync + 'static {
    async fn send(&self, mail: Mail) -> Result<(), String>;
    /// Messages sent to `to`, oldest first (development outbox only).
    async fn outbox(&self, _to: &str) -> Result<Vec<Mail>, String> {
        Ok(Vec::new())
    }
    /// Whether sending is a local write, done at once (the development
    /// outbox): no relay whose pace an answer could wait on or reveal.
    fn is_local(&self) -> bool {
        false
    }
}

pub fn from_config(config: &Config) -> Result<Box<dyn Mailer>, String> {
    match &config.mail.transport {
        MailerConfig::DevOutbox => Ok(Box::new(DevOutbox::new(config.outbox_dir())?)),
        MailerConfig::Smtp {
            host,
            port,
            username,
            password,
            tls,
            ca_file,
        } => {
            let transport_tls = match tls {
                SmtpTls::None => Tls::None,
                // lettre's `Required`: no STARTTLS in the relay's EHLO answer,
                // or a failed handshake, and the connection ends before AUTH
                // or MAIL (`Opportunistic` would go on in clear).
                SmtpTls::StartTls => Tls::Required(tls_parameters(host, ca_file.as_deref())?),
                SmtpTls::Implicit => Tls::Wrapper(tls_parameters(host, ca_file.as_deref())?),
            };
            let from: Mailbox = config
                .mail
                .from
                .parse()
                .map_err(|e| format!("mail.from is not a mailbox: {e}"))?;
            // `builder_dangerous` only means "no TLS unless set": it is set here.
            // EHLO names the sender's domain: lettre's default is the machine's
            // host name (a pod's, an internal host's), which the relay writes
            // into the `Received:` header every recipient can read.
            let timeout = config.mail.delivery_timeout;
            let mut builder =
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str())
                    .port(*port)
                    .tls(transport_tls)
                    .timeout(Some(timeout))
                    .hello_name(ClientId::Domain(from.email.domain().to_owned()));
            if let (Some(u), Some(p)) = (username, password) {
                builder =
                    builder.credentials(Credentials::new(u.clone(), p.expose_secret().to_owned()));
            }
            Ok(Box::new(Smtp {
                transport: builder.build(),
                from,
                host: host.clone(),
                tls: *tls,
                timeout,
            }))
        }
    }
}

/// The relay's certificate must chain to a certificate of `ca_file`, or
/// without one to Mozilla's roots (compiled in, see `tls.rs`), and name
/// `host`. A CA file replaces the public roots: a private relay's name may
/// be one a public CA certifies for someone else too.
fn tls_parameters(host: &str, ca_file: Option<&Path>) -> Result<TlsParameters, String> {
    let store = if ca_file.is_some() {
        CertificateStore::None
    } else {
        CertificateStore::WebpkiRoots
    };
    let mut builder = TlsParameters::builder(host.to_owned()).certificate_store(store);
    if let Some(path) = ca_file {
        for der in crate::tls::read_ca_file(path).map_err(|e| format!("smtp.ca_file: {e}"))? {
            let certificate = Certificate::from_der(der.to_vec())
                .map_err(|e| format!("smtp.ca_file: {}: {e}", path.display()))?;
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder
        .build_rustls()
        .map_err(|e| format!("SMTP TLS settings for {host}: {e}"))
}

pub struct DevOutbox {
    dir: PathBuf,
    counter: AtomicU64,
}

impl DevOutbox {
    pub fn new(dir: PathBuf) -> Result<Self, String> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create outbox {}: {e}", dir.display()))?;
        Ok(Self {
            dir,
            counter: AtomicU64::new(0),
        })
    }
}

#[async_trait]
impl Mailer for DevOutbox {
    fn is_local(&self) -> bool {
        true
    }

    async fn send(&self, mut mail: Mail) -> Result<(), String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        mail.sent_at = i64::try_from(now.as_secs()).unwrap_or(0);
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        // Name sorts by time, then by order within this process.
        let name = format!("{:020}-{:08}.json", now.as_nanos(), n);
        let json = serde_json::to_vec_pretty(&mail).map_err(|e| e.to_string())?;
        tokio::fs::write(self.dir.join(name), json)
            .await
            .map_err(|e| e.to_string())
    }

    async fn outbox(&self, to: &str) -> Result<Vec<Mail>, String> {
        let mut entries = tokio::fs::read_dir(&self.dir)
            .await
            .map_err(|e| e.to_string())?;
        let mut names = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(|e| e.to_string())? {
            names.push(entry.path());
        }
        names.sort();
        let mut out = Vec::new();
        for path in names {
            let Ok(bytes) = tokio::fs::read(&path).await else {
                continue;
            };
            if let Ok(mail) = serde_json::from_slice::<Mail>(&bytes) {
                if mail.to == to {
                    out.push(mail);
                }
            }
        }
        Ok(out)
    }
}

pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// For messages about failed deliveries.
    host: String,
    tls: SmtpTls,
    /// `mail.delivery_timeout_secs`: one delivery in all.
    timeout: Duration,
}

/// The domain of a recipient, all a log line about its mail may name (not
/// the address: logs are kept longer, and read by more, than the mail).
pub fn recipient_domain(to: &str) -> &str {
    to.rsplit_once('@').map_or("", |(_, domain)| domain)
}

#[async_trait]
impl Mailer for Smtp {
    /// Delivered to the relay before it returns, within
    /// `mail.delivery_timeout_secs`: a caller that must answer without
    /// waiting for the relay (or without telling whether a mail went out)
    /// calls it from a task of its own, which it counts (see `background.rs`).
    /// A failure is logged here with the recipient's domain only; the error
    /// returned names neither the address nor the relay's answer text
    /// (which often repeats the address).
    async fn send(&self, mail: Mail) -> Result<(), String> {
        let domain = recipient_domain(&mail.to).to_owned();
        let to: Mailbox = mail.to.parse().map_err(|e| format!("bad recipient: {e}"))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject)
            .body(mail.body)
            .map_err(|e| e.to_string())?;
        let error = match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => match (crate::tls::rustls_error_in(&e), e.status()) {
                (Some(handshake), _) => {
                    crate::tls::explain(handshake, &self.host, "give its CA with smtp.ca_file")
                }
                (None, Some(code)) if e.is_permanent() => format!("refused by the relay ({code})"),
                (None, Some(code)) => format!("deferred by the relay ({code})"),
                (None, None) if e.is_response() => "unreadable answer from the relay".to_owned(),
                (None, None) => e.to_string(),
            },
            Err(_) => format!(
                "no delivery within mail.delivery_timeout_secs ({}s)",
                self.timeout.as_secs()
            ),
        };
        tracing::warn!(
            %error,
            recipient_domain = %domain,
            relay = %self.host,
            tls = self.tls.name(),
            "smtp delivery failed"
        );
        Err(error)
    }
}

#[cfg(test)]
mod tests {
    use lettre::message::Mailbox;

    use crate::domain::Email;

    /// Every address sign-up accepts is one the SMTP mailer can address, and
    /// the very one: the `To`/`RCPT TO` lettre makes of the stored form is
    /// that form. Otherwise quoted and escaped spellings (`"alice"`,
    /// `"\alice"`, `"a\lice"`…) are accounts of their own, each with its own
    /// recipient mail budget, whose mails all go to `alice@…`; and others
    /// (`a..b`, `a,b`, `a<b>`) are accounts no mail ever reaches.
    #[test]
    fn every_accepted_address_is_mailed_as_itself() {
        let mut inputs: Vec<String> = [
            "alice@example.com",
            "\"alice\"@example.com",
            "\"\\alice\"@example.com",
            "\"a\\lice\"@example.com",
            "\"Alice\"@Example.com",
            "alice(x)@example.com",
            "a,b@example.com",
            "a:b@example.com",
            "a;b@example.com",
            "a<b>@example.com",
            "a[b]@example.com",
            "a\\b@example.com",
            "a\"b@example.com",
            "a..b@example.com",
            ".a@example.com",
            "a.@example.com",
            "jos\u{e9}@example.com",
            "\u{627}\u{644}\u{62c}@example.com",
            "first.last+tag@example.com",
            "o'brien@example.com",
            "a!#$%&'*+-/=?^_`{|}~z@example.com",
            "a@b\u{fc}cher.example",
            "\u{ff02}alice\u{ff02}@example.com",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        // Every printable ASCII character, and a few beyond, in a local part.
        for c in (0x21u8..0x7f)
            .map(char::from)
            .chain(['\u{a0}', '\u{ab}', '\u{2039}', '\u{ff0c}', '\u{fe52}'])
        {
            inputs.push(format!("a{c}b@example.com"));
            inputs.push(format!("{c}ab@example.com"));
        }
        let mut wrong = Vec::new();
        for input in &inputs {
            let Ok(email) = Email::parse(input) else {
                continue;
            };
            match email.as_str().parse::<Mailbox>() {
                Ok(mailbox)
                    if mailbox.name.is_none() && mailbox.email.to_string() == email.as_str() => {}
                Ok(mailbox) => wrong.push(format!(
                    "{input:?} is stored as {:?} and mailed to {:?}",
                    email.as_str(),
                    mailbox.email.to_string()
                )),
                Err(e) => wrong.push(format!(
                    "{input:?} is stored as {:?}, which SMTP cannot address ({e})",
                    email.as_str()
                )),
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
