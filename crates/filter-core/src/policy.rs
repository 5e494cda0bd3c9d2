//! Route rules: ordered, first match wins, default from configuration.
//!
//! Rules are matched on the normalized path (see [`crate::path`]). A request
//! that some backend could read as another request with a stronger policy —
//! another spelling of the path, the same letters in another case, an
//! `exact` path with or without its trailing slash, a method it does not
//! upper-case — is refused rather than decided on the weaker one.

use authflow_contract::{percent, query, text};

use crate::config::{FilterConfig, PathMatch, Policy, Route};
use crate::deny::DenyReason;
use crate::header_spellings::same_header;
use crate::path;
use crate::provider_id::ProviderId;
use crate::request::{first_colon_host_name, host_name, loose_host_name, Request, NOT_UTF8};
use crate::verify::VerifiedToken;

/// The path reads differently to different servers, and one of those
/// readings needs more than the normalized path does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AmbiguousPath;

/// How a backend may match a request against the rules, beyond which path it reads.
#[derive(Clone, Copy, Debug, Default)]
struct Reading {
    /// Paths compared ignoring ASCII case (`/API/admin` is `/api/admin`).
    ignore_case: bool,
    /// An `exact` path matches with or without a trailing `/`, as Express
    /// (non-strict), Rails, ASP.NET and Spring ≤ 5 route `/a/` to `/a`; and
    /// a `prefix` ending in `/` matches the path without it (`/a/` covers
    /// `/a`), which `app.use("/a", …)` and the like serve with the same handlers.
    exact_ignores_trailing_slash: bool,
    /// The method compared as sent: `delete` is not `DELETE` to a backend
    /// that does not upper-case it.
    method_as_sent: bool,
}

impl Reading {
    /// Every combination of the flags (`method_as_sent` only where it changes anything).
    fn every(method_as_sent_differs: bool) -> impl Iterator<Item = Reading> {
        (0..8u8)
            .map(|bits| Reading {
                ignore_case: bits & 1 != 0,
                exact_ignores_trailing_slash: bits & 2 != 0,
                method_as_sent: bits & 4 != 0,
            })
            .filter(move |r| method_as_sent_differs || !r.method_as_sent)
    }
}

/// What a request must bring: the route's policy, and whose tokens may
/// satisfy it (empty: any token's; only a single-provider configuration
/// leaves it empty: see `config`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requirement<'a> {
    pub policy: &'a Policy,
    pub providers: &'a [ProviderId],
}

impl<'a> Requirement<'a> {
    fn of(route: &'a Route) -> Self {
        Requirement {
            policy: &route.policy,
            providers: &route.providers,
        }
    }

    fn default_of(config: &'a FilterConfig) -> Self {
        Requirement {
            policy: &config.default_policy,
            providers: &config.default_providers,
        }
    }

    /// Whether a token of `provider` may satisfy this requirement at all.
    pub fn admits(&self, provider: ProviderId) -> bool {
        self.providers.is_empty() || self.providers.contains(&provider)
    }

    /// Whether every token this lets through would also satisfy `other`.
    fn covers(&self, other: &Requirement) -> bool {
        let providers_within = other.providers.is_empty()
            || (!self.providers.is_empty()
                && self.providers.iter().all(|p| other.providers.contains(p)));
        at_least_as_strong(self.policy, other.policy) && providers_within
    }
}

pub fn policy_for<'a>(
    config: &'a FilterConfig,
    req: &Request,
) -> Result<Requirement<'a>, AmbiguousPath> {
    if config.routes.is_empty() {
        return Ok(Requirement::default_of(config));
    }
    // Not UTF-8 (in the query too): no rule's path, while the backend reads its bytes.
    if req.path() == NOT_UTF8 || path::is_network_path(req.path()) {
        return Err(AmbiguousPath);
    }
    let readings = path::readings(req.path()).map_err(|_| AmbiguousPath)?;
    let host = req.host_without_port();
    let decided = policy_on(
        config,
        req.method(),
        host,
        &readings.normalized,
        Reading {
            ignore_case: config.case_insensitive_paths,
            ..Reading::default()
        },
    );
    // Every other request a backend may read this one as: the path's other
    // readings, a path, a host or a method named in headers. (Plain loops:
    // iterator chains here cost the module kilobytes.)
    let named_paths = path_overrides(req)?;
    let mut paths: Vec<&str> = Vec::new();
    for r in std::iter::once(&readings).chain(&named_paths) {
        paths.push(&r.normalized);
        for other in &r.others {
            paths.push(other);
        }
    }
    let named_hosts = host_overrides(config, req)?;
    // (`host_overrides` reads hosts only where a rule names one: so here.)
    if names_an_ipv4_address_otherwise(config, host, &named_hosts) {
        return Err(AmbiguousPath);
    }
    // Hosts no rule names read alike, as `""` does (and methods): each kind
    // judged once, or thousands of items in one header cost a worker seconds.
    let mut hosts = vec![host];
    for &named in &named_hosts {
        let ruled = config.routes.iter().any(|r| {
            r.host
                .as_deref()
                .is_some_and(|h| h.eq_ignore_ascii_case(named))
        });
        push_once(&mut hosts, if ruled { named } else { "" });
    }
    let mut methods = vec![req.method()];
    let named_methods = method_overrides(config, req);
    for named in &named_methods {
        let ruled = config
            .routes
            .iter()
            .any(|r| r.methods.iter().any(|m| method_matches(m, named, false)));
        push_once(&mut methods, if ruled { named } else { "" });
    }
    // Frameworks run the GET handler for HEAD (the request's own method or
    // one an override names): a rule for HEAD alone does not decide what
    // that handler needs.
    if methods.iter().any(|m| m.eq_ignore_ascii_case("HEAD")) {
        push_once(&mut methods, "GET");
    }
    for (i, &method) in methods.iter().enumerate() {
        // Rule methods are upper case (config): only the request's own
        // method, with a lower-case letter, reads two ways.
        let as_sent_differs = i == 0 && method.bytes().any(|b| b.is_ascii_lowercase());
        for &path in &paths {
            for &host in &hosts {
                for reading in Reading::every(as_sent_differs) {
                    if !decided.covers(&policy_on(config, method, host, path, reading)) {
                        return Err(AmbiguousPath);
                    }
                }
            }
        }
    }
    Ok(decided)
}

/// Whether, under a configuration with rules on hosts, `host` or one of
/// `named` is an [`other_ipv4_spelling`].
fn names_an_ipv4_address_otherwise(config: &FilterConfig, host: &str, named: &[&str]) -> bool {
    if config.routes.iter().all(|r| r.host.is_none()) {
        return false;
    }
    if other_ipv4_spelling(host) {
        return true;
    }
    for h in named {
        if other_ipv4_spelling(h) {
            return true;
        }
    }
    false
}

/// Whether `host` (as rules compare it) reads as an IPv4 address to URL
/// parsers without being one in dotted-quad form: WHATWG's parser (and
/// `inet_aton`) takes a host whose last label is a number, decimal or `0x`
/// hex, as an address in any spelling (`167772165`, `0xa.0.0.5`, `10.5`).
pub(crate) fn other_ipv4_spelling(host: &str) -> bool {
    // One pass over the labels: whether the last is a number, and whether
    // all are decimal numbers of 0 … 255 without leading zeros (compared as
    // text: three digits are at most `255` in text order too).
    let (mut labels, mut dotted_quad, mut last_is_number) = (0, true, false);
    for label in host.split('.') {
        let n = label.len();
        let decimal = n > 0 && label.bytes().all(|b| b.is_ascii_digit());
        dotted_quad &= decimal
            && !matches!(label.as_bytes(), [b'0', _, ..])
            && (n < 3 || (n == 3 && label <= "255"));
        last_is_number = decimal || matches!(label.as_bytes(), [b'0', b'x' | b'X', ..]);
        labels += 1;
    }
    last_is_number && !(dotted_quad && labels == 4)
}

/// `item` added unless `kept` has it (ignoring ASCII case).
fn push_once<'a>(kept: &mut Vec<&'a str>, item: &'a str) {
    if !kept.iter().any(|k| k.eq_ignore_ascii_case(item)) {
        kept.push(item);
    }
}

/// Headers some backends take as the request's path instead of its own
/// (IIS URL Rewrite, Symfony before 5, Laminas).
pub const PATH_OVERRIDE_HEADERS: [&str; 2] = ["x-original-url", "x-rewrite-url"];

/// Headers backends behind a proxy take the request's host from (Django's
/// `USE_X_FORWARDED_HOST`, Express's `trust proxy`, Rails, Spring's
/// `ForwardedHeaderFilter`).
pub const HOST_OVERRIDE_HEADERS: [&str; 2] = ["x-forwarded-host", "forwarded"];

/// Headers that Rails, Laravel, Symfony, Express's `method-override`,
/// ASP.NET Core and Spring take as the method to run a request as (most
/// only for a `POST`; any request here, to assume no backend's choice).
pub const METHOD_OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Every value of the header `name` under any spelling a CGI-style backend
/// (Rack, WSGI, PHP) takes for it: `_` and `-` are one to them (see
/// `crate::header_spellings`). A value that is not UTF-8 reads as [`NOT_UTF8`].
fn spelled_values<'r>(req: &'r Request, name: &'r str) -> impl Iterator<Item = &'r str> + 'r {
    req.headers()
        .iter()
        .filter(move |(n, _)| std::str::from_utf8(n).is_ok_and(|n| same_header(n, name)))
        .map(|(_, v)| std::str::from_utf8(v).unwrap_or(NOT_UTF8))
}

/// Every reading of each path named in [`PATH_OVERRIDE_HEADERS`]; one that
/// reads no way at all (an invalid escape) is ambiguous, as such a path is.
fn path_overrides(req: &Request) -> Result<Vec<path::Readings<'_>>, AmbiguousPath> {
    let mut found = Vec::new();
    for name in PATH_OVERRIDE_HEADERS {
        for value in spelled_values(req, name) {
            // Each named path multiplies the readings judged: a client that
            // names more than a backend reads (the first, the last) is
            // refused, not judged a hundred times over.
            if found.len() == MAX_NAMED_PATHS {
                return Err(AmbiguousPath);
            }
            // Bytes that are not UTF-8: a backend reads them, not the marker.
            if value == NOT_UTF8 {
                return Err(AmbiguousPath);
            }
            let named = path_of_named(path::without_query(value)).ok_or(AmbiguousPath)?;
            found.push(path::readings(named).map_err(|_| AmbiguousPath)?);
        }
    }
    Ok(found)
}

/// The most paths a request may name in [`PATH_OVERRIDE_HEADERS`].
const MAX_NAMED_PATHS: usize = 4;

/// Whether `req` names a path in a header a backend may take instead of its own.
pub fn names_a_path(req: &Request) -> bool {
    PATH_OVERRIDE_HEADERS
        .iter()
        .any(|name| spelled_values(req, name).next().is_some())
}

/// The path a backend takes from a named one: an absolute URL's
/// (`http://host/a` → `/a`, Symfony's `parse_url`, Zend Framework's scheme
/// and host dropped). None: neither a path nor a URL (`api/admin`), which
/// backends join to `/` or to the script's directory.
fn path_of_named(named: &str) -> Option<&str> {
    if named.starts_with('/') && !path::is_network_path(named) {
        return Some(named);
    }
    let (_, rest) = text::split_once(named, "://")?;
    Some(rest.find('/').and_then(|i| rest.get(i..)).unwrap_or("/"))
}

/// The hosts named in [`HOST_OVERRIDE_HEADERS`] (every item of a list:
/// readers take the first or the last), as rules compare hosts. Only a
/// configuration with rules on hosts can decide one of them otherwise. One
/// that is not UTF-8 (a backend reads its bytes) is ambiguous.
fn host_overrides<'r>(
    config: &FilterConfig,
    req: &'r Request,
) -> Result<Vec<&'r str>, AmbiguousPath> {
    if config.routes.iter().all(|r| r.host.is_none()) {
        return Ok(Vec::new());
    }
    named_hosts(req)
}

/// Whether `req` names, in a header a backend may take its host from (or in
/// an authority a lax backend reads otherwise), a host other than its own
/// (`:authority` as route rules compare it, ignoring case), or one that is
/// ambiguous. A DPoP proof's `htu` binds the host the client addressed.
pub fn names_another_host(req: &Request) -> bool {
    let own = req.host_without_port();
    match named_hosts(req) {
        Ok(hosts) => hosts.iter().any(|named| !named.eq_ignore_ascii_case(own)),
        Err(AmbiguousPath) => true,
    }
}

/// Every host [`host_overrides`] reads, whatever the configuration.
fn named_hosts(req: &Request) -> Result<Vec<&str>, AmbiguousPath> {
    let mut found = Vec::new();
    // The authority itself as the laxest backends read it: Go's `ServeMux`
    // drops any text after the last `:` (`admin.example:abc`: its
    // `net.SplitHostPort` does not check the port), and Envoy joins two
    // HTTP/1 `Host` lines into one with a comma (a list reader takes either).
    let authority = req.header(":authority").unwrap_or_default();
    // (Envoy checks the authority's characters but for these: `x@admin.example`
    // and `%61dmin.example` read as `admin.example` to URL parsers, see `unclear`.)
    if authority.contains(['@', '%']) {
        return Err(AmbiguousPath);
    }
    let host = req.host_without_port();
    if authority.contains([',', ':']) {
        for item in authority.split(',') {
            for loose in [loose_host_name(item), first_colon_host_name(item)] {
                if loose != host {
                    found.push(loose);
                }
            }
        }
    }
    for name in HOST_OVERRIDE_HEADERS {
        for value in spelled_values(req, name) {
            if value == NOT_UTF8 {
                return Err(AmbiguousPath);
            }
            // RFC 7239: `for=…;host=…;proto=…, for=…` (names in any case, values maybe quoted).
            for item in value.split([',', ';']) {
                let host = if name == "forwarded" {
                    match item.split_once('=') {
                        Some((n, v)) if n.trim().eq_ignore_ascii_case("host") => v,
                        _ => continue,
                    }
                } else {
                    item
                };
                let host = host.trim();
                let unquoted = host.strip_prefix('"').and_then(|h| h.strip_suffix('"'));
                push_host(&mut found, unquoted.unwrap_or(host))?;
            }
            if name == "forwarded" {
                // Spring's `ForwardedHeaderUtils` (Vert.x, Reactor Netty alike) find
                // `(?i:host)="?([^;,"]+)"?` anywhere: in `xhost=`, inside a quoted value.
                for at in 0..value.len() {
                    let found_at = value.as_bytes().get(at..at + 5);
                    if found_at.is_some_and(|w| w.eq_ignore_ascii_case(b"host=")) {
                        let rest = value.get(at + 5..).unwrap_or_default();
                        let rest = rest.strip_prefix('"').unwrap_or(rest);
                        // (Up to a `=` too: no host has one, and `host=host=…`
                        // would otherwise read the rest of the value at each.)
                        push_host(
                            &mut found,
                            rest.split([';', ',', '"', '='])
                                .next()
                                .unwrap_or_default()
                                .trim(),
                        )?;
                    }
                }
            }
        }
    }
    Ok(found)
}

/// Whether a host holds more than a host name, an IP address and a port: URL
/// parsers drop userinfo (`x@admin.example`), decode escapes, end the host
/// at `/`, `\\`, `?` or `#`, drop tabs and map Unicode dots and full-width
/// letters (Node's `new URL(path, "http://" + host)`, Python's `urlsplit`).
fn unclear(host: &str) -> bool {
    !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
}

/// A host named in a header, as rules compare it and as the laxest backends
/// read it; one that is [`unclear`] is ambiguous.
fn push_host<'r>(found: &mut Vec<&'r str>, named: &'r str) -> Result<(), AmbiguousPath> {
    if unclear(named) {
        return Err(AmbiguousPath);
    }
    found.push(host_name(named));
    for loose in [loose_host_name(named), first_colon_host_name(named)] {
        if loose != host_name(named) {
            found.push(loose);
        }
    }
    Ok(())
}

/// The methods a backend may run `req` as besides its own (as written:
/// rules compare them ignoring case). Only a configuration with rules on
/// methods can decide one of them otherwise.
fn method_overrides(config: &FilterConfig, req: &Request) -> Vec<String> {
    if named_methods_ignored(config) {
        return Vec::new();
    }
    named_methods(req)
}

/// Without a rule on methods, no method a request may run as decides it otherwise.
fn named_methods_ignored(config: &FilterConfig) -> bool {
    config.routes.iter().all(|r| r.methods.is_empty())
}

/// Every method `req` names in an override header or a `_method` parameter.
pub fn named_methods(req: &Request) -> Vec<String> {
    let mut found = Vec::new();
    // A list (`DELETE, GET`, or copies joined): each item, since readers take the first or the last.
    for name in METHOD_OVERRIDE_HEADERS {
        for value in spelled_values(req, name) {
            for item in value.split(',') {
                found.push(item.trim().to_owned());
            }
        }
    }
    for (name, value) in query_pairs(req) {
        if query::is_parameter(name, "_method") {
            found.push(percent::decode_query_part(value).trim().to_owned());
        }
    }
    found
}

/// The `name=value` pairs of the query of `req`'s `:path`, undecoded.
pub fn query_pairs(req: &Request) -> impl Iterator<Item = (&str, &str)> {
    query::pairs(query::of_target(req.header(":path").unwrap_or_default()))
}

/// The first route rule matching the request's normalized path, if any
/// (for per-route settings other than the policy; the policy itself comes
/// from [`policy_for`], which also refuses ambiguous paths).
pub fn route_for<'a>(config: &'a FilterConfig, req: &Request) -> Option<&'a Route> {
    if config.routes.is_empty() {
        return None; // (and no path to normalize on every request)
    }
    let readings = path::readings(req.path()).ok()?;
    let reading = Reading {
        ignore_case: config.case_insensitive_paths,
        ..Reading::default()
    };
    config.routes.iter().find(|r| {
        matches(
            r,
            req.method(),
            req.host_without_port(),
            &readings.normalized,
            reading,
        )
    })
}

/// The rule a request lands on when it reads only as sent: its path needs no
/// normalizing and reads no other way, and a rule's host is its authority
/// exactly (no port, no trailing dot). Envoy routes the path and authority as
/// sent (unless set to normalize them): where its route and this reading could
/// differ, credentials must not follow this one.
pub fn route_as_sent<'a>(config: &'a FilterConfig, req: &Request) -> Option<&'a Route> {
    // (No rules: nothing more is read of the request.)
    let route = route_for(config, req)?;
    let path = req.path();
    let readings = path::readings(path).ok()?;
    let authority = req.header(":authority").unwrap_or_default();
    // The rule again as a router compares: the path's case, the method as
    // sent, the authority whole.
    let strict = Reading {
        method_as_sent: true,
        ..Reading::default()
    };
    let as_sent = readings.others.is_empty()
        && readings.normalized == path
        && matches(route, req.method(), authority, path, strict);
    as_sent.then_some(route)
}

fn policy_on<'a>(
    config: &'a FilterConfig,
    method: &str,
    host: &str,
    path: &str,
    reading: Reading,
) -> Requirement<'a> {
    config
        .routes
        .iter()
        .find(|r| matches(r, method, host, path, reading))
        .map_or(Requirement::default_of(config), Requirement::of)
}

/// `method`, `host`: the request's, or ones a backend may read it as instead
/// (`host` as [`host_name`] gives it).
fn matches(route: &Route, method: &str, host: &str, path: &str, reading: Reading) -> bool {
    path_matches_as(&route.path, path, reading)
        && (route.methods.is_empty()
            || route
                .methods
                .iter()
                .any(|m| method_matches(m, method, reading.method_as_sent)))
        && route
            .host
            .as_deref()
            .is_none_or(|h| h.eq_ignore_ascii_case(host))
}

/// Whether `earlier` matches every request `later` does, so that `later`
/// (first match wins) never applies. Judged on the rules alone: sure when
/// it says so, and `false` where in doubt.
#[inline(never)] // Configuration time only: kept out of `FilterConfig::validate`, already large.
pub(crate) fn shadows(earlier: &Route, later: &Route, ignore_case: bool) -> bool {
    let methods = earlier.methods.is_empty()
        || (!later.methods.is_empty()
            && later
                .methods
                .iter()
                .all(|m| earlier.methods.iter().any(|e| method_matches(e, m, true))));
    let host = earlier.host.is_none()
        || later
            .host
            .as_deref()
            .zip(earlier.host.as_deref())
            .is_some_and(|(l, e)| l.eq_ignore_ascii_case(e));
    let (PathMatch::Exact(l) | PathMatch::Prefix(l) | PathMatch::PathPrefix(l)) = &later.path;
    // Every path `later` matches begins with `l`, and `earlier` matches all
    // of them when it matches `l` and is a prefix that `l` cannot end inside
    // of: a string prefix, or whole segments where `later`'s own are.
    let paths = path_matches(&earlier.path, l, ignore_case)
        && match (&earlier.path, &later.path) {
            (_, PathMatch::Exact(_)) | (PathMatch::Prefix(_), _) => true,
            (PathMatch::Exact(_), _) => false,
            (PathMatch::PathPrefix(_), PathMatch::PathPrefix(_)) => true,
            (PathMatch::PathPrefix(e), PathMatch::Prefix(_)) => {
                l.len() > e.len() || e.ends_with('/')
            }
        };
    methods && host && paths
}

/// A rule's method (upper case) against the request's. Many frameworks
/// upper-case the method (HTTP/2 sends any token), and run the GET handler
/// for HEAD (RFC 9110 §9.3.2: GET without the body).
fn method_matches(rule: &str, method: &str, as_sent: bool) -> bool {
    let same = |a: &str| {
        if as_sent {
            a == method
        } else {
            a.eq_ignore_ascii_case(method)
        }
    };
    same(rule) || (rule == "GET" && same("HEAD"))
}

pub(crate) fn path_matches(rule: &PathMatch, path: &str, ignore_case: bool) -> bool {
    path_matches_as(
        rule,
        path,
        Reading {
            ignore_case,
            ..Reading::default()
        },
    )
}

fn path_matches_as(rule: &PathMatch, path: &str, reading: Reading) -> bool {
    let same = |a: &[u8], b: &[u8]| {
        if reading.ignore_case {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    };
    let starts_with = |p: &str| {
        path.as_bytes()
            .get(..p.len())
            .is_some_and(|head| same(head, p.as_bytes()))
    };
    match rule {
        PathMatch::Exact(p) if reading.exact_ignores_trailing_slash => same(
            without_trailing_slash(path).as_bytes(),
            without_trailing_slash(p).as_bytes(),
        ),
        PathMatch::Exact(p) => same(path.as_bytes(), p.as_bytes()),
        PathMatch::Prefix(p) => {
            starts_with(p)
                || (reading.exact_ignores_trailing_slash
                    && same(path.as_bytes(), without_trailing_slash(p).as_bytes()))
        }
        PathMatch::PathPrefix(p) => {
            starts_with(p)
                && (p.ends_with('/') || path.as_bytes().get(p.len()).is_none_or(|b| *b == b'/'))
        }
    }
}

/// `/a/` → `/a` (and `/a//` too); `/` stays `/`, never the empty path.
fn without_trailing_slash(p: &str) -> &str {
    match p.trim_end_matches('/') {
        "" => p.get(..1).unwrap_or_default(),
        trimmed => trimmed,
    }
}

/// Whether every token `applied` lets through would also satisfy `other`.
/// Roles and scopes do not compare with each other: such a pair is not.
/// Users and service accounts are disjoint callers: a rule for one never
/// covers a rule for the other.
pub fn at_least_as_strong(applied: &Policy, other: &Policy) -> bool {
    match (applied, other) {
        (a, b) if a == b => true,
        (_, Policy::Public) => true,
        (Policy::Public, _) => false,
        (_, Policy::Authenticated) => true,
        (Policy::Authenticated, _) => false,
        // Only users pass a roles rule.
        (Policy::RolesAny(_), Policy::User) => true,
        (_, Policy::User) => false,
        // Any one of `a` is enough here: each must also be one of `b`.
        (Policy::ClientIdsAny(a), Policy::ClientIdsAny(b)) => a.iter().all(|c| b.contains(c)),
        // Any one of `a` is enough here: each must also be one of `b`.
        (Policy::RolesAny(a), Policy::RolesAny(b)) => a.iter().all(|r| b.contains(r)),
        // All of `a` are needed here: they must cover all of `b`.
        (Policy::ScopesAll(a), Policy::ScopesAll(b)) => b.iter().all(|s| a.contains(s)),
        _ => false,
    }
}

/// Whether a verified token satisfies the policy. For scope denials, the scopes
/// the route needs (for the `scope` attribute of the challenge).
pub fn authorize(
    required: Requirement,
    token: &VerifiedToken,
) -> Result<(), (DenyReason, Option<String>)> {
    if !required.admits(token.provider) {
        return Err((DenyReason::ProviderNotAllowed, None));
    }
    match required.policy {
        Policy::Public | Policy::Authenticated => Ok(()),
        // A service token's role claim (another issuer's, or a mistake) makes no user of it.
        Policy::User | Policy::RolesAny(_) if token.client_id.is_some() => {
            Err((DenyReason::UserRequired, None))
        }
        Policy::User => Ok(()),
        Policy::ClientIdsAny(ids)
            if token.client_id.as_ref().is_some_and(|id| ids.contains(id)) =>
        {
            Ok(())
        }
        Policy::ClientIdsAny(_) => Err((DenyReason::ClientNotAllowed, None)),
        Policy::RolesAny(roles) if roles.iter().any(|r| token.roles.contains(r)) => Ok(()),
        Policy::RolesAny(_) => Err((DenyReason::InsufficientRole, None)),
        Policy::ScopesAll(scopes) if scopes.iter().all(|s| token.scopes.contains(s)) => Ok(()),
        Policy::ScopesAll(scopes) => Err((DenyReason::InsufficientScope, Some(scopes.join(" ")))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: serde_json::Value) -> FilterConfig {
        let mut v = serde_json::json!({
            "providers": [{"name": "p", "issuer": "i", "audiences": ["api"], "algorithms": ["EdDSA"], "jwks": {"remote": {"cluster": "c", "path": "/j"}}}],
            "routes": [
                {"match": {"prefix": "/public"}, "policy": "public"},
                {"match": {"path_prefix": "/api/admin"}, "policy": {"roles_any": ["admin"]}},
                {"match": {"exact": "/healthz"}, "policy": "public"}
            ]
        });
        for (k, x) in extra.as_object().into_iter().flatten() {
            v[k] = x.clone();
        }
        FilterConfig::from_json(v.to_string().as_bytes()).unwrap()
    }

    fn decide<'a>(c: &'a FilterConfig, path: &str) -> Result<&'a Policy, AmbiguousPath> {
        policy_for(c, &Request::of(&[(":path", path), (":method", "GET")])).map(|r| r.policy)
    }

    #[test]
    fn decides_on_the_normalized_path() {
        let c = config(serde_json::json!({}));
        let admin = Policy::RolesAny(vec!["admin".into()]);
        for p in [
            "/api/admin",
            "/api/admin/x",
            "/api/x/../admin",
            "/api//admin",
            "/api/%61dmin/x",
            "/public/../api/admin",
            "/api/admin?x=1",
        ] {
            assert_eq!(decide(&c, p), Ok(&admin), "{p}");
        }
        assert_eq!(decide(&c, "/api/adminx"), Ok(&Policy::Authenticated));
        assert_eq!(
            decide(&c, "/api/items/a%2Fb"),
            Ok(&Policy::Authenticated),
            "an escaped slash that changes nothing"
        );
        assert_eq!(decide(&c, "/healthz"), Ok(&Policy::Public));
        assert_eq!(
            decide(&c, "/HEALTHZ"),
            Ok(&Policy::Authenticated),
            "weaker when read case-insensitively: fine"
        );
    }

    #[test]
    fn refuses_what_reads_as_a_stronger_rule() {
        let c = config(serde_json::json!({}));
        for p in [
            "/api%2Fadmin",
            "/api%5Cadmin",
            "/api\\admin",
            "/api;x/admin",
            "/api/%2561dmin",
            "/public/..;/api/admin",
            "/public/..%2Fapi/admin",
            "/api/x/..%2Fadmin",
            "/API/admin",
            "/Api/Admin/x",
            "/api/admin%zz",
            "/api/admin/../items",
        ] {
            assert_eq!(decide(&c, p), Err(AmbiguousPath), "{p}");
        }
    }

    #[test]
    fn case_insensitive_paths_decide_ignoring_case() {
        let c = config(serde_json::json!({"case_insensitive_paths": true}));
        assert_eq!(
            decide(&c, "/API/Admin/x"),
            Ok(&Policy::RolesAny(vec!["admin".into()]))
        );
    }

    #[test]
    fn strength_order() {
        let roles = |r: &[&str]| Policy::RolesAny(r.iter().map(|s| s.to_string()).collect());
        let scopes = |r: &[&str]| Policy::ScopesAll(r.iter().map(|s| s.to_string()).collect());
        assert!(at_least_as_strong(&Policy::Authenticated, &Policy::Public));
        assert!(!at_least_as_strong(&Policy::Public, &Policy::Authenticated));
        assert!(at_least_as_strong(
            &roles(&["admin"]),
            &roles(&["admin", "ops"])
        ));
        assert!(!at_least_as_strong(
            &roles(&["admin", "ops"]),
            &roles(&["admin"])
        ));
        assert!(at_least_as_strong(&scopes(&["a", "b"]), &scopes(&["a"])));
        assert!(!at_least_as_strong(&scopes(&["a"]), &scopes(&["a", "b"])));
        assert!(!at_least_as_strong(&roles(&["admin"]), &scopes(&["a"])));
        assert!(!at_least_as_strong(
            &Policy::Authenticated,
            &roles(&["admin"])
        ));
    }

    #[test]
    fn strength_order_knows_users_and_service_accounts() {
        let roles = |r: &[&str]| Policy::RolesAny(r.iter().map(|s| s.to_string()).collect());
        let clients = |r: &[&str]| Policy::ClientIdsAny(r.iter().map(|s| s.to_string()).collect());
        let scopes = |r: &[&str]| Policy::ScopesAll(r.iter().map(|s| s.to_string()).collect());
        assert!(at_least_as_strong(&Policy::User, &Policy::Authenticated));
        assert!(at_least_as_strong(&clients(&["a"]), &Policy::Authenticated));
        assert!(!at_least_as_strong(&Policy::Authenticated, &Policy::User));
        assert!(!at_least_as_strong(
            &Policy::Authenticated,
            &clients(&["a"])
        ));
        // Only users hold roles: a roles rule admits no service account.
        assert!(at_least_as_strong(&roles(&["admin"]), &Policy::User));
        assert!(!at_least_as_strong(&Policy::User, &roles(&["admin"])));
        assert!(at_least_as_strong(&clients(&["a"]), &clients(&["a", "b"])));
        assert!(!at_least_as_strong(&clients(&["a", "b"]), &clients(&["a"])));
        // Users and service accounts are disjoint: neither rule covers the other.
        for (x, y) in [
            (clients(&["a"]), Policy::User),
            (clients(&["a"]), roles(&["admin"])),
            (clients(&["a"]), scopes(&["s"])),
        ] {
            assert!(!at_least_as_strong(&x, &y), "{x:?} vs {y:?}");
            assert!(!at_least_as_strong(&y, &x), "{y:?} vs {x:?}");
        }
        assert!(!at_least_as_strong(&scopes(&["s"]), &Policy::User));
    }

    fn decide_as<'a>(
        c: &'a FilterConfig,
        method: &str,
        authority: &str,
        path: &str,
    ) -> Result<&'a Policy, AmbiguousPath> {
        let h = [
            (":path", path),
            (":method", method),
            (":authority", authority),
        ];
        policy_for(c, &Request::of(&h)).map(|r| r.policy)
    }

    #[test]
    fn an_exact_rule_reads_with_or_without_a_trailing_slash() {
        let admin = Policy::RolesAny(vec!["admin".into()]);
        let c = config(serde_json::json!({"routes": [
            {"match": {"exact": "/api/export"}, "policy": {"roles_any": ["admin"]}},
            {"match": {"exact": "/api/import/"}, "policy": {"roles_any": ["admin"]}},
            {"match": {"exact": "/healthz"}, "policy": "public"},
            {"match": {"prefix": "/docs/"}, "policy": "public"},
            {"match": {"exact": "/"}, "policy": "public"}
        ]}));
        assert_eq!(decide(&c, "/api/export"), Ok(&admin));
        // Express (non-strict), Rails, ASP.NET, Spring ≤ 5 serve these with the exact rule's handler.
        for p in [
            "/api/export/",
            "/API/export/",
            "/api/x/../export/",
            "/api/import",
        ] {
            assert_eq!(decide(&c, p), Err(AmbiguousPath), "{p}");
        }
        // A weaker exact rule lends nothing: `/healthz/` stays under the default.
        assert_eq!(decide(&c, "/healthz/"), Ok(&Policy::Authenticated));
        // A weaker prefix rule lends nothing either: `/docs` stays under the default.
        assert_eq!(decide(&c, "/docs/"), Ok(&Policy::Public));
        assert_eq!(decide(&c, "/docs"), Ok(&Policy::Authenticated));
        // `/` never becomes the empty path: it is no trailing slash to drop.
        assert_eq!(decide(&c, "/"), Ok(&Policy::Public));
    }

    /// `prefix: "/api/admin/"` guarded everything under the admin area but
    /// not `/api/admin` itself, which frameworks mounting a router at
    /// `/api/admin` (Express `app.use`, Flask blueprints, Spring) serve
    /// with the admin handlers: it fell to the weaker default. Read as such
    /// a backend may read it, the path is ambiguous (400).
    #[test]
    fn a_prefix_ending_in_a_slash_does_not_leave_its_bare_path_to_the_default() {
        let admin = Policy::RolesAny(vec!["admin".into()]);
        let c = config(serde_json::json!({"routes": [
            {"match": {"prefix": "/api/admin/"}, "policy": {"roles_any": ["admin"]}},
            {"match": {"prefix": "/"}, "policy": "authenticated"}
        ]}));
        assert_eq!(decide(&c, "/api/admin/users"), Ok(&admin));
        assert_eq!(decide(&c, "/api/admin/"), Ok(&admin));
        for p in ["/api/admin", "/API/admin", "/api/x/../admin"] {
            assert_eq!(decide(&c, p), Err(AmbiguousPath), "{p}");
        }
        // Another path that only starts the same is not the rule's.
        assert_eq!(
            decide(&c, "/api/administrators"),
            Ok(&Policy::Authenticated)
        );
    }

    #[test]
    fn methods_match_ignoring_case_and_head_is_get() {
        let admin = Policy::RolesAny(vec!["admin".into()]);
        let c = config(serde_json::json!({"routes": [
            {"match": {"path_prefix": "/api/items", "methods": ["DELETE"]}, "policy": {"roles_any": ["admin"]}},
            {"match": {"path_prefix": "/api/reports", "methods": ["GET"]}, "policy": {"roles_any": ["admin"]}},
            {"match": {"path_prefix": "/files", "methods": ["GET"]}, "policy": "public"}
        ]}));
        // HTTP/2 takes any token as a method; many frameworks upper-case it.
        for m in ["DELETE", "delete", "Delete"] {
            assert_eq!(decide_as(&c, m, "api", "/api/items/1"), Ok(&admin), "{m}");
        }
        assert_eq!(
            decide_as(&c, "GET", "api", "/api/items/1"),
            Ok(&Policy::Authenticated)
        );
        // Flask, Django, Express, Go, Spring run the GET handler for HEAD.
        for m in ["GET", "HEAD", "head"] {
            assert_eq!(
                decide_as(&c, m, "api", "/api/reports/q1"),
                Ok(&admin),
                "{m}"
            );
        }
        assert_eq!(
            decide_as(&c, "HEAD", "api", "/files/a"),
            Ok(&Policy::Public)
        );
        // A backend that does not upper-case `get` may serve it with a stronger handler: refused.
        assert_eq!(decide_as(&c, "get", "api", "/files/a"), Err(AmbiguousPath));
    }

    /// Finding: a rule for `HEAD` alone before a stronger `GET` rule let an
    /// anonymous `HEAD` run the GET handler (its side effects, its headers:
    /// `Set-Cookie`, `ETag`, lengths) under the weaker rule. A `HEAD` is
    /// judged as the `GET` it runs as too.
    #[test]
    fn a_head_rule_does_not_open_the_get_handler() {
        let c = config(serde_json::json!({"routes": [
            {"match": {"exact": "/api/report", "methods": ["HEAD"]}, "policy": "public"},
            {"match": {"exact": "/api/report", "methods": ["GET"]}, "policy": {"roles_any": ["admin"]}},
            {"match": {"exact": "/status", "methods": ["HEAD"]}, "policy": {"roles_any": ["admin"]}},
            {"match": {"exact": "/status"}, "policy": "public"}
        ]}));
        for m in ["HEAD", "head"] {
            assert_eq!(
                decide_as(&c, m, "api", "/api/report"),
                Err(AmbiguousPath),
                "{m}"
            );
        }
        // Named in an override too (Rack's `MethodOverride` takes HEAD).
        for named in [
            ("x-http-method-override", "HEAD"),
            ("x-method-override", "head"),
        ] {
            assert_eq!(
                decide_with(&c, "POST", "/api/report", &[named]),
                Err(AmbiguousPath),
                "{named:?}"
            );
        }
        // A HEAD rule stronger than the GET handler's stands.
        assert_eq!(
            decide_as(&c, "HEAD", "api", "/status"),
            Ok(&Policy::RolesAny(vec!["admin".into()]))
        );
        assert_eq!(decide_as(&c, "GET", "api", "/status"), Ok(&Policy::Public));
    }

    /// What a request with extra headers is decided as.
    fn decide_with<'a>(
        c: &'a FilterConfig,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
    ) -> Result<&'a Policy, AmbiguousPath> {
        let mut h = vec![(":path", path), (":method", method)];
        h.extend_from_slice(extra);
        policy_for(c, &Request::of(&h)).map(|r| r.policy)
    }

    /// Finding: Spring's reading of `host=` anywhere in `Forwarded` took each
    /// host up to the next `;`, `,` or `"`, so in `host=host=host=…` every
    /// reading ran to the end of the value: work quadratic in its length (a
    /// 55 KB header held an Envoy worker for over a second). A reading ends
    /// at a `=` too (what is read stays linear in the value); the host named
    /// last is still found.
    #[test]
    fn a_forwarded_value_repeating_host_is_read_in_short_pieces() {
        let hosts = config(serde_json::json!({"routes": [
            {"match": {"prefix": "/", "host": "admin.example"}, "policy": {"roles_any": ["admin"]}},
            {"match": {"prefix": "/"}, "policy": "public"}
        ]}));
        // (Quoted, so that RFC 7239's own reading finds no `host` here: Spring's does.)
        let value = format!("for=x;\"{}www.example\"", "host=".repeat(2000));
        let req = Request::of(&[(":authority", "www.example"), ("forwarded", &value)]);
        let found = host_overrides(&hosts, &req).unwrap();
        let read: usize = found.iter().map(|h| h.len()).sum();
        assert!(
            read <= 4 * value.len(),
            "{read} bytes read of a {}-byte value",
            value.len()
        );
        let value = "host=".repeat(3) + "admin.example";
        let h = [(":authority", "www.example"), ("forwarded", value.as_str())];
        assert_eq!(decide_with(&hosts, "GET", "/x", &h), Err(AmbiguousPath));
    }

    /// `/api/items` for any signed-in user, but `DELETE` there for admins.
    fn delete_for_admins() -> FilterConfig {
        config(serde_json::json!({"routes": [
            {"match": {"path_prefix": "/api/items", "methods": ["DELETE"]}, "policy": {"roles_any": ["admin"]}},
            {"match": {"path_prefix": "/api/items"}, "policy": "authenticated"}
        ]}))
    }

    /// Rails, Laravel, Symfony, Express's `method-override`, ASP.NET Core
    /// and Spring run a `POST` as the method its `X-HTTP-Method-Override`
    /// (or `X-HTTP-Method`, `X-Method-Override`, a `_method` parameter)
    /// names. A `POST` judged as a `POST` reached the `DELETE` handler
    /// whose rule asks for more: refused when the method it names would be
    /// decided otherwise, whatever its case or encoding.
    #[test]
    fn a_method_override_is_judged_as_the_method_it_names() {
        let admin = Policy::RolesAny(vec!["admin".into()]);
        let c = delete_for_admins();
        for header in [
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
        ] {
            for m in ["DELETE", "delete"] {
                assert_eq!(
                    decide_with(&c, "POST", "/api/items/1", &[(header, m)]),
                    Err(AmbiguousPath),
                    "{header}: {m}"
                );
            }
            // Naming a method decided alike changes nothing.
            assert_eq!(
                decide_with(&c, "POST", "/api/items/1", &[(header, "PATCH")]),
                Ok(&Policy::Authenticated)
            );
        }
        for query in ["_method=DELETE", "a=1&_method=delete", "_method=DEL%45TE"] {
            assert_eq!(
                decide_with(&c, "POST", &format!("/api/items/1?{query}"), &[]),
                Err(AmbiguousPath),
                "{query}"
            );
        }
        // The rule's own method is decided as before, override or not.
        assert_eq!(
            decide_with(
                &c,
                "DELETE",
                "/api/items/1",
                &[("x-http-method-override", "GET")]
            ),
            Ok(&admin)
        );
        assert_eq!(
            decide_with(&c, "POST", "/api/items/1", &[]),
            Ok(&Policy::Authenticated)
        );
        // Without rules on methods, no override can change a decision.
        let plain = config(serde_json::json!({"routes": [
            {"match": {"path_prefix": "/api/items"}, "policy": "authenticated"}
        ]}));
        assert_eq!(
            decide_with(
                &plain,
                "POST",
                "/api/items/1?_method=DELETE",
                &[("x-http-method", "DELETE")]
            ),
            Ok(&Policy::Authenticated)
        );
    }

    /// Backends behind a proxy take the host from `X-Forwarded-Host` or
    /// `Forwarded: host=` (Django's `USE_X_FORWARDED_HOST`, Express's
    /// `trust proxy`, Rails, Spring's `ForwardedHeaderFilter`), and some the
    /// path from `X-Original-URL` or `X-Rewrite-URL` (IIS URL Rewrite,
    /// Symfony before 5, Laminas). A request for a public host or path
    /// naming an admin one there reached the admin site or handler.
    #[test]
    fn a_host_or_path_named_in_headers_is_judged_too() {
        let hosts = config(serde_json::json!({"routes": [
            {"match": {"prefix": "/", "host": "admin.example"}, "policy": {"roles_any": ["admin"]}},
            {"match": {"prefix": "/"}, "policy": "public"}
        ]}));
        let on = |extra: &[(&str, &str)]| {
            let mut h = vec![(":authority", "www.example")];
            h.extend_from_slice(extra);
            decide_with(&hosts, "GET", "/x", &h)
        };
        assert_eq!(on(&[]), Ok(&Policy::Public));
        for extra in [
            ("x-forwarded-host", "admin.example"),
            ("x-forwarded-host", "www.example, ADMIN.example:443"),
            ("forwarded", "for=192.0.2.1;host=admin.example;proto=https"),
            ("forwarded", "for=192.0.2.1, Host=\"admin.example.\""),
        ] {
            assert_eq!(on(&[extra]), Err(AmbiguousPath), "{extra:?}");
        }
        assert_eq!(
            on(&[
                ("x-forwarded-host", "www.example"),
                ("forwarded", "host=www.example:8443")
            ]),
            Ok(&Policy::Public)
        );
        // Finding: userinfo and escapes in a host, which URL parsers drop or
        // decode (Node's `new URL(path, "http://" + host)`, Python's
        // `urlsplit`): `x@admin.example` reads as `admin.example` there.
        for authority in [
            "x@admin.example",
            "x:y@admin.example:80",
            "%61dmin.example",
            "admin%2eexample",
        ] {
            let h = [(":authority", authority)];
            assert_eq!(
                decide_with(&hosts, "GET", "/x", &h),
                Err(AmbiguousPath),
                "{authority}"
            );
        }
        for named in [
            ("x-forwarded-host", "x@admin.example"),
            ("forwarded", "host=%61dmin.example"),
        ] {
            assert_eq!(on(&[named]), Err(AmbiguousPath), "{named:?}");
        }

        let paths = config(serde_json::json!({"routes": [
            {"match": {"path_prefix": "/api/admin"}, "policy": {"roles_any": ["admin"]}},
            {"match": {"prefix": "/"}, "policy": "public"}
        ]}));
        let at = |extra: &[(&str, &str)]| decide_with(&paths, "GET", "/public", extra);
        assert_eq!(at(&[]), Ok(&Policy::Public));
        for extra in [
            ("x-original-url", "/api/admin/users"),
            ("x-rewrite-url", "/api/%61dmin?x=1"),
            ("x-original-url", "/public/../api/admin"),
            ("x-original-url", "/api/admin%zz"),
        ] {
            assert_eq!(at(&[extra]), Err(AmbiguousPath), "{extra:?}");
        }
        assert_eq!(at(&[("x-original-url", "/public/x")]), Ok(&Policy::Public));
        // Finding: every copy of a named path was judged in all its readings,
        // a hundred copies a hundred times over. More than a backend reads
        // is refused.
        let copies = [("x-original-url", "/public/x"); MAX_NAMED_PATHS + 1];
        assert_eq!(at(&copies[..MAX_NAMED_PATHS]), Ok(&Policy::Public));
        assert_eq!(at(&copies), Err(AmbiguousPath));
    }

    /// URL parsers (WHATWG's, `inet_aton`'s) read a host whose last label
    /// is a number as an IPv4 address in any of its spellings: `167772165`,
    /// `0xa.0.0.5`, `012.0.0.5` and `10.5` are `10.0.0.5` to a backend
    /// (Envoy's catch-all virtual host takes them to it), but no rule naming
    /// `10.0.0.5` matched them. Refused, as an ambiguous path is, wherever
    /// a rule names a host. (A last label `0x…` that is no hex is refused
    /// too: a byte-cheap reading, under rules on hosts only.)
    #[test]
    fn another_spelling_of_an_ipv4_address_is_ambiguous() {
        let admin = Policy::RolesAny(vec!["admin".into()]);
        let c = config(serde_json::json!({"routes": [
            {"match": {"prefix": "/", "host": "10.0.0.5"}, "policy": {"roles_any": ["admin"]}},
            {"match": {"prefix": "/"}, "policy": "public"}
        ]}));
        for host in ["10.0.0.5", "10.0.0.5.:8080"] {
            assert_eq!(decide_as(&c, "GET", host, "/x"), Ok(&admin), "{host}");
        }
        for host in [
            "admin.example",
            "10.0.0.6",
            "10.0.99.255",
            "[::1]",
            "1.example",
            "h0x",
        ] {
            assert_eq!(
                decide_as(&c, "GET", host, "/x"),
                Ok(&Policy::Public),
                "{host}"
            );
        }
        for host in [
            "167772165",
            "167772165:80",
            "0xa.0.0.5",
            "0XA000005",
            "012.0.0.5",
            "10.5",
            "10.0.5.",
            "10.0.0.05",
            "10.0.0.256",
            "10.0.0.5.6",
            "example.123",
        ] {
            assert_eq!(
                decide_as(&c, "GET", host, "/x"),
                Err(AmbiguousPath),
                "{host}"
            );
        }
        // Named in a header a backend takes its host from, too.
        let h = [
            (":path", "/x"),
            (":method", "GET"),
            (":authority", "app.example"),
            ("x-forwarded-host", "167772165"),
        ];
        assert_eq!(
            policy_for(&c, &Request::of(&h)).map(|r| r.policy),
            Err(AmbiguousPath)
        );
        // Without a rule on hosts, no host decides anything: nothing is refused.
        let c = config(serde_json::json!({"routes": [
            {"match": {"prefix": "/"}, "policy": "public"}
        ]}));
        assert_eq!(decide_as(&c, "GET", "167772165", "/x"), Ok(&Policy::Public));
    }

    #[test]
    fn a_host_rule_ignores_one_trailing_dot() {
        let admin = Policy::RolesAny(vec!["admin".into()]);
        let c = config(serde_json::json!({"routes": [
            {"match": {"prefix": "/", "host": "admin.example"}, "policy": {"roles_any": ["admin"]}},
            {"match": {"prefix": "/", "host": "ops.example."}, "policy": {"roles_any": ["admin"]}}
        ]}));
        for host in [
            "admin.example",
            "ADMIN.example.",
            "admin.example.:8443",
            "ops.example",
            "ops.example.:443",
        ] {
            assert_eq!(decide_as(&c, "GET", host, "/x"), Ok(&admin), "{host}");
        }
        assert_eq!(
            decide_as(&c, "GET", "admin.example..", "/x"),
            Ok(&Policy::Authenticated)
        );
        assert_eq!(
            decide_as(&c, "GET", "other.example.", "/x"),
            Ok(&Policy::Authenticated)
        );
    }

    /// An authority that is not `host[:digits]` is read by some backend as a
    /// host rule's name: Go's `ServeMux` strips any text after the last `:`
    /// (`net.SplitHostPort` does not check the port), and Envoy joins two
    /// HTTP/1 `Host` lines into one with a comma, of which a backend that
    /// reads a list keeps one. Refused, as an ambiguous path is.
    #[test]
    fn an_authority_that_reads_as_a_host_rule_is_ambiguous() {
        let c = config(serde_json::json!({"routes": [
            {"match": {"prefix": "/", "host": "admin.example"}, "policy": {"roles_any": ["admin"]}},
            {"match": {"prefix": "/"}, "policy": "public"}
        ]}));
        for host in [
            "admin.example:abc",
            "admin.example:+80",
            "admin.example,pub.example",
            "pub.example,admin.example",
            "admin.example, pub.example",
            "ADMIN.example.:x",
        ] {
            assert_eq!(
                decide_as(&c, "GET", host, "/x"),
                Err(AmbiguousPath),
                "{host}"
            );
        }
        // Other names stay public, odd or not; the admin name is the admin rule.
        for host in [
            "pub.example",
            "pub.example:abc",
            "pub.example,other",
            "[::1]:x",
        ] {
            assert_eq!(
                decide_as(&c, "GET", host, "/x"),
                Ok(&Policy::Public),
                "{host}"
            );
        }
        let admin = Policy::RolesAny(vec!["admin".into()]);
        assert_eq!(decide_as(&c, "GET", "admin.example:8443", "/x"), Ok(&admin));
    }

    /// Within Envoy's 60 KiB of headers, one `X-HTTP-Method-Override` and
    /// one `X-Forwarded-Host` list thousands of distinct items each; every
    /// method was judged against every host (and path, and reading): one
    /// request cost hundreds of millions of rule matches, a worker for
    /// seconds. Items no rule names read alike and are judged once.
    #[test]
    fn long_override_lists_cost_no_more_than_the_rules_they_can_match() {
        let c = config(serde_json::json!({"routes": [
            {"match": {"prefix": "/", "host": "admin.example"}, "policy": {"roles_any": ["admin"]}},
            {"match": {"path_prefix": "/api/items", "methods": ["DELETE"]}, "policy": {"roles_any": ["admin"]}},
            {"match": {"prefix": "/"}, "policy": "authenticated"}
        ]}));
        let list = |n: usize| {
            (0..n)
                .map(|i| format!("m{i}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        // 2 × 5 000 items of ~6 bytes: 60 KB.
        let (methods, hosts) = (list(5_000), list(5_000));
        let started = std::time::Instant::now();
        assert_eq!(
            decide_with(
                &c,
                "POST",
                "/api/items/1",
                &[
                    (":authority", "www.example"),
                    ("x-http-method-override", &methods),
                    ("x-forwarded-host", &hosts),
                ]
            ),
            Ok(&Policy::Authenticated)
        );
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_millis(500), "{took:?}");
    }

    /// CGI-style servers (Rack, WSGI, PHP) read `x_http_method_override`
    /// as `X-HTTP-Method-Override` (both are `HTTP_X_HTTP_METHOD_OVERRIDE`),
    /// as they read `x_auth_user` as the identity header (see
    /// `header_spellings`): Rails runs the `POST` as `DELETE`, Django takes
    /// the host, Zend the path.
    #[test]
    fn an_override_header_spelled_with_underscores_is_judged_too() {
        let methods = delete_for_admins();
        for header in [
            "x_http_method_override",
            "x-http_method-override",
            "x_http_method",
            "x_method_override",
        ] {
            assert_eq!(
                decide_with(&methods, "POST", "/api/items/1", &[(header, "DELETE")]),
                Err(AmbiguousPath),
                "{header}"
            );
        }
        let hosts = config(serde_json::json!({"routes": [
            {"match": {"prefix": "/", "host": "admin.example"}, "policy": {"roles_any": ["admin"]}},
            {"match": {"path_prefix": "/api/admin"}, "policy": {"roles_any": ["admin"]}},
            {"match": {"prefix": "/"}, "policy": "public"}
        ]}));
        for extra in [
            ("x_forwarded_host", "admin.example"),
            ("x-forwarded_host", "admin.example"),
            ("x_original_url", "/api/admin"),
            ("x_rewrite-url", "/api/admin"),
        ] {
            assert_eq!(
                decide_with(
                    &hosts,
                    "GET",
                    "/public",
                    &[(":authority", "www.example"), extra]
                ),
                Err(AmbiguousPath),
                "{extra:?}"
            );
        }
        assert_eq!(
            decide_with(
                &hosts,
                "GET",
                "/public",
                &[
                    (":authority", "www.example"),
                    ("x_forwarded_host", "www.example")
                ]
            ),
            Ok(&Policy::Public)
        );
    }

    /// PHP names a query parameter after decoding `+` to a space, dropping
    /// leading spaces and turning ` ` and `.` (and a `[` with no `]`) into
    /// `_`: `.method`, `+_method`, `%20.method` are `$_GET['_method']`, which
    /// Laravel and Symfony run a `POST` as.
    #[test]
    fn a_method_parameter_named_as_php_names_it_is_judged_too() {
        let c = delete_for_admins();
        for query in [
            ".method=DELETE",
            "%2Emethod=DELETE",
            "+.method=delete",
            "+_method=DELETE",
            "%20%20_method=DELETE",
            "%20.method=DELETE",
        ] {
            assert_eq!(
                decide_with(&c, "POST", &format!("/api/items/1?{query}"), &[]),
                Err(AmbiguousPath),
                "{query}"
            );
        }
        for query in ["x.method=DELETE", "+method=DELETE", "_method_=DELETE"] {
            assert_eq!(
                decide_with(&c, "POST", &format!("/api/items/1?{query}"), &[]),
                Ok(&Policy::Authenticated),
                "{query}"
            );
        }
    }

    /// PHP registers a query parameter under its name as a C string: the
    /// decoded name ends at its first NUL (`php_register_variable_ex` takes
    /// `strlen`), so `_method%00=DELETE` and `_method%00x=DELETE` are
    /// `$_GET['_method']` to Laravel and Symfony, which run the `POST` as
    /// `DELETE`.
    #[test]
    fn a_method_parameter_cut_at_a_nul_as_php_reads_it_is_judged_too() {
        let c = delete_for_admins();
        for query in [
            "_method%00=DELETE",
            "_method%00anything=DELETE",
            ".method%00.x=DELETE",
            "+_method%00=DELETE",
        ] {
            assert_eq!(
                decide_with(&c, "POST", &format!("/api/items/1?{query}"), &[]),
                Err(AmbiguousPath),
                "{query}"
            );
        }
        // A NUL before `method` leaves PHP a different name.
        assert_eq!(
            decide_with(&c, "POST", "/api/items/1?_%00method=DELETE", &[]),
            Ok(&Policy::Authenticated)
        );
    }

    /// A path override in absolute form is its path to Symfony before
    /// 2.7.49 (`parse_url`) and Zend Framework 1 (the scheme and host
    /// dropped); one without its leading `/` is that path to a backend that
    /// joins it to `/` (refused: others join it elsewhere). Neither may fall
    /// to a weaker default.
    #[test]
    fn a_path_override_in_absolute_or_relative_form_is_judged_as_its_path() {
        let c = config(serde_json::json!({"default_policy": "public", "routes": [
            {"match": {"path_prefix": "/api/admin"}, "policy": {"roles_any": ["admin"]}},
            {"match": {"prefix": "/"}, "policy": "public"}
        ]}));
        for url in [
            "http://www.example/api/admin/users",
            "HTTPS://www.example:8443/api/%61dmin?x=1",
            "api/admin",
        ] {
            assert_eq!(
                decide_with(&c, "GET", "/public", &[("x-original-url", url)]),
                Err(AmbiguousPath),
                "{url}"
            );
        }
        for url in ["http://www.example", "https://www.example/public/x"] {
            assert_eq!(
                decide_with(&c, "GET", "/public", &[("x-rewrite-url", url)]),
                Ok(&Policy::Public),
                "{url}"
            );
        }
    }

    /// A header value that is not UTF-8 reads as `NOT_UTF8` here, but a
    /// backend reads its bytes: IIS takes `/api/admin/\xff` from
    /// `X-Original-URL`, Express `admin.example` from
    /// `X-Forwarded-Host: admin.example:\xff`. Refused, as a path that
    /// reads no way is.
    #[test]
    fn a_path_or_host_named_in_bytes_that_are_not_utf8_is_ambiguous() {
        // A public default: what no rule matches (`NOT_UTF8` is no path) is public.
        let c = config(serde_json::json!({"default_policy": "public", "routes": [
            {"match": {"prefix": "/", "host": "admin.example"}, "policy": {"roles_any": ["admin"]}},
            {"match": {"path_prefix": "/api/admin"}, "policy": {"roles_any": ["admin"]}},
            {"match": {"prefix": "/"}, "policy": "public"}
        ]}));
        let decide = |extra: (&[u8], &[u8])| {
            let pairs: [(&[u8], &[u8]); 4] = [
                (b":path", b"/public"),
                (b":method", b"GET"),
                (b":authority", b"www.example"),
                extra,
            ];
            policy_for(
                &c,
                &Request::new(crate::request::HeaderBlock::from_pairs(&pairs), None),
            )
            .map(|r| r.policy)
        };
        for extra in [
            (b"x-original-url".as_slice(), b"/api/admin/\xff".as_slice()),
            (b"x-rewrite-url", b"/api/admin\xe9"),
            (b"x-forwarded-host", b"admin.example:\xff"),
            (b"forwarded", b"host=admin.example:\xff"),
        ] {
            assert_eq!(decide(extra), Err(AmbiguousPath), "{extra:?}");
        }
        assert_eq!(decide((b"user-agent", b"caf\xe9")), Ok(&Policy::Public));
    }

    /// `:path` itself in bytes that are not UTF-8 (HTTP/2 lets 0x80–0xFF
    /// through, in the query too, which `normalize_path` leaves alone): it
    /// read as `NOT_UTF8`, matched no rule, and was decided by the default,
    /// while the backend routes `/api/admin/users`. Refused too.
    #[test]
    fn a_path_in_bytes_that_are_not_utf8_is_ambiguous() {
        let c = config(serde_json::json!({"default_policy": "public", "routes": [
            {"match": {"path_prefix": "/api/admin"}, "policy": {"roles_any": ["admin"]}}
        ]}));
        for path in [
            b"/api/admin/users?q=\xff".as_slice(),
            b"/api/admin/\xffusers",
        ] {
            let pairs: [(&[u8], &[u8]); 3] = [
                (b":path", path),
                (b":method", b"GET"),
                (b":authority", b"www.example"),
            ];
            let decided = policy_for(
                &c,
                &Request::new(crate::request::HeaderBlock::from_pairs(&pairs), None),
            );
            assert_eq!(decided.map(|r| r.policy), Err(AmbiguousPath), "{path:?}");
        }
    }

    /// Express's `req.hostname` (what `vhost` routes by) cuts the host at
    /// its *first* `:` (after a `]`), port digits or not; Go's `ServeMux`
    /// keeps a host with two colons whole. `admin.example:1:2` is the admin
    /// site to Express, as `Host` or as `X-Forwarded-Host` (`trust proxy`).
    #[test]
    fn a_host_cut_at_its_first_colon_is_judged_too() {
        let c = config(serde_json::json!({"routes": [
            {"match": {"prefix": "/", "host": "admin.example"}, "policy": {"roles_any": ["admin"]}},
            {"match": {"prefix": "/"}, "policy": "public"}
        ]}));
        for host in [
            "admin.example:1:2",
            "admin.example:x:y",
            "ADMIN.example.:8443:",
        ] {
            assert_eq!(
                decide_as(&c, "GET", host, "/x"),
                Err(AmbiguousPath),
                "{host}"
            );
            assert_eq!(
                decide_with(
                    &c,
                    "GET",
                    "/x",
                    &[(":authority", "www.example"), ("x-forwarded-host", host)]
                ),
                Err(AmbiguousPath),
                "x-forwarded-host: {host}"
            );
        }
        for host in ["pub.example:1:2", "[::1]:80", "::1", "[admin.example]:1:2"] {
            assert_eq!(
                decide_as(&c, "GET", host, "/x"),
                Ok(&Policy::Public),
                "{host}"
            );
        }
    }

    /// Spring's `ForwardedHeaderUtils` (and Vert.x, Reactor Netty) find the
    /// host in `Forwarded` with an unanchored `(?i:host)="?([^;,"]+)"?`:
    /// `xhost=`, or `host=` inside a quoted value, is a host to them.
    #[test]
    fn a_forwarded_host_is_found_where_a_pattern_reader_finds_it() {
        let c = config(serde_json::json!({"routes": [
            {"match": {"prefix": "/", "host": "admin.example"}, "policy": {"roles_any": ["admin"]}},
            {"match": {"prefix": "/"}, "policy": "public"}
        ]}));
        for forwarded in [
            "xhost=admin.example",
            "for=\"_x;host=admin.example\"",
            "for=\"host=admin.example\"",
            "by=_p;for=_q;_host=ADMIN.example:443",
        ] {
            assert_eq!(
                decide_with(
                    &c,
                    "GET",
                    "/x",
                    &[(":authority", "www.example"), ("forwarded", forwarded)]
                ),
                Err(AmbiguousPath),
                "{forwarded}"
            );
        }
        // A proxy's ordinary `Forwarded` is no other host.
        for forwarded in [
            "for=192.0.2.1;proto=https",
            "for=\"[2001:db8::1]:4711\";host=www.example",
        ] {
            assert_eq!(
                decide_with(
                    &c,
                    "GET",
                    "/x",
                    &[(":authority", "www.example"), ("forwarded", forwarded)]
                ),
                Ok(&Policy::Public),
                "{forwarded}"
            );
        }
    }

    #[test]
    fn a_path_that_reads_as_a_service_route_is_ambiguous() {
        let c = config(serde_json::json!({"routes": [
            {"match": {"path_prefix": "/internal/billing"}, "policy": {"client_ids_any": ["billing"]}},
            {"match": {"path_prefix": "/me"}, "policy": "user"}
        ]}));
        assert_eq!(
            decide(&c, "/internal/billing/x"),
            Ok(&Policy::ClientIdsAny(vec!["billing".into()]))
        );
        assert_eq!(decide(&c, "/me/devices"), Ok(&Policy::User));
        for p in [
            "/internal%2Fbilling",
            "/Internal/Billing",
            "/ME",
            "/internal/x/..%2Fbilling",
        ] {
            assert_eq!(decide(&c, p), Err(AmbiguousPath), "{p}");
        }
    }

    /// Finding: hosts a URL parser reads as `admin.example` though they are
    /// not (WHATWG `new URL(path, "http://" + host)`: `/ \ ? #` end the
    /// host, tab and newline are removed, IDNA maps `。` to `.` and
    /// full-width letters to ASCII; Python's `urlsplit`: `/ ? #`), named in
    /// `X-Forwarded-Host` / `Forwarded` (which Envoy does not check as it
    /// checks `:authority`), took the weaker rule.
    #[test]
    fn a_named_host_a_url_parser_reads_otherwise_is_ambiguous() {
        let hosts = config(serde_json::json!({"routes": [
            {"match": {"prefix": "/", "host": "admin.example"}, "policy": {"roles_any": ["admin"]}},
            {"match": {"prefix": "/"}, "policy": "public"}
        ]}));
        let mut passed = Vec::new();
        for value in [
            "admin.example/x",
            "admin.example\\x",
            "admin.example?x",
            "admin.example#x",
            "admin.exa\tmple",
            "admin\u{3002}example",
            "\u{ff41}dmin.example",
        ] {
            for name in ["x-forwarded-host", "forwarded"] {
                let v = if name == "forwarded" {
                    format!("host=\"{value}\"")
                } else {
                    value.to_owned()
                };
                let h = [(":authority", "www.example"), (name, v.as_str())];
                if let Ok(p) = decide_with(&hosts, "GET", "/x", &h) {
                    passed.push(format!("{name}: {v:?} -> {p:?}"));
                }
            }
        }
        assert!(
            passed.is_empty(),
            "decided without the admin host: {passed:#?}"
        );
    }

    /// A target starting `//` is a network-path reference (RFC 3986 §4.2):
    /// PHP's `parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH)` and Node's
    /// `new URL(req.url, base)` (which takes `\` for `/`) read
    /// `//www.example/api/admin` as the path `/api/admin`, where merging its
    /// slashes gives `/www.example/api/admin`. So does a path named in
    /// `X-Original-URL` to a backend parsing it so. (Envoy's `merge_slashes`,
    /// as the shipped configurations set, merges them before the filter.)
    #[test]
    fn a_target_starting_with_two_slashes_is_ambiguous() {
        let c = config(serde_json::json!({"default_policy": "public", "routes": [
            {"match": {"path_prefix": "/api/admin"}, "policy": {"roles_any": ["admin"]}},
            {"match": {"prefix": "/"}, "policy": "public"}
        ]}));
        for path in [
            "//www.example/api/admin",
            "//x/api/admin/users?q=1",
            "/\\x/api/admin",
            "\\/x/api/admin",
            "//x@y/api/%61dmin",
        ] {
            assert_eq!(decide(&c, path), Err(AmbiguousPath), "{path}");
        }
        assert_eq!(
            decide_with(&c, "GET", "/public", &[("x-original-url", "//x/api/admin")]),
            Err(AmbiguousPath)
        );
        // Two slashes further on read one way once merged.
        assert_eq!(decide(&c, "/public//x"), Ok(&Policy::Public));
        assert_eq!(
            decide(&c, "/api//admin"),
            Ok(&Policy::RolesAny(vec!["admin".into()]))
        );
    }
}
