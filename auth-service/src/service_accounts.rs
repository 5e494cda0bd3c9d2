//! Service accounts: the callers of the client-credentials grant (RFC 6749
//! §4.4). One place for what the admin API and the CLI both do (create,
//! rotate, disable) and for authenticating a client at the token endpoint.

use authflow_contract::claims::{is_header_value, is_scope_token, scopes, service_subject};
use serde_json::Value;

use crate::client_assertion::{self, ClientKey};
use crate::domain::secret::hashes_match;
use crate::domain::{hash_secret, random_secret};
use crate::error::{ApiError, ApiResult};
use crate::extract::Client;
use crate::sessions::feed_changed;
use crate::state::AppState;
use crate::store::{ServiceAccount, StoreError, TokensBan};
use crate::throttle::ip_key;

/// Longest client id; ids are `[a-z0-9._-]`, so they need no escaping in a
/// header, a `sub` or HTTP Basic credentials.
pub const MAX_CLIENT_ID_LEN: usize = 64;
/// Most scopes an account (or a request) may name.
pub const MAX_SCOPES: usize = 32;

/// A client id as accepted at creation: 1–64 of `a-z 0-9 . _ -`.
pub fn valid_client_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CLIENT_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// A scope list in its stored form (space-separated, de-duplicated, in the
/// given order); refuses scope tokens RFC 6749 §3.3 does not allow.
pub fn normalize_scope<'a>(
    items: impl IntoIterator<Item = &'a str>,
) -> Result<String, &'static str> {
    let mut out: Vec<&str> = Vec::new();
    for s in items.into_iter().flat_map(scopes) {
        if !is_scope_token(s) {
            return Err("a scope contains a character RFC 6749 does not allow");
        }
        if !out.contains(&s) {
            // Checked as the list grows: each scope is compared with the
            // ones before it, so an unbounded list costs quadratic time.
            if out.len() == MAX_SCOPES {
                return Err("too many scopes");
            }
            out.push(s);
        }
    }
    let joined = out.join(" ");
    // Filters forward the scope as one header and refuse a token whose scope it cannot carry.
    if !is_header_value(&joined) {
        return Err("the scopes are too long together");
    }
    Ok(joined)
}

/// The scope to grant: the requested one when every scope in it is the
/// account's, all of the account's when none was requested (RFC 6749 §3.3).
pub fn granted_scope(account_scope: &str, requested: Option<&str>) -> Result<String, &'static str> {
    let Some(requested) = requested else {
        return Ok(account_scope.to_owned());
    };
    let requested = normalize_scope([requested])?;
    // RFC 6749 §3.3: a scope has at least one token. An empty one is not
    // taken as omitted (that would grant everything the account has).
    if requested.is_empty() {
        return Err("the scope is empty; omit it for all of the client's scopes");
    }
    let allowed: Vec<&str> = scopes(account_scope).collect();
    if scopes(&requested).all(|s| allowed.contains(&s)) {
        Ok(requested)
    } else {
        Err("the requested scope exceeds the client's")
    }
}

/// A new account: with a secret (shown once, stored only as its SHA-256:
/// see [`stored_secret`]) unless `with_secret` is false, and with a public key for
/// `private_key_jwt` when `jwk` is given; at least one of the two.
pub async fn create(
    state: &AppState,
    client_id: &str,
    scope: &[String],
    jwk: Option<&Value>,
    with_secret: bool,
    now: i64,
) -> ApiResult<(ServiceAccount, Option<String>)> {
    if !valid_client_id(client_id) {
        return Err(ApiError::BadRequest(
            "client_id must be 1-64 of a-z, 0-9, `.`, `_`, `-`".into(),
        ));
    }
    // Clients and proxies remove these from a path as dot segments: the
    // account's admin routes (rotate, disable) could not be reached.
    if matches!(client_id, "." | "..") {
        return Err(ApiError::BadRequest(
            "client_id must not be `.` or `..`".into(),
        ));
    }
    let scope = normalize_scope(scope.iter().map(String::as_str))
        .map_err(|e| ApiError::BadRequest(e.into()))?;
    if !with_secret && jwk.is_none() {
        return Err(ApiError::BadRequest(
            "an account without a secret needs a public key (jwk)".into(),
        ));
    }
    let public_jwk = jwk.map(checked_jwk).transpose()?;
    let secret = with_secret.then(random_secret);
    let secret_hash = secret
        .as_ref()
        .map_or_else(String::new, |s| stored_secret(s.expose()));
    let account = ServiceAccount {
        client_id: client_id.to_owned(),
        secret_hash,
        scope,
        disabled_at: None,
        created_at: now,
        rotated_at: now,
        public_jwk,
    };
    match state.store.create_service_account(&account).await {
        Ok(()) => Ok((account, secret.map(|s| s.expose().to_owned()))),
        Err(StoreError::Conflict(_)) => Err(ApiError::Conflict(
            "a service account with this client_id exists",
        )),
        Err(e) => Err(e.into()),
    }
}

/// A JWK as stored: checked to be a usable public ES256 / EdDSA key.
fn checked_jwk(jwk: &Value) -> ApiResult<String> {
    ClientKey::from_jwk(jwk).map_err(|e| ApiError::BadRequest(format!("jwk: {e}")))?;
    Ok(jwk.to_string())
}

/// Registers (replaces) or, with `None`, removes a live account's public key.
/// Assertions signed with a replaced key stop working at once; with
/// `revoke_tokens`, so do the tokens the account holds (see [`tokens_ban`]).
pub async fn set_public_key(
    state: &AppState,
    client_id: &str,
    jwk: Option<&Value>,
    revoke_tokens: bool,
    now: i64,
) -> ApiResult<()> {
    let public_jwk = jwk.map(checked_jwk).transpose()?;
    if let (None, Some(account)) = (&public_jwk, state.store.service_account(client_id).await?) {
        if account.secret_hash.is_empty() {
            return Err(ApiError::BadRequest(
                "the account has no secret: removing its key would lock it out".into(),
            ));
        }
    }
    let subject = service_subject(client_id);
    let ban = tokens_ban(state, &subject, revoke_tokens, now);
    if !state
        .store
        .set_service_public_jwk(client_id, public_jwk.as_deref(), now, ban)
        .await?
    {
        return Err(ApiError::NotFound(
            "no live service account has this client_id",
        ));
    }
    if revoke_tokens {
        feed_changed(state).await;
    }
    Ok(())
}

/// A new secret for a live account; the old one stops working at once, and
/// with `revoke_tokens` so do the tokens the account holds.
pub async fn rotate_secret(
    state: &AppState,
    client_id: &str,
    revoke_tokens: bool,
    now: i64,
) -> ApiResult<String> {
    let secret = random_secret();
    let hash = stored_secret(secret.expose());
    let subject = service_subject(client_id);
    let ban = tokens_ban(state, &subject, revoke_tokens, now);
    if !state
        .store
        .set_service_secret(client_id, &hash, now, ban)
        .await?
    {
        return Err(ApiError::NotFound(
            "no live service account has this client_id",
        ));
    }
    if revoke_tokens {
        feed_changed(state).await;
    }
    Ok(secret.expose().to_owned())
}

/// With `revoke`, the ban a change of credentials appends: every token the
/// account was issued up to `now` (its second included: `iat` has whole
/// seconds) is refused by every filter, as after [`disable`], while the
/// account lives on under its new credentials (the credential that leaked
/// is worth nothing, nor are the tokens minted with it).
fn tokens_ban<'a>(
    state: &AppState,
    subject: &'a str,
    revoke: bool,
    now: i64,
) -> Option<TokensBan<'a>> {
    revoke.then(|| TokensBan {
        subject,
        expires_at: now + i64::try_from(state.config.tokens.access_ttl.as_secs()).unwrap_or(900),
    })
}

/// Disables the account: no more tokens, and a subject ban on its service
/// subject in the revocation feed kills the ones it holds.
pub async fn disable(state: &AppState, client_id: &str, now: i64) -> ApiResult<()> {
    let expires = now + i64::try_from(state.config.tokens.access_ttl.as_secs()).unwrap_or(900);
    if !state
        .store
        .disable_service_account(client_id, &service_subject(client_id), now, expires)
        .await?
    {
        return Err(ApiError::NotFound(
            "no live service account has this client_id",
        ));
    }
    feed_changed(state).await;
    Ok(())
}

/// How a client secret is stored: `sha256$` and the hex SHA-256 of the
/// secret. The secrets this service issues are 256 random bits, which no
/// guessing can find, so a slow password hash would only make every token
/// request (and every request with a made-up client id) costly.
pub const SECRET_SHA256_PREFIX: &str = "sha256$";

/// The stored form of a new client secret.
pub fn stored_secret(secret: &str) -> String {
    format!("{SECRET_SHA256_PREFIX}{}", hash_secret(secret))
}

/// Compared with when there is no stored SHA-256 (unknown or disabled account,
/// key-only account): the same work, and never a match.
const NO_SECRET: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Whether `secret` matches `stored` in its SHA-256 form (constant time);
/// `None` or another form: false, after the same work.
fn secret_matches_sha256(secret: &str, stored: Option<&str>) -> bool {
    let expected = stored.and_then(|h| h.strip_prefix(SECRET_SHA256_PREFIX));
    let matched = hashes_match(&hash_secret(secret), expected.unwrap_or(NO_SECRET));
    matched && expected.is_some()
}

/// The live account these credentials belong to. Unknown, disabled and
/// wrong secret are one answer. Secrets are checked by their SHA-256;
/// those stored by earlier releases as argon2id hashes (`$argon2id$…`)
/// still work, verified under the service's password-hashing limit (see
/// [`legacy_secret_matches`]), and are re-stored as SHA-256 once they verify.
///
/// Wrong secrets are counted against the client address (its bucket, with
/// the sign-in limit `throttle.ip_max_failures`), whatever the client id: a
/// locked address gets 429 for every wrong secret (a right SHA-256 secret,
/// cheap to check and unguessable, still passes).
pub async fn authenticate(
    state: &AppState,
    client: &Client,
    client_id: &str,
    secret: &str,
) -> ApiResult<ServiceAccount> {
    let (store, now) = (state.store.as_ref(), crate::clock::now());
    let address_key = ip_key(&client.bucket(state));
    let locked = state
        .throttle
        .check(store, std::slice::from_ref(&address_key), now)
        .await?
        .err();
    let account = if valid_client_id(client_id) {
        store.service_account(client_id).await?
    } else {
        None
    };
    let live = account.filter(|a| a.disabled_at.is_none());
    // No secret (key-only account): the same work as a wrong one, then a refusal.
    let stored = live
        .as_ref()
        .map(|a| a.secret_hash.as_str())
        .filter(|h| !h.is_empty());
    let ok = match stored {
        Some(argon2) if argon2.starts_with("$argon2") => match locked {
            Some(retry_after_secs) => return Err(too_many_failures(retry_after_secs)),
            None => {
                legacy_secret_matches(state, &address_key, client_id, secret, argon2, now).await?
            }
        },
        sha256 => {
            let ok = secret_matches_sha256(secret, sha256);
            if !ok {
                if let Some(retry_after_secs) = locked {
                    return Err(too_many_failures(retry_after_secs));
                }
                // Counted after the comparison: it costs nothing, and a 256-bit secret is not guessed.
                state
                    .throttle
                    .failure(
                        store,
                        &address_key,
                        state.config.throttle.ip_max_failures,
                        now,
                    )
                    .await?;
            }
            ok
        }
    };
    match live {
        Some(account) if ok => Ok(account),
        _ => Err(ApiError::InvalidClient),
    }
}

fn too_many_failures(retry_after_secs: u64) -> ApiError {
    ApiError::TooManyRequests {
        retry_after_secs: retry_after_secs.max(1),
    }
}

/// A secret checked against a legacy argon2id hash: the hashing slot first
/// (a 503 counts nothing), then the attempt counted against the client
/// address before the hash runs, so the hashing an address can ask for is
/// bounded. Not counted per client id, as a password is per account: the
/// secret was generated by this service (256 bits, never guessed), and a
/// lock on the id (which is public: tokens carry it) would let anyone keep
/// the account from its own, right secret. A right secret takes its
/// attempt back and is re-stored as SHA-256, only over the hash it was
/// checked against (a rotation in between wins), so it costs no hash from then on.
async fn legacy_secret_matches(
    state: &AppState,
    address_key: &str,
    client_id: &str,
    secret: &str,
    stored: &str,
    now: i64,
) -> ApiResult<bool> {
    let (store, limits) = (state.store.as_ref(), &state.config.throttle);
    let slot = state.password_work.reserve().await?;
    let address = state
        .throttle
        .attempt(store, address_key, limits.ip_max_failures, now)
        .await?
        .map_err(too_many_failures)?;
    if !state
        .password_work
        .verify_in(slot, secret.to_owned(), Some(stored.to_owned()))
        .await?
    {
        return Ok(false);
    }
    state.throttle.undo(store, &address).await?;
    if let Err(e) = store
        .upgrade_service_secret(client_id, stored, &stored_secret(secret))
        .await
    {
        // The secret was right; the next request tries again.
        tracing::warn!(error = %e, client_id, "a legacy client secret was not re-stored as SHA-256");
    }
    Ok(true)
}

/// The live account a `private_key_jwt` assertion (RFC 7523 §2.2) proves:
/// signed with the account's registered key, for this service, short-lived.
/// `client_id`, when the form names one, must be the assertion's. Every
/// failure is one `invalid_client`. Its `jti` must also never have been
/// used (on any instance): that is checked, and the assertion spent, by
/// [`UnspentAssertion::spend`] once the rest of the request is known good.
pub async fn authenticate_assertion(
    state: &AppState,
    client_id: Option<&str>,
    assertion: &str,
    now: i64,
) -> ApiResult<(ServiceAccount, UnspentAssertion)> {
    let claimed = client_assertion::claimed_client(assertion).ok_or(ApiError::InvalidClient)?;
    if client_id.is_some_and(|id| id != claimed) || !valid_client_id(&claimed) {
        return Err(ApiError::InvalidClient);
    }
    let account = state
        .store
        .service_account(&claimed)
        .await?
        .filter(|a| a.disabled_at.is_none());
    let key = account
        .as_ref()
        .and_then(|a| a.public_jwk.as_deref())
        .and_then(|j| serde_json::from_str::<Value>(j).ok())
        .and_then(|jwk| ClientKey::from_registered(&jwk));
    // Without a live account and its key (or for an assertion naming another
    // algorithm than its key's), a decoy key: the same signature work, then the same refusal.
    let key_or_decoy = key
        .as_ref()
        .filter(|k| k.takes(assertion))
        .unwrap_or_else(|| ClientKey::decoy_for(assertion));
    let checked = client_assertion::verify(
        assertion,
        &claimed,
        key_or_decoy,
        &state.config.tokens.issuer,
        now,
    );
    let (Some(account), Some(_), Some(accepted)) = (account, key, checked) else {
        return Err(ApiError::InvalidClient);
    };
    Ok((
        account,
        UnspentAssertion {
            client_id: claimed,
            accepted,
        },
    ))
}

/// A client assertion that passed every check but the replay check. A
/// request whose DPoP proof is refused (without the server nonce: RFC 9449
/// §8 has the client send the same request again with one) must not spend
/// it, so it is spent only once the proof passed.
#[must_use = "an assertion authenticates only once spent"]
pub struct UnspentAssertion {
    client_id: String,
    accepted: client_assertion::Accepted,
}

impl UnspentAssertion {
    /// Whether this assertion was spent already (by another request, here
    /// or on another instance): it is then answered as a replay, whatever
    /// else the request got wrong.
    pub async fn was_spent(&self, state: &AppState) -> ApiResult<bool> {
        Ok(state
            .store
            .client_assertion_taken(&self.client_id, &self.accepted.jti)
            .await?)
    }

    /// Records the assertion's `jti` as used; a replay is `invalid_client`.
    pub async fn spend(self, state: &AppState) -> ApiResult<()> {
        let Self {
            client_id,
            accepted,
        } = self;
        if state
            .store
            .take_client_assertion(&client_id, &accepted.jti, accepted.expires_at)
            .await?
        {
            Ok(())
        } else {
            Err(ApiError::InvalidClient)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request of thousands of scopes (a body of up to
    /// `server.body_limit_bytes`) is refused once it passes the bound, not
    /// after each of its scopes was compared with every other one.
    #[test]
    fn scopes_past_the_bound_are_refused_before_the_rest_is_read() {
        let many: Vec<String> = (0..=MAX_SCOPES).map(|i| format!("s{i}")).collect();
        let mut request: Vec<&str> = many.iter().map(String::as_str).collect();
        request.push("not\u{7f}read");
        assert_eq!(normalize_scope(request), Err("too many scopes"));
        let at_the_bound: Vec<&str> = many[..MAX_SCOPES].iter().map(String::as_str).collect();
        assert_eq!(
            normalize_scope(at_the_bound.clone()).unwrap(),
            at_the_bound.join(" ")
        );
        // Repeats count once.
        let repeated = at_the_bound.iter().chain(&at_the_bound).copied();
        assert_eq!(normalize_scope(repeated).unwrap(), at_the_bound.join(" "));
    }

    #[test]
    fn client_ids() {
        assert!(valid_client_id("billing-api.v2_x"));
        for bad in ["", "Billing", "a b", "a:b", "a/b", &"a".repeat(65)] {
            assert!(!valid_client_id(bad), "{bad}");
        }
    }

    #[test]
    fn secrets_are_stored_and_checked_as_sha256() {
        let stored = stored_secret("s3cret-value");
        assert_eq!(stored, format!("sha256${}", hash_secret("s3cret-value")));
        assert!(secret_matches_sha256("s3cret-value", Some(&stored)));
        assert!(!secret_matches_sha256("s3cret-valuf", Some(&stored)));
        assert!(!secret_matches_sha256("s3cret-value", None));
        // The bare hex (no prefix) or another hash form is never taken as a SHA-256.
        assert!(!secret_matches_sha256(
            "s3cret-value",
            Some(&hash_secret("s3cret-value"))
        ));
        assert!(!secret_matches_sha256("", Some(NO_SECRET)));
        assert!(!secret_matches_sha256(
            "x",
            Some(&format!("sha256${NO_SECRET}"))
        ));
    }

    #[test]
    fn granted_scope_is_a_subset() {
        assert_eq!(
            granted_scope("read write", None).as_deref(),
            Ok("read write")
        );
        assert_eq!(
            granted_scope("read write", Some("write")).as_deref(),
            Ok("write")
        );
        assert_eq!(
            granted_scope("read write", Some("write  read write")).as_deref(),
            Ok("write read")
        );
        assert!(granted_scope("read write", Some(" ")).is_err());
        assert!(granted_scope("read", Some("read admin")).is_err());
        assert!(granted_scope("read", Some("re\"ad")).is_err());
    }
}
