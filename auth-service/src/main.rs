//! `authflow-auth`: serve, migrate, manage users, mint tokens, rotate keys.

use std::path::PathBuf;
use std::process::ExitCode;

use authflow_auth_service::clock::now;
use authflow_auth_service::config::{Config, Environment};
use authflow_auth_service::domain::password::{Hasher, Password};
use authflow_auth_service::domain::{random_secret, Email};
use authflow_auth_service::keys::Withdrawn;
use authflow_auth_service::startup::spawn;
use authflow_auth_service::state::{build_state, open_store};
use authflow_auth_service::store::{
    AuditEntry, Backend, Opening, PageCursor, PageRequest, Store, StoreError, User,
};
use authflow_auth_service::{sessions, tokens};
use authflow_contract::claims;
use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;

#[derive(Parser)]
#[command(name = "authflow-auth", about = "The authflow auth service", version)]
struct Cli {
    /// TOML configuration file; `AUTHFLOW_<SECTION>__<FIELD>` environment variables override it.
    #[arg(long, global = true, env = "AUTHFLOW_CONFIG")]
    config: Option<PathBuf>,
    /// `sqlite:…` or `postgres://…`; overrides `database.url` from the file and environment.
    /// A password in it can be read by other local users in the process list: give such a
    /// URL as AUTHFLOW_DATABASE__URL (or `database.url` in the file) instead.
    #[arg(long, global = true)]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service (creates the data dir, migrates, generates keys).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    #[command(subcommand)]
    User(UserCommand),
    #[command(subcommand)]
    Token(TokenCommand),
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Service accounts (callers of the client-credentials grant).
    #[command(subcommand, name = "service-account")]
    ServiceAccount(ServiceAccountCommand),
    #[command(subcommand)]
    Kek(KekCommand),
    #[command(subcommand)]
    Feed(FeedCommand),
}

#[derive(Subcommand)]
enum FeedCommand {
    /// After restoring the database from a backup (or promoting a replica
    /// that may have missed commits): start a new revocation feed epoch, so
    /// every filter reloads the whole list instead of skipping what was
    /// written after the restore under sequence numbers it saw before.
    NewEpoch,
}

#[derive(Subcommand)]
enum KekCommand {
    /// Print a fresh random key-encryption key (base64) for `kek.key` (AUTHFLOW_KEK__KEY) or a `kek.key_file`.
    Generate,
    /// Count the secrets at rest (TOTP secrets, signing keys' private halves)
    /// not sealed with the configured `kek.key`: sealed with an older key, e.g.
    /// by an instance not yet rotated. Drop `kek.previous` only once this is 0
    /// (the running instances' maintenance re-seals them). Exits 1 while not 0.
    Status,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user (email already verified). The password comes from the
    /// AUTHFLOW_NEW_PASSWORD environment variable, from standard input
    /// (`--password-stdin`), or from `--password` (which other local users
    /// can read in the process list).
    Create {
        #[arg(long)]
        email: String,
        /// The password (other local users can read it in the process list).
        #[arg(long)]
        password: Option<String>,
        /// Read the password from the first line of standard input (before
        /// AUTHFLOW_NEW_PASSWORD, which is read when neither flag is given).
        #[arg(long, conflicts_with = "password")]
        password_stdin: bool,
        /// Extra role (repeatable); every user has `user`. `--role admin` makes an admin.
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// List users with their roles.
    List,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Mint an access token for a user (development environment only).
    Mint {
        #[arg(long)]
        email: String,
        /// Device secret the token is bound to (a fresh one, printed, when
        /// absent); the configured attributes come from `--header name=value`.
        #[arg(long)]
        device_secret: Option<String>,
        #[arg(long = "header")]
        headers: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ServiceAccountCommand {
    /// Create an account; prints its client secret once (only a hash is stored).
    Create {
        #[arg(long)]
        client_id: String,
        /// A scope the account may be granted (repeatable).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// A file holding the public JWK (ES256 or EdDSA) of `private_key_jwt`.
        #[arg(long)]
        jwk_file: Option<std::path::PathBuf>,
        /// No client secret: the account authenticates with its key only (needs --jwk-file).
        #[arg(long)]
        no_secret: bool,
    },
    /// Register (replace) the public JWK the account's `private_key_jwt` assertions are checked with.
    SetKey {
        #[arg(long)]
        client_id: String,
        #[arg(long)]
        jwk_file: std::path::PathBuf,
        /// Also kill every token the account holds (the old key leaked).
        #[arg(long)]
        revoke_tokens: bool,
    },
    /// Remove the account's public key (refused when it has no secret).
    RemoveKey {
        #[arg(long)]
        client_id: String,
        /// Also kill every token the account holds (the key leaked).
        #[arg(long)]
        revoke_tokens: bool,
    },
    /// Replace the secret (the old one stops working); prints the new one once.
    RotateSecret {
        #[arg(long)]
        client_id: String,
        /// Also kill every token the account holds (the old secret leaked).
        #[arg(long)]
        revoke_tokens: bool,
    },
    /// Disable the account; its live tokens are banned through the revocation feed.
    Disable {
        #[arg(long)]
        client_id: String,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Publish a new signing key now; it signs after `keys.publish_lead_secs`.
    Rotate,
    /// Withdraw a signing key whose private half leaked: it leaves the JWKS
    /// and verifies nothing at once, its private half is deleted; if it is
    /// the key signing, a new key signs at once (no publication lead).
    Withdraw {
        /// The key's `kid` (`keys list`).
        #[arg(long)]
        kid: String,
    },
    /// List signing keys (public metadata).
    List,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // Every acknowledged write is already committed (synchronous=FULL); do not
    // let lingering background threads keep a stopped service alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The new user's password: the first line of standard input (its line
/// ending removed, nothing else) when asked for, else `--password`, else
/// AUTHFLOW_NEW_PASSWORD. The environment is read here rather than by clap,
/// so that it cannot clash with `--password-stdin`.
fn new_password(given: Option<String>, from_stdin: bool) -> Result<String, String> {
    if !from_stdin {
        return given.or_else(|| std::env::var("AUTHFLOW_NEW_PASSWORD").ok()).ok_or_else(|| {
            "no password: set AUTHFLOW_NEW_PASSWORD, or pass it on standard input with --password-stdin"
                .to_owned()
        });
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err("--password-stdin: standard input held no password".into());
    }
    Ok(password.to_owned())
}

async fn run(cli: Cli) -> Result<(), String> {
    if let Command::Kek(KekCommand::Generate) = cli.command {
        println!("{}", authflow_auth_service::kek::generate_key());
        return Ok(());
    }
    let mut config = Config::load(cli.config.as_deref()).map_err(|e| e.to_string())?;
    if let Some(url) = cli.database_url {
        if Backend::of_url(&url).is_none() {
            return Err("--database-url must start with sqlite: or postgres://".into());
        }
        config.database.url = url.into();
    }
    match cli.command {
        Command::Serve => {
            let running = spawn(config).await.map_err(|e| e.to_string())?;
            let config = &running.state.config;
            tracing::info!(addr = %running.addr, issuer = %config.tokens.issuer, environment = %config.environment.name(), "authflow auth service listening");
            for warning in config.development_warnings() {
                tracing::warn!("{warning}");
            }
            println!("listening on http://{}", running.addr);
            running.server.await.map_err(|e| e.to_string())?;
            // Every connection has ended: no request starts more work. The
            // mails still going out (a reset link, a security notice) are
            // waited for, as long as one delivery may take and a little more.
            let background = &running.state.background;
            let bound = config.mail.delivery_timeout + std::time::Duration::from_secs(5);
            if background.in_flight() > 0 {
                tracing::info!(tasks = background.in_flight(), "waiting for mail in flight");
                if !background.drain(bound).await {
                    tracing::warn!(
                        tasks = background.in_flight(),
                        "stopping with mail still in flight"
                    );
                }
            }
            Ok(())
        }
        Command::Migrate => {
            open_store(&config, Opening::CreateIfMissing)
                .await
                .map_err(|e| e.to_string())?;
            // Not the URL itself: it may carry a password.
            let backend = Backend::of_url(config.database.url.expose_secret())
                .map_or("unknown", Backend::name);
            println!("migrations applied ({backend})");
            Ok(())
        }
        Command::User(UserCommand::Create {
            email,
            password,
            password_stdin,
            roles,
        }) => {
            let password = new_password(password, password_stdin)?;
            create_user(config, &email, &password, roles).await
        }
        // Listing re-seals nothing (`Inspect`): a listing run with a rotation's
        // next key must not move the secrets under it before every instance has it.
        Command::User(UserCommand::List) => {
            let store = open_store(&config, Opening::Inspect)
                .await
                .map_err(|e| e.to_string())?;
            let mut page = PageRequest::first(1000);
            loop {
                let users = store.list_users(&page).await.map_err(|e| e.to_string())?;
                let Some(last) = users.last() else { break };
                page.after = Some(PageCursor {
                    created_at: last.created_at,
                    id: last.id.clone(),
                });
                for u in &users {
                    let flags = [
                        (u.email_verified, "verified"),
                        (u.banned_at.is_some(), "banned"),
                        (u.totp_secret.is_some(), "totp"),
                    ];
                    let flags: Vec<&str> = flags
                        .iter()
                        .filter(|(on, _)| *on)
                        .map(|(_, f)| *f)
                        .collect();
                    println!(
                        "{}  {}  roles={}  {}",
                        u.id,
                        u.email,
                        u.roles.join(","),
                        flags.join(",")
                    );
                }
            }
            Ok(())
        }
        Command::Token(TokenCommand::Mint {
            email,
            device_secret,
            headers,
        }) => mint(config, &email, device_secret, &headers).await,
        Command::Keys(KeysCommand::Rotate) => {
            let lead = i64::try_from(config.keys.publish_lead.as_secs()).unwrap_or(60);
            let alg = config.keys.signing_alg;
            let state = build_state(config, Opening::Existing)
                .await
                .map_err(|e| e.to_string())?;
            let rotate = async {
                state
                    .keys
                    .rotate(state.store.as_ref(), alg, now(), lead)
                    .await
                    .map_err(|e| e.to_string())
            };
            let kid = cli_privileged(
                state.store.as_ref(),
                ("cli_rotate_keys", "by the CLI"),
                (None, None),
                rotate,
                |kid| format!("done: new key {kid}"),
            )
            .await?;
            println!("new key {kid} published; it signs in {lead} s (a running service publishes it within a second)");
            Ok(())
        }
        Command::Keys(KeysCommand::Withdraw { kid }) => {
            let alg = config.keys.signing_alg;
            let state = build_state(config, Opening::Existing)
                .await
                .map_err(|e| e.to_string())?;
            let withdraw = async {
                state
                    .keys
                    .withdraw(state.store.as_ref(), alg, &kid, now())
                    .await
                    .map_err(|e| e.to_string())
            };
            let done = cli_privileged(
                state.store.as_ref(),
                ("cli_withdraw_key", "by the CLI"),
                (None, None),
                withdraw,
                |done| done.audit_detail(&kid),
            )
            .await?;
            match done {
                Withdrawn::Already => println!("key {kid} was already withdrawn: nothing changed"),
                Withdrawn::Now { successor } => {
                    println!(
                        "key {kid} withdrawn: out of the JWKS, verifying nothing, its private half \
                         deleted (running services follow within a second; filters at their next \
                         JWKS refresh)"
                    );
                    if let Some(new) = successor {
                        println!("new key {new} signs now");
                    }
                }
            }
            Ok(())
        }
        Command::Feed(FeedCommand::NewEpoch) => {
            let state = build_state(config, Opening::Existing)
                .await
                .map_err(|e| e.to_string())?;
            let old = state.store.epoch().await.map_err(|e| e.to_string())?;
            let renew = async {
                state
                    .store
                    .renew_epoch(&old)
                    .await
                    .map_err(|e| e.to_string())
            };
            let new = cli_privileged(
                state.store.as_ref(),
                ("cli_feed_new_epoch", &format!("from {old}")),
                (None, None),
                renew,
                |new| format!("done: {old} -> {new}"),
            )
            .await?;
            println!("revocation feed epoch {old} replaced by {new}: every filter takes a full list on its next poll");
            Ok(())
        }
        Command::ServiceAccount(cmd) => service_account(config, cmd).await,
        Command::Kek(KekCommand::Generate) => Ok(()),
        Command::Kek(KekCommand::Status) => {
            let store = open_store(&config, Opening::Inspect)
                .await
                .map_err(|e| e.to_string())?;
            let n = store
                .count_not_under_current_kek()
                .await
                .map_err(|e| e.to_string())?;
            if n == 0 {
                println!(
                    "0 secrets at rest under another key-encryption key: `kek.previous` can go"
                );
                Ok(())
            } else {
                Err(format!(
                    "{n} secrets at rest not sealed with the current key-encryption key: keep `kek.previous` \
                     (running instances with the new key re-seal them within their maintenance interval)"
                ))
            }
        }
        Command::Keys(KeysCommand::List) => {
            let state = build_state(config, Opening::Inspect)
                .await
                .map_err(|e| e.to_string())?;
            for k in state.keys.list() {
                println!(
                    "{}  {}  publish_at={} active_at={} retired_at={:?} withdrawn_at={:?}",
                    k.kid, k.alg, k.publish_at, k.active_at, k.retired_at, k.withdrawn_at
                );
            }
            Ok(())
        }
    }
}

/// Runs a command that changes what the service trusts, audited first as
/// the admin API's actions are (`cli_…` events, no client address; see
/// `audit::run_first`): no row, no change. `settled` describes a success in
/// the row; a failure is written as `failed: <message>`.
async fn cli_privileged<T>(
    store: &dyn Store,
    what: (&str, &str),
    about: (Option<&str>, Option<&str>),
    action: impl std::future::Future<Output = Result<T, String>>,
    settled: impl FnOnce(&T) -> String,
) -> Result<T, String> {
    let ((event, outcome), (user_id, email)) = (what, about);
    let entry = AuditEntry {
        at: now(),
        event: event.to_owned(),
        outcome: outcome.to_owned(),
        user_id: user_id.map(str::to_owned),
        email: email.map(str::to_owned),
        ip: None,
        user_agent: Some("authflow-auth (CLI)".to_owned()),
        detail: None,
    };
    authflow_auth_service::audit::run_first(store, entry, action, |result| match result {
        Ok(value) => settled(value),
        Err(e) => format!("failed: {e}"),
    })
    .await
    .map_err(|e| {
        format!("the audit row for {event} could not be written, so nothing was changed: {e}")
    })?
}

async fn create_user(
    config: Config,
    email: &str,
    password: &str,
    extra_roles: Vec<String>,
) -> Result<(), String> {
    let email = Email::parse(email)?;
    let password = Password::parse(password, email.as_str()).map_err(|e| e.0)?;
    let hasher = Hasher::new(
        config.passwords.hash_memory_kib,
        config.passwords.hash_iterations,
    )?;
    let hash = hasher.hash(password.expose())?;
    let mut roles = vec!["user".to_owned()];
    for r in extra_roles {
        let r = r.trim().to_owned();
        // Stored space-separated, forwarded comma-separated (`x-auth-roles`).
        if r.contains(char::is_whitespace) || !claims::is_list_item(&r) {
            return Err(format!("role `{r}` must be one word without commas"));
        }
        if !roles.contains(&r) {
            roles.push(r);
        }
    }
    if roles.len() > claims::MAX_LIST_ITEMS {
        return Err(format!(
            "a user has at most {} roles (the filter refuses tokens with more)",
            claims::MAX_LIST_ITEMS
        ));
    }
    // The first admin is made before the service ever ran: this one may set the database up.
    let store = open_store(&config, Opening::CreateIfMissing)
        .await
        .map_err(|e| e.to_string())?;
    let user = User {
        email_verified: true,
        ..User::new(email.as_str(), hash, roles.clone(), now())
    };
    // An address held by an account that never verified it (a sign-up by
    // anyone, perhaps before the operator got here) is the operator's: that
    // account is given this password and these roles, and what its own
    // password opened ends. A verified or banned one is refused.
    let create = async {
        match store.create_user(&user).await {
            Ok(()) => Ok(user.id.clone()),
            Err(StoreError::Conflict(_)) => {
                let now = now();
                // The feed entries of its sessions (an unverified account has none) for a day.
                match store.claim_unverified_email(&user, now, now + 86_400).await {
                    Ok(Some(id)) => Ok(id),
                    Ok(None) => Err(format!("a user with email {email} already exists")),
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(e) => Err(e.to_string()),
        }
    };
    // Audited under the account it changes: the unverified one holding the
    // address (given this password and these roles) when there is one.
    let audited = match store.user_by_email(&user.email).await {
        Ok(Some(held)) if !held.email_verified && held.banned_at.is_none() => held.id,
        _ => user.id.clone(),
    };
    let user_id = cli_privileged(
        store.as_ref(),
        ("cli_user_create", &format!("roles={}", roles.join(","))),
        (Some(&audited), Some(&user.email)),
        create,
        |id| {
            if *id == user.id {
                "done".into()
            } else {
                format!("done: took over the unverified account {id}")
            }
        },
    )
    .await?;
    println!(
        "{}",
        serde_json::json!({"user_id": user_id, "email": user.email, "roles": roles})
    );
    Ok(())
}

async fn mint(
    config: Config,
    email: &str,
    device_secret: Option<String>,
    headers: &[String],
) -> Result<(), String> {
    if config.environment != Environment::Development {
        return Err("token mint is for the development environment only".into());
    }
    let state = build_state(config, Opening::Existing)
        .await
        .map_err(|e| e.to_string())?;
    let email = Email::parse(email)?;
    let user = state
        .store
        .user_by_email(email.as_str())
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no such user")?;
    let now = now();
    let device = device_secret
        .map(authflow_auth_service::domain::Secret::new)
        .unwrap_or_else(random_secret);
    let mut header_map = axum::http::HeaderMap::new();
    for h in headers {
        let (name, value) = h
            .split_once('=')
            .ok_or_else(|| format!("--header `{h}` is not name=value"))?;
        let name = axum::http::HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
            .map_err(|e| e.to_string())?;
        let value = axum::http::HeaderValue::from_str(value.trim()).map_err(|e| e.to_string())?;
        header_map.insert(name, value);
    }
    let dfp = tokens::fingerprint(
        &state.config.tokens.fingerprint_attributes,
        0,
        device.expose(),
        &header_map,
        None,
    );
    // Its refresh token goes to nobody: the session exists so it can be revoked.
    let origin = (None, Some("authflow-auth token mint".to_owned()));
    let binding = sessions::Binding {
        dfp: Some(dfp),
        dpop_jkt: None,
        second_factor: authflow_auth_service::store::SignedInWith::Unchecked,
    };
    let mint = async {
        sessions::create_session(&state, &user, &device, now, origin, binding)
            .await
            .map(|(session_id, access, _refresh)| (session_id, access))
            .map_err(|e| format!("{e:?}"))
    };
    let (session_id, access) = cli_privileged(
        state.store.as_ref(),
        ("cli_token_mint", "by the CLI"),
        (Some(&user.id), Some(&user.email)),
        mint,
        |(session_id, _)| format!("done: session {session_id}"),
    )
    .await?;
    println!(
        "{}",
        serde_json::json!({
            "access_token": access.token, "token_type": "Bearer", "expires_in": access.expires_in,
            "device_secret": device.expose(), "session_id": session_id, "jti": access.jti,
        })
    );
    Ok(())
}

/// A JWK from a file (a public key: nothing secret passes through here).
fn read_jwk(path: &std::path::Path) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))
}

/// `service-account set-key` (a key) and `remove-key` (`None`).
async fn set_service_key(
    state: &authflow_auth_service::state::AppState,
    client_id: &str,
    jwk: Option<serde_json::Value>,
    revoke_tokens: bool,
    now: i64,
) -> Result<(), String> {
    let event = if jwk.is_some() {
        "cli_set_service_key"
    } else {
        "cli_remove_service_key"
    };
    let change = async {
        authflow_auth_service::service_accounts::set_public_key(
            state,
            client_id,
            jwk.as_ref(),
            revoke_tokens,
            now,
        )
        .await
        .map_err(|e| format!("{e:?}"))
    };
    cli_privileged(
        state.store.as_ref(),
        (event, "by the CLI"),
        (Some(&claims::service_subject(client_id)), None),
        change,
        |_| "done".into(),
    )
    .await?;
    println!(
        "{}",
        serde_json::json!({"client_id": client_id, "public_key": jwk.is_some()})
    );
    Ok(())
}

async fn service_account(config: Config, cmd: ServiceAccountCommand) -> Result<(), String> {
    use authflow_auth_service::service_accounts;
    let state = build_state(config, Opening::Existing)
        .await
        .map_err(|e| e.to_string())?;
    let now = now();
    match cmd {
        ServiceAccountCommand::Create {
            client_id,
            scopes,
            jwk_file,
            no_secret,
        } => {
            let jwk = jwk_file.as_deref().map(read_jwk).transpose()?;
            let create = async {
                service_accounts::create(&state, &client_id, &scopes, jwk.as_ref(), !no_secret, now)
                    .await
                    .map_err(|e| format!("{e:?}"))
            };
            let (account, secret) = cli_privileged(
                state.store.as_ref(),
                ("cli_create_service_account", "by the CLI"),
                (Some(&claims::service_subject(&client_id)), None),
                create,
                |_| "done".into(),
            )
            .await?;
            let mut out = serde_json::json!({"client_id": account.client_id, "scope": account.scope, "public_key": jwk.is_some()});
            if let Some(secret) = secret {
                out["client_secret"] = secret.into();
            }
            println!("{out}");
        }
        ServiceAccountCommand::SetKey {
            client_id,
            jwk_file,
            revoke_tokens,
        } => {
            set_service_key(
                &state,
                &client_id,
                Some(read_jwk(&jwk_file)?),
                revoke_tokens,
                now,
            )
            .await?
        }
        ServiceAccountCommand::RemoveKey {
            client_id,
            revoke_tokens,
        } => set_service_key(&state, &client_id, None, revoke_tokens, now).await?,
        ServiceAccountCommand::RotateSecret {
            client_id,
            revoke_tokens,
        } => {
            let change = async {
                service_accounts::rotate_secret(&state, &client_id, revoke_tokens, now)
                    .await
                    .map_err(|e| format!("{e:?}"))
            };
            let secret = cli_privileged(
                state.store.as_ref(),
                ("cli_rotate_service_secret", "by the CLI"),
                (Some(&claims::service_subject(&client_id)), None),
                change,
                |_| "done".into(),
            )
            .await?;
            println!(
                "{}",
                serde_json::json!({"client_id": client_id, "client_secret": secret})
            );
        }
        ServiceAccountCommand::Disable { client_id } => {
            let change = async {
                service_accounts::disable(&state, &client_id, now)
                    .await
                    .map_err(|e| format!("{e:?}"))
            };
            cli_privileged(
                state.store.as_ref(),
                ("cli_disable_service_account", "by the CLI"),
                (Some(&claims::service_subject(&client_id)), None),
                change,
                |_| "done".into(),
            )
            .await?;
            println!(
                "{}",
                serde_json::json!({"client_id": client_id, "disabled": true})
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// What the process list shows is readable by every local user: the
    /// help of `--database-url`, which may carry the database password, says
    /// so, as that of `user create --password` does.
    #[test]
    fn database_url_help_warns_of_the_process_list() {
        let mut cli = Cli::command();
        cli.build();
        let database_url = cli
            .get_arguments()
            .find(|a| a.get_id() == "database_url")
            .and_then(|a| a.get_help())
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(
            database_url.contains("process list")
                && database_url.contains("AUTHFLOW_DATABASE__URL"),
            "{database_url}"
        );
    }
}
