//! DPoP proof keys kept prepared. A client signs every proof with its one
//! key, so the work a key needs before its first signature — checked on its
//! curve (for Ed25519 a point decompression, as costly as a tenth of a
//! verification), its RFC 7638 thumbprint (a SHA-256), the DER form Envoy's
//! `verify_signature` takes — is done once per key and VM, not per request.
//!
//! Each key also remembers the header part it last came in: a client's
//! proofs repeat their header byte for byte, so the next one skips the
//! header's base64, its JSON and the `jwk` in it.
//!
//! Bounded: [`CAPACITY`] keys, the least recently used replaced, and a header
//! of at most [`MAX_REMEMBERED_HEADER`] bytes each. A key is cached only once
//! it is on its curve, and a header only as the contract read it, so results
//! are exactly the contract's ([`authflow_contract::dpop::FreshKeys`]).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use authflow_contract::der;
use authflow_contract::dpop::{is_on_curve, jwk_thumbprint};
use authflow_contract::jwk::PublicKey;
use authflow_contract::jws::SignatureKey;

/// Keys kept per VM (a few hundred bytes each).
pub const CAPACITY: usize = 16;
/// Longest header part remembered (an ES256 or Ed25519 `jwk` header is about 250).
pub const MAX_REMEMBERED_HEADER: usize = 512;

/// One key, ready for its next proof.
pub struct PreparedKey {
    pub key: PublicKey,
    /// The key's `jkt`.
    pub thumbprint: String,
    /// `SubjectPublicKeyInfo` DER, for the host's verifier.
    pub spki: Vec<u8>,
    /// The own verifier's key, where preparing it is cheap (Ed25519: the
    /// decompressed point; a P-256 key's comb table is not built for a
    /// fallback the host makes rare).
    pub own: Option<SignatureKey>,
    /// The header part (base64url) this key was last read from.
    header: RefCell<Option<String>>,
    last_used: Cell<u64>,
}

#[derive(Default)]
pub struct ProofKeyCache {
    keys: RefCell<Vec<Rc<PreparedKey>>>,
    clock: Cell<u64>,
}

impl ProofKeyCache {
    /// `key` prepared (from the cache, or prepared and cached now); `None`
    /// when the key is not on its curve. (One function, not a generic one
    /// per caller: module size.)
    pub fn get(&self, key: &PublicKey) -> Option<Rc<PreparedKey>> {
        let mut keys = self.keys.try_borrow_mut().ok()?;
        let entry = match keys.iter().find(|k| k.key == *key) {
            Some(entry) => Rc::clone(entry),
            None => {
                let prepared = Rc::new(prepare(key)?);
                if keys.len() < CAPACITY {
                    keys.push(Rc::clone(&prepared));
                } else if let Some(oldest) = keys.iter_mut().min_by_key(|k| k.last_used.get()) {
                    *oldest = Rc::clone(&prepared);
                }
                prepared
            }
        };
        self.touch(&entry);
        Some(entry)
    }

    /// The key a kept header part names, if one came in exactly `header`.
    pub fn by_header(&self, header: &str) -> Option<Rc<PreparedKey>> {
        let keys = self.keys.try_borrow().ok()?;
        let entry = keys.iter().find(|k| {
            k.header
                .try_borrow()
                .is_ok_and(|h| h.as_deref() == Some(header))
        })?;
        self.touch(entry);
        Some(Rc::clone(entry))
    }

    /// Marks `entry` the most recently used.
    fn touch(&self, entry: &PreparedKey) {
        let now = self.clock.get().wrapping_add(1);
        self.clock.set(now);
        entry.last_used.set(now);
    }

    /// `header` was read as naming `key` (a kept key: the reading asked for it).
    pub fn remember_header(&self, header: &str, key: &PublicKey) {
        if header.len() > MAX_REMEMBERED_HEADER {
            return;
        }
        let Ok(keys) = self.keys.try_borrow() else {
            return;
        };
        if let Some(mut held) = keys
            .iter()
            .find(|k| k.key == *key)
            .and_then(|k| k.header.try_borrow_mut().ok())
        {
            *held = Some(header.to_owned());
        };
    }

    pub fn len(&self) -> usize {
        self.keys.try_borrow().map_or(0, |k| k.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn prepare(key: &PublicKey) -> Option<PreparedKey> {
    let own = match key {
        // Decompressing the point is the curve check.
        // Its table of multiples comes only once the client has used it often.
        PublicKey::EdDSA(_) => Some(SignatureKey::from_public_lazily(key)?),
        _ if is_on_curve(key) => None,
        _ => return None,
    };
    Some(PreparedKey {
        key: key.clone(),
        thumbprint: jwk_thumbprint(key),
        spki: der::subject_public_key_info(key),
        own,
        header: RefCell::new(None),
        last_used: Cell::new(0),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
    use super::*;
    use authflow_contract::dpop::client::ProofKey;

    #[test]
    fn keys_are_prepared_once_and_match_the_contract() {
        let cache = ProofKeyCache::default();
        for key in [ProofKey::es256(&[3; 32]), ProofKey::ed25519(&[4; 32])] {
            let public = key.public();
            for _ in 0..3 {
                let jkt = cache.get(&public).unwrap().thumbprint.clone();
                assert_eq!(jkt, key.jkt());
            }
        }
        assert_eq!(cache.len(), 2);
    }

    /// A fresh Ed25519 proof key costs no table (milliseconds in V8): a
    /// client making up a key per request would otherwise make every
    /// request pay for one. The table comes once the key is used often.
    #[test]
    fn a_new_ed25519_proof_key_is_prepared_without_its_table() {
        let cache = ProofKeyCache::default();
        let prepared = cache.get(&ProofKey::ed25519(&[9; 32]).public()).unwrap();
        match &prepared.own {
            Some(SignatureKey::EdDSA(k)) => assert!(!k.has_table()),
            other => panic!("an Ed25519 key prepared for the own verifier: {other:?}"),
        }
    }

    /// A client's proofs repeat their header: the second is read from the
    /// memo, with the key and verdicts of a fresh reading; another header
    /// (another key, the same key spelt otherwise) is read anew.
    #[test]
    fn a_clients_header_is_read_once_and_read_alike_after() {
        use authflow_contract::dpop::{parse_proof, parse_proof_with};
        let checker = crate::signature::SignatureChecker::own_only();
        let client = ProofKey::es256(&[3; 32]);
        let other = ProofKey::ed25519(&[4; 32]);
        let first = client.proof("GET", "https://api.example/a", None);
        let header = first.split('.').next().unwrap();
        assert!(checker_knows(&checker, header).is_none());
        for proof in [
            first.clone(),
            client.proof("POST", "https://api.example/b", Some("t")),
            other.proof("GET", "https://api.example/a", None),
        ] {
            let (fresh, kept) = (
                parse_proof(&proof).unwrap(),
                parse_proof_with(&proof, &checker).unwrap(),
            );
            assert_eq!(
                (fresh.key, fresh.algorithm, fresh.claims),
                (kept.key, kept.algorithm, kept.claims)
            );
        }
        assert_eq!(checker_knows(&checker, header), Some(client.public()));
        // The same key and members in another order: its own text, read anew and remembered.
        let claims = ProofKey::claims("GET", "https://api.example/a", None).to_string();
        let jwk = authflow_contract::dpop::canonical_jwk(&client.public());
        let reordered = client.sign_text(
            &format!(r#"{{"jwk":{jwk},"alg":"ES256","typ":"dpop+jwt"}}"#),
            &claims,
        );
        let reordered_header = reordered.split('.').next().unwrap();
        assert_ne!(reordered_header, header);
        assert_eq!(
            parse_proof_with(&reordered, &checker).unwrap().key,
            client.public()
        );
        assert_eq!(
            checker_knows(&checker, reordered_header),
            Some(client.public())
        );
        // A header too long to keep is still read, every time.
        let pad = "p".repeat(MAX_REMEMBERED_HEADER);
        let long = client.sign_text(
            &format!(r#"{{"typ":"dpop+jwt","alg":"ES256","jwk":{jwk},"x-pad":"{pad}"}}"#),
            &claims,
        );
        let long_header = long.split('.').next().unwrap();
        assert_eq!(
            parse_proof_with(&long, &checker).unwrap().key,
            client.public()
        );
        assert!(checker_knows(&checker, long_header).is_none());
    }

    fn checker_knows(
        checker: &crate::signature::SignatureChecker,
        header: &str,
    ) -> Option<PublicKey> {
        use authflow_contract::dpop::ProofKeys;
        checker.known_header(header)
    }

    #[test]
    fn keys_off_their_curve_are_refused_and_not_kept() {
        let cache = ProofKeyCache::default();
        let off = PublicKey::ES256 {
            x: [1; 32],
            y: [2; 32],
        };
        assert!(!is_on_curve(&off));
        assert!(cache.get(&off).is_none());
        // An Ed25519 y with no x on the curve (2 is not a valid encoding's y here).
        let mut bad_ed = [0u8; 32];
        bad_ed[0] = 2;
        assert_eq!(
            cache.get(&PublicKey::EdDSA(bad_ed)).is_some(),
            is_on_curve(&PublicKey::EdDSA(bad_ed))
        );
        assert!(cache.get(&PublicKey::RS256 { n: vec![1; 256] }).is_none());
        assert!(cache.len() <= 1);
    }

    #[test]
    fn the_least_recently_used_key_makes_room() {
        let cache = ProofKeyCache::default();
        let keys: Vec<PublicKey> = (0..=CAPACITY as u8)
            .map(|i| ProofKey::ed25519(&[i + 1; 32]).public())
            .collect();
        for k in &keys[..CAPACITY] {
            cache.get(k).unwrap();
        }
        // Touch the first again: the second is now the oldest.
        cache.get(&keys[0]).unwrap();
        cache.get(&keys[CAPACITY]).unwrap();
        assert_eq!(cache.len(), CAPACITY);
        let held: Vec<PublicKey> = cache.keys.borrow().iter().map(|k| k.key.clone()).collect();
        assert!(held.contains(&keys[0]) && held.contains(&keys[CAPACITY]));
        assert!(!held.contains(&keys[1]));
    }
}
