//! Access-token claims (RFC 9068 profile) as issued by the auth service.

use serde::{Deserialize, Serialize};

/// JOSE `typ` of every access token the auth service issues (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

pub const CLAIM_SESSION: &str = "sid";
pub const CLAIM_ROLES: &str = "roles";
pub const CLAIM_SCOPE: &str = "scope";
pub const CLAIM_DEVICE_FINGERPRINT: &str = "dfp";

/// The custom (non-registered) claims of an access token. The registered ones
/// (`iss sub aud exp iat jti`) travel beside them (the service wraps them in jwt-simple's `JWTClaims`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Session id: every token and refresh token of one sign-in shares it.
    pub sid: String,
    #[serde(default)]
    pub roles: Vec<String>,
    /// Space-separated scopes (RFC 8693 / RFC 9068 form).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    /// Device fingerprint: see [`crate::fingerprint`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dfp: Option<String>,
}

/// Splits a `scope` claim into its scopes.
pub fn scopes(scope: &str) -> impl Iterator<Item = &str> {
    scope.split(' ').filter(|s| !s.is_empty())
}
