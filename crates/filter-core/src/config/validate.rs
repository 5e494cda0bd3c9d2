//! From the schema as given ([`super::raw`]) to the runtime types the request
//! path trusts: every bound checked, every name and path made safe, each
//! error naming its field.

use authflow_contract::claims;
use authflow_contract::fingerprint::DeviceAttribute;
use authflow_contract::revocation::{MAX_CLOCK_SKEW_SECS, MAX_LIST_ENTRIES};

use super::raw::*;
use super::*;

impl FilterConfig {
    pub(super) fn validate(raw: RawConfig) -> Result<Self, ConfigError> {
        if raw.providers.is_empty() {
            return err("`providers`: at least one provider is required");
        }
        let revocation_set = raw.revocation.is_some();
        let revocation = match raw.revocation {
            None => RevocationPolicy {
                max_staleness_ms: defaults::max_staleness_secs() * 1000,
                on_stale: StalePolicy::Deny,
                max_entries: default_max_entries(),
            },
            Some(r) => {
                // A day of `deny` that serves a cut-off list is no bound; the
                // service bounds its own (`revocation.max_staleness_secs`) alike.
                if r.max_staleness_secs == 0 || r.max_staleness_secs > MAX_STALENESS_SECS {
                    return err(format!(
                        "`revocation.max_staleness_secs`: between 1 and {MAX_STALENESS_SECS}"
                    ));
                }
                if r.max_entries == 0 || r.max_entries > MAX_LIST_ENTRIES {
                    return err("`revocation.max_entries`: between 1 and 2000000");
                }
                RevocationPolicy {
                    max_staleness_ms: r.max_staleness_secs.saturating_mul(1000),
                    on_stale: r.on_stale,
                    max_entries: r.max_entries,
                }
            }
        };
        let mut providers: Vec<Provider> = Vec::with_capacity(raw.providers.len());
        for (i, p) in raw.providers.into_iter().enumerate() {
            let provider = validate_provider(p, &revocation)
                .map_err(|e| ConfigError(format!("`providers[{i}]`.{}", e.0)))?;
            // (A few providers: a look through those before, no set.)
            if providers.iter().any(|q| q.issuer == provider.issuer) {
                return err(format!(
                    "`providers[{i}].issuer`: issuer `{}` is configured twice",
                    provider.issuer
                ));
            }
            // Logs, stats and operators tell providers apart by name.
            if providers.iter().any(|q| q.name == provider.name) {
                return err(format!(
                    "`providers[{i}].name`: provider name `{}` is used twice",
                    provider.name
                ));
            }
            providers.push(provider);
        }
        // A staleness policy with no feed to apply it to checks nothing: an
        // operator who wrote one believes tokens are checked for revocation.
        if revocation_set && providers.iter().all(|p| p.revocations.is_none()) {
            return err("`revocation`: no provider has a `revocations` feed");
        }
        if raw.max_token_bytes < 64 || raw.max_token_bytes > MAX_TOKEN_BYTES_LIMIT {
            return err(format!(
                "`max_token_bytes`: must be between 64 and {MAX_TOKEN_BYTES_LIMIT}"
            ));
        }
        // The service keeps publishing a revocation this long past its token's
        // `exp` by default; a larger skew would let revoked tokens revive.
        if raw.clock_skew_secs > MAX_CLOCK_SKEW_SECS {
            return err(format!("`clock_skew_secs`: at most {MAX_CLOCK_SKEW_SECS}"));
        }
        if raw.retry_after_secs == 0 || u64::from(raw.retry_after_secs) > MAX_RETRY_AFTER_SECS {
            return err(format!(
                "`retry_after_secs`: between 1 and {MAX_RETRY_AFTER_SECS}"
            ));
        }
        if raw.max_token_lifetime_secs == 0 {
            return err("`max_token_lifetime_secs`: must be positive");
        }
        if raw.cache_max_entries > 1_000_000 {
            return err("`cache_max_entries`: at most 1000000");
        }
        if raw.key_wait_ms > MAX_KEY_WAIT_MS {
            return err(format!("`key_wait_ms`: at most {MAX_KEY_WAIT_MS}"));
        }
        let token_sources = match raw.token_sources {
            None => TokenSources {
                authorization_bearer: true,
                cookies: vec![],
                headers: vec![],
                header_spellings: vec![],
            },
            Some(t) => {
                for (i, c) in t.cookies.iter().enumerate() {
                    if !is_token(c) {
                        return err(format!(
                            "`token_sources.cookies[{i}]`: `{c}` is not a valid cookie name"
                        ));
                    }
                }
                let headers = header_names(&t.headers, "token_sources.headers")?;
                for h in &headers {
                    spellings_fit(h, "token_sources.headers")?;
                }
                if !t.authorization_bearer && t.cookies.is_empty() && headers.is_empty() {
                    return err("`token_sources`: no source left to read a token from");
                }
                let names: Vec<&str> = headers.iter().map(String::as_str).collect();
                TokenSources {
                    authorization_bearer: t.authorization_bearer,
                    cookies: t.cookies,
                    header_spellings: crate::header_spellings::underscore_spellings(&names),
                    headers,
                }
            }
        };
        let several = providers.len() > 1;
        let identity = validate_identity(raw.identity_headers, several, &token_sources.headers)?;
        let providers = PerProvider::from_vec(providers);
        let mut routes = Vec::with_capacity(raw.routes.len());
        for (i, r) in raw.routes.into_iter().enumerate() {
            let route = validate_route(r, &providers)
                .map_err(|e| ConfigError(format!("`routes[{i}]`.{}", e.0)))?;
            // First match wins: a rule after one matching all it matches
            // never applies (`/api` before `/api/admin` leaves the admin
            // rule's requests to `/api`'s policy, however weak).
            if let Some(j) = routes.iter().position(|earlier| {
                crate::policy::shadows(earlier, &route, raw.case_insensitive_paths)
            }) {
                return err(format!(
                    "`routes[{i}]`: never applies: `routes[{j}]` matches all it does (put the narrower rule first)"
                ));
            }
            routes.push(route);
        }
        let browser = validate_browser(raw.browser, &routes, raw.case_insensitive_paths)?;
        let default_policy = raw.default_policy.unwrap_or(Policy::Authenticated);
        check_policy(&default_policy)
            .map_err(|e| ConfigError(format!("`default_policy`: {}", e.0)))?;
        let default_providers =
            admitted_providers(&raw.default_providers, &providers, "`default_providers`")?;
        let device = match raw.device_binding {
            None => DeviceBinding {
                mode: DeviceMode::Off,
                attributes: vec![],
                tokens_without_fingerprint: MissingFingerprint::Allow,
                xff_num_trusted_hops: 0,
            },
            Some(d) => {
                let mut attributes = Vec::with_capacity(d.attributes.len());
                for (i, a) in d.attributes.iter().enumerate() {
                    attributes.push(DeviceAttribute::parse(a).map_err(|e| {
                        ConfigError(format!("`device_binding.attributes[{i}]`: {e}"))
                    })?);
                }
                if attributes.len() > 16 {
                    return err("`device_binding.attributes`: at most 16");
                }
                if d.xff_num_trusted_hops > authflow_contract::client_address::MAX_TRUSTED_HOPS {
                    return err(format!(
                        "`device_binding.xff_num_trusted_hops`: at most {}",
                        authflow_contract::client_address::MAX_TRUSTED_HOPS
                    ));
                }
                DeviceBinding {
                    mode: d.mode,
                    attributes,
                    tokens_without_fingerprint: d.tokens_without_fingerprint,
                    xff_num_trusted_hops: d.xff_num_trusted_hops,
                }
            }
        };
        Ok(FilterConfig {
            providers,
            clock_skew_secs: raw.clock_skew_secs,
            max_token_lifetime_secs: raw.max_token_lifetime_secs,
            token_sources,
            max_token_bytes: raw.max_token_bytes,
            identity,
            routes,
            case_insensitive_paths: raw.case_insensitive_paths,
            default_policy,
            default_providers,
            failure_mode: raw.failure_mode,
            retry_after_secs: raw.retry_after_secs,
            cache_max_entries: raw.cache_max_entries,
            key_wait_ms: raw.key_wait_ms,
            device,
            revocation,
            forward_device_secret: raw.forward_device_secret,
            dpop_nonce_key_env: validate_env_name(raw.dpop_nonce_key_env)?,
            browser,
        })
    }
}

fn validate_provider(p: RawProvider, policy: &RevocationPolicy) -> Result<Provider, ConfigError> {
    if p.name.is_empty()
        || p.name.len() > 64
        || !p
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return err(format!(
            "name: `{}` must be 1-64 letters, digits, `-` or `_`",
            p.name
        ));
    }
    if p.issuer.is_empty() {
        return err("issuer: must not be empty");
    }
    if p.issuer.len() > authflow_contract::revocation::blob::MAX_ISSUER_LEN {
        return err(format!(
            "issuer: at most {} bytes (the revocation list's layout)",
            authflow_contract::revocation::blob::MAX_ISSUER_LEN
        ));
    }
    if p.algorithms.is_empty() {
        return err("algorithms: list at least one of EdDSA, ES256, RS256");
    }
    let mut algorithms = Vec::new();
    for a in &p.algorithms {
        match Algorithm::parse(a) {
            Some(alg) => algorithms.push(alg),
            None => {
                return err(format!(
                    "algorithms: `{a}` is not supported (EdDSA, ES256, RS256)"
                ))
            }
        }
    }
    let jwks = match p.jwks {
        RawJwksSource::Remote(u) => JwksSource::Remote(validate_upstream(
            u,
            "jwks.remote",
            defaults::refresh_interval_secs() * 1000,
            true,
        )?),
        RawJwksSource::Inline(doc) => {
            let set = doc
                .0
                .map_err(|e| ConfigError(format!("jwks.inline: {e}")))?;
            JwksSource::Inline(set)
        }
    };
    let revocations = match p.revocations {
        None => None,
        Some(u) => {
            let wait_secs = u.wait_secs;
            let mut upstream =
                validate_upstream(u, "revocations", defaults::poll_interval_ms(), false)?;
            // The list is fresh only when an answer arrives.
            if upstream.interval_ms >= policy.max_staleness_ms {
                return err(
                    "revocations.poll_interval_ms must stay under revocation.max_staleness_secs",
                );
            }
            upstream.wait_ms =
                revocation_wait_ms(wait_secs, upstream.timeout_ms, policy.max_staleness_ms)?;
            Some(upstream)
        }
    };
    // RFC 8725 §3.11, RFC 9068 §4: without an audience check any token the
    // issuer signs passes here, its ID tokens and the access tokens it mints
    // for other APIs included. A `token_type` (`at+jwt`) keeps ID tokens out
    // but not another API's access token of the same issuer.
    if p.audiences.is_empty() {
        return err(
            "needs `audiences` (the `aud` values of tokens for this API: a `token_type` alone \
             lets the issuer's access tokens for other APIs pass)",
        );
    }
    if p.audiences.iter().any(String::is_empty) {
        return err("`audiences` holds an empty name");
    }
    if p.required_claims.iter().any(String::is_empty) {
        return err("`required_claims` holds an empty name");
    }
    let mut dpop = validate_dpop(p.dpop, p.dpop_algorithms, p.dpop_max_age_secs, p.dpop_nonce)?;
    dpop.origins = validate_origins(p.dpop_origins)?;
    Ok(Provider {
        dpop,
        name: p.name,
        issuer: p.issuer,
        audiences: p.audiences,
        algorithms,
        required_claims: p.required_claims,
        token_type: p.token_type,
        jwks,
        revocations,
        forward_token: p.forward_token,
    })
}

fn validate_dpop(
    mode: DpopMode,
    algorithms: Option<Vec<String>>,
    max_age_secs: Option<u64>,
    nonce: DpopNonce,
) -> Result<DpopPolicy, ConfigError> {
    use authflow_contract::dpop::{DEFAULT_MAX_AGE_SECS, SUPPORTED_ALGORITHMS};
    let algorithms = match algorithms {
        None => SUPPORTED_ALGORITHMS.to_vec(),
        Some(names) if names.is_empty() => {
            return err("dpop_algorithms: list at least one of ES256, EdDSA")
        }
        Some(names) => {
            let mut out = Vec::new();
            for name in &names {
                match Algorithm::parse(name).filter(|a| SUPPORTED_ALGORITHMS.contains(a)) {
                    Some(a) => out.push(a),
                    None => {
                        return err(format!(
                            "dpop_algorithms: `{name}` is not supported (ES256, EdDSA)"
                        ))
                    }
                }
            }
            out
        }
    };
    let max_age_secs = max_age_secs.unwrap_or(DEFAULT_MAX_AGE_SECS);
    if !(1..=MAX_DPOP_MAX_AGE_SECS).contains(&max_age_secs) {
        return err(format!(
            "dpop_max_age_secs: must be 1-{MAX_DPOP_MAX_AGE_SECS}"
        ));
    }
    if nonce == DpopNonce::Required && mode == DpopMode::Off {
        return err("dpop_nonce: `required` needs `dpop: allowed` or `required`");
    }
    Ok(DpopPolicy {
        mode,
        algorithms,
        max_age_secs,
        nonce,
        origins: Vec::new(),
    })
}

/// `dpop_origins`: each `http(s)://host[:port]` and nothing more, kept in
/// `htu`'s comparison form with the `/` of an empty path.
fn validate_origins(origins: Option<Vec<String>>) -> Result<Vec<String>, ConfigError> {
    let Some(origins) = origins else {
        return Ok(Vec::new());
    };
    if origins.is_empty() {
        return err("dpop_origins: list at least one, or leave it out");
    }
    let mut out = Vec::new();
    for origin in origins {
        // A scheme and an authority, no path, query or fragment.
        let bare = authflow_contract::text::split_once(&origin, "://")
            .is_some_and(|(_, rest)| !rest.contains(['/', '?', '#']));
        match authflow_contract::dpop::htu::normalize(&format!("{origin}/")) {
            Some(n) if bare => out.push(n),
            _ => {
                return err(format!(
                    "dpop_origins: `{origin}` is not an origin (https://host[:port])"
                ))
            }
        }
    }
    Ok(out)
}

/// `dpop_nonce_key_env`: a plain environment variable name.
fn validate_env_name(name: Option<String>) -> Result<Option<String>, ConfigError> {
    match name {
        Some(n)
            if n.is_empty()
                || n.len() > 128
                || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
        {
            err(format!(
                "`dpop_nonce_key_env`: `{n}` must be 1-128 letters, digits or `_`"
            ))
        }
        name => Ok(name),
    }
}

/// The longest `revocations.wait_secs` (the service's own bound).
pub const MAX_REVOCATION_WAIT_SECS: u64 = 60;
/// The longest `revocation.max_staleness_secs`: an hour, as the service's own.
pub const MAX_STALENESS_SECS: u64 = 3600;
/// The longest `retry_after_secs`: an hour.
pub const MAX_RETRY_AFTER_SECS: u64 = 3600;
/// `revocations.wait_secs` when not set, if the staleness bound allows it:
/// an idle long poll re-arms 60 / 30 = 2 times a minute per sidecar.
const DEFAULT_REVOCATION_WAIT_SECS: u64 = 30;

/// How long the revocation feed may hold a poll. The list is only known
/// fresh when an answer arrives, so a held poll plus its network allowance
/// must end before the list counts as stale (`revocation.max_staleness_secs`).
fn revocation_wait_ms(
    wait_secs: Option<u64>,
    timeout_ms: u64,
    max_staleness_ms: u64,
) -> Result<u64, ConfigError> {
    let room_secs = max_staleness_ms
        .saturating_sub(timeout_ms)
        .saturating_sub(1)
        / 1000;
    match wait_secs {
        None => Ok(DEFAULT_REVOCATION_WAIT_SECS.min(room_secs) * 1000),
        Some(0) => Ok(0),
        Some(s) if s > MAX_REVOCATION_WAIT_SECS => err(format!("revocations.wait_secs: between 0 and {MAX_REVOCATION_WAIT_SECS}")),
        Some(s) if s > room_secs => err(format!(
            "revocations.wait_secs: {s} s plus timeout_ms must stay under revocation.max_staleness_secs \
             (the list is fresh only when an answer arrives); at most {room_secs} here"
        )),
        Some(s) => Ok(s * 1000),
    }
}

fn validate_upstream(
    u: RawUpstream,
    field: &str,
    default_interval_ms: u64,
    seconds: bool,
) -> Result<Upstream, ConfigError> {
    if u.cluster.is_empty() {
        return err(format!("{field}.cluster: must name an Envoy cluster"));
    }
    if !u.path.starts_with('/') {
        return err(format!("{field}.path: must start with `/`"));
    }
    let interval_ms = match (seconds, u.refresh_interval_secs, u.poll_interval_ms) {
        (true, Some(s), None) => s.saturating_mul(1000),
        (true, None, None) => default_interval_ms,
        (false, None, Some(ms)) => ms,
        (false, None, None) => default_interval_ms,
        (true, _, Some(_)) => {
            return err(format!(
                "{field}.poll_interval_ms: not used here; use refresh_interval_secs"
            ))
        }
        (false, Some(_), _) => {
            return err(format!(
                "{field}.refresh_interval_secs: not used here; use poll_interval_ms"
            ))
        }
    };
    if !(100..=24 * 3600 * 1000).contains(&interval_ms) {
        return err(format!(
            "{field}: refresh interval must be between 100 ms and 24 h"
        ));
    }
    if u.timeout_ms == 0 || u.timeout_ms > 60_000 {
        return err(format!("{field}.timeout_ms: between 1 and 60000"));
    }
    // Each only where it does something: the feed alone is long-polled,
    // keys alone are refetched early (on an unknown `kid`).
    let (name, unused) = if seconds {
        ("wait_secs", u.wait_secs)
    } else {
        ("min_refetch_interval_secs", u.min_refetch_interval_secs)
    };
    if unused.is_some() {
        return err(format!("{field}.{name}: not used here"));
    }
    let min_refetch_secs = u
        .min_refetch_interval_secs
        .unwrap_or(defaults::min_refetch_interval_secs());
    // The floor that keeps random `kid`s from turning into a fetch storm (0
    // would let every unknown `kid` trigger a fetch; the README says so).
    if min_refetch_secs == 0 {
        return err(format!(
            "{field}.min_refetch_interval_secs: must be at least 1"
        ));
    }
    Ok(Upstream {
        authority: u.authority.unwrap_or_else(|| u.cluster.clone()),
        cluster: u.cluster,
        path: u.path,
        interval_ms,
        timeout_ms: u.timeout_ms,
        min_refetch_interval_ms: min_refetch_secs.saturating_mul(1000),
        // Set by the caller for the revocation feed (see `revocation_wait_ms`).
        wait_ms: 0,
    })
}

/// `several`: more than one provider is configured, so the same `sub` may
/// be two people: the issuer always goes upstream (`x-auth-issuer` unless
/// `issuer` names another header), so backends can tell them apart.
/// `token_headers`: credentials too (a token header is removed, an identity
/// header set: one header cannot be both).
fn validate_identity(
    raw: Option<RawIdentityHeaders>,
    several: bool,
    token_headers: &[String],
) -> Result<IdentityHeaders, ConfigError> {
    let raw = raw.unwrap_or(RawIdentityHeaders {
        subject: Some("x-auth-user".into()),
        issuer: None,
        roles: Some("x-auth-roles".into()),
        scopes: Some("x-auth-scopes".into()),
        session: Some("x-auth-session".into()),
        client_id: Some("x-auth-client-id".into()),
        claims: ClaimHeaders::default(),
    });
    let one = |v: Option<String>, field: &str| -> Result<Option<String>, ConfigError> {
        v.map(|h| {
            header_name(&h).ok_or_else(|| {
                ConfigError(format!(
                    "`identity_headers.{field}`: `{h}` is not a valid header name"
                ))
            })
        })
        .transpose()
    };
    let mut claims = Vec::new();
    for (path, header) in raw.claims.0 {
        let Some(header) = header else {
            return err(format!(
                "`identity_headers.claims.{path}`: must be a header name (a string)"
            ));
        };
        let h = header_name(&header).ok_or_else(|| {
            ConfigError(format!(
                "`identity_headers.claims.{path}`: `{header}` is not a valid header name"
            ))
        })?;
        let parts: Vec<String> = path.split('.').map(str::to_owned).collect();
        if parts.iter().any(String::is_empty) || parts.len() > 8 {
            return err(format!(
                "`identity_headers.claims`: `{path}` is not a claim path (dot-separated names)"
            ));
        }
        claims.push((parts, h));
    }
    let identity = IdentityHeaders {
        subject: one(raw.subject, "subject")?,
        issuer: one(
            raw.issuer
                .or_else(|| several.then(|| "x-auth-issuer".into())),
            "issuer",
        )?,
        roles: one(raw.roles, "roles")?,
        scopes: one(raw.scopes, "scopes")?,
        session: one(raw.session, "session")?,
        client_id: one(raw.client_id, "client_id")?,
        claims,
        unset_defaults: Vec::new(),
    };
    let names = identity.all_names();
    // Credentials, routing and message framing: a claim must not set them.
    const RESERVED: &[&str] = &[
        "authorization",
        "cookie",
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "te",
        "upgrade",
        "keep-alive",
        "forwarded",
        "x-real-ip",
        "x-scheme",
        "content-type",
        "dpop",
        authflow_contract::fingerprint::DEVICE_HEADER,
    ];
    // Headers Envoy's router obeys (`x-envoy-*`), and those a backend behind
    // a proxy takes the client's scheme, host, port or address from.
    const RESERVED_PREFIXES: [&str; 3] = ["x-envoy-", "x-forwarded-", "proxy-"];
    // The request is judged by these: a claim's value would replace the
    // client's copy after the decision (see `crate::policy`).
    let judged = crate::policy::PATH_OVERRIDE_HEADERS
        .iter()
        .chain(&crate::policy::METHOD_OVERRIDE_HEADERS);
    let reserved = RESERVED.iter().chain(judged);
    for (i, n) in names.iter().enumerate() {
        // `x-auth-user` and `x_auth_user` are one header to a CGI-style backend
        // (both `HTTP_X_AUTH_USER`): a claim mapped to one would fill the other.
        if names
            .iter()
            .take(i)
            .any(|m| header_spellings::same_header(m, n))
        {
            return err(
                "`identity_headers`: the same header is mapped twice (`-` and `_` count as one)",
            );
        }
        let folded = n.replace('_', "-");
        if n.starts_with(':')
            || reserved
                .clone()
                .any(|r| header_spellings::same_header(r, n))
            || RESERVED_PREFIXES.iter().any(|p| folded.starts_with(p))
            || folded.ends_with("client-ip")
            || token_headers
                .iter()
                .any(|t| header_spellings::same_header(t, n))
        {
            return err(format!(
                "`identity_headers`: `{n}` cannot be an identity header"
            ));
        }
        spellings_fit(n, "identity_headers")?;
    }
    let unset_defaults = super::DEFAULT_IDENTITY_NAMES
        .iter()
        .filter(|d| {
            !names
                .iter()
                .copied()
                .chain(token_headers.iter().map(String::as_str))
                .any(|n| header_spellings::same_header(n, d))
        })
        .map(|d| (*d).to_owned())
        .collect();
    Ok(IdentityHeaders {
        unset_defaults,
        ..identity
    })
}

fn validate_route(r: RawRoute, configured: &PerProvider<Provider>) -> Result<Route, ConfigError> {
    let path = match (r.matcher.prefix, r.matcher.path_prefix, r.matcher.exact) {
        (Some(p), None, None) => PathMatch::Prefix(p),
        (None, Some(p), None) if p.len() > 1 && p.ends_with('/') => {
            return err("match.path_prefix: no trailing `/` (`/a` covers `/a/…`)")
        }
        (None, Some(p), None) => PathMatch::PathPrefix(p),
        (None, None, Some(e)) => PathMatch::Exact(e),
        (None, None, None) => return err("match: `prefix`, `path_prefix` or `exact` is required"),
        _ => return err("match: give one of `prefix`, `path_prefix` or `exact`"),
    };
    let (PathMatch::Prefix(p) | PathMatch::PathPrefix(p) | PathMatch::Exact(p)) = &path;
    if !crate::path::is_normalized_rule_path(p) {
        return err(format!(
            "match: `{p}` is not a normalized path (from `/`; no `//`, `.`, `..`, `%`, `\\`, `;`, `?`, `#`, `*`, `{{`, `[`)"
        ));
    }
    let methods = r
        .matcher
        .methods
        .iter()
        .map(|m| m.to_ascii_uppercase())
        .collect::<Vec<_>>();
    if methods
        .iter()
        .any(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()))
    {
        return err("match.methods: HTTP method names only");
    }
    let host = r
        .matcher
        .host
        .as_deref()
        .map(validate_route_host)
        .transpose()?;
    check_policy(&r.policy).map_err(|e| ConfigError(format!("policy: {}", e.0)))?;
    let providers = admitted_providers(&r.providers, configured, "providers")?;
    Ok(Route {
        path,
        methods,
        host,
        policy: r.policy,
        forward_credentials: r.forward_credentials,
        browser_redirect: r.browser_redirect,
        providers,
    })
}

/// The providers whose tokens may satisfy a policy (`field`: a route's
/// `providers`, or `default_providers`). With more than one provider
/// configured, every policy must name them: left empty it would take every
/// issuer's tokens, and one issuer's `sub`, roles or client id would pass as
/// another's (a partner's `u-alice` with `admin` as yours) — on a public
/// route too, where the identity still goes to the backend. On a public
/// route another provider's token is anonymous.
fn admitted_providers(
    names: &[String],
    configured: &PerProvider<Provider>,
    field: &str,
) -> Result<Vec<ProviderId>, ConfigError> {
    if names.is_empty() && configured.len() > 1 {
        return err(format!("{field}: required with several providers"));
    }
    let mut ids = Vec::with_capacity(names.len());
    for name in names {
        match configured.find(|p| p.name == *name) {
            Some(id) => ids.push(id),
            None => return err(format!("{field}: no provider is named `{name}`")),
        }
    }
    Ok(ids)
}

/// A route's host as requests are compared with it (lower case, one trailing
/// dot dropped: see `request::host_name`). The request's port is dropped
/// before the compare and nothing is a pattern, so a host with a port, a
/// wildcard or an empty one would never match: refused.
fn validate_route_host(h: &str) -> Result<String, ConfigError> {
    let bad = |why: &str| err(format!("match.host: `{h}` {why}"));
    if crate::request::without_port(h) != h {
        return bad("has a port: requests match on the host without it");
    }
    if h.contains('*') {
        return bad("is a wildcard: only one exact host name matches");
    }
    match crate::request::host_name(h) {
        "" => bad("is empty"),
        // A URL's scheme or path, or Unicode (requests carry `xn--`): no match.
        name if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b)) =>
        {
            bad("is not a host name")
        }
        // Requests naming a host so are refused (see `policy::other_ipv4_spelling`).
        name if crate::policy::other_ipv4_spelling(name) => {
            bad("is an IPv4 address not as a.b.c.d")
        }
        name => Ok(name.to_ascii_lowercase()),
    }
}

/// The browser sign-in settings: the refresh path must be a safe
/// same-origin path (it becomes a `Location`), and a browser sent there, or
/// on from there to the service's sign-in page, must not be sent there
/// again (a redirect loop), the paths read as the routes read them.
fn validate_browser(
    raw: RawBrowser,
    routes: &[Route],
    ignore_case: bool,
) -> Result<Option<BrowserSignIn>, ConfigError> {
    let refresh_path = match raw.refresh_path {
        Some(path) => path,
        None if routes.iter().any(|r| r.browser_redirect) => defaults::refresh_path(),
        None => return Ok(None),
    };
    if !authflow_contract::return_to::is_safe(&refresh_path)
        || refresh_path.bytes().any(|b| b == b'?' || b == b'#')
    {
        return err(format!("`browser.refresh_path`: `{refresh_path}` must be a safe same-origin path without a query"));
    }
    for path in [
        refresh_path.as_str(),
        authflow_contract::browser::SIGNIN_PATH,
    ] {
        for (i, route) in routes.iter().enumerate() {
            if !crate::policy::path_matches(&route.path, path, ignore_case) {
                continue;
            }
            if route.browser_redirect {
                return err(format!(
                    "`routes[{i}]`.browser_redirect: covers `{path}`, a redirect loop"
                ));
            }
            if route.methods.is_empty() && route.host.is_none() {
                break;
            }
        }
    }
    for (i, route) in routes.iter().enumerate() {
        if route.browser_redirect && route.policy == Policy::Public {
            return err(format!(
                "`routes[{i}]`.browser_redirect: a public route refuses no one"
            ));
        }
    }
    Ok(Some(BrowserSignIn { refresh_path }))
}

fn check_policy(p: &Policy) -> Result<(), ConfigError> {
    match p {
        Policy::RolesAny(v) | Policy::ScopesAll(v) | Policy::ClientIdsAny(v)
            if v.is_empty() || v.iter().any(String::is_empty) =>
        {
            err("roles_any / scopes_all / client_ids_any need at least one non-empty name")
        }
        // Names no verified token can carry (`verify` refuses a token with
        // such a role or scope): the route would admit no one, and a scope
        // with `"` or a space would garble the 403 challenge's `scope`.
        Policy::ScopesAll(v) if !v.iter().all(|s| claims::is_scope_token(s)) => err(
            "scopes_all: a scope is printable ASCII without space, `\"` or `\\` (RFC 6749 §3.3)",
        ),
        Policy::RolesAny(v) if !v.iter().all(|r| claims::is_list_item(r)) => {
            err("roles_any: a role has no comma, control character or surrounding whitespace")
        }
        _ => Ok(()),
    }
}

/// RFC 7230 token characters: valid header and cookie names.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Each `-`/`_` mix of an owned header name is removed from every request
/// (see `header_spellings`): a name with more has no spellings made at all.
fn spellings_fit(n: &str, field: &str) -> Result<(), ConfigError> {
    if n.bytes().filter(|b| matches!(b, b'-' | b'_')).count() > header_spellings::MAX_SEPARATORS {
        return err(format!(
            "`{field}`: `{n}` has more than {} `-` or `_`",
            header_spellings::MAX_SEPARATORS
        ));
    }
    Ok(())
}

fn header_name(s: &str) -> Option<String> {
    is_token(s).then(|| s.to_ascii_lowercase())
}

fn header_names(v: &[String], field: &str) -> Result<Vec<String>, ConfigError> {
    v.iter()
        .enumerate()
        .map(|(i, h)| {
            header_name(h).ok_or_else(|| {
                ConfigError(format!("`{field}[{i}]`: `{h}` is not a valid header name"))
            })
        })
        .collect()
}
