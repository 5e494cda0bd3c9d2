//! Access tokens the end-to-end tests sign with their own keys.

use authflow_contract::AccessClaims;
use jwt_simple::prelude::*;

/// This machine's time, in Unix seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A user session's claims (`sid` `session-1`, scope `read`) with these roles.
pub fn user_with_roles(roles: &[&str]) -> AccessClaims {
    AccessClaims {
        sid: "session-1".into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        scope: "read".into(),
        dfp: None,
        client_id: None,
        cnf: None,
    }
}

/// `custom` under `issuer` for `subject` and the audience `api`: issued 5 s
/// ago, expiring in 10 minutes, with `jti` when given.
pub fn claims_for(
    custom: AccessClaims,
    issuer: &str,
    subject: &str,
    jti: Option<&str>,
) -> JWTClaims<AccessClaims> {
    let mut c = Claims::with_custom_claims(custom, Duration::from_mins(10))
        .with_issuer(issuer)
        .with_subject(subject)
        .with_audience("api");
    if let Some(jti) = jti {
        c = c.with_jwt_id(jti);
    }
    c.issued_at = Some(UnixTimeStamp::from_secs(now() - 5));
    c.expires_at = Some(UnixTimeStamp::from_secs(now() + 600));
    c
}
