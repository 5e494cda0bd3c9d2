//! DPoP (RFC 9449) at the service: token requests with a proof get tokens
//! bound to its key, a bound refresh token needs that key, proofs are used
//! once (across instances: the table is in the database), server nonces,
//! and a bound token never passes as a plain bearer token.
//!
//! The client here makes real proofs with the contract's proof maker
//! (`authflow_contract::dpop::client`, p256 ECDSA and ed25519-dalek) from
//! random keys.

use authflow_contract::dpop::client::ProofKey;
use serde_json::{json, Value};

use crate::common::*;

/// A client's DPoP key: the contract's proof maker, called the way these tests call it.
pub struct DpopKey(ProofKey);

impl DpopKey {
    pub fn es256() -> Self {
        Self(ProofKey::es256(&rand::random()))
    }

    pub fn ed25519() -> Self {
        Self(ProofKey::ed25519(&rand::random()))
    }

    /// The RFC 7638 thumbprint a token bound to this key carries.
    pub fn jkt(&self) -> String {
        self.0.jkt()
    }

    /// A fresh proof for `method` `url`: new `jti`, `iat` now; `ath` for
    /// `access_token`, and `nonce` when given.
    pub fn proof(
        &self,
        method: &str,
        url: &str,
        access_token: Option<&str>,
        nonce: Option<&str>,
    ) -> String {
        self.proof_at(
            method,
            url,
            access_token,
            nonce,
            authflow_auth_service::clock::now(),
        )
    }

    pub fn proof_at(
        &self,
        method: &str,
        url: &str,
        access_token: Option<&str>,
        nonce: Option<&str>,
        iat: i64,
    ) -> String {
        self.0.proof_with(method, url, access_token, |claims| {
            claims["iat"] = iat.into();
            if let Some(nonce) = nonce {
                claims["nonce"] = nonce.into();
            }
        })
    }
}

const SIGNIN_VERIFY: &str = "/v1/auth/signin/verify";
const REFRESH: &str = "/v1/auth/refresh";
const LOGOUT: &str = "/v1/auth/logout";
const TOKEN: &str = "/v1/oauth/token";

impl TestApp {
    /// The public URL of an endpoint, as a proof names it: the issuer + path
    /// (not the address the test connects to).
    pub fn htu(&self, path: &str) -> String {
        format!("{}{path}", self.state.config.tokens.issuer)
    }

    /// A sign-in challenge of a verified user and its mailed code.
    async fn challenge_and_code(&self, email: &str) -> (String, Value) {
        let before = self.outbox(email, 0).await.len();
        let (challenge, _) = self.challenge(email, PASSWORD).await;
        let mail = self.last_mail(email, before + 1).await;
        (challenge, mail["code"].clone())
    }

    /// The second sign-in step, with `proof` (if any) as `DPoP`.
    async fn verify_with_proof(
        &self,
        challenge: &str,
        code: &Value,
        proof: Option<String>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(self.url(SIGNIN_VERIFY))
            .json(&json!({"challenge_id": challenge, "code": code}));
        if let Some(proof) = proof {
            request = request.header("dpop", proof);
        }
        request.send().await.unwrap()
    }

    /// Both sign-in steps of a verified user, with `proof` (if any) as `DPoP`.
    async fn signin_with_proof(&self, email: &str, proof: Option<String>) -> reqwest::Response {
        let (challenge, code) = self.challenge_and_code(email).await;
        self.verify_with_proof(&challenge, &code, proof).await
    }

    /// A full sign-in bound to `key`.
    pub async fn dpop_signin(&self, email: &str, key: &DpopKey) -> Tokens {
        let r = self
            .signin_with_proof(
                email,
                Some(key.proof("POST", &self.htu(SIGNIN_VERIFY), None, None)),
            )
            .await;
        assert_eq!(r.status(), 200);
        dpop_tokens_of(r).await
    }

    async fn refresh_with(&self, t: &Tokens, proof: Option<String>) -> reqwest::Response {
        let mut request = self
            .http
            .post(self.url(REFRESH))
            .header("x-authflow-device", &t.device)
            .json(&json!({"refresh_token": t.refresh}));
        if let Some(proof) = proof {
            request = request.header("dpop", proof);
        }
        request.send().await.unwrap()
    }

    /// A refresh with a fresh proof from `key`.
    pub async fn dpop_refresh(&self, t: &Tokens, key: &DpopKey) -> reqwest::Response {
        self.refresh_with(t, Some(key.proof("POST", &self.htu(REFRESH), None, None)))
            .await
    }

    /// `method` `path` with `token` in the `DPoP` scheme, a fresh proof for
    /// it from `key`, and the device secret when given.
    fn with_dpop(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        device: Option<&str>,
        key: &DpopKey,
    ) -> reqwest::RequestBuilder {
        let proof = key.proof(method.as_str(), &self.htu(path), Some(token), None);
        let request = self
            .http
            .request(method, self.url(path))
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", proof);
        match device {
            Some(device) => request.header("x-authflow-device", device),
            None => request,
        }
    }

    /// A client-credentials token of service account `client_id`, bound to `key`.
    async fn bound_service_token(&self, client_id: &str, secret: String, key: &DpopKey) -> String {
        let r = self
            .http
            .post(self.url(TOKEN))
            .basic_auth(client_id, Some(secret))
            .form(&[("grant_type", "client_credentials")])
            .header("dpop", key.proof("POST", &self.htu(TOKEN), None, None))
            .send()
            .await
            .unwrap();
        ok_text(r, "access_token").await
    }
}

/// The tokens of a `token_type: DPoP` answer.
pub async fn dpop_tokens_of(r: reqwest::Response) -> Tokens {
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "DPoP", "{body}");
    Tokens {
        access: body["access_token"].as_str().unwrap().to_owned(),
        refresh: body["refresh_token"].as_str().unwrap().to_owned(),
        device: body["device_secret"].as_str().unwrap().to_owned(),
        session: body["session_id"].as_str().unwrap().to_owned(),
    }
}

fn bound_jkt(access_token: &str) -> Value {
    claims(access_token)["cnf"]["jkt"].clone()
}

#[tokio::test]
async fn a_sign_in_with_a_proof_gets_tokens_bound_to_its_key() {
    let app = spawn_app().await;
    for (email, key) in [
        ("es@example.com", DpopKey::es256()),
        ("ed@example.com", DpopKey::ed25519()),
    ] {
        app.verified_user(email).await;
        let t = app.dpop_signin(email, &key).await;
        assert_eq!(bound_jkt(&t.access), key.jkt().as_str(), "{email}");
        // The device binding is still there.
        assert!(claims(&t.access)["dfp"].is_string());
    }
    // Without a proof nothing changes: Bearer, no `cnf`.
    let plain = app.signin("es@example.com", PASSWORD).await;
    assert!(claims(&plain.access).get("cnf").is_none());
}

#[tokio::test]
async fn a_bad_proof_at_sign_in_is_refused_before_the_code_is_spent() {
    let app = spawn_app().await;
    app.verified_user("ada@example.com").await;
    let key = DpopKey::es256();
    let wrong = [
        // Another endpoint, another method, the address the client connected to (not the issuer),
        // stale, and a proof whose signature does not match.
        key.proof("POST", &app.htu(REFRESH), None, None),
        key.proof("GET", &app.htu(SIGNIN_VERIFY), None, None),
        key.proof("POST", &app.url(SIGNIN_VERIFY), None, None),
        key.proof_at(
            "POST",
            &app.htu(SIGNIN_VERIFY),
            None,
            None,
            authflow_auth_service::clock::now() - 600,
        ),
        {
            let good = key.proof("POST", &app.htu(SIGNIN_VERIFY), None, None);
            let other = DpopKey::es256().proof("POST", &app.htu(SIGNIN_VERIFY), None, None);
            format!(
                "{}.{}",
                good.rsplit_once('.').unwrap().0,
                other.rsplit_once('.').unwrap().1
            )
        },
        "not a proof".to_owned(),
    ];
    // The claims of the proof that finally succeeds; with `htu` written twice (another
    // endpoint first, this one last) the same key's proof is refused, whichever one a reader would take.
    let mut claims = ProofKey::claims("POST", &app.htu(SIGNIN_VERIFY), None);
    claims["iat"] = authflow_auth_service::clock::now().into();
    let header = key.0.header().to_string();
    let twice =
        claims
            .to_string()
            .replacen('{', &format!("{{\"htu\":\"{}\",", app.htu(REFRESH)), 1);
    let (challenge, code) = app.challenge_and_code("ada@example.com").await;
    for proof in wrong.into_iter().chain([key.0.sign_text(&header, &twice)]) {
        let r = app
            .verify_with_proof(&challenge, &code, Some(proof.clone()))
            .await;
        assert_eq!(error_code(r, 400).await, "invalid_dpop_proof", "{proof}");
    }
    let r = app
        .verify_with_proof(
            &challenge,
            &code,
            Some(key.0.sign_text(&header, &claims.to_string())),
        )
        .await;
    assert_eq!(
        r.status(),
        200,
        "the refusals above spent neither the challenge nor its code"
    );
}

#[tokio::test]
async fn a_bound_refresh_token_works_only_with_its_key_and_a_wrong_key_burns_nothing() {
    let app = spawn_app().await;
    app.verified_user("ada@example.com").await;
    let key = DpopKey::ed25519();
    let t = app.dpop_signin("ada@example.com", &key).await;

    // Another key, or no proof at all: refused, nothing rotated, nothing revoked.
    let thief = DpopKey::ed25519();
    let r = app.dpop_refresh(&t, &thief).await;
    assert_eq!(error_code(r, 400).await, "invalid_dpop_proof");
    let r = app.refresh_with(&t, None).await;
    assert_eq!(error_code(r, 400).await, "invalid_dpop_proof");
    let session = app.state.store.session(&t.session).await.unwrap().unwrap();
    assert!(
        session.revoked_at.is_none(),
        "a wrong proof is not reuse: the owner keeps the session"
    );

    // The owner's key: the same refresh token still works, and the session stays bound.
    let r = app.dpop_refresh(&t, &key).await;
    assert_eq!(r.status(), 200);
    let t2 = dpop_tokens_of(r).await;
    assert_eq!(bound_jkt(&t2.access), key.jkt().as_str());
    assert_eq!(t2.session, t.session);
    let r = app.dpop_refresh(&t2, &thief).await;
    assert_eq!(
        error_code(r, 400).await,
        "invalid_dpop_proof",
        "rotation keeps the binding"
    );
    let r = app.dpop_refresh(&t2, &key).await;
    assert_eq!(r.status(), 200);

    // The rotated-out token with another key, however late: refused, the session lives.
    age_rotation(&app, &t.refresh, 60).await;
    let r = app.dpop_refresh(&t, &thief).await;
    assert_eq!(error_code(r, 400).await, "invalid_dpop_proof");
    assert!(app
        .state
        .store
        .session(&t.session)
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_none());
    // Reuse with the right key (past the grace) is still reuse: the session ends.
    let r = app.dpop_refresh(&t, &key).await;
    assert_eq!(error_code(r, 400).await, "invalid_grant");
    assert!(app
        .state
        .store
        .session(&t.session)
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_some());
}

/// Finding: a refresh that lost its race to another instance was judged by
/// the winner's rotation stamp, taken from the winner's clock. With that
/// clock 15 s behind this instance's (within the 60 s instances may differ
/// by), the race looked like a reuse 15 s later and ended the session. The
/// other instance's rotation is made here by a trigger when this request's
/// proof is recorded: after the request read the token unused, before it
/// rotates it.
#[tokio::test]
async fn a_refresh_race_lost_to_an_instance_whose_clock_is_behind_keeps_the_session() {
    let app = spawn_app().await;
    app.verified_user("behind@example.com").await;
    let key = DpopKey::ed25519();
    let t = app.dpop_signin("behind@example.com", &key).await;
    let postgres = app.database_url.is_some();
    let now = if postgres {
        "CAST(EXTRACT(EPOCH FROM now()) AS BIGINT)"
    } else {
        "CAST(strftime('%s', 'now') AS INTEGER)"
    };
    let rotate_elsewhere =
        format!("UPDATE refresh_tokens SET used_at = {now} - 15 WHERE used_at IS NULL");
    if postgres {
        run_sql(&app, &[
            &format!("CREATE FUNCTION test_rotated_elsewhere() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {rotate_elsewhere}; RETURN NEW; END $$"),
            "CREATE TRIGGER test_rotated_elsewhere AFTER INSERT ON dpop_proofs FOR EACH ROW EXECUTE FUNCTION test_rotated_elsewhere()",
        ]).await;
    } else {
        run_sql(&app, &[&format!(
            "CREATE TRIGGER test_rotated_elsewhere AFTER INSERT ON dpop_proofs BEGIN {rotate_elsewhere}; END"
        )]).await;
    }
    let r = app.dpop_refresh(&t, &key).await;
    assert_eq!(invalid_grant(r).await, "refresh token was just rotated");
    let session = app.state.store.session(&t.session).await.unwrap().unwrap();
    assert!(session.revoked_at.is_none(), "the race ended the session");
}

/// RFC 9449 §5: a refresh token issued to a request with a proof works
/// only with proofs from that key. A session started without a proof stayed
/// unbound after a refresh with one: its new access token was bound, but
/// whoever held the refresh token and device secret refreshed on without a
/// proof and got Bearer tokens. The first refresh with a proof binds it.
#[tokio::test]
async fn a_refresh_with_a_proof_binds_an_unbound_session() {
    let app = spawn_app().await;
    app.verified_user("ada@example.com").await;
    let t = app.signin("ada@example.com", PASSWORD).await;
    let key = DpopKey::es256();
    let r = app.dpop_refresh(&t, &key).await;
    assert_eq!(r.status(), 200);
    let t2 = dpop_tokens_of(r).await;
    assert_eq!(bound_jkt(&t2.access), key.jkt().as_str());
    let session = app.state.store.session(&t.session).await.unwrap().unwrap();
    assert_eq!(session.dpop_jkt.as_deref(), Some(key.jkt().as_str()));
    // From now on only with proofs from that key (and the token stays usable).
    let r = app.refresh_with(&t2, None).await;
    assert_eq!(error_code(r, 400).await, "invalid_dpop_proof");
    let r = app.dpop_refresh(&t2, &DpopKey::es256()).await;
    assert_eq!(error_code(r, 400).await, "invalid_dpop_proof");
    let r = app.dpop_refresh(&t2, &key).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        bound_jkt(&dpop_tokens_of(r).await.access),
        key.jkt().as_str()
    );
}

/// A thief with a session's refresh token and device secret refreshes first,
/// with a key of their own: the session is bound to it. The owner's old
/// token, sent again without that key, must still be taken for reuse (the
/// session ends), or the thief's binding would hide it.
#[tokio::test]
async fn a_thief_binding_a_stolen_session_does_not_hide_the_reuse() {
    let app = spawn_app().await;
    app.verified_user("ada@example.com").await;
    let owner = app.signin("ada@example.com", PASSWORD).await;
    let thief_key = DpopKey::es256();
    let r = app.dpop_refresh(&owner, &thief_key).await;
    assert_eq!(r.status(), 200);
    let thief = dpop_tokens_of(r).await;
    // Within the grace: the client's own race, refused, nothing ends.
    let r = app.refresh_with(&owner, None).await;
    assert_eq!(invalid_grant(r).await, "refresh token was just rotated");
    // Later, from the owner's device, without the thief's key: reuse.
    age_rotation(&app, &owner.refresh, 60).await;
    let r = app.refresh_with(&owner, None).await;
    assert_eq!(
        invalid_grant(r).await,
        "refresh token reuse detected; the session is revoked"
    );
    let session = app
        .state
        .store
        .session(&owner.session)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        session.revoke_reason.as_deref(),
        Some("refresh_token_reuse")
    );
    let r = app.dpop_refresh(&thief, &thief_key).await;
    assert_eq!(invalid_grant(r).await, "the session has ended");

    // The first token issued under the binding is the key holder's: sent
    // again without the key (a copy of it and the device secret), it ends nothing.
    let t = app.signin("ada@example.com", PASSWORD).await;
    let key = DpopKey::es256();
    let r = app.dpop_refresh(&t, &key).await;
    let first_bound = dpop_tokens_of(r).await;
    let r = app.dpop_refresh(&first_bound, &key).await;
    assert_eq!(r.status(), 200);
    age_rotation(&app, &first_bound.refresh, 60).await;
    let r = app.refresh_with(&first_bound, None).await;
    assert_eq!(error_code(r, 400).await, "invalid_dpop_proof");
    let session = app.state.store.session(&t.session).await.unwrap().unwrap();
    assert!(session.revoked_at.is_none());

    // A session bound at its start: an old token without its key is still nothing.
    let key = DpopKey::es256();
    let t = app.dpop_signin("ada@example.com", &key).await;
    let r = app.dpop_refresh(&t, &key).await;
    assert_eq!(r.status(), 200);
    age_rotation(&app, &t.refresh, 60).await;
    let r = app.refresh_with(&t, None).await;
    assert_eq!(error_code(r, 400).await, "invalid_dpop_proof");
    let session = app.state.store.session(&t.session).await.unwrap().unwrap();
    assert!(session.revoked_at.is_none());
}

/// A token issued under a binding made by a refresh, then pushed out of the
/// session's kept history, was taken for one issued before the binding:
/// whoever held a copy of it and the device secret, without the key, ended
/// the session with it. Its tag now says it was bound: without the key it
/// ends nothing, as before it was pushed out.
#[tokio::test]
async fn a_bound_token_pushed_out_of_the_history_still_needs_its_key() {
    let app = spawn_app().await;
    app.verified_user("ada@example.com").await;
    let t = app.signin("ada@example.com", PASSWORD).await;
    let key = DpopKey::es256();
    let first_bound = dpop_tokens_of(app.dpop_refresh(&t, &key).await).await;
    let r = app.dpop_refresh(&first_bound, &key).await;
    assert_eq!(r.status(), 200);
    push_out_of_the_history(&app, &first_bound.refresh).await;
    let r = app.refresh_with(&first_bound, None).await;
    assert_eq!(error_code(r, 400).await, "invalid_dpop_proof");
    let session = app.state.store.session(&t.session).await.unwrap().unwrap();
    assert!(session.revoked_at.is_none(), "{:?}", session.revoke_reason);

    // The token from before the binding, pushed out too, is still reuse.
    push_out_of_the_history(&app, &t.refresh).await;
    let r = app.refresh_with(&t, None).await;
    assert_eq!(
        invalid_grant(r).await,
        "refresh token reuse detected; the session is revoked"
    );
}

/// A rotated-out refresh token, past the grace, as if later rotations had
/// pushed it out of its session's kept history.
async fn push_out_of_the_history(app: &TestApp, refresh: &str) {
    age_rotation(app, refresh, 60).await;
    let hash = authflow_auth_service::domain::hash_secret(refresh);
    run_sql(
        app,
        &[&format!("DELETE FROM refresh_tokens WHERE hash = '{hash}'")],
    )
    .await;
    assert!(app
        .state
        .store
        .refresh_token(&hash)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn a_proof_is_accepted_once() {
    let app = spawn_app().await;
    app.verified_user("ada@example.com").await;
    let key = DpopKey::es256();
    let t = app.dpop_signin("ada@example.com", &key).await;
    let proof = key.proof("POST", &app.htu(REFRESH), None, None);
    let r = app.refresh_with(&t, Some(proof.clone())).await;
    assert_eq!(r.status(), 200);
    let t2 = dpop_tokens_of(r).await;
    let r = app.refresh_with(&t2, Some(proof)).await;
    assert_eq!(
        error_code(r, 400).await,
        "invalid_dpop_proof",
        "replayed proof"
    );
    // The refusal burnt nothing: a fresh proof refreshes t2.
    assert_eq!(app.dpop_refresh(&t2, &key).await.status(), 200);
}

/// Whoever saw one refresh request of a bound session (a log, a proxy: its
/// refresh token, device secret and DPoP proof) but has no key replays it
/// past the grace, within the proof's age. A replayed proof is refused
/// (RFC 9449 §11.1) and was refused for a live token, but a rotated-out
/// one was judged as reuse first, on the replayed proof's thumbprint: the
/// copy ended the owner's session. Without the key it must end nothing.
#[tokio::test]
async fn a_replayed_refresh_request_cannot_end_a_bound_session() {
    let app = spawn_app().await;
    app.verified_user("ada@example.com").await;
    let key = DpopKey::es256();
    let t = app.dpop_signin("ada@example.com", &key).await;
    let seen = key.proof("POST", &app.htu(REFRESH), None, None);
    let r = app.refresh_with(&t, Some(seen.clone())).await;
    assert_eq!(r.status(), 200);
    let t2 = dpop_tokens_of(r).await;

    // Past the grace, the proof still young enough: the copy, replayed.
    age_rotation(&app, &t.refresh, 30).await;
    let r = app.refresh_with(&t, Some(seen.clone())).await;
    assert_eq!(error_code(r, 400).await, "invalid_dpop_proof");
    let session = app.state.store.session(&t.session).await.unwrap().unwrap();
    assert!(session.revoked_at.is_none(), "{:?}", session.revoke_reason);
    // Pushed out of the history too (judged by its tag): the same.
    push_out_of_the_history(&app, &t.refresh).await;
    let r = app.refresh_with(&t, Some(seen)).await;
    assert_eq!(error_code(r, 400).await, "invalid_dpop_proof");
    let session = app.state.store.session(&t.session).await.unwrap().unwrap();
    assert!(session.revoked_at.is_none(), "{:?}", session.revoke_reason);
    // The owner refreshes on; reuse with a fresh proof from the key still ends it.
    let r = app.dpop_refresh(&t2, &key).await;
    assert_eq!(r.status(), 200);
    let r = app.dpop_refresh(&t, &key).await;
    assert_eq!(
        invalid_grant(r).await,
        "refresh token reuse detected; the session is revoked"
    );
}

/// A copy of a bound session's refresh request, replayed (its refresh
/// token, device secret and proof seen in a log or a proxy) is refused, and
/// audited under the account: it left no row at all, though whoever sent it
/// holds the session's refresh token and device secret. The replayed reuse
/// of a rotated-out token returned before its row; a replayed proof with
/// the live token was refused without one.
#[tokio::test]
async fn a_replayed_refresh_request_is_audited() {
    let app = spawn_app().await;
    let user = app.verified_user("ada@example.com").await;
    let key = DpopKey::es256();
    let t = app.dpop_signin("ada@example.com", &key).await;
    let seen = key.proof("POST", &app.htu(REFRESH), None, None);
    let r = app.refresh_with(&t, Some(seen.clone())).await;
    assert_eq!(r.status(), 200);
    age_rotation(&app, &t.refresh, 30).await;
    let r = app.refresh_with(&t, Some(seen)).await;
    assert_eq!(error_code(r, 400).await, "invalid_dpop_proof");
    let log = app.audit_of(&user).await;
    assert!(
        log.iter()
            .any(|e| e.event == "refresh" && e.outcome == "replayed_dpop_proof"),
        "{log:?}"
    );
}

/// A proof is recorded as used only by a request that otherwise succeeds:
/// whoever has no valid challenge (or code, or refresh token) cannot make
/// the service write replay rows, and a refused request burns no proof.
#[tokio::test]
async fn a_proof_is_recorded_only_by_a_request_that_succeeds() {
    let app = spawn_app().await;
    app.verified_user("ada@example.com").await;
    let key = DpopKey::es256();

    // Sign-in: an unknown challenge, then a wrong code, with the same proof.
    let proof = key.proof("POST", &app.htu(SIGNIN_VERIFY), None, None);
    let (challenge, code) = app.challenge_and_code("ada@example.com").await;
    let r = app
        .verify_with_proof("no-such-challenge", &code, Some(proof.clone()))
        .await;
    assert_eq!(error_code(r, 401).await, "invalid_code");
    let wrong_code = json!(if code.as_str() == Some("000000") {
        "111111"
    } else {
        "000000"
    });
    let r = app
        .verify_with_proof(&challenge, &wrong_code, Some(proof.clone()))
        .await;
    assert_eq!(error_code(r, 401).await, "invalid_code");
    let r = app
        .verify_with_proof(&challenge, &code, Some(proof.clone()))
        .await;
    assert_eq!(
        r.status(),
        200,
        "the refused requests did not record the proof"
    );
    let t = dpop_tokens_of(r).await;

    // Refresh: an unknown refresh token with a proof, then the real one with the same proof.
    let proof = key.proof("POST", &app.htu(REFRESH), None, None);
    let unknown = Tokens {
        refresh: "not-a-refresh-token".into(),
        access: t.access.clone(),
        device: t.device.clone(),
        session: t.session.clone(),
    };
    let r = app.refresh_with(&unknown, Some(proof.clone())).await;
    assert_eq!(error_code(r, 400).await, "invalid_grant");
    let r = app.refresh_with(&t, Some(proof.clone())).await;
    assert_eq!(
        r.status(),
        200,
        "the unknown refresh token did not record the proof"
    );
    let t2 = dpop_tokens_of(r).await;
    // Once it succeeded, it is used.
    let r = app.refresh_with(&t2, Some(proof)).await;
    assert_eq!(error_code(r, 400).await, "invalid_dpop_proof");
}

#[tokio::test]
async fn a_proof_used_at_one_instance_is_refused_by_another() {
    let one = spawn_app().await;
    let two = spawn_app_beside(&one, |_| {}).await;
    one.verified_user("ada@example.com").await;
    let key = DpopKey::es256();
    let t = one.dpop_signin("ada@example.com", &key).await;
    let proof = key.proof("POST", &one.htu(REFRESH), None, None);
    let r = one.refresh_with(&t, Some(proof.clone())).await;
    assert_eq!(r.status(), 200);
    let t2 = dpop_tokens_of(r).await;
    let r = two.refresh_with(&t2, Some(proof)).await;
    assert_eq!(
        error_code(r, 400).await,
        "invalid_dpop_proof",
        "replayed at the other instance"
    );
    assert_eq!(two.dpop_refresh(&t2, &key).await.status(), 200);
}

/// An instance whose clock runs ahead prunes by its clock; one whose clock is
/// behind still accepts the proof, so the proof is kept past its age by the
/// margin allowed between instances' clocks.
#[tokio::test]
async fn a_proof_pruned_by_an_instance_whose_clock_is_ahead_stays_refused_by_the_others() {
    use authflow_auth_service::{clock, dpop};
    let one = spawn_app().await;
    let two = spawn_app_beside(&one, |_| {}).await;
    one.verified_user("ada@example.com").await;
    let key = DpopKey::es256();
    let t = one.dpop_signin("ada@example.com", &key).await;
    let proof = key.proof("POST", &one.htu(REFRESH), None, None);
    let r = one.refresh_with(&t, Some(proof.clone())).await;
    assert_eq!(r.status(), 200);
    let t2 = dpop_tokens_of(r).await;
    // Maintenance on an instance a minute ahead, past the proof's age and skew.
    let ahead = clock::now()
        + i64::try_from(dpop::PROOF_MAX_AGE_SECS + dpop::PROOF_FUTURE_SKEW_SECS).unwrap()
        + 30;
    two.state.store.prune(ahead).await.unwrap();
    let r = two.refresh_with(&t2, Some(proof)).await;
    assert_eq!(
        error_code(r, 400).await,
        "invalid_dpop_proof",
        "replayed after an early prune"
    );
}

#[tokio::test]
async fn remembered_proofs_are_pruned_once_too_old() {
    let app = spawn_app().await;
    let store = &app.state.store;
    let now = authflow_auth_service::clock::now();
    assert!(store.remember_dpop_proof("p1", now + 65).await.unwrap());
    assert!(!store.remember_dpop_proof("p1", now + 65).await.unwrap());
    store.prune(now + 64).await.unwrap();
    assert!(
        !store.remember_dpop_proof("p1", now + 65).await.unwrap(),
        "kept while the proof could pass"
    );
    store.prune(now + 65).await.unwrap();
    assert!(
        store.remember_dpop_proof("p1", now + 130).await.unwrap(),
        "forgotten after"
    );
}

#[tokio::test]
async fn with_nonces_required_a_token_request_gets_one_and_then_succeeds() {
    let app = spawn_app_with(|c| c.dpop.require_nonce = true).await;
    app.verified_user("ada@example.com").await;
    let key = DpopKey::es256();

    let r = app
        .signin_with_proof(
            "ada@example.com",
            Some(key.proof("POST", &app.htu(SIGNIN_VERIFY), None, None)),
        )
        .await;
    let nonce = r.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    assert_eq!(error_code(r, 400).await, "use_dpop_nonce");

    let last = if nonce.ends_with('A') { "B" } else { "A" };
    for forged in ["AAAA", &format!("{}{last}", &nonce[..nonce.len() - 1])] {
        let r = app
            .signin_with_proof(
                "ada@example.com",
                Some(key.proof("POST", &app.htu(SIGNIN_VERIFY), None, Some(forged))),
            )
            .await;
        assert!(r.headers().contains_key("dpop-nonce"));
        assert_eq!(error_code(r, 400).await, "use_dpop_nonce", "{forged}");
    }

    let r = app
        .signin_with_proof(
            "ada@example.com",
            Some(key.proof("POST", &app.htu(SIGNIN_VERIFY), None, Some(&nonce))),
        )
        .await;
    assert_eq!(r.status(), 200);
    let next_nonce = r.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    let t = dpop_tokens_of(r).await;
    assert_eq!(bound_jkt(&t.access), key.jkt().as_str());

    // The nonce of the answer works for the next token request.
    let r = app
        .refresh_with(
            &t,
            Some(key.proof("POST", &app.htu(REFRESH), None, Some(&next_nonce))),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("dpop-nonce"));
}

#[tokio::test]
async fn a_nonce_from_one_instance_is_accepted_by_another() {
    let one = spawn_app_with(|c| c.dpop.require_nonce = true).await;
    let two = spawn_app_beside(&one, |c| c.dpop.require_nonce = true).await;
    one.verified_user("ada@example.com").await;
    let key = DpopKey::ed25519();
    let r = one
        .signin_with_proof(
            "ada@example.com",
            Some(key.proof("POST", &one.htu(SIGNIN_VERIFY), None, None)),
        )
        .await;
    let nonce = r.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    assert_eq!(error_code(r, 400).await, "use_dpop_nonce");
    let r = two
        .signin_with_proof(
            "ada@example.com",
            Some(key.proof("POST", &two.htu(SIGNIN_VERIFY), None, Some(&nonce))),
        )
        .await;
    assert_eq!(r.status(), 200);
}

/// A rolling KEK rotation (two replicas, a new pod started before an old one
/// stops): for a while one instance runs on the old KEK and another on the
/// new one with the old as `kek.previous`. Nonces are derived from the KEK:
/// the new instance must take the nonces the old one hands out, or a client
/// whose requests alternate between the two is told `use_dpop_nonce` by each
/// in turn, with a nonce the other refuses, and never gets a token.
#[tokio::test]
async fn during_a_kek_rotation_the_new_instance_takes_the_old_ones_nonces() {
    let old = spawn_app_with(|c| c.dpop.require_nonce = true).await;
    let admin = old.admin("root@example.com").await;
    let secret = old
        .create_service_account(&admin, "billing", &["read"])
        .await;
    let previous = old.state.config.kek.current.unwrap();
    let new = spawn_app_beside(&old, |c| {
        c.dpop.require_nonce = true;
        c.kek.current = Some([9u8; 32]);
        c.kek.previous = vec![previous];
    })
    .await;
    let key = DpopKey::es256();
    let request = |app: &TestApp, nonce: Option<&str>| {
        app.http
            .post(app.url(TOKEN))
            .basic_auth("billing", Some(&secret))
            .header("dpop", key.proof("POST", &app.htu(TOKEN), None, nonce))
            .form(&[("grant_type", "client_credentials")])
            .send()
    };

    let r = request(&old, None).await.unwrap();
    let nonce = r.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    assert_eq!(error_code(r, 400).await, "use_dpop_nonce");
    let r = request(&new, Some(&nonce)).await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "the old instance's nonce, at the instance that has its KEK as previous"
    );
    // The new instance's own nonces still work there.
    let own = r.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    assert_eq!(request(&new, Some(&own)).await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_service_account_gets_a_bound_token_with_a_proof() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let secret = app
        .create_service_account(&admin, "billing", &["invoices:read"])
        .await;
    let key = DpopKey::es256();
    let request = |proof: Option<String>| {
        let mut r = app
            .http
            .post(app.url(TOKEN))
            .basic_auth("billing", Some(&secret))
            .form(&[("grant_type", "client_credentials")]);
        if let Some(proof) = proof {
            r = r.header("dpop", proof);
        }
        r.send()
    };

    let r = request(Some(key.proof("POST", &app.htu(TOKEN), None, None)))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "DPoP");
    assert_eq!(
        bound_jkt(body["access_token"].as_str().unwrap()),
        key.jkt().as_str()
    );

    let r = request(Some(key.proof("POST", &app.htu(SIGNIN_VERIFY), None, None)))
        .await
        .unwrap();
    assert_eq!(error_code(r, 400).await, "invalid_dpop_proof");

    let r = request(None).await.unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert!(claims(body["access_token"].as_str().unwrap())
        .get("cnf")
        .is_none());
}

#[tokio::test]
async fn a_bound_token_is_not_a_bearer_token_at_the_services_own_endpoints() {
    let app = spawn_app().await;
    app.verified_user("ada@example.com").await;
    let key = DpopKey::es256();
    let t = app.dpop_signin("ada@example.com", &key).await;
    let logout = |scheme: &str, proof: Option<String>| {
        let mut r = app
            .http
            .post(app.url(LOGOUT))
            .header("authorization", format!("{scheme} {}", t.access))
            .header("x-authflow-device", &t.device);
        if let Some(proof) = proof {
            r = r.header("dpop", proof);
        }
        r.send()
    };
    let challenge =
        |r: &reqwest::Response| r.headers()["www-authenticate"].to_str().unwrap().to_owned();

    // The downgrade: the bound token as a bearer token, even with a good proof.
    let r = logout(
        "Bearer",
        Some(key.proof("POST", &app.htu(LOGOUT), Some(&t.access), None)),
    )
    .await
    .unwrap();
    assert!(
        challenge(&r).starts_with("DPoP error=\"invalid_token\""),
        "{}",
        challenge(&r)
    );
    assert!(
        challenge(&r).contains("algs=\"ES256 EdDSA\""),
        "{}",
        challenge(&r)
    );
    assert_eq!(error_code(r, 401).await, "invalid_token");

    // DPoP scheme: without a proof, with another key's, for another URL or without `ath`.
    let other = DpopKey::es256();
    for proof in [
        None,
        Some(other.proof("POST", &app.htu(LOGOUT), Some(&t.access), None)),
        Some(key.proof(
            "POST",
            &app.htu("/v1/auth/logout-all"),
            Some(&t.access),
            None,
        )),
        Some(key.proof("POST", &app.htu(LOGOUT), None, None)),
        Some(key.proof("POST", &app.htu(LOGOUT), Some("another token"), None)),
    ] {
        let r = logout("DPoP", proof).await.unwrap();
        assert!(
            challenge(&r).starts_with("DPoP error=\"invalid_dpop_proof\""),
            "{}",
            challenge(&r)
        );
        assert_eq!(error_code(r, 401).await, "invalid_dpop_proof");
    }

    // Its proof without the device secret: refused, and the proof is not
    // spent (it is recorded only by a request that otherwise succeeds).
    let proof = key.proof("POST", &app.htu(LOGOUT), Some(&t.access), None);
    let r = app
        .http
        .post(app.url(LOGOUT))
        .header("authorization", format!("DPoP {}", t.access))
        .header("dpop", &proof)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 401).await, "invalid_token");

    // With its proof it works, once.
    let r = logout("DPoP", Some(proof.clone())).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = logout("DPoP", Some(proof)).await.unwrap();
    assert_eq!(
        error_code(r, 401).await,
        "invalid_token",
        "the session ended (and the proof was used)"
    );

    // An unbound token under the DPoP scheme is refused too.
    let plain = app.signin("ada@example.com", PASSWORD).await;
    let r = app
        .with_dpop(
            reqwest::Method::POST,
            LOGOUT,
            &plain.access,
            Some(&plain.device),
            &key,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 401).await, "invalid_token");
}

/// Behind a proxy the client names the proxy's origin in its proofs, and the
/// filter there checks them against that origin: a proof for the issuer's
/// URL is refused by the filter, one for the proxy's was refused here, so
/// a bound token worked at no endpoint of the service behind a filter
/// (`/v1/admin/*`, logout, authenticators). With the proxy's origin in
/// `dpop.origins` both take it; any other origin is still refused.
#[tokio::test]
async fn a_proof_naming_a_configured_proxy_origin_is_accepted() {
    const PROXY: &str = "https://api.example.test";
    let app = spawn_app_with(|c| c.dpop.origins = vec![PROXY.into()]).await;
    app.verified_user("ada@example.com").await;
    let key = DpopKey::es256();

    // The token endpoint: a proof naming another origin, then the proxy's.
    let (challenge, code) = app.challenge_and_code("ada@example.com").await;
    let elsewhere = key.proof(
        "POST",
        &format!("https://evil.example.test{SIGNIN_VERIFY}"),
        None,
        None,
    );
    let r = app
        .verify_with_proof(&challenge, &code, Some(elsewhere))
        .await;
    assert_eq!(error_code(r, 400).await, "invalid_dpop_proof");
    let r = app
        .signin_with_proof(
            "ada@example.com",
            Some(key.proof("POST", &format!("{PROXY}{SIGNIN_VERIFY}"), None, None)),
        )
        .await;
    assert_eq!(r.status(), 200);
    let t = dpop_tokens_of(r).await;

    // An endpoint taking the token.
    let logout = |url: String| {
        app.http
            .post(app.url(LOGOUT))
            .header("authorization", format!("DPoP {}", t.access))
            .header("x-authflow-device", &t.device)
            .header("dpop", key.proof("POST", &url, Some(&t.access), None))
            .send()
    };
    for other in [
        "https://evil.example.test",
        "https://api.example.test:8443",
        "http://api.example.test",
    ] {
        let r = logout(format!("{other}{LOGOUT}")).await.unwrap();
        assert_eq!(error_code(r, 401).await, "invalid_dpop_proof", "{other}");
    }
    let r = logout(format!("HTTPS://API.example.test:443{LOGOUT}"))
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "the proxy's origin, as RFC 9449 compares it"
    );
}

#[tokio::test]
async fn ext_authz_refuses_a_bound_token() {
    let app = spawn_app().await;
    app.verified_user("ada@example.com").await;
    let key = DpopKey::ed25519();
    let t = app.dpop_signin("ada@example.com", &key).await;
    let r = app
        .http
        .get(app.url("/v1/ext-authz/items"))
        .bearer_auth(&t.access)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 401).await, "invalid_token");
    let r = app
        .http
        .get(app.url("/v1/ext-authz/items"))
        .header("authorization", format!("DPoP {}", t.access))
        .header(
            "dpop",
            key.proof(
                "GET",
                &app.htu("/v1/ext-authz/items"),
                Some(&t.access),
                None,
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 401).await, "invalid_token");
}

#[tokio::test]
async fn the_metadata_names_the_proof_algorithms() {
    let app =
        spawn_app_with(|c| c.dpop.algorithms = vec![authflow_contract::Algorithm::EdDSA]).await;
    let body: Value = app
        .get("/.well-known/openid-configuration")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["dpop_signing_alg_values_supported"], json!(["EdDSA"]));
    // A proof with an algorithm not on the list is refused.
    app.verified_user("ada@example.com").await;
    let r = app
        .signin_with_proof(
            "ada@example.com",
            Some(DpopKey::es256().proof("POST", &app.htu(SIGNIN_VERIFY), None, None)),
        )
        .await;
    assert_eq!(error_code(r, 400).await, "invalid_dpop_proof");
}

/// RFC 9449 §7.1: a token presented in the `DPoP` scheme and refused (its
/// session ended, or it is no token of ours) is answered with a `DPoP`
/// challenge naming the accepted algorithms, not a `Bearer` one: a scheme
/// the client did not use, which tells a DPoP client nothing it can act on.
#[tokio::test]
async fn a_refused_token_in_the_dpop_scheme_gets_a_dpop_challenge() {
    let app = spawn_app().await;
    app.verified_user("ada@example.com").await;
    let key = DpopKey::es256();
    let t = app.dpop_signin("ada@example.com", &key).await;
    let logout = |token: String| {
        app.http
            .post(app.url(LOGOUT))
            .header("authorization", format!("DPoP {token}"))
            .header("x-authflow-device", &t.device)
            .header(
                "dpop",
                key.proof("POST", &app.htu(LOGOUT), Some(&token), None),
            )
            .send()
    };
    assert_eq!(logout(t.access.clone()).await.unwrap().status(), 200);
    for token in [t.access.clone(), "not.a.token".to_owned()] {
        let r = logout(token).await.unwrap();
        let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(
            challenge.starts_with("DPoP error=\"invalid_token\""),
            "{challenge}"
        );
        assert!(challenge.contains("algs=\"ES256 EdDSA\""), "{challenge}");
        assert_eq!(error_code(r, 401).await, "invalid_token");
    }
}

/// Finding: the service judged a bound token against the revocation list
/// before its proof, while the filter judges possession (the proof, the
/// device) first. Whoever holds a DPoP-bound token and its device secret
/// but not its key learned whether its session had ended.
#[tokio::test]
async fn a_bound_token_without_its_key_does_not_learn_its_session_ended() {
    let app = spawn_app().await;
    app.verified_user("ada@example.com").await;
    let key = DpopKey::es256();
    let live = app.dpop_signin("ada@example.com", &key).await;
    let ended = app.dpop_signin("ada@example.com", &key).await;
    let r = app
        .http
        .post(app.url(LOGOUT))
        .header("authorization", format!("DPoP {}", ended.access))
        .header("x-authflow-device", &ended.device)
        .header(
            "dpop",
            key.proof("POST", &app.htu(LOGOUT), Some(&ended.access), None),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let other = DpopKey::es256();
    let answer = |t: &Tokens, with_other_key: bool| {
        let mut r = app
            .http
            .post(app.url(LOGOUT))
            .header("authorization", format!("DPoP {}", t.access))
            .header("x-authflow-device", &t.device);
        if with_other_key {
            r = r.header(
                "dpop",
                other.proof("POST", &app.htu(LOGOUT), Some(&t.access), None),
            );
        }
        async move {
            let r = r.send().await.unwrap();
            let status = r.status();
            let body: Value = r.json().await.unwrap();
            (status, body["error_description"].clone())
        }
    };
    for with_other_key in [false, true] {
        let from_live = answer(&live, with_other_key).await;
        let from_ended = answer(&ended, with_other_key).await;
        assert_eq!(from_live.0, 401, "{from_live:?}");
        assert_eq!(
            from_ended, from_live,
            "other key {with_other_key}: a token without its key learns its session ended"
        );
    }
}

/// Finding: a service account's token was judged against the revocation
/// list before its DPoP proof (the user check that answers 403 came first),
/// while the filter, and the service for a user's token, judge possession
/// first. Whoever holds a bound service token but not its key learned
/// whether it had been revoked (401) or still worked elsewhere (403).
#[tokio::test]
async fn a_bound_service_token_without_its_key_does_not_learn_it_was_revoked() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let first = app
        .create_service_account(&admin, "billing", &["read"])
        .await;
    let key = DpopKey::es256();
    let revoked = app.bound_service_token("billing", first, &key).await;
    let r = app
        .authed(
            reqwest::Method::POST,
            "/v1/admin/service-accounts/billing/secret?revoke_tokens=true",
            &admin,
        )
        .send()
        .await
        .unwrap();
    let second = ok_text(r, "client_secret").await;
    let live = app.bound_service_token("billing", second, &key).await;
    let other = DpopKey::es256();
    let answer = |token: &str, scheme: &str, with_other_key: bool| {
        let mut r = app
            .http
            .post(app.url(LOGOUT))
            .header("authorization", format!("{scheme} {token}"));
        if with_other_key {
            r = r.header(
                "dpop",
                other.proof("POST", &app.htu(LOGOUT), Some(token), None),
            );
        }
        async move {
            let r = r.send().await.unwrap();
            let status = r.status();
            let body: Value = r.json().await.unwrap();
            (status, body["error_description"].clone())
        }
    };
    for (scheme, with_other_key) in [("DPoP", false), ("DPoP", true), ("Bearer", false)] {
        let from_live = answer(&live, scheme, with_other_key).await;
        let from_revoked = answer(&revoked, scheme, with_other_key).await;
        assert_eq!(from_live.0, 401, "{scheme} {with_other_key}: {from_live:?}");
        assert_eq!(
            from_revoked, from_live,
            "{scheme}, other key {with_other_key}: a token without its key learns it was revoked"
        );
    }
}

/// Finding: a refusal after a `DPoP`-scheme token verified with its proof (a
/// user without the admin role at an admin endpoint, a service account at a
/// user endpoint) carried a `Bearer` challenge: RFC 9449 §7.1 answers in the
/// scheme the client used, `insufficient_scope` included.
#[tokio::test]
async fn a_forbidden_dpop_caller_gets_a_dpop_challenge() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    app.verified_user("ada@example.com").await;
    let key = DpopKey::es256();
    let user = app.dpop_signin("ada@example.com", &key).await;
    let r = app
        .with_dpop(
            reqwest::Method::GET,
            "/v1/admin/users",
            &user.access,
            Some(&user.device),
            &key,
        )
        .send()
        .await
        .unwrap();
    assert_dpop_forbidden(r).await;

    let secret = app
        .create_service_account(&admin, "billing", &["read"])
        .await;
    let token = app.bound_service_token("billing", secret, &key).await;
    let r = app
        .with_dpop(reqwest::Method::POST, LOGOUT, &token, None, &key)
        .send()
        .await
        .unwrap();
    assert_dpop_forbidden(r).await;
}

async fn assert_dpop_forbidden(r: reqwest::Response) {
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(
        challenge.starts_with("DPoP error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(challenge.contains("algs=\"ES256 EdDSA\""), "{challenge}");
    assert_eq!(error_code(r, 403).await, "insufficient_scope");
}

/// RFC 9449 §7.1: a refusal of a DPoP caller names the scheme it used,
/// `insufficient_user_authentication` (RFC 9470) too. A `Bearer`
/// challenge told a DPoP client to retry with a scheme its token may not
/// use.
#[tokio::test]
async fn an_old_sign_in_of_a_dpop_caller_gets_a_dpop_challenge() {
    let app = spawn_app().await;
    app.verified_user("ada@example.com").await;
    let key = DpopKey::es256();
    let user = app.dpop_signin("ada@example.com", &key).await;
    run_sql(
        &app,
        &["UPDATE sessions SET created_at = created_at - 16 * 60"],
    )
    .await;
    let r = app
        .with_dpop(
            reqwest::Method::POST,
            "/v1/auth/totp/enroll",
            &user.access,
            Some(&user.device),
            &key,
        )
        .json(&json!({ "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(
        challenge.starts_with("DPoP error=\"insufficient_user_authentication\"")
            && challenge.contains("max_age=\"900\"")
            && challenge.contains("algs=\"ES256 EdDSA\""),
        "{challenge}"
    );
    assert_eq!(error_code(r, 401).await, "insufficient_user_authentication");
}
