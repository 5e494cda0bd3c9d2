//! Route rules: ordered, first match wins, default from configuration.
//!
//! Rules are matched on the normalized path (see [`crate::path`]). A path
//! that some backend could read as another path with a stronger policy —
//! another spelling, or the same letters in another case — is refused
//! rather than decided on the weaker one.

use crate::config::{FilterConfig, PathMatch, Policy, Route};
use crate::deny::DenyReason;
use crate::path;
use crate::request::Request;
use crate::verify::VerifiedToken;

/// The path reads differently to different servers, and one of those
/// readings needs more than the normalized path does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AmbiguousPath;

pub fn policy_for<'a>(config: &'a FilterConfig, req: &Request) -> Result<&'a Policy, AmbiguousPath> {
    if config.routes.is_empty() {
        return Ok(&config.default_policy);
    }
    let readings = path::readings(req.path()).map_err(|_| AmbiguousPath)?;
    let decided = policy_on(config, req, &readings.normalized, config.case_insensitive_paths);
    let every_reading = std::iter::once(readings.normalized.as_ref()).chain(readings.others.iter().map(String::as_str));
    for reading in every_reading {
        // Case too: `/API/admin` is the admin area to a case-insensitive backend.
        for ignore_case in [false, true] {
            if !at_least_as_strong(decided, policy_on(config, req, reading, ignore_case)) {
                return Err(AmbiguousPath);
            }
        }
    }
    Ok(decided)
}

/// The first route rule matching the request's normalized path, if any
/// (for per-route settings other than the policy; the policy itself comes
/// from [`policy_for`], which also refuses ambiguous paths).
pub fn route_for<'a>(config: &'a FilterConfig, req: &Request) -> Option<&'a Route> {
    if config.routes.is_empty() {
        return None; // (and no path to normalize on every request)
    }
    let readings = path::readings(req.path()).ok()?;
    config.routes.iter().find(|r| matches(r, req, &readings.normalized, config.case_insensitive_paths))
}

fn policy_on<'a>(config: &'a FilterConfig, req: &Request, path: &str, ignore_case: bool) -> &'a Policy {
    config
        .routes
        .iter()
        .find(|r| matches(r, req, path, ignore_case))
        .map(|r| &r.policy)
        .unwrap_or(&config.default_policy)
}

fn matches(route: &Route, req: &Request, path: &str, ignore_case: bool) -> bool {
    path_matches(&route.path, path, ignore_case)
        && (route.methods.is_empty() || route.methods.iter().any(|m| m == req.method()))
        && route.host.as_deref().is_none_or(|h| h.eq_ignore_ascii_case(req.host_without_port()))
}

pub(crate) fn path_matches(rule: &PathMatch, path: &str, ignore_case: bool) -> bool {
    let same = |a: &[u8], b: &[u8]| if ignore_case { a.eq_ignore_ascii_case(b) } else { a == b };
    let starts_with = |p: &str| path.as_bytes().get(..p.len()).is_some_and(|head| same(head, p.as_bytes()));
    match rule {
        PathMatch::Exact(p) => same(path.as_bytes(), p.as_bytes()),
        PathMatch::Prefix(p) => starts_with(p),
        PathMatch::PathPrefix(p) => {
            starts_with(p) && (p.ends_with('/') || path.as_bytes().get(p.len()).is_none_or(|b| *b == b'/'))
        }
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
pub fn authorize(policy: &Policy, token: &VerifiedToken) -> Result<(), (DenyReason, Option<String>)> {
    match policy {
        Policy::Public | Policy::Authenticated => Ok(()),
        // A service token's role claim (another issuer's, or a mistake) makes no user of it.
        Policy::User | Policy::RolesAny(_) if token.client_id.is_some() => Err((DenyReason::UserRequired, None)),
        Policy::User => Ok(()),
        Policy::ClientIdsAny(ids) if token.client_id.as_ref().is_some_and(|id| ids.contains(id)) => Ok(()),
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
            "providers": [{"name": "p", "issuer": "i", "algorithms": ["EdDSA"], "jwks": {"remote": {"cluster": "c", "path": "/j"}}}],
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
        policy_for(c, &Request::from_headers(vec![(":path".into(), path.into()), (":method".into(), "GET".into())], None))
    }

    #[test]
    fn decides_on_the_normalized_path() {
        let c = config(serde_json::json!({}));
        let admin = Policy::RolesAny(vec!["admin".into()]);
        for p in ["/api/admin", "/api/admin/x", "/api/x/../admin", "/api//admin", "/api/%61dmin/x", "/public/../api/admin", "/api/admin?x=1"] {
            assert_eq!(decide(&c, p), Ok(&admin), "{p}");
        }
        assert_eq!(decide(&c, "/api/adminx"), Ok(&Policy::Authenticated));
        assert_eq!(decide(&c, "/api/items/a%2Fb"), Ok(&Policy::Authenticated), "an escaped slash that changes nothing");
        assert_eq!(decide(&c, "/healthz"), Ok(&Policy::Public));
        assert_eq!(decide(&c, "/HEALTHZ"), Ok(&Policy::Authenticated), "weaker when read case-insensitively: fine");
    }

    #[test]
    fn refuses_what_reads_as_a_stronger_rule() {
        let c = config(serde_json::json!({}));
        for p in [
            "/api%2Fadmin", "/api%5Cadmin", "/api\\admin", "/api;x/admin", "/api/%2561dmin", "/public/..;/api/admin",
            "/public/..%2Fapi/admin", "/api/x/..%2Fadmin", "/API/admin", "/Api/Admin/x", "/api/admin%zz", "/api/admin/../items",
        ] {
            assert_eq!(decide(&c, p), Err(AmbiguousPath), "{p}");
        }
    }

    #[test]
    fn case_insensitive_paths_decide_ignoring_case() {
        let c = config(serde_json::json!({"case_insensitive_paths": true}));
        assert_eq!(decide(&c, "/API/Admin/x"), Ok(&Policy::RolesAny(vec!["admin".into()])));
    }

    #[test]
    fn strength_order() {
        let roles = |r: &[&str]| Policy::RolesAny(r.iter().map(|s| s.to_string()).collect());
        let scopes = |r: &[&str]| Policy::ScopesAll(r.iter().map(|s| s.to_string()).collect());
        assert!(at_least_as_strong(&Policy::Authenticated, &Policy::Public));
        assert!(!at_least_as_strong(&Policy::Public, &Policy::Authenticated));
        assert!(at_least_as_strong(&roles(&["admin"]), &roles(&["admin", "ops"])));
        assert!(!at_least_as_strong(&roles(&["admin", "ops"]), &roles(&["admin"])));
        assert!(at_least_as_strong(&scopes(&["a", "b"]), &scopes(&["a"])));
        assert!(!at_least_as_strong(&scopes(&["a"]), &scopes(&["a", "b"])));
        assert!(!at_least_as_strong(&roles(&["admin"]), &scopes(&["a"])));
        assert!(!at_least_as_strong(&Policy::Authenticated, &roles(&["admin"])));
    }

    #[test]
    fn strength_order_knows_users_and_service_accounts() {
        let roles = |r: &[&str]| Policy::RolesAny(r.iter().map(|s| s.to_string()).collect());
        let clients = |r: &[&str]| Policy::ClientIdsAny(r.iter().map(|s| s.to_string()).collect());
        let scopes = |r: &[&str]| Policy::ScopesAll(r.iter().map(|s| s.to_string()).collect());
        assert!(at_least_as_strong(&Policy::User, &Policy::Authenticated));
        assert!(at_least_as_strong(&clients(&["a"]), &Policy::Authenticated));
        assert!(!at_least_as_strong(&Policy::Authenticated, &Policy::User));
        assert!(!at_least_as_strong(&Policy::Authenticated, &clients(&["a"])));
        // Only users hold roles: a roles rule admits no service account.
        assert!(at_least_as_strong(&roles(&["admin"]), &Policy::User));
        assert!(!at_least_as_strong(&Policy::User, &roles(&["admin"])));
        assert!(at_least_as_strong(&clients(&["a"]), &clients(&["a", "b"])));
        assert!(!at_least_as_strong(&clients(&["a", "b"]), &clients(&["a"])));
        // Users and service accounts are disjoint: neither rule covers the other.
        for (x, y) in [(clients(&["a"]), Policy::User), (clients(&["a"]), roles(&["admin"])), (clients(&["a"]), scopes(&["s"]))] {
            assert!(!at_least_as_strong(&x, &y), "{x:?} vs {y:?}");
            assert!(!at_least_as_strong(&y, &x), "{y:?} vs {x:?}");
        }
        assert!(!at_least_as_strong(&scopes(&["s"]), &Policy::User));
    }

    #[test]
    fn a_path_that_reads_as_a_service_route_is_ambiguous() {
        let c = config(serde_json::json!({"routes": [
            {"match": {"path_prefix": "/internal/billing"}, "policy": {"client_ids_any": ["billing"]}},
            {"match": {"path_prefix": "/me"}, "policy": "user"}
        ]}));
        assert_eq!(decide(&c, "/internal/billing/x"), Ok(&Policy::ClientIdsAny(vec!["billing".into()])));
        assert_eq!(decide(&c, "/me/devices"), Ok(&Policy::User));
        for p in ["/internal%2Fbilling", "/Internal/Billing", "/ME", "/internal/x/..%2Fbilling"] {
            assert_eq!(decide(&c, p), Err(AmbiguousPath), "{p}");
        }
    }
}
