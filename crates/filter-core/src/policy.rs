//! Route rules: ordered, first match wins, default from configuration.

use crate::config::{FilterConfig, PathMatch, Policy, Route};
use crate::deny::DenyReason;
use crate::request::Request;
use crate::verify::VerifiedToken;

pub fn policy_for<'a>(config: &'a FilterConfig, req: &Request) -> &'a Policy {
    config
        .routes
        .iter()
        .find(|r| matches(r, req))
        .map(|r| &r.policy)
        .unwrap_or(&config.default_policy)
}

fn matches(route: &Route, req: &Request) -> bool {
    let path_ok = match &route.path {
        PathMatch::Exact(p) => req.path() == *p,
        PathMatch::Prefix(p) => req.path().starts_with(p.as_str()),
    };
    path_ok
        && (route.methods.is_empty() || route.methods.iter().any(|m| m == req.method()))
        && route.host.as_deref().is_none_or(|h| h.eq_ignore_ascii_case(req.host_without_port()))
}

/// Whether a verified token satisfies the policy. For scope denials, the scopes
/// the route needs (for the `scope` attribute of the challenge).
pub fn authorize(policy: &Policy, token: &VerifiedToken) -> Result<(), (DenyReason, Option<String>)> {
    match policy {
        Policy::Public | Policy::Authenticated => Ok(()),
        Policy::RolesAny(roles) if roles.iter().any(|r| token.roles.contains(r)) => Ok(()),
        Policy::RolesAny(_) => Err((DenyReason::InsufficientRole, None)),
        Policy::ScopesAll(scopes) if scopes.iter().all(|s| token.scopes.contains(s)) => Ok(()),
        Policy::ScopesAll(scopes) => Err((DenyReason::InsufficientScope, Some(scopes.join(" ")))),
    }
}
