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

/// Documents the refusals the extractors answer before any handler runs:
/// on an operation that reads a query, 400 one with an unknown parameter or
/// a value of the wrong type (also one with a path segment that is not
/// UTF-8, or behind the bearer scheme two tokens); on one that takes a body, 400 one that does
/// not parse or fit, 413 one past `server.body_limit_bytes` and, for a JSON
/// body, 415 one not sent as JSON; on one behind the bearer scheme, 503
/// while this instance's revocation list is stale. A status the operation
/// documents itself keeps its description.
pub fn with_request_refusals(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};
    let operations = doc.paths.paths.values_mut().flat_map(|item| {
        [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
    });
    for op in operations {
        let query = op
            .parameters
            .iter()
            .flatten()
            .any(|p| p.parameter_in == ParameterIn::Query);
        let path = op
            .parameters
            .iter()
            .flatten()
            .any(|p| p.parameter_in == ParameterIn::Path);
        let body = op.request_body.as_ref();
        let json = body.is_some_and(|b| b.content.contains_key("application/json"));
        // A requirement's schemes are private to utoipa; its JSON names them.
        let bearer = op.security.iter().flatten().any(|requirement| {
            serde_json::to_value(requirement).is_ok_and(|v| v.get("bearer").is_some())
        });
        let refusals = [
            (
                "400",
                "`invalid_request`: the query, the body or a path segment does not parse or does not fit the request, or (behind the bearer scheme) the request carries two tokens or a token scheme with nothing usable after it",
                query || body.is_some() || bearer || path,
            ),
            (
                "413",
                "`payload_too_large`: the body is past `server.body_limit_bytes`",
                body.is_some(),
            ),
            (
                "415",
                "`unsupported_media_type`: the body is not sent as `application/json`",
                json,
            ),
            (
                "503",
                "`temporarily_unavailable`: this instance's revocation list has gone unsynced past `revocation.max_staleness_secs`, so it vouches for no token; retry after `Retry-After`, or on another instance",
                bearer,
            ),
        ];
        for (status, description, applies) in refusals {
            if applies {
                op.responses
                    .responses
                    .entry(status.into())
                    .or_insert_with(|| {
                        RefOr::T(
                            ResponseBuilder::new()
                                .description(description)
                                .content(
                                    "application/json",
                                    Content::new(Some(Ref::from_schema_name("ErrorBody"))),
                                )
                                .build(),
                        )
                    });
            }
        }
    }
    doc
}
