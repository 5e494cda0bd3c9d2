//! The identity headers the filter sets from a verified token.

/// The identity headers of the default configuration (with `x-auth-issuer`,
/// which several providers add): owned by the filter in every configuration,
/// and by the auth service's ext_authz answer — set from the token, or
/// removed in every spelling, so a client's copy never reaches a backend.
pub const DEFAULT_IDENTITY_NAMES: &[&str] = &[
    "x-auth-user",
    "x-auth-issuer",
    "x-auth-roles",
    "x-auth-scopes",
    "x-auth-session",
    "x-auth-client-id",
];
