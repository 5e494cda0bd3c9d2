//! The OpenAPI document served at `/openapi.json`: the title, shared
//! schemas and security scheme here; the paths come with the routes
//! (`routes::documented_routes`), so a route cannot exist without them.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use std::sync::Arc;

#[derive(OpenApi)]
#[openapi(
    info(title = "authflow auth service", description = "Issues the access tokens the authflow filter verifies; serves its keys and revocation feed. Every error is `{error, error_description}`."),
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
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    // OpenAPI names no DPoP scheme: said here, for every operation that takes a token.
                    .description(Some(
                        "An access token of this service: `Authorization: Bearer <token>`, or, for a \
                         DPoP-bound one (`token_type` `DPoP`), `Authorization: DPoP <token>` with a \
                         fresh `DPoP` proof header (RFC 9449).",
                    ))
                    .build(),
            ),
        );
        // Service accounts at the token endpoint: HTTP Basic with client_id:client_secret.
        components.add_security_scheme(
            "client_basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
    }
}

/// The finished document, shared with the `/openapi.json` handler.
#[derive(Clone)]
pub struct ServedDocument(pub Arc<utoipa::openapi::OpenApi>);

/// Writes axum's catch-all segments (`{*rest}`) the OpenAPI way (`{rest}`).
pub fn with_openapi_path_templates(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    let paths = std::mem::take(&mut doc.paths.paths);
    doc.paths.paths = paths
        .into_iter()
        .map(|(path, item)| (path.replace("{*", "{"), item))
        .collect();
    doc
}
