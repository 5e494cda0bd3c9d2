//! Test doubles and fixtures shared by the integration tests (each test
//! binary uses some of them).
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::HashMap;

use authflow_contract::AccessClaims;
use authflow_filter_core::shared_slot::{SharedData, SharedSlot};
use authflow_filter_core::{Engine, ProviderId, Request};
use jwt_simple::prelude::*;

/// The issuer the fixtures' configurations trust.
pub const ISS: &str = "https://auth.test";

/// A user's access token of [`ISS`] for the audience `api`, signed by `kp`,
/// issued at `iat` and expiring at `exp` (with `jti` when given).
pub fn user_token(kp: &Ed25519KeyPair, jti: Option<&str>, iat: u64, exp: u64) -> String {
    let custom = AccessClaims {
        sid: "s".into(),
        roles: vec!["user".into()],
        scope: "read".into(),
        dfp: None,
        client_id: None,
        cnf: None,
    };
    let mut c = Claims::with_custom_claims(custom, Duration::from_secs(exp - iat))
        .with_issuer(ISS)
        .with_subject("u")
        .with_audience("api");
    if let Some(jti) = jti {
        c = c.with_jwt_id(jti);
    }
    c.issued_at = Some(UnixTimeStamp::from_secs(iat));
    c.expires_at = Some(UnixTimeStamp::from_secs(exp));
    kp.sign(c).unwrap()
}

/// `GET api/api` with `token` as its bearer token.
pub fn bearer(token: &str) -> Request {
    Request::from_headers(
        vec![
            (":method".into(), "GET".into()),
            (":path".into(), "/api".into()),
            (":authority".into(), "api".into()),
            ("authorization".into(), format!("Bearer {token}")),
        ],
        None,
    )
}

/// One Envoy process's shared data, with the host's compare-and-swap rules:
/// a key that exists is written only with its current token or 0, an absent
/// one whatever the token.
#[derive(Default)]
pub struct Process(pub RefCell<HashMap<String, (Vec<u8>, u32)>>);

impl SharedData for Process {
    fn get(&self, key: &str) -> Option<(Option<Vec<u8>>, u32)> {
        Some(
            self.0
                .borrow()
                .get(key)
                .map_or((None, 0), |(v, c)| (Some(v.clone()), *c)),
        )
    }
    fn set(&self, key: &str, value: &[u8], cas: u32) -> bool {
        let mut map = self.0.borrow_mut();
        let current = map.get(key).map(|(_, c)| *c);
        if current.is_some_and(|c| cas != 0 && cas != c) {
            return false;
        }
        map.insert(key.into(), (value.to_vec(), current.unwrap_or(0) + 1));
        true
    }
}

/// What the glue publishes once a feed was applied to the list of `id`:
/// the base when it changed (its overlay then goes over any other), then
/// the overlay. Whether both were published.
pub fn publish_list(
    engine: &Engine,
    id: ProviderId,
    (base_slot, overlay_slot): (&mut SharedSlot, &mut SharedSlot),
    p: &Process,
    base_changed: bool,
    (vm_id, now_ms): (u64, u64),
) -> bool {
    let (base, overlay) = engine
        .revocation_blobs(id)
        .map(|(b, o)| (b.to_vec(), o.to_vec()))
        .unwrap();
    if base_changed {
        if base_slot.publish(p, &base, vm_id, now_ms).is_err() {
            return false;
        }
        overlay_slot.forget_seen();
    }
    overlay_slot.publish(p, &overlay, vm_id, now_ms).is_ok()
}

/// An engine on `config` as the background side leaves it once ready: the
/// first provider (issuer [`ISS`]) holding the one key `jwk` (a JWK's JSON
/// text) and an empty revocation list, both as of `now_ms`.
pub fn ready_engine(config: authflow_filter_core::FilterConfig, jwk: &str, now_ms: u64) -> Engine {
    let mut engine = Engine::new(config, now_ms);
    let jwks = format!(r#"{{"keys":[{jwk}]}}"#);
    engine.set_keys(
        ProviderId::FIRST,
        authflow_contract::KeySet::parse(jwks.as_bytes()).unwrap(),
    );
    load_empty_revocation_list(&mut engine, now_ms);
    engine
}

/// What the background side does first: the first provider's (empty) list lands.
pub fn load_empty_revocation_list(engine: &mut Engine, now_ms: u64) {
    let empty = authflow_contract::revocation::RevocationFeed {
        issuer: ISS.into(),
        cursor: "0".into(),
        snapshot: true,
        ..Default::default()
    };
    engine
        .apply_feed(
            ProviderId::FIRST,
            authflow_filter_core::fetch::FeedBody::Json(empty),
            now_ms,
        )
        .unwrap();
}
