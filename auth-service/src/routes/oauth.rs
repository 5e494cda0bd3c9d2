//! The OAuth 2.0 token endpoint for service accounts: the client-credentials
//! grant (RFC 6749 §4.4), client authentication by HTTP Basic or
//! `client_secret_post` (§2.3.1) or by `private_key_jwt` (RFC 7523 §2.2),
//! answers per §5.1 / §5.2.

use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Form;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::audit;
use crate::client_assertion::JWT_BEARER;
use crate::clock::now;
use crate::dpop;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::Client;
use crate::service_accounts::{
    authenticate, authenticate_assertion, granted_scope, UnspentAssertion,
};
use crate::state::AppState;
use crate::store::ServiceAccount;
use crate::tokens;

pub const CLIENT_CREDENTIALS: &str = "client_credentials";
/// Where the token endpoint is (DPoP proofs name it in `htu`).
pub const TOKEN_PATH: &str = "/v1/oauth/token";

#[derive(Deserialize, ToSchema)]
pub struct TokenForm {
    /// Must be `client_credentials`.
    pub grant_type: String,
    /// Space-separated; a subset of the account's scopes (all of them when absent).
    pub scope: Option<String>,
    /// `client_secret_post`; or send both in HTTP Basic instead.
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    /// `private_key_jwt`: `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`.
    pub client_assertion_type: Option<String>,
    /// `private_key_jwt`: a JWT signed with the account's registered key;
    /// `iss` = `sub` = client id, `aud` = the issuer identifier (a single
    /// string; draft-ietf-oauth-rfc7523bis), `exp` at most 5 minutes ahead,
    /// `jti` never used before.
    pub client_assertion: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ClientTokenResponse {
    pub access_token: String,
    /// `DPoP` when the request carried a DPoP proof (the token is bound to
    /// its key: `cnf.jkt`), else `Bearer`.
    pub token_type: &'static str,
    pub expires_in: u64,
    pub scope: String,
}

/// Issues a service account an access token (no refresh token, no device
/// binding); with a `DPoP` proof the token is bound to its key (RFC 9449 §5).
#[utoipa::path(post, path = "/v1/oauth/token", tag = "oauth",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    params(("DPoP" = Option<String>, Header, description = "DPoP proof (RFC 9449): `htm` POST, `htu` the issuer + `/v1/oauth/token`")),
    security((), ("client_basic" = [])),
    responses((status = 200, body = ClientTokenResponse, headers(("DPoP-Nonce" = String, description = "a fresh server nonce, when nonces are required"))),
              (status = 400, body = ErrorBody, description = "also `invalid_dpop_proof`, or `use_dpop_nonce` with the nonce in `DPoP-Nonce`"),
              (status = 401, body = ErrorBody),
              (status = 429, body = ErrorBody, description = "a wrong secret from a client address past its limit of failures"),
              (status = 503, body = ErrorBody, description = "`temporarily_unavailable`: no signing key this instance can open is active, or no password-hashing slot came free for a client secret an earlier release stored as an argon2id hash; retry after `Retry-After`")))]
pub async fn token(
    State(state): State<Arc<AppState>>,
    client: Client,
    form: Result<Form<TokenForm>, FormRejection>,
) -> ApiResult<Response> {
    let Form(form) = form.map_err(|rejection| form_refused(&rejection))?;
    if form.grant_type != CLIENT_CREDENTIALS {
        return Err(ApiError::UnsupportedGrantType);
    }
    // Whom a refusal is audited under: the client the request names.
    let claimed = claimed_client_id(
        &client.headers,
        form.client_id.as_deref(),
        form.client_assertion.as_deref(),
    );
    let claimed = claimed.as_deref();
    crate::tokens::ensure_signer(&state, now())?;
    let (account, assertion) = match authenticate_client(
        &state,
        &client,
        form.client_id,
        form.client_secret,
        form.client_assertion_type,
        form.client_assertion,
    )
    .await
    {
        Ok(a) => a,
        Err(e) => return Err(client_refused(&state, &client, claimed, e).await),
    };
    let now = now();
    // Checked without writing anything: the proof is recorded only once
    // the client is authenticated, so no unauthenticated caller fills the replay table.
    let proof = match dpop::token_request_proof(&state, &client.headers, TOKEN_PATH, now) {
        Ok(proof) => proof,
        // A proof refused for want of the server nonce leaves the assertion
        // unspent: the client sends the same request again with a new proof.
        // But a spent one gets the replay's answer: the proof's would tell
        // that its account is still live, with the same key.
        Err(e) => match &assertion {
            Some(unspent) if unspent.was_spent(&state).await? => {
                return Err(client_refused(&state, &client, claimed, ApiError::InvalidClient).await)
            }
            _ => return Err(e),
        },
    };
    // A used assertion gets the replay's answer before anything else, so it
    // learns nothing of its account (that its key still works, its scopes).
    if let Some(unspent) = &assertion {
        if proof.is_some() && unspent.was_spent(&state).await? {
            return Err(client_refused(&state, &client, claimed, ApiError::InvalidClient).await);
        }
    }
    // The proof is recorded before the assertion is spent: a replayed proof
    // (refused only here, by the record) must leave the assertion unspent,
    // as every other refused proof does, for the client's retry with a new one.
    let dpop_jkt = dpop::accept(&state, proof, now).await?;
    // Spent before the scope is answered, so a used assertion learns
    // nothing of its account (its scopes).
    if let Some(assertion) = assertion {
        if let Err(e) = assertion.spend(&state).await {
            return Err(client_refused(&state, &client, claimed, e).await);
        }
    }
    let scope =
        granted_scope(&account.scope, form.scope.as_deref()).map_err(ApiError::InvalidScope)?;
    let access = tokens::issue_for_service(&state, &account, &scope, dpop_jkt, now).await?;
    let subject = authflow_contract::claims::service_subject(&account.client_id);
    audit::record(
        &state,
        Some(&client),
        "client_credentials",
        "success",
        Some(&subject),
        None,
    )
    .await;
    let body = ClientTokenResponse {
        token_type: access.token_type(),
        access_token: access.token,
        expires_in: access.expires_in,
        scope,
    };
    let mut response = axum::Json(body).into_response();
    // RFC 6749 §5.1: token answers are never cached.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
        .headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    if let Some((name, value)) = dpop::nonce_header(&state, now) {
        response.headers_mut().insert(name, value);
    }
    Ok(response)
}

/// Why a token request's form was refused. A body past the limit is 413, as
/// at every other endpoint. A parameter sent twice (RFC 6749 §3.2 allows
/// each once) is named: serde's message for it is "duplicate field `name`".
fn form_refused(rejection: &FormRejection) -> ApiError {
    if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge;
    }
    ApiError::BadRequest(form_refused_text(rejection))
}

fn form_refused_text(rejection: &FormRejection) -> String {
    let text = rejection.body_text();
    match text
        .split_once("duplicate field `")
        .and_then(|(_, rest)| rest.split_once('`'))
    {
        Some((name, _)) => format!("`{name}` more than once; send each parameter once"),
        None => {
            "send a form-encoded body (application/x-www-form-urlencoded) with grant_type".into()
        }
    }
}

/// The client id a token request names (HTTP Basic, the form, or the
/// assertion's `sub`), when it is one a service account could have: for the
/// audit only, nothing is trusted from it.
fn claimed_client_id(
    headers: &HeaderMap,
    id: Option<&str>,
    assertion: Option<&str>,
) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(basic_credentials)
        .map(|(id, _)| id)
        .or_else(|| id.map(str::to_owned))
        .or_else(|| assertion.and_then(crate::client_assertion::claimed_client))
        .filter(|id| crate::service_accounts::valid_client_id(id))
}

/// A failed client authentication, audited under the service subject of
/// the client it named (`svc:<client_id>`, as a granted token is).
async fn client_refused(
    state: &AppState,
    client: &Client,
    claimed: Option<&str>,
    e: ApiError,
) -> ApiError {
    let subject = claimed.map(authflow_contract::claims::service_subject);
    // Anyone can send these, unauthenticated and without end.
    let outcome = match e {
        ApiError::TooManyRequests { .. } => "throttled",
        _ => "invalid_client",
    };
    // An account that exists has rows of its own; made-up names share the address's.
    let exists = match claimed {
        Some(id) => matches!(state.store.service_account(id).await, Ok(Some(_))),
        None => false,
    };
    let about = audit::Repeated {
        user_id: subject.as_deref(),
        email: None,
        per_account: exists,
    };
    audit::record_repeatable(state, client, ("client_credentials", outcome), about).await;
    e
}

/// The account the request authenticates as, by exactly one method: a
/// client assertion, or a secret (HTTP Basic or in the form).
async fn authenticate_client(
    state: &AppState,
    client: &Client,
    id: Option<String>,
    secret: Option<String>,
    assertion_type: Option<String>,
    assertion: Option<String>,
) -> ApiResult<(ServiceAccount, Option<UnspentAssertion>)> {
    let headers = &client.headers;
    match (assertion_type, assertion) {
        (None, None) => {
            let (client_id, secret) = client_credentials(headers, id, secret)?;
            Ok((
                authenticate(state, client, &client_id, &secret).await?,
                None,
            ))
        }
        (Some(kind), Some(assertion)) => {
            if kind != JWT_BEARER {
                return Err(ApiError::BadRequest(format!(
                    "client_assertion_type must be {JWT_BEARER}"
                )));
            }
            if secret.is_some() || headers.contains_key(header::AUTHORIZATION) {
                return Err(ApiError::BadRequest(
                    "use one client authentication method, not both".into(),
                ));
            }
            let (account, unspent) =
                authenticate_assertion(state, id.as_deref(), &assertion, now()).await?;
            Ok((account, Some(unspent)))
        }
        _ => Err(ApiError::BadRequest(
            "client_assertion and client_assertion_type go together".into(),
        )),
    }
}

/// The client's id and secret, from exactly one method: HTTP Basic or the
/// form (RFC 6749 §2.3: a client must not use more than one).
fn client_credentials(
    headers: &HeaderMap,
    id: Option<String>,
    secret: Option<String>,
) -> ApiResult<(String, String)> {
    // Copies that differ are two attempts: a proxy or log reading another
    // copy than this one would see another client than the one served.
    let mut copies = headers.get_all(header::AUTHORIZATION).iter();
    if let Some(first) = copies.next() {
        if copies.any(|other| other != first) {
            return Err(ApiError::BadRequest("send one Authorization header".into()));
        }
    }
    // An Authorization header is a client authentication attempt: one that
    // is not valid Basic fails, rather than being ignored beside the form's.
    let basic = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(basic_credentials)
                .ok_or(ApiError::InvalidClient)?,
        ),
    };
    match (basic, id, secret) {
        (Some(pair), None, None) => Ok(pair),
        (None, Some(id), Some(secret)) => Ok((id, secret)),
        (Some(_), _, _) => Err(ApiError::BadRequest(
            "use one client authentication method, not both".into(),
        )),
        _ => Err(ApiError::InvalidClient),
    }
}

/// `Basic base64(id:secret)`. Ids and secrets this service issues need no
/// form-encoding (§2.3.1), but a `%`-encoded one is decoded as the RFC says.
fn basic_credentials(value: &str) -> Option<(String, String)> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") || rest.len() > 1024 {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(rest.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_decode(id)?, form_decode(secret)?))
}

fn form_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_decoded() {
        let v = format!("Basic {}", STANDARD.encode("billing:s%3Acr+t"));
        assert_eq!(
            basic_credentials(&v),
            Some(("billing".into(), "s:cr t".into()))
        );
        assert_eq!(basic_credentials("Bearer abc"), None);
        assert_eq!(basic_credentials("Basic !!!"), None);
        assert_eq!(
            basic_credentials(&format!("Basic {}", STANDARD.encode("nocolon"))),
            None
        );
    }
}
