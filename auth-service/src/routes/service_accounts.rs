//! Admin endpoints for service accounts: create (the secret is shown once),
//! rotate the secret, register or remove the public key of
//! `private_key_jwt`, disable (its tokens die through the revocation feed).

use std::sync::Arc;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use authflow_contract::claims::service_subject;

use crate::audit;
use crate::clock::now;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{Admin, Client, Json, PathParam, QueryParams};
use crate::service_accounts;
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateServiceAccount {
    /// 1–64 of `a-z 0-9 . _ -`; tokens carry it as `client_id`, with `sub` = `svc:<client_id>`.
    pub client_id: String,
    /// The scopes the account may be granted.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// A public JWK (EC P-256 for ES256, or OKP Ed25519 for EdDSA) for
    /// `private_key_jwt` client authentication.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub jwk: Option<Value>,
    /// Whether to issue a client secret (default true); false needs a `jwk`.
    #[serde(default = "yes")]
    pub secret: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublicKeyRequest {
    /// A public JWK (EC P-256 for ES256, or OKP Ed25519 for EdDSA); no private members.
    #[schema(value_type = Object)]
    pub jwk: Value,
    /// Also kill every token the account holds (its credential leaked):
    /// every filter refuses them through the revocation feed.
    #[serde(default)]
    pub revoke_tokens: bool,
}

/// A change of a service account's credentials.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CredentialChange {
    /// `true`: also kill every token the account holds (the credential
    /// leaked), through the revocation feed; those of the new credential
    /// pass. `false` (the default): they live out their lifetime.
    #[serde(default)]
    pub revoke_tokens: bool,
}

#[derive(Serialize, ToSchema)]
pub struct ServiceAccountKey {
    pub client_id: String,
    /// Whether a public key is registered now.
    pub public_key: bool,
}

#[derive(Serialize, ToSchema)]
pub struct ServiceAccountSecret {
    pub client_id: String,
    /// Shown only in this answer; stored as its SHA-256. Absent for an
    /// account created without a secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    pub scope: String,
}

#[derive(Serialize, ToSchema)]
pub struct DisabledServiceAccount {
    pub client_id: String,
    pub disabled: bool,
}

/// Whom an admin action on `client_id` is audited under: no one for what
/// no account can be named (its text, line breaks and all, stays out of the trail).
fn audited_subject(client_id: &str) -> Option<String> {
    service_accounts::valid_client_id(client_id).then(|| service_subject(client_id))
}

#[utoipa::path(post, path = "/v1/admin/service-accounts", tag = "admin", request_body = CreateServiceAccount, security(("bearer" = [])),
    responses((status = 201, body = ServiceAccountSecret), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    client: Client,
    Admin(admin): Admin,
    Json(req): Json<CreateServiceAccount>,
) -> ApiResult<(axum::http::StatusCode, axum::Json<ServiceAccountSecret>)> {
    let create = service_accounts::create(
        &state,
        &req.client_id,
        &req.scopes,
        req.jwk.as_ref(),
        req.secret,
        now(),
    );
    let (account, secret) = audit::privileged(
        &state,
        &client,
        ("admin_create_service_account", &audit::by_admin(&admin)),
        (audited_subject(&req.client_id).as_deref(), None),
        create,
        |_| "done".into(),
    )
    .await?;
    let body = ServiceAccountSecret {
        client_id: account.client_id,
        client_secret: secret,
        scope: account.scope,
    };
    Ok((axum::http::StatusCode::CREATED, axum::Json(body)))
}

#[utoipa::path(post, path = "/v1/admin/service-accounts/{client_id}/secret", tag = "admin", security(("bearer" = [])),
    params(("client_id" = String, Path), CredentialChange),
    responses((status = 200, body = ServiceAccountSecret), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn rotate_secret(
    State(state): State<Arc<AppState>>,
    client: Client,
    Admin(admin): Admin,
    PathParam(client_id): PathParam<String>,
    QueryParams(change): QueryParams<CredentialChange>,
) -> ApiResult<axum::Json<ServiceAccountSecret>> {
    let secret = audit::privileged(
        &state,
        &client,
        ("admin_rotate_service_secret", &audit::by_admin(&admin)),
        (audited_subject(&client_id).as_deref(), None),
        service_accounts::rotate_secret(&state, &client_id, change.revoke_tokens, now()),
        |_| "done".into(),
    )
    .await?;
    // The new secret is committed and kept nowhere else (the old one no
    // longer works): it is answered even if this read, for the scope only, fails.
    let scope = match state.store.service_account(&client_id).await {
        Ok(account) => account.map(|a| a.scope).unwrap_or_default(),
        Err(e) => {
            tracing::warn!(error = %e, client_id, "the scope was not read after a secret rotation");
            String::new()
        }
    };
    Ok(axum::Json(ServiceAccountSecret {
        client_id,
        client_secret: Some(secret),
        scope,
    }))
}

#[utoipa::path(put, path = "/v1/admin/service-accounts/{client_id}/key", tag = "admin", request_body = PublicKeyRequest, security(("bearer" = [])),
    params(("client_id" = String, Path)),
    responses((status = 200, body = ServiceAccountKey), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn set_key(
    State(state): State<Arc<AppState>>,
    client: Client,
    Admin(admin): Admin,
    PathParam(client_id): PathParam<String>,
    Json(req): Json<PublicKeyRequest>,
) -> ApiResult<axum::Json<ServiceAccountKey>> {
    audit::privileged(
        &state,
        &client,
        ("admin_set_service_key", &audit::by_admin(&admin)),
        (audited_subject(&client_id).as_deref(), None),
        service_accounts::set_public_key(
            &state,
            &client_id,
            Some(&req.jwk),
            req.revoke_tokens,
            now(),
        ),
        |_| "done".into(),
    )
    .await?;
    Ok(axum::Json(ServiceAccountKey {
        client_id,
        public_key: true,
    }))
}

#[utoipa::path(delete, path = "/v1/admin/service-accounts/{client_id}/key", tag = "admin", security(("bearer" = [])),
    params(("client_id" = String, Path), CredentialChange),
    responses((status = 200, body = ServiceAccountKey), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn remove_key(
    State(state): State<Arc<AppState>>,
    client: Client,
    Admin(admin): Admin,
    PathParam(client_id): PathParam<String>,
    QueryParams(change): QueryParams<CredentialChange>,
) -> ApiResult<axum::Json<ServiceAccountKey>> {
    audit::privileged(
        &state,
        &client,
        ("admin_remove_service_key", &audit::by_admin(&admin)),
        (audited_subject(&client_id).as_deref(), None),
        service_accounts::set_public_key(&state, &client_id, None, change.revoke_tokens, now()),
        |_| "done".into(),
    )
    .await?;
    Ok(axum::Json(ServiceAccountKey {
        client_id,
        public_key: false,
    }))
}

#[utoipa::path(post, path = "/v1/admin/service-accounts/{client_id}/disable", tag = "admin", security(("bearer" = [])),
    params(("client_id" = String, Path)),
    responses((status = 200, body = DisabledServiceAccount), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn disable(
    State(state): State<Arc<AppState>>,
    client: Client,
    Admin(admin): Admin,
    PathParam(client_id): PathParam<String>,
) -> ApiResult<axum::Json<DisabledServiceAccount>> {
    audit::privileged(
        &state,
        &client,
        ("admin_disable_service_account", &audit::by_admin(&admin)),
        (audited_subject(&client_id).as_deref(), None),
        service_accounts::disable(&state, &client_id, now()),
        |_| "done".into(),
    )
    .await?;
    Ok(axum::Json(DisabledServiceAccount {
        client_id,
        disabled: true,
    }))
}
