//! Access-token claims (RFC 9068 profile) as issued by the auth service.

use serde::{Deserialize, Serialize};

/// JOSE `typ` of every access token the auth service issues (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

pub const CLAIM_SESSION: &str = "sid";
pub const CLAIM_ROLES: &str = "roles";
pub const CLAIM_SCOPE: &str = "scope";
pub const CLAIM_DEVICE_FINGERPRINT: &str = "dfp";
/// The OAuth client a token was issued to (RFC 9068 §2.2); set only on
/// service-account tokens (client-credentials grant).
pub const CLAIM_CLIENT_ID: &str = "client_id";

/// Prefix of a service account's `sub`: user ids are random ids without a
/// colon, so `svc:<client_id>` can never name a user.
pub const SERVICE_SUBJECT_PREFIX: &str = "svc:";

/// The `sub` of every token issued to the service account `client_id`.
pub fn service_subject(client_id: &str) -> String {
    format!("{SERVICE_SUBJECT_PREFIX}{client_id}")
}

/// Whether `sub` / `client_id` are those of a service-account token: the
/// subject is the service subject of that very client id. Such a token has
/// no session and no device binding.
pub fn is_service_token(sub: Option<&str>, client_id: Option<&str>) -> bool {
    match (
        sub.and_then(|s| s.strip_prefix(SERVICE_SUBJECT_PREFIX)),
        client_id,
    ) {
        (Some(rest), Some(id)) => !id.is_empty() && rest == id,
        _ => false,
    }
}

/// The custom (non-registered) claims of an access token. The registered ones
/// (`iss sub aud exp iat jti`) travel beside them (the service wraps them in jwt-simple's `JWTClaims`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Session id: every token and refresh token of one sign-in shares it.
    /// Empty (and absent from the token) for service-account tokens.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sid: String,
    #[serde(default)]
    pub roles: Vec<String>,
    /// Space-separated scopes (RFC 8693 / RFC 9068 form).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    /// Device fingerprint: see [`crate::fingerprint`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dfp: Option<String>,
    /// See [`CLAIM_CLIENT_ID`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Key confirmation (RFC 7800 `cnf`): set on DPoP-bound tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

/// The `cnf` claim of a DPoP-bound token (RFC 9449 §6.1).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// The RFC 7638 thumbprint of the key every proof must be signed with
    /// ([`crate::dpop::jwk_thumbprint`]).
    pub jkt: String,
}

/// Most items a list claim (`roles`, `scope` or `scp`) may hold. The filter
/// keeps every verified token's lists and refuses a longer one rather than
/// cutting it short (a role past the cut would be missing upstream, where a
/// backend may deny by it); the service issues none longer.
pub const MAX_LIST_ITEMS: usize = 64;

/// Whether `value` can travel as an HTTP header value as it is: at most
/// 4 KiB, no control character (a line break would inject a header), no
/// leading or trailing space (readers trim it, RFC 9110 §5.5: ` alice`
/// would arrive as `alice`, another subject).
pub fn is_header_value(value: &str) -> bool {
    value.len() <= 4096
        && !value.starts_with(' ')
        && !value.ends_with(' ')
        && !value.bytes().any(|b| b < 0x20 || b == 0x7f)
}

/// Whether `item` goes into a comma-joined header list (roles, a mapped list
/// claim) and comes out the same: not empty, no comma, no surrounding
/// whitespace a reader trims, a header value.
#[inline(never)] // one copy for the filter's two callers: the module's size is bounded
pub fn is_list_item(item: &str) -> bool {
    !item.is_empty() && !item.contains(',') && item.trim() == item && is_header_value(item)
}

/// Splits a `scope` claim into its scopes.
pub fn scopes(scope: &str) -> impl Iterator<Item = &str> {
    scope.split(' ').filter(|s| !s.is_empty())
}

/// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )` — printable
/// ASCII but space, `"` and `\`: no Unicode space a backend could split on.
pub fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_token_names_its_own_client() {
        assert!(is_service_token(
            Some(&service_subject("billing")),
            Some("billing")
        ));
        assert!(!is_service_token(Some("svc:billing"), Some("other")));
        assert!(!is_service_token(Some("u123"), Some("u123")));
        assert!(!is_service_token(Some("svc:"), Some("")));
        assert!(!is_service_token(Some("svc:billing"), None));
    }
}
