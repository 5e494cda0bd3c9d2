//! Signing keys: generated on first start, persisted in the database,
//! rotated so that every verifier can fetch a key before it signs anything.
//!
//! Timeline of a key: `publish_at` (appears in the JWKS) → `active_at`
//! (starts signing, `key_publish_lead` later) → `retired_at` (the next key
//! became active; its private half is deleted from then on, the public half
//! kept) → gone from the JWKS once `retired_at + access_ttl` passed, i.e.
//! after the last token it signed has expired.
//!
//! A key whose private half leaked is withdrawn (`keys withdraw`): out of the
//! JWKS and verifying nothing at once, its private half deleted; if it was
//! the one signing, a new key signs at once (no lead: a filter meeting an
//! unknown `kid` fetches the JWKS again early).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use authflow_contract::Algorithm;
use jwt_simple::prelude::*;
use sha2::{Digest, Sha256};

use crate::domain::random_id;
use crate::store::{PublishedLimit, Store, StoreError, StoredKey, Withdrawal};

/// Allowance for clock skew between hosts: extra time a retired key stays
/// published, and how early the first key is.
const RETIRED_GRACE_SECS: i64 = 60;

/// The most keys the JWKS may hold: what the contract's JWKS reader (the
/// filter's) keeps; it skips any further key.
pub const MAX_PUBLISHED_KEYS: usize = authflow_contract::jwk::MAX_KEYS;

/// Why a rotation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{published} signing keys are published, the most a verifier keeps: rotate again once retired keys have left the JWKS (access token lifetime + 60 s after their retirement)")]
    TooManyKeys { published: usize },
}

/// Why a withdrawal did not happen (nothing was changed).
#[derive(Debug, thiserror::Error)]
pub enum WithdrawError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("there is no signing key {kid}: nothing was withdrawn (`keys list` names them)")]
    UnknownKey { kid: String },
}

/// What a withdrawal did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Withdrawn {
    /// The key was withdrawn before: nothing changed.
    Already,
    /// Withdrawn now; `successor`: the new key signing from now on, when the
    /// withdrawn key was the one signing (or due to).
    Now { successor: Option<String> },
}

impl Withdrawn {
    /// What the audit row of withdrawing `kid` says became of it.
    pub fn audit_detail(&self, kid: &str) -> String {
        match self {
            Withdrawn::Already => format!("done: key {kid} was already withdrawn"),
            Withdrawn::Now { successor: None } => format!("done: key {kid} withdrawn"),
            Withdrawn::Now {
                successor: Some(new),
            } => format!("done: key {kid} withdrawn, new key {new} signs"),
        }
    }
}

/// The public half of one of the service's own keys, for checking tokens it
/// issued (jwt-simple: signature and registered claims in one call).
#[derive(Clone, Debug)]
pub enum VerifyingKey {
    EdDSA(Ed25519PublicKey),
    ES256(ES256PublicKey),
}

impl VerifyingKey {
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::EdDSA(_) => Algorithm::EdDSA,
            Self::ES256(_) => Algorithm::ES256,
        }
    }

    /// Verifies signature and the registered claims per `options`.
    pub fn verify<C>(
        &self,
        token: &str,
        options: &VerificationOptions,
    ) -> Result<JWTClaims<C>, jwt_simple::Error>
    where
        C: serde::Serialize + serde::de::DeserializeOwned,
    {
        let options = Some(options.clone());
        match self {
            Self::EdDSA(k) => k.verify_token::<C>(token, options),
            Self::ES256(k) => k.verify_token::<C>(token, options),
        }
    }
}

pub enum SigningKey {
    EdDSA(Ed25519KeyPair),
    ES256(ES256KeyPair),
}

impl SigningKey {
    fn generate(alg: Algorithm, kid: &str) -> Result<Self, StoreError> {
        match alg {
            Algorithm::EdDSA => Ok(Self::EdDSA(Ed25519KeyPair::generate().with_key_id(kid))),
            Algorithm::ES256 => Ok(Self::ES256(ES256KeyPair::generate().with_key_id(kid))),
            Algorithm::RS256 => Err(StoreError::Corrupt("RS256 signing is not supported".into())),
        }
    }

    fn from_stored(k: &StoredKey) -> Result<Self, StoreError> {
        let bad = |e: jwt_simple::Error| {
            StoreError::Corrupt(format!("signing key {} is unreadable: {e}", k.kid))
        };
        match k.alg.as_str() {
            "EdDSA" => Ok(Self::EdDSA(
                Ed25519KeyPair::from_bytes(&k.private_key)
                    .map_err(bad)?
                    .with_key_id(&k.kid),
            )),
            "ES256" => Ok(Self::ES256(
                ES256KeyPair::from_bytes(&k.private_key)
                    .map_err(bad)?
                    .with_key_id(&k.kid),
            )),
            other => Err(StoreError::Corrupt(format!(
                "signing key {} has unknown alg {other}",
                k.kid
            ))),
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::EdDSA(k) => k.to_bytes(),
            Self::ES256(k) => k.to_bytes(),
        }
    }

    fn public_bytes(&self) -> Vec<u8> {
        match self {
            Self::EdDSA(k) => k.public_key().to_bytes(),
            Self::ES256(k) => k.public_key().to_bytes(),
        }
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        match self {
            Self::EdDSA(k) => VerifyingKey::EdDSA(k.public_key()),
            Self::ES256(k) => VerifyingKey::ES256(k.public_key()),
        }
    }

    /// Signs with `typ: at+jwt` (RFC 9068); the key id goes in `kid`.
    pub fn sign<C: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        claims: JWTClaims<C>,
    ) -> Result<String, jwt_simple::Error> {
        let options = HeaderOptions {
            signature_type: Some(authflow_contract::claims::ACCESS_TOKEN_TYPE.to_owned()),
            ..HeaderOptions::default()
        };
        match self {
            Self::EdDSA(k) => k.sign_with_options(claims, &options),
            Self::ES256(k) => k.sign_with_options(claims, &options),
        }
    }
}

pub struct LoadedKey {
    pub kid: String,
    pub publish_at: i64,
    pub active_at: i64,
    pub retired_at: Option<i64>,
    /// Withdrawn (`keys withdraw`): published nowhere, verifies nothing.
    pub withdrawn_at: Option<i64>,
    /// `None` once the key no longer signs and its private half was deleted,
    /// or when this process cannot open it (sealed under a newer KEK).
    pub signer: Option<Arc<SigningKey>>,
    pub verifier: VerifyingKey,
    public_jwk: String,
}

/// The public half of a stored key: verifier and JWK.
fn public_half(alg: &str, kid: &str, bytes: &[u8]) -> Result<(VerifyingKey, String), StoreError> {
    let bad =
        |e: jwt_simple::Error| StoreError::Corrupt(format!("public key {kid} is unreadable: {e}"));
    match alg {
        "EdDSA" => {
            let k = Ed25519PublicKey::from_bytes(bytes)
                .map_err(bad)?
                .with_key_id(kid);
            Ok((VerifyingKey::EdDSA(k.clone()), k.to_jwk()))
        }
        "ES256" => {
            let k = ES256PublicKey::from_bytes(bytes)
                .map_err(bad)?
                .with_key_id(kid);
            Ok((VerifyingKey::ES256(k.clone()), k.to_jwk()))
        }
        other => Err(StoreError::Corrupt(format!(
            "signing key {kid} has unknown alg {other}"
        ))),
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct KeyInfo {
    pub kid: String,
    pub alg: &'static str,
    pub publish_at: i64,
    pub active_at: i64,
    pub retired_at: Option<i64>,
    pub withdrawn_at: Option<i64>,
}

/// The keys read from the store by the read numbered `number`.
#[derive(Default)]
struct Installed {
    number: u64,
    keys: Arc<Vec<LoadedKey>>,
}

/// One read of the stored keys, not yet in place.
struct StoredRead {
    number: u64,
    keys: Vec<LoadedKey>,
}

/// The in-memory copy of every stored key; swapped whole on rotation.
pub struct KeyRing {
    keys: RwLock<Installed>,
    /// How many reads of the stored keys have begun (see [`Self::install`]).
    reads_begun: AtomicU64,
    access_ttl_secs: i64,
    /// Keys whose private half this process could not open, already warned of.
    unopened: Mutex<HashSet<String>>,
}

impl KeyRing {
    /// Loads the stored keys, generating the first one if there is none.
    pub async fn load(
        store: &dyn Store,
        alg: Algorithm,
        access_ttl_secs: i64,
        now: i64,
    ) -> Result<Self, StoreError> {
        if store.signing_keys().await?.is_empty() {
            // Another instance starting at the same moment may win: then its key is the one.
            // Published as of a skew allowance ago: an instance whose clock is
            // behind this one's publishes the key it is about to sign with.
            store
                .add_first_signing_key(&new_key(alg, now - RETIRED_GRACE_SECS, now)?)
                .await?;
        }
        let ring = Self {
            keys: RwLock::new(Installed::default()),
            reads_begun: AtomicU64::new(0),
            access_ttl_secs,
            unopened: Mutex::default(),
        };
        ring.reload(store).await?;
        Ok(ring)
    }

    /// Reads every stored key again. A private half this process cannot
    /// open (another instance already runs a newer `kek.key`: a KEK rollout
    /// done out of order) does not stop the others: every key's public half
    /// is still published and verified, a private half opened before is
    /// kept, and a key this process cannot sign with is never replaced by
    /// one a rotation retired.
    pub async fn reload(&self, store: &dyn Store) -> Result<(), StoreError> {
        let read = self.read_stored(store).await?;
        self.install(read);
        Ok(())
    }

    /// Follows a change this process just committed. A failed read is
    /// logged, not answered: the change stands, and an answer of failure
    /// would have an administrator rotate again (a second key) or take a
    /// withdrawal for undone; the periodic reload (every second) follows it.
    async fn follow_own_write(&self, store: &dyn Store) {
        if let Err(e) = self.reload(store).await {
            tracing::warn!(error = %e, "signing keys not reloaded after a change: the periodic reload follows it");
        }
    }

    /// The stored keys as [`Self::reload`] loads them, numbered in the order
    /// the reads began.
    async fn read_stored(&self, store: &dyn Store) -> Result<StoredRead, StoreError> {
        let number = self.reads_begun.fetch_add(1, Ordering::SeqCst) + 1;
        let stored = store.signing_keys().await?;
        let before = self.snapshot();
        let kept = |kid: &str| before.iter().find(|k| k.kid == kid);
        let mut loaded = Vec::with_capacity(stored.len());
        for k in &stored {
            let signer = match &k.private_key_unopened {
                Some(why) => {
                    self.warn_unopened(k, why);
                    kept(&k.kid).and_then(|old| old.signer.clone())
                }
                None if k.private_key.is_empty() => None,
                None => Some(Arc::new(SigningKey::from_stored(k)?)),
            };
            let mut public = k.public_key.clone();
            if public.is_empty() {
                // A row from before public halves were stored: fill it in.
                match &signer {
                    Some(signer) => {
                        public = signer.public_bytes();
                        store.set_signing_key_public(&k.kid, &public).await?;
                    }
                    // Nothing to publish or verify: a withdrawn legacy row.
                    None if k.private_key_unopened.is_some() || k.withdrawn_at.is_some() => {
                        continue
                    }
                    None => {
                        return Err(StoreError::Corrupt(format!(
                            "signing key {} has no key material",
                            k.kid
                        )))
                    }
                }
            }
            let (verifier, public_jwk) = public_half(&k.alg, &k.kid, &public)?;
            loaded.push(LoadedKey {
                kid: k.kid.clone(),
                publish_at: k.publish_at,
                active_at: k.active_at,
                retired_at: k.retired_at,
                withdrawn_at: k.withdrawn_at,
                // A withdrawn key never signs, whatever this process had opened.
                signer: signer.filter(|_| k.withdrawn_at.is_none()),
                verifier,
                public_jwk,
            });
        }
        Ok(StoredRead {
            number,
            keys: loaded,
        })
    }

    /// Puts `read` in place unless a read that began after it is already
    /// there. Reloads overlap (the periodic one, maintenance's, a rotation's
    /// or withdrawal's own), and one that read before a withdrawal committed
    /// must not bring the withdrawn key back after a later read removed it:
    /// a filter fetching the JWKS then would trust the key until its next fetch.
    fn install(&self, read: StoredRead) {
        if let Ok(mut guard) = self.keys.write() {
            if read.number > guard.number {
                *guard = Installed {
                    number: read.number,
                    keys: Arc::new(read.keys),
                };
            }
        }
    }

    /// Warns once per key that this process cannot open its private half.
    fn warn_unopened(&self, key: &StoredKey, why: &str) {
        let first = self
            .unopened
            .lock()
            .map(|mut warned| warned.insert(key.kid.clone()))
            .unwrap_or(true);
        if first {
            tracing::error!(
                kid = %key.kid,
                active_at = key.active_at,
                error = %why,
                "this instance cannot open a signing key's private half: it publishes and \
                 verifies the key but cannot sign with it once it is the active one; give \
                 every instance the KEK it was sealed with (`kek.key`, or `kek.previous` \
                 during a rotation)"
            );
        }
    }

    fn snapshot(&self) -> Arc<Vec<LoadedKey>> {
        self.keys
            .read()
            .map(|g| Arc::clone(&g.keys))
            .unwrap_or_default()
    }

    /// Publishes a new key now; it signs from `now + lead`. Refused while
    /// [`MAX_PUBLISHED_KEYS`] keys are still in the JWKS (or will be): a
    /// verifier reading the JWKS with the contract's reader keeps only that
    /// many, in document order (oldest first), so one more would be skipped
    /// by every filter and every token it signs refused.
    pub async fn rotate(
        &self,
        store: &dyn Store,
        alg: Algorithm,
        now: i64,
        lead_secs: i64,
    ) -> Result<String, RotateError> {
        // Counted by the store, in the transaction that adds the key: another
        // process rotating at the same moment is counted too.
        let limit = PublishedLimit {
            max: MAX_PUBLISHED_KEYS,
            retired_kept_secs: self.retired_kept_secs(),
            now,
        };
        let key = new_key(alg, now, now + lead_secs)?;
        let added = store.add_signing_key(&key, limit).await?;
        self.follow_own_write(store).await;
        added.map_err(|published| RotateError::TooManyKeys { published })?;
        Ok(key.kid)
    }

    /// Withdraws the key `kid` at `now` (its private half leaked): it leaves
    /// the JWKS and verifies nothing from now on, here and (within their
    /// key reload) on every other instance; its private half is deleted.
    /// If it is the key signing (or due to), a new key of `alg` replaces it
    /// in the same transaction and signs at once, with no publication lead.
    /// A key withdrawn before: [`Withdrawn::Already`], nothing changed.
    pub async fn withdraw(
        &self,
        store: &dyn Store,
        alg: Algorithm,
        kid: &str,
        now: i64,
    ) -> Result<Withdrawn, WithdrawError> {
        // Published as of a skew allowance ago, as the first key: an instance
        // whose clock is behind publishes it too.
        let successor = new_key(alg, now - RETIRED_GRACE_SECS, now)?;
        let done = store.withdraw_signing_key(kid, now, &successor).await?;
        self.follow_own_write(store).await;
        match done {
            Withdrawal::Unknown => Err(WithdrawError::UnknownKey {
                kid: kid.to_owned(),
            }),
            Withdrawal::Already => Ok(Withdrawn::Already),
            Withdrawal::Done { replaced } => Ok(Withdrawn::Now {
                successor: replaced.then_some(successor.kid),
            }),
        }
    }

    /// When a key retired at `retired_at` leaves the JWKS.
    fn gone_at(&self, retired_at: i64) -> i64 {
        retired_at + self.retired_kept_secs()
    }

    /// How long a retired key stays in the JWKS.
    fn retired_kept_secs(&self) -> i64 {
        self.access_ttl_secs + RETIRED_GRACE_SECS
    }

    /// Deletes the private halves of keys that no longer sign (retired at or
    /// before `now`); their public halves stay published as before.
    pub async fn forget_retired_private_keys(
        &self,
        store: &dyn Store,
        now: i64,
    ) -> Result<u64, StoreError> {
        let n = store.delete_retired_private_keys(now).await?;
        if n > 0 {
            self.reload(store).await?;
        }
        Ok(n)
    }

    /// Runs `f` with the key that signs at `now`: the newest already active
    /// (of two that became active in the same second, the one not retired:
    /// the later rotation retired the other at once).
    pub fn with_signer<R>(&self, now: i64, f: impl FnOnce(&SigningKey) -> R) -> Option<R> {
        let keys = self.snapshot();
        // A key retired at or before `now` never signs again, even if its
        // private half is still here (deleted at the next maintenance tick).
        let signers = || {
            keys.iter()
                .filter(|k| k.withdrawn_at.is_none() && k.retired_at.is_none_or(|r| now < r))
                .filter_map(|k| {
                    k.signer
                        .as_ref()
                        .map(|s| ((k.active_at, k.retired_at.is_none()), s))
                })
        };
        let (_, signer) = signers()
            .filter(|((at, _), _)| *at <= now)
            .max_by_key(|(order, _)| *order)
            .or_else(|| signers().next())?;
        Some(f(signer))
    }

    /// Whether a key signs at `now` here (see [`Self::reload`]: this
    /// process may be unable to open the active one).
    pub fn can_sign(&self, now: i64) -> bool {
        self.with_signer(now, |_| ()).is_some()
    }

    /// The key `kid` if it is published at `now`: the service trusts exactly
    /// the keys the JWKS names, so a key gone from it (a leaked key rotated
    /// out) verifies nothing here either.
    pub fn verifier(&self, kid: &str, now: i64) -> Option<VerifyingKey> {
        self.snapshot()
            .iter()
            .find(|k| k.kid == kid && self.published(k, now))
            .map(|k| k.verifier.clone())
    }

    /// Whether `key` is in the JWKS at `now`: the one rule for what is
    /// published and what verifies. A withdrawn key is in none, whatever
    /// the clock (an instance behind the one that withdrew it too).
    fn published(&self, key: &LoadedKey, now: i64) -> bool {
        key.withdrawn_at.is_none()
            && key.publish_at <= now
            && key.retired_at.is_none_or(|r| now < self.gone_at(r))
    }

    /// The JWKS document and its ETag.
    pub fn jwks(&self, now: i64) -> (String, String) {
        let keys = self.snapshot();
        let jwks: Vec<&str> = keys
            .iter()
            .filter(|k| self.published(k, now))
            .map(|k| k.public_jwk.as_str())
            .collect();
        let body = format!("{{\"keys\":[{}]}}", jwks.join(","));
        let etag = format!("\"{}\"", &hex_digest(body.as_bytes())[..32]);
        (body, etag)
    }

    /// The algorithms of the keys [`Self::jwks`] publishes: those tokens are
    /// signed and verified with (a key made before `keys.signing_alg`
    /// changed signs on until a rotation), sorted.
    pub fn published_algorithms(&self, now: i64) -> Vec<&'static str> {
        let mut algs: Vec<&'static str> = self
            .snapshot()
            .iter()
            .filter(|k| self.published(k, now))
            .map(|k| k.verifier.algorithm().as_str())
            .collect();
        algs.sort_unstable();
        algs.dedup();
        algs
    }

    pub fn list(&self) -> Vec<KeyInfo> {
        self.snapshot()
            .iter()
            .map(|k| KeyInfo {
                kid: k.kid.clone(),
                alg: k.verifier.algorithm().as_str(),
                publish_at: k.publish_at,
                active_at: k.active_at,
                retired_at: k.retired_at,
                withdrawn_at: k.withdrawn_at,
            })
            .collect()
    }
}

fn hex_digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn new_key(alg: Algorithm, publish_at: i64, active_at: i64) -> Result<StoredKey, StoreError> {
    let kid = random_id();
    let key = SigningKey::generate(alg, &kid)?;
    Ok(StoredKey {
        kid,
        alg: alg.as_str().to_owned(),
        private_key: key.to_bytes(),
        private_key_unopened: None,
        public_key: key.public_bytes(),
        created_at: publish_at,
        publish_at,
        active_at,
        retired_at: None,
        withdrawn_at: None,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::kek::Kek;
    use crate::store::SqliteStore;

    async fn store(dir: &tempfile::TempDir) -> SqliteStore {
        let url = format!("sqlite://{}", dir.path().join("keys.db").display());
        SqliteStore::open(&url, Arc::new(Kek::new(&[7; 32], &[]).unwrap()))
            .await
            .unwrap()
    }

    /// The keys of `store` as an instance started at `now` loads them
    /// (EdDSA, access tokens of 15 minutes).
    async fn ring_on(store: &SqliteStore, now: i64) -> KeyRing {
        KeyRing::load(store, Algorithm::EdDSA, 900, now)
            .await
            .unwrap()
    }

    /// The `kid` of the key `ring` signs with at `now`.
    fn signing_kid(ring: &KeyRing, now: i64) -> Option<String> {
        ring.with_signer(now, |s| {
            let t = s
                .sign(Claims::create(jwt_simple::prelude::Duration::from_secs(60)))
                .unwrap();
            Token::decode_metadata(&t)
                .unwrap()
                .key_id()
                .unwrap()
                .to_owned()
        })
    }

    /// The first key is made by whichever instance starts first, stamped
    /// with its clock. An instance whose clock is a few seconds behind
    /// served a JWKS without it (a filter fetching there withdrew the only
    /// key) and refused the tokens signed with it as signed by an unknown key.
    #[tokio::test]
    async fn the_first_key_is_published_on_an_instance_whose_clock_is_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let t = 1_000_000;
        let first = ring_on(&store, t).await;
        let kid = signing_kid(&first, t).unwrap();
        let behind = ring_on(&store, t - 5).await;
        assert!(
            behind.jwks(t - 5).0.contains(&kid),
            "the only key is missing from the JWKS of an instance 5 s behind"
        );
        assert!(behind.verifier(&kid, t - 5).is_some());
    }

    /// Two instances rotating at the same moment with one key short of the
    /// most a verifier keeps: each counted what it had loaded, both passed,
    /// and the JWKS held one key more than filters read (in document order,
    /// the newest, the one signing, was the one every filter skipped). The
    /// store counts in the transaction that adds the key.
    #[tokio::test]
    async fn two_rotations_at_once_never_publish_more_keys_than_verifiers_keep() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let t = 1_000_000;
        let a = ring_on(&store, t).await;
        let b = ring_on(&store, t).await;
        for i in 1..MAX_PUBLISHED_KEYS - 1 {
            a.rotate(&store, Algorithm::EdDSA, t + i as i64, 60)
                .await
                .unwrap();
        }
        let now = t + 100;
        let (ra, rb) = tokio::join!(
            a.rotate(&store, Algorithm::EdDSA, now, 60),
            b.rotate(&store, Algorithm::EdDSA, now, 60)
        );
        assert!(
            ra.is_ok() != rb.is_ok(),
            "one of the two rotations is refused: {ra:?} {rb:?}"
        );
        let refused = if ra.is_err() { ra } else { rb };
        assert!(matches!(
            refused,
            Err(RotateError::TooManyKeys { published }) if published == MAX_PUBLISHED_KEYS
        ));
        a.reload(&store).await.unwrap();
        let (jwks, _) = a.jwks(now);
        let published = serde_json::from_str::<serde_json::Value>(&jwks).unwrap()["keys"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(published, MAX_PUBLISHED_KEYS);
    }

    /// Two rotations whose new keys become active out of order (instances
    /// with different `publish_lead_secs` during a rolling config change, or
    /// clocks apart): the later rotation retires the earlier key at once.
    /// A retired key must never sign, yet `with_signer` picks it as soon as
    /// its `active_at` passes, as long as its private half is still there
    /// (until the next maintenance tick).
    #[tokio::test]
    async fn a_retired_key_never_signs() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let t = 1_000_000;
        let ring = ring_on(&store, t).await;
        let b = ring.rotate(&store, Algorithm::EdDSA, t, 600).await.unwrap();
        let c = ring
            .rotate(&store, Algorithm::EdDSA, t + 1, 60)
            .await
            .unwrap();
        let info = ring.list();
        let b_info = info.iter().find(|k| k.kid == b).unwrap();
        assert_eq!(
            b_info.retired_at,
            Some(t + 61),
            "b was retired by c's rotation"
        );
        assert_eq!(signing_kid(&ring, t + 61).as_deref(), Some(c.as_str()));
        // Past b's active_at: b is retired (at t + 61) and must not sign.
        assert_eq!(
            signing_kid(&ring, t + 600).as_deref(),
            Some(c.as_str()),
            "the retired key {b} signs again once its active_at passed"
        );
    }

    /// A KEK rollout done out of order: an instance started with a new
    /// `kek.key` seals every stored key under it, then rotates. An instance
    /// still on the old KEK cannot open those private halves. It refused the
    /// whole reload: its JWKS never showed the new key (filters reading it
    /// refused every token the new key signed) and it went on signing with
    /// the key the rotation retired. Now it takes every public half, keeps
    /// the private half it had opened, and never signs with a retired key.
    #[tokio::test]
    async fn an_instance_on_an_older_kek_publishes_every_key_and_signs_with_no_retired_one() {
        let dir = tempfile::tempdir().unwrap();
        let old = store(&dir).await;
        let t = 1_000_000;
        let on_old = KeyRing::load(&old, Algorithm::EdDSA, 900, t).await.unwrap();
        let first = signing_kid(&on_old, t).unwrap();

        let url = format!("sqlite://{}", dir.path().join("keys.db").display());
        let rotated_kek = Kek::new(&[8; 32], &[[7; 32]]).unwrap();
        let new = SqliteStore::open(&url, Arc::new(rotated_kek))
            .await
            .unwrap();
        let on_new = KeyRing::load(&new, Algorithm::EdDSA, 900, t).await.unwrap();
        on_old.reload(&old).await.unwrap();
        assert_eq!(
            signing_kid(&on_old, t + 1).as_deref(),
            Some(first.as_str()),
            "the key opened before it was sealed anew still signs"
        );

        let second = on_new
            .rotate(&new, Algorithm::EdDSA, t + 10, 60)
            .await
            .unwrap();
        on_old.reload(&old).await.unwrap();
        assert!(
            on_old.jwks(t + 10).0.contains(&second),
            "the new key is in the JWKS of the instance that cannot open it"
        );
        assert!(on_old.verifier(&second, t + 10).is_some());
        assert_eq!(
            signing_kid(&on_old, t + 69).as_deref(),
            Some(first.as_str())
        );
        assert_eq!(
            signing_kid(&on_old, t + 70),
            None,
            "the key retired at {} signs on",
            t + 70
        );
        assert_eq!(
            signing_kid(&on_new, t + 70).as_deref(),
            Some(second.as_str())
        );
    }

    /// `withdraw` of the key signing now: out of the JWKS and verifying
    /// nothing at once (also on an instance whose clock is behind), a new key
    /// signs at once; of a key rotated out: gone, nothing new; of the key a
    /// rotation made, still in its lead: the key it would have replaced
    /// stops at its retirement, so a new key takes over at once too. Unknown:
    /// refused, nothing written; again: nothing changes.
    #[tokio::test]
    async fn a_withdrawn_key_is_published_nowhere_and_something_always_signs() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let t = 1_000_000;
        let ring = ring_on(&store, t).await;
        let first = signing_kid(&ring, t).unwrap();
        let Withdrawn::Now {
            successor: Some(second),
        } = ring
            .withdraw(&store, Algorithm::EdDSA, &first, t + 10)
            .await
            .unwrap()
        else {
            panic!("the signing key is replaced");
        };
        for now in [t + 10, t + 5] {
            assert!(!ring.jwks(now).0.contains(&first));
            assert!(ring.verifier(&first, now).is_none());
        }
        assert_eq!(signing_kid(&ring, t + 10).as_deref(), Some(second.as_str()));
        assert!(ring.verifier(&second, t + 10).is_some());
        assert!(store
            .signing_keys()
            .await
            .unwrap()
            .iter()
            .any(|k| k.kid == first && k.private_key.is_empty() && k.withdrawn_at == Some(t + 10)));
        assert_eq!(
            ring.withdraw(&store, Algorithm::EdDSA, &first, t + 11)
                .await
                .unwrap(),
            Withdrawn::Already
        );
        assert!(matches!(
            ring.withdraw(&store, Algorithm::EdDSA, "nope", t + 11)
                .await,
            Err(WithdrawError::UnknownKey { .. })
        ));
        assert_eq!(ring.list().len(), 2);

        // A rotation, then its old key withdrawn: nothing new needed once retired.
        let third = ring
            .rotate(&store, Algorithm::EdDSA, t + 20, 60)
            .await
            .unwrap();
        assert_eq!(
            ring.withdraw(&store, Algorithm::EdDSA, &second, t + 100)
                .await
                .unwrap(),
            Withdrawn::Now { successor: None }
        );
        assert_eq!(signing_kid(&ring, t + 100).as_deref(), Some(third.as_str()));

        // The pending key withdrawn during its lead.
        let fourth = ring
            .rotate(&store, Algorithm::EdDSA, t + 200, 60)
            .await
            .unwrap();
        let Withdrawn::Now {
            successor: Some(fifth),
        } = ring
            .withdraw(&store, Algorithm::EdDSA, &fourth, t + 210)
            .await
            .unwrap()
        else {
            panic!("the pending key is replaced");
        };
        for now in [t + 210, t + 300] {
            assert_eq!(signing_kid(&ring, now).as_deref(), Some(fifth.as_str()));
        }
        assert!(ring.jwks(t + 210).0.contains(&third), "not leaked: kept");
    }

    /// A reload that read the keys before a withdrawal committed and ends
    /// after the withdrawal's own reload (the periodic reload, or
    /// maintenance's, overlapping it) leaves the key withdrawn: put back, it
    /// would be in the JWKS until the next reload, and a filter fetching it
    /// then would trust the leaked key until its own next fetch.
    #[tokio::test]
    async fn a_reload_that_read_before_a_withdrawal_does_not_bring_the_key_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let t = 1_000_000;
        let ring = ring_on(&store, t).await;
        let leaked = signing_kid(&ring, t).unwrap();
        let read_before = ring.read_stored(&store).await.unwrap();
        ring.withdraw(&store, Algorithm::EdDSA, &leaked, t + 10)
            .await
            .unwrap();
        ring.install(read_before);
        assert!(!ring.jwks(t + 10).0.contains(&leaked));
        assert!(ring.verifier(&leaked, t + 10).is_none());
        assert_ne!(signing_kid(&ring, t + 10), Some(leaked.clone()));

        // Nor does an older read undo a rotation's reload.
        let read_after = ring.read_stored(&store).await.unwrap();
        ring.rotate(&store, Algorithm::EdDSA, t + 20, 60)
            .await
            .unwrap();
        let newest = ring.list().len();
        ring.install(read_after);
        assert_eq!(ring.list().len(), newest, "an older read is not put back");
        ring.reload(&store).await.unwrap();
        assert_eq!(ring.list().len(), newest);
        assert!(!ring.jwks(t + 20).0.contains(&leaked));
    }
}
