//! Where settings come from: a TOML file and `AUTHFLOW_` environment
//! variables, as figment layers that remember which file key or variable
//! gave each value (for errors that name it).
//!
//! Names: nested sections in the file (`[tokens] access_ttl_secs`), and
//! `AUTHFLOW_<SECTION>__<FIELD>` in the environment. The flat names of earlier
//! releases (`access_ttl_secs`, `AUTHFLOW_ACCESS_TTL_SECS`) stay accepted as
//! deprecated aliases through [`FLAT_ALIASES`]; a nested name wins over its alias.

use std::path::{Path, PathBuf};

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::ConfigError;

pub const ENV_PREFIX: &str = "AUTHFLOW_";

/// Settings that live at the top level rather than in a section.
const TOP_LEVEL: &[&str] = &["environment"];

/// Deprecated flat name → its nested path. Only names listed here are read
/// from flat `AUTHFLOW_<NAME>` variables; other flat `AUTHFLOW_` variables
/// (the CLI's own, test harness variables) are not settings.
pub const FLAT_ALIASES: &[(&str, &str)] = &[
    ("listen", "server.listen"),
    ("data_dir", "server.data_dir"),
    ("dev_endpoints", "server.dev_endpoints"),
    ("body_limit_bytes", "server.body_limit_bytes"),
    ("xff_num_trusted_hops", "server.xff_num_trusted_hops"),
    ("trust_forwarded_for", "server.trust_forwarded_for"),
    ("database_url", "database.url"),
    ("issuer", "tokens.issuer"),
    ("audiences", "tokens.audiences"),
    ("access_ttl_secs", "tokens.access_ttl_secs"),
    ("refresh_ttl_secs", "tokens.refresh_ttl_secs"),
    ("fingerprint_attributes", "tokens.fingerprint_attributes"),
    ("signing_alg", "keys.signing_alg"),
    ("key_publish_lead_secs", "keys.publish_lead_secs"),
    ("challenge_ttl_secs", "accounts.challenge_ttl_secs"),
    ("challenge_max_attempts", "accounts.challenge_max_attempts"),
    ("email_token_ttl_secs", "accounts.email_token_ttl_secs"),
    ("reset_token_ttl_secs", "accounts.reset_token_ttl_secs"),
    ("totp_issuer", "accounts.totp_issuer"),
    ("password_hash_memory_kib", "passwords.hash_memory_kib"),
    ("password_hash_iterations", "passwords.hash_iterations"),
    ("account_max_failures", "throttle.account_max_failures"),
    ("ip_max_failures", "throttle.ip_max_failures"),
    ("lockout_base_secs", "throttle.lockout_base_secs"),
    ("lockout_max_secs", "throttle.lockout_max_secs"),
    (
        "second_factor_max_failures",
        "throttle.second_factor_max_failures",
    ),
    (
        "second_factor_lockout_max_secs",
        "throttle.second_factor_lockout_max_secs",
    ),
    ("mailer", "mail.transport"),
    ("mail_from", "mail.from"),
    (
        "mail_max_per_recipient_per_hour",
        "mail.max_per_recipient_per_hour",
    ),
    (
        "mail_max_per_client_per_hour",
        "mail.max_per_client_per_hour",
    ),
    ("smtp_host", "smtp.host"),
    ("smtp_port", "smtp.port"),
    ("smtp_username", "smtp.username"),
    ("smtp_password", "smtp.password"),
    // Newer than the flat names, listed so that a deployment setting the
    // other SMTP variables flat (as the shipped ones do) can set these alike.
    ("smtp_tls", "smtp.tls"),
    ("smtp_ca_file", "smtp.ca_file"),
    ("maintenance_interval_secs", "maintenance.interval_secs"),
    ("audit_retention_days", "maintenance.audit_retention_days"),
    ("revocation_retention_secs", "revocation.retention_secs"),
    ("revocation_max_waiters", "revocation.max_waiters"),
    ("kek", "kek.key"),
    ("kek_file", "kek.key_file"),
    ("kek_previous", "kek.previous"),
    ("dpop_algorithms", "dpop.algorithms"),
    ("dpop_require_nonce", "dpop.require_nonce"),
];

/// Settings that have no flat alias (newer than the flat names): with the
/// aliases' targets, every nested path, so that a variable spelling one with a
/// single underscore (`AUTHFLOW_MAIL_TRANSPORT` for `AUTHFLOW_MAIL__TRANSPORT`)
/// is refused by name rather than silently not read.
pub const UNALIASED_PATHS: &[&str] = &[
    "server.trusted_proxies",
    "accounts.pages_url",
    "accounts.unverified_retention_days",
    "throttle.ip_max_signups",
    "throttle.ipv6_prefix_len",
    "throttle.refresh_max_per_hour",
    "sessions.max_per_user",
    "mail.max_signin_codes_per_hour",
    "mail.delivery_timeout_secs",
    "revocation.max_staleness_secs",
    "limits.password_hash_concurrency",
    "limits.password_hash_wait_ms",
    "limits.background_tasks",
    "dpop.origins",
];

/// The sections of the settings (`[server]`, …).
pub(super) const SECTIONS: &[&str] = &[
    "server",
    "database",
    "tokens",
    "keys",
    "accounts",
    "passwords",
    "throttle",
    "sessions",
    "mail",
    "smtp",
    "maintenance",
    "revocation",
    "kek",
    "dpop",
    "limits",
];

/// The nested path a flat, unaliased variable name spells with one
/// underscore between section and field (`mail_transport` → `mail.transport`).
fn mistyped_nested_path(flat: &str) -> Option<String> {
    SECTIONS.iter().find_map(|section| {
        let field = flat.strip_prefix(section)?.strip_prefix('_')?;
        let path = format!("{section}.{field}");
        let known = FLAT_ALIASES.iter().any(|(_, p)| *p == path)
            || UNALIASED_PATHS.contains(&path.as_str());
        known.then_some(path)
    })
}

/// The nested path whose field a flat variable name spells without its
/// section (`trusted_proxies` → `server.trusted_proxies`), as the deprecated
/// flat names spell theirs: only those are read that way.
fn sectionless_path(flat: &str) -> Option<&'static str> {
    FLAT_ALIASES
        .iter()
        .map(|(_, path)| *path)
        .chain(UNALIASED_PATHS.iter().copied())
        .find(|path| path.split_once('.').is_some_and(|(_, field)| field == flat))
}

/// The flat setting name (top-level or deprecated alias) that `flat` is a
/// near miss of: a letter or two off, scaled to the name's length so that the
/// CLI's and test harnesses' own `AUTHFLOW_` variables are not caught.
fn misspelt_flat_name(flat: &str) -> Option<&'static str> {
    let names = TOP_LEVEL
        .iter()
        .copied()
        .chain(FLAT_ALIASES.iter().map(|(f, _)| *f));
    names.into_iter().find(|name| {
        // `AUTHFLOW_ENV=production`: the usual abbreviation of the one
        // setting that turns production's checks on.
        if TOP_LEVEL.contains(name) && flat.len() >= 3 && name.starts_with(flat) {
            return true;
        }
        let allowed = match name.len() {
            0..=3 => 0,
            4..=7 => 1,
            _ => 2,
        };
        let distance = strsim::damerau_levenshtein(flat, name);
        distance > 0 && distance <= allowed
    })
}

fn nested_path_of(flat: &str) -> Option<&'static str> {
    FLAT_ALIASES
        .iter()
        .find(|(f, _)| *f == flat)
        .map(|(_, path)| *path)
}

fn flat_name_of(path: &str) -> Option<&'static str> {
    FLAT_ALIASES
        .iter()
        .find(|(_, p)| *p == path)
        .map(|(flat, _)| *flat)
}

/// The environment variable that sets `path` (`tokens.access_ttl_secs` →
/// `AUTHFLOW_TOKENS__ACCESS_TTL_SECS`).
pub fn env_var_of(path: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        path.replace('.', "__").to_ascii_uppercase()
    )
}

/// How a layer spells a setting's path, for messages.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Naming {
    FileKey,
    FlatFileKey,
    EnvVar,
    FlatEnvVar,
}

impl Naming {
    fn describe(self) -> &'static str {
        match self {
            Naming::FileKey => "file",
            Naming::FlatFileKey => "file (deprecated flat name)",
            Naming::EnvVar => "env",
            Naming::FlatEnvVar => "env (deprecated flat name)",
        }
    }

    fn spell(self, path: &str) -> String {
        let flat = || flat_name_of(path).unwrap_or(path);
        match self {
            Naming::FileKey => path.to_owned(),
            Naming::FlatFileKey => flat().to_owned(),
            // A whole section (an unknown one, in an error): its variables' prefix.
            Naming::EnvVar if !path.contains('.') && !TOP_LEVEL.contains(&path) => {
                format!("{}__…", env_var_of(path))
            }
            Naming::EnvVar => env_var_of(path),
            Naming::FlatEnvVar => format!("{ENV_PREFIX}{}", flat().to_ascii_uppercase()),
        }
    }
}

/// One source of settings: a dictionary in nested form, and how its
/// origin names each path.
struct Layer {
    naming: Naming,
    file: Option<PathBuf>,
    dict: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        let naming = self.naming;
        let md = Metadata::named(naming.describe())
            .interpolater(move |_: &Profile, keys: &[&str]| naming.spell(&keys.join(".")));
        match &self.file {
            Some(path) => md.source(figment::Source::File(path.clone())),
            None => md,
        }
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// Puts `value` at the dotted `path` of `dict`, creating sections on the way.
fn insert_at(dict: &mut Dict, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            dict.insert(path.to_owned(), value);
        }
        Some((section, rest)) => {
            let entry = dict
                .entry(section.to_owned())
                .or_insert_with(|| Value::from(Dict::new()));
            if !matches!(entry, Value::Dict(..)) {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                insert_at(inner, rest, value);
            }
        }
    }
}

/// A TOML parser's message without the lines of the file it quotes (`2 |
/// password = …` and the caret under it): the line in error may hold a
/// secret. The position (line, column) and the reason stay.
fn without_source_lines(message: &str) -> String {
    message
        .lines()
        .filter(|line| {
            let t = line.trim_start();
            let gutter = t.trim_start_matches(|c: char| c.is_ascii_digit());
            !gutter.trim_start().starts_with('|')
        })
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// What loading noticed besides the values: deprecated names that were
/// used, as `(old, new)`, and the settings the file set that a variable
/// replaced (dotted paths).
#[derive(Debug, Default)]
pub struct Report {
    pub deprecated: Vec<(String, String)>,
    pub overridden: Vec<String>,
    /// The secret settings the file holds (dotted paths; see [`secrets_in`]).
    pub file_secrets: Vec<String>,
    /// `environment` as the file writes it.
    pub file_environment: Option<String>,
}

/// The settings of [`super::SECRET_PATHS`] that `dict` (a file's values)
/// holds a secret in: set and not empty, and for `database.url` only a URL
/// with a password in it (SQLite's path, or a PostgreSQL URL whose password
/// comes from elsewhere, is no secret).
fn secrets_in(dict: &Dict) -> Vec<String> {
    super::SECRET_PATHS
        .iter()
        .filter(|path| {
            value_at(dict, path).is_some_and(|value| match value {
                Value::String(_, url) if **path == "database.url" => url_has_password(url),
                Value::String(_, text) => !text.is_empty(),
                Value::Array(_, items) => !items.is_empty(),
                _ => true,
            })
        })
        .map(|path| (*path).to_owned())
        .collect()
}

/// The value at the dotted `path` of `dict`.
fn value_at<'a>(dict: &'a Dict, path: &str) -> Option<&'a Value> {
    let (first, rest) = path.split_once('.').unwrap_or((path, ""));
    let value = dict.get(first)?;
    match value {
        Value::Dict(_, inner) if !rest.is_empty() => value_at(inner, rest),
        _ if rest.is_empty() => Some(value),
        _ => None,
    }
}

/// Whether a database URL carries a password (`user:password@`, or libpq's
/// `password=` parameter). One that does not parse is taken as carrying one.
fn url_has_password(url: &str) -> bool {
    match url::Url::parse(url) {
        Ok(u) => u.password().is_some() || u.query_pairs().any(|(k, _)| k == "password"),
        Err(_) => true,
    }
}

/// The dotted paths of every value in `dict` (a section's values, not the section).
fn leaf_paths(dict: &Dict, prefix: &str, out: &mut Vec<String>) {
    for (key, value) in dict {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::Dict(_, inner) => leaf_paths(inner, &path, out),
            _ => out.push(path),
        }
    }
}

/// A configuration file every account on the host may write lets any of
/// them rewrite the service's settings (`environment = "development"` and
/// `dev_endpoints = true` take production's checks off and open the outbox):
/// refused in every environment, since the file may name its own.
fn refuse_writable_by_every_account(path: &Path) -> Result<(), ConfigError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o002 != 0 {
                return Err(ConfigError(format!(
                    "{} is writable by every account (mode {mode:o}): any of them could change the settings; `chmod o-w` it",
                    path.display()
                )));
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// The merged layers, lowest precedence first: the file's flat keys, its
/// nested keys, flat variables, nested variables; and the [`Report`].
pub fn layered(
    file: Option<&Path>,
    env: &[(String, String)],
) -> Result<(Figment, Report), ConfigError> {
    let mut deprecated = Vec::new();
    let (mut file_flat, mut file_nested) = (Dict::new(), Dict::new());
    if let Some(path) = file {
        refuse_writable_by_every_account(path)?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        let mut parsed = Toml::string(&text).data().map_err(|e| {
            ConfigError(format!(
                "{} is not valid TOML: {}",
                path.display(),
                without_source_lines(&e.kind.to_string())
            ))
        })?;
        for (key, value) in parsed.remove(&Profile::Default).unwrap_or_default() {
            // `kek` is both a section and the flat name of `kek.key`: a table is the section.
            match nested_path_of(&key).filter(|_| !matches!(value, Value::Dict(..))) {
                Some(nested) => {
                    deprecated.push((key.clone(), nested.to_owned()));
                    insert_at(&mut file_flat, nested, value);
                }
                // Unknown keys stay, so extraction refuses them by name.
                None => {
                    file_nested.insert(key, value);
                }
            }
        }
    }
    let (mut env_flat, mut env_nested) = (Dict::new(), Dict::new());
    for (name, text) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            // The rest of a name is read in any case: `authflow_environment`
            // would otherwise be silently not read, where `AUTHFLOW_environment` is.
            if name
                .get(..ENV_PREFIX.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(ENV_PREFIX))
            {
                return Err(ConfigError(format!(
                    "`{name}` is not read: setting variables begin with {ENV_PREFIX} in capitals"
                )));
            }
            continue;
        };
        let key = rest.to_ascii_lowercase();
        // Kept as text: extraction reads numbers and booleans out of it.
        let value = Value::from(text.trim().to_owned());
        if key.contains("__") {
            let path = key.replace("__", ".");
            if path.split('.').any(str::is_empty) {
                return Err(ConfigError(format!(
                    "`{name}` is not a setting name (empty section or field)"
                )));
            }
            insert_at(&mut env_nested, &path, value);
        } else if TOP_LEVEL.contains(&key.as_str()) {
            insert_at(&mut env_nested, &key, value);
        } else if let Some(nested) = nested_path_of(&key) {
            deprecated.push((name.clone(), env_var_of(nested)));
            insert_at(&mut env_flat, nested, value);
        } else if let Some(path) = mistyped_nested_path(&key) {
            // Not read, it would leave the setting at its default without a word.
            return Err(ConfigError(format!(
                "`{name}` is not a setting name: did you mean {} (two underscores between section and field)?",
                env_var_of(&path)
            )));
        } else if let Some(path) = sectionless_path(&key) {
            // Not read either: `AUTHFLOW_TRUSTED_PROXIES` would leave every
            // peer's x-forwarded-for trusted.
            return Err(ConfigError(format!(
                "`{name}` is not a setting name: did you mean {} (the section, then two underscores)?",
                env_var_of(path)
            )));
        } else if let Some(meant) = misspelt_flat_name(&key) {
            // `AUTHFLOW_ENVIROMENT=production` would run a production service
            // as development (plain-HTTP issuer, mails kept on disk) silently.
            return Err(ConfigError(format!(
                "`{name}` is not a setting name: did you mean {ENV_PREFIX}{}?",
                meant.to_ascii_uppercase()
            )));
        }
    }
    let layer = |naming, dict, file: Option<&Path>| Layer {
        naming,
        dict,
        file: file.map(Path::to_path_buf),
    };
    // A variable that silently replaces what the file says (a container
    // image's own `ENV`, a leftover export) is worth a line at start.
    let (mut in_file, mut in_env) = (Vec::new(), Vec::new());
    leaf_paths(&file_flat, "", &mut in_file);
    leaf_paths(&file_nested, "", &mut in_file);
    leaf_paths(&env_flat, "", &mut in_env);
    leaf_paths(&env_nested, "", &mut in_env);
    let mut overridden: Vec<String> = in_file
        .into_iter()
        .filter(|path| in_env.contains(path))
        .collect();
    overridden.sort();
    overridden.dedup();
    let mut file_secrets = secrets_in(&file_flat);
    file_secrets.extend(secrets_in(&file_nested));
    file_secrets.sort();
    file_secrets.dedup();
    let file_environment = match file_nested.get("environment") {
        Some(Value::String(_, text)) => Some(text.clone()),
        _ => None,
    };
    let report = Report {
        deprecated,
        overridden,
        file_secrets,
        file_environment,
    };
    let figment = Figment::new()
        .merge(layer(Naming::FlatFileKey, file_flat, file))
        .merge(layer(Naming::FileKey, file_nested, file))
        .merge(layer(Naming::FlatEnvVar, env_flat, None))
        .merge(layer(Naming::EnvVar, env_nested, None));
    Ok((figment, report))
}

/// Where the value at `path` came from, e.g. `env AUTHFLOW_ACCESS_TTL_SECS
/// (deprecated flat name)` or `file cfg.toml: tokens.access_ttl_secs`.
pub fn origin_of(figment: &Figment, path: &str) -> String {
    let found = figment
        .find_value(path)
        .ok()
        .and_then(|v| figment.get_metadata(v.tag()).cloned());
    match found {
        Some(md) => describe(&md, path),
        None => format!("not set; file `{path}` or env {}", env_var_of(path)),
    }
}

/// `md`'s description of the setting at `path`.
pub fn describe(md: &Metadata, path: &str) -> String {
    let keys: Vec<&str> = path.split('.').collect();
    let spelled = md.interpolate(&Profile::Default, &keys);
    // The name is "file" or "env", then what kind of name it was, if any.
    let (kind, note) = md
        .name
        .split_once(' ')
        .map_or((&*md.name, String::new()), |(k, n)| (k, format!(" {n}")));
    match md.source.as_ref().and_then(|s| s.file_path()) {
        Some(file) => format!("{kind} {}: {spelled}{note}", file.display()),
        None => format!("{kind} {spelled}{note}"),
    }
}
