//! The OpenAPI document served at `/openapi.json`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{admin, auth, dev, ext_authz, ops, revocations, tokens, wellknown};

#[derive(OpenApi)]
#[openapi(
    info(title = "authflow auth service", description = "Issues the access tokens the authflow filter verifies; serves its keys and revocation feed. Every error is `{error, error_description}`."),
    paths(
        auth::signup, auth::verify_email, auth::signin, auth::signin_verify, auth::password_forgot,
        auth::password_reset, auth::totp_enroll, auth::totp_confirm, auth::totp_remove,
        tokens::refresh, tokens::logout, tokens::logout_all,
        admin::find_users, admin::ban, admin::unban, admin::sessions, admin::revoke_token,
        admin::list_keys, admin::rotate_keys, admin::audit_log,
        wellknown::jwks, wellknown::openid_configuration, revocations::feed,
        dev::outbox, ext_authz::check, ops::healthz, ops::readyz, ops::metrics,
    ),
    components(schemas(crate::error::ErrorBody)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}
