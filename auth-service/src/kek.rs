//! Secrets at rest: TOTP secrets and the private halves of signing keys are
//! stored sealed with a key-encryption key (KEK) that is not in the database,
//! so a copy of the database alone cannot mint tokens or generate codes.
//!
//! Each value: AES-256-GCM with a random 96-bit nonce, the row's identity and
//! purpose (e.g. `totp:<user id>`) as associated data — a sealed value moved
//! to another row does not open — stored as text:
//!
//! ```text
//! enc:v1:<kek id>:<base64url(nonce ‖ ciphertext ‖ tag)>
//! ```
//!
//! `kek id` is the first 8 bytes of SHA-256 of the KEK, in hex: it says which
//! key sealed a value without revealing it. Rotation: start with the new KEK
//! as `kek` and the old one in `kek_previous`; on start every value sealed
//! with an older key (or still in clear, from before encryption) is re-sealed
//! with the current one, and every maintenance round re-seals what an
//! instance still on an older key sealed since (`startup::reseal_round`);
//! `kek_previous` can go once `authflow-auth kek status` counts 0.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::Aes256Gcm;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const PREFIX: &str = "enc:v1:";
const NONCE_LEN: usize = 12;

struct SealingKey {
    id: String,
    cipher: Aes256Gcm,
}

impl SealingKey {
    fn new(bytes: &[u8; 32]) -> Result<Self, String> {
        let cipher = Aes256Gcm::new_from_slice(bytes)
            .map_err(|_| "the key-encryption key must be 32 bytes".to_owned())?;
        Ok(Self {
            id: hex::encode(&Sha256::digest(bytes)[..8]),
            cipher,
        })
    }
}

/// The current KEK (seals and opens) and older ones (open only).
pub struct Kek {
    current: SealingKey,
    /// The current KEK itself, only to derive other keys from (see [`Kek::derive`]).
    current_bytes: [u8; 32],
    previous: Vec<SealingKey>,
    /// The previous KEKs themselves, only to derive keys that must still be
    /// accepted during a rotation (see [`Kek::derive_previous`]).
    previous_bytes: Vec<[u8; 32]>,
    /// Which key seals: 0 the current one, `i + 1` `previous[i]`, once the
    /// database names it as put in use after the current one
    /// ([`Kek::follow_succession`]). Shared with every [`DerivedKeys`], which
    /// make their tags with the same KEK's key.
    sealing: Arc<AtomicUsize>,
}

/// One purpose's keys (tags, nonces): what is made is made with the key of
/// the KEK that seals (the current one, or the newer one the database says
/// the other instances use: [`Kek::follow_succession`]) and checked against
/// those of every KEK held. Across a rotation a tag made before it (a
/// browser's cookie, a form, a nonce), or by an instance still on the old
/// key, keeps passing until `kek.previous` goes.
pub struct DerivedKeys {
    /// The current KEK's key, then those of `kek.previous`, in order.
    keys: Vec<[u8; 32]>,
    /// Which of `keys` makes tags (the KEK's `sealing`).
    making: Arc<AtomicUsize>,
}

impl DerivedKeys {
    /// The key to make new tags with.
    pub fn current(&self) -> &[u8; 32] {
        let at = self.making.load(Ordering::SeqCst);
        self.keys.get(at).unwrap_or(&self.keys[0])
    }

    /// Every key a tag may have been made with: the current one first.
    pub fn accepted(&self) -> impl Iterator<Item = &[u8; 32]> {
        let current = self.current();
        std::iter::once(current).chain(self.keys.iter().filter(move |k| *k != current))
    }

    /// HMAC-SHA256 of `parts` (one after the other) under the current key,
    /// base64url: empty only if the MAC cannot be keyed (never, at 32 bytes).
    pub fn tag(&self, parts: &[&[u8]]) -> String {
        tag_with(self.current(), parts)
    }

    /// Whether `tag` is the [`Self::tag`] of `parts` under any accepted key
    /// (compared in constant time).
    pub fn verifies(&self, parts: &[&[u8]], tag: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.accepted().any(|key| {
            let expected = tag_with(key, parts);
            !expected.is_empty()
                && expected.len() == tag.len()
                && bool::from(expected.as_bytes().ct_eq(tag.as_bytes()))
        })
    }
}

fn tag_with(key: &[u8; 32], parts: &[&[u8]]) -> String {
    use hmac::{Hmac, Mac};
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else {
        return String::new();
    };
    for part in parts {
        mac.update(part);
    }
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

impl std::fmt::Debug for DerivedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DerivedKeys(<redacted>)")
    }
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kek")
            .field("current", &self.current.id)
            .finish_non_exhaustive()
    }
}

/// A KEK as configured: 32 random bytes in standard base64.
pub fn parse_key(text: &str) -> Result<[u8; 32], String> {
    let key = parse_previous_key(text)?;
    // All zeros (`AAAA…=`) or another run of one byte is a placeholder left
    // in place of a key, never the output of a random generator.
    if key.iter().all(|b| *b == key[0]) {
        return Err(
            "is 32 equal bytes, a placeholder rather than a key: generate one with \
             `authflow-auth kek generate` or `openssl rand -base64 32`"
                .to_owned(),
        );
    }
    Ok(key)
}

/// A previous KEK (`kek.previous`): as [`parse_key`], but a placeholder is
/// taken: a deployment that ran on one moves away from it by naming it here
/// while the values it sealed are re-sealed with the new key.
pub fn parse_previous_key(text: &str) -> Result<[u8; 32], String> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|_| "is not base64".to_owned())?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        format!(
            "must be 32 random bytes in base64 (e.g. `openssl rand -base64 32`), found {} bytes",
            bytes.len()
        )
    })
}

/// HMAC-SHA256 of `kek` as a PRF, the purpose as label.
fn derive_from(kek: &[u8; 32], purpose: &str) -> Result<[u8; 32], String> {
    use hmac::{Hmac, Mac};
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(kek).map_err(|_| "cannot derive a key".to_owned())?;
    mac.update(b"authflow derived key v1\0");
    mac.update(purpose.as_bytes());
    Ok(mac.finalize().into_bytes().into())
}

/// A fresh random KEK in its configured form (development runs and tests).
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    STANDARD.encode(bytes)
}

impl Kek {
    pub fn new(current: &[u8; 32], previous: &[[u8; 32]]) -> Result<Self, String> {
        Ok(Self {
            current: SealingKey::new(current)?,
            current_bytes: *current,
            previous: previous
                .iter()
                .map(SealingKey::new)
                .collect::<Result<_, _>>()?,
            previous_bytes: previous.to_vec(),
            sealing: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Seals with the newest of `newer` (ids of KEKs other instances put in
    /// use after the current one, oldest first) that this process has, if
    /// any: a process left with a rotation's first settings (the old key as
    /// `kek`, the new one as `kek_previous`) after the rotation finished
    /// would otherwise seal what it writes under the retired key, which the
    /// instances on the new key alone cannot open.
    pub fn follow_succession(&self, newer: &[String]) {
        let held = newer
            .iter()
            .rev()
            .find_map(|id| self.previous.iter().position(|k| &k.id == id));
        if let Some(at) = held {
            self.sealing.store(at + 1, Ordering::SeqCst);
        }
    }

    /// The key that seals (see [`Kek::follow_succession`]).
    fn sealing_key(&self) -> &SealingKey {
        match self.sealing.load(Ordering::SeqCst) {
            0 => &self.current,
            at => self.previous.get(at - 1).unwrap_or(&self.current),
        }
    }

    /// A key for `purpose`, derived from the current KEK (HMAC-SHA256 as a
    /// PRF, the purpose as label): every instance configured with the same
    /// KEK derives the same key, without storing it, and no derived key
    /// reveals the KEK or another purpose's key. What the service uses is
    /// [`Kek::derive_keys`], which follows the KEK that seals.
    #[cfg(test)]
    pub fn derive(&self, purpose: &str) -> Result<[u8; 32], String> {
        derive_from(&self.current_bytes, purpose)
    }

    /// The keys for `purpose` of KEK `current`, with `previous` as
    /// `kek.previous`: for tests of what is tagged with them.
    #[cfg(test)]
    pub fn test_keys(purpose: &str, current: &[u8; 32], previous: &[[u8; 32]]) -> DerivedKeys {
        let kek = Self::new(current, previous).expect("a valid test KEK");
        kek.derive_keys(purpose).expect("a derivable purpose")
    }

    /// The keys for `purpose` of the current KEK and of the previous ones
    /// (see [`DerivedKeys`]).
    pub fn derive_keys(&self, purpose: &str) -> Result<DerivedKeys, String> {
        let keys = std::iter::once(&self.current_bytes)
            .chain(&self.previous_bytes)
            .map(|kek| derive_from(kek, purpose))
            .collect::<Result<_, _>>()?;
        Ok(DerivedKeys {
            keys,
            making: Arc::clone(&self.sealing),
        })
    }

    pub fn id(&self) -> &str {
        &self.current.id
    }

    /// Whether this process has the KEK of id `id` (current or previous).
    pub fn holds(&self, id: &str) -> bool {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .any(|k| k.id == id)
    }

    /// How every value sealed with the current KEK begins: anything else
    /// (an older key, or clear) is for re-sealing. Holds no `%` or `_`, so
    /// it is also its own SQL `LIKE` prefix.
    pub fn current_prefix(&self) -> String {
        Self::prefix_of(&self.current.id)
    }

    /// How every value sealed with the KEK of id `id` begins (as
    /// [`Kek::current_prefix`]; ids are hex).
    pub fn prefix_of(id: &str) -> String {
        format!("{PREFIX}{id}:")
    }

    pub fn is_sealed(value: &[u8]) -> bool {
        value.starts_with(PREFIX.as_bytes())
    }

    /// True when `value` is sealed with the current KEK (nothing to re-seal).
    pub fn is_current(&self, value: &[u8]) -> bool {
        value.starts_with(self.current_prefix().as_bytes())
    }

    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> Result<String, String> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let key = self.sealing_key();
        let sealed = key
            .cipher
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: plaintext,
                    aad: purpose.as_bytes(),
                },
            )
            .map_err(|_| "encryption failed".to_owned())?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(format!(
            "{PREFIX}{}:{}",
            key.id,
            URL_SAFE_NO_PAD.encode(out)
        ))
    }

    /// Opens a sealed value; the error says why without revealing anything.
    pub fn open(&self, purpose: &str, value: &[u8]) -> Result<Vec<u8>, String> {
        let text =
            std::str::from_utf8(value).map_err(|_| format!("{purpose}: not a sealed value"))?;
        let rest = text
            .strip_prefix(PREFIX)
            .ok_or_else(|| format!("{purpose}: stored in clear, not sealed"))?;
        let (id, data) = rest
            .split_once(':')
            .ok_or_else(|| format!("{purpose}: malformed sealed value"))?;
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
            .ok_or_else(|| {
                format!(
                    "{purpose}: sealed with key-encryption key {id}, but the configured key is {} \
                 (wrong `kek`? during a rotation the old key goes in `kek_previous`)",
                    self.current.id
                )
            })?;
        let bytes = URL_SAFE_NO_PAD
            .decode(data)
            .map_err(|_| format!("{purpose}: malformed sealed value"))?;
        if bytes.len() < NONCE_LEN {
            return Err(format!("{purpose}: malformed sealed value"));
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| format!("{purpose}: malformed sealed value"))?;
        key.cipher
            .decrypt(&nonce.into(), Payload { msg: sealed, aad: purpose.as_bytes() })
            .map_err(|_| format!("{purpose}: does not open with key-encryption key {id} (altered, or moved from another row)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> [u8; 32] {
        [b; 32]
    }

    #[test]
    fn seals_with_a_fresh_nonce_and_opens_only_for_its_purpose() {
        let kek = Kek::new(&key(1), &[]).unwrap();
        let a = kek.seal("totp:u1", b"JBSWY3DPEHPK3PXP").unwrap();
        let b = kek.seal("totp:u1", b"JBSWY3DPEHPK3PXP").unwrap();
        assert_ne!(a, b, "a random nonce per value");
        assert!(!a.contains("JBSWY3DP"));
        assert_eq!(
            kek.open("totp:u1", a.as_bytes()).unwrap(),
            b"JBSWY3DPEHPK3PXP"
        );
        assert!(
            kek.open("totp:u2", a.as_bytes()).is_err(),
            "bound to its row"
        );
        let mut altered = a.clone().into_bytes();
        let last = altered.len() - 2;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        assert!(kek.open("totp:u1", &altered).is_err());
    }

    #[test]
    fn previous_keys_open_and_unknown_keys_are_named() {
        let old = Kek::new(&key(1), &[]).unwrap();
        let sealed = old.seal("p", b"x").unwrap();
        let rotated = Kek::new(&key(2), &[key(1)]).unwrap();
        assert_eq!(rotated.open("p", sealed.as_bytes()).unwrap(), b"x");
        assert!(!rotated.is_current(sealed.as_bytes()));
        let wrong = Kek::new(&key(3), &[]).unwrap();
        let e = wrong.open("p", sealed.as_bytes()).unwrap_err();
        assert!(e.contains(old.id()) && e.contains("kek"), "{e}");
    }

    #[test]
    fn previous_keys_derive_what_the_instances_not_yet_rotated_derive() {
        let old = Kek::new(&key(1), &[]).unwrap();
        let rotated = Kek::new(&key(2), &[key(1)]).unwrap();
        let keys = rotated.derive_keys("dpop-nonce").unwrap();
        assert_eq!(keys.current(), &rotated.derive("dpop-nonce").unwrap());
        assert_eq!(
            keys.accepted().copied().collect::<Vec<_>>(),
            vec![
                rotated.derive("dpop-nonce").unwrap(),
                old.derive("dpop-nonce").unwrap()
            ]
        );
        assert_eq!(old.derive_keys("dpop-nonce").unwrap().accepted().count(), 1);
    }

    /// A process left with a rotation's first settings (the old key as
    /// `kek`, the new one in `kek_previous`) after the others moved to the
    /// new key alone seals with the new key; its tags (sign-in codes, CSRF
    /// forms, DPoP nonces, refresh tokens) follow too, or the others refuse
    /// every one it makes: a code mailed from it counted as a wrong guess.
    #[test]
    fn a_process_left_on_a_rotations_first_settings_tags_with_the_key_in_use() {
        let (old, new) = (key(1), key(2));
        let stale = Kek::new(&old, &[new]).unwrap();
        let keys = stale.derive_keys("signin-code").unwrap();
        let earlier = keys.tag(&[b"x"]);
        let others = Kek::test_keys("signin-code", &new, &[]);
        assert!(
            !others.verifies(&[b"x"], &earlier),
            "before the rotation finished"
        );
        let new_id = Kek::new(&new, &[]).unwrap().id().to_owned();
        stale.follow_succession(&[new_id]);
        assert!(others.verifies(&[b"x"], &keys.tag(&[b"x"])));
        assert_eq!(keys.current(), others.current());
        assert!(keys.verifies(&[b"x"], &others.tag(&[b"x"])));
        assert!(
            keys.verifies(&[b"x"], &earlier),
            "its own earlier tags still pass here"
        );
    }

    #[test]
    fn derived_keys_depend_on_the_kek_and_the_purpose() {
        let a = Kek::new(&key(1), &[]).unwrap();
        let nonce_key = a.derive("dpop-nonce").unwrap();
        assert_eq!(
            nonce_key,
            Kek::new(&key(1), &[key(9)])
                .unwrap()
                .derive("dpop-nonce")
                .unwrap(),
            "same KEK, same key"
        );
        assert_ne!(nonce_key, a.derive("other").unwrap());
        assert_ne!(
            nonce_key,
            Kek::new(&key(2), &[])
                .unwrap()
                .derive("dpop-nonce")
                .unwrap()
        );
        assert_ne!(nonce_key, key(1));
    }

    #[test]
    fn configured_keys_are_32_bytes_of_base64() {
        assert!(parse_key(&generate_key()).is_ok());
        assert!(parse_key("c2hvcnQ=").unwrap_err().contains("32"));
        assert!(parse_key("not base64!").is_err());
    }

    /// 32 equal bytes are what an operator writes as a placeholder (all
    /// zeros, or `openssl rand` never run): refused, naming the fix.
    #[test]
    fn a_key_of_equal_bytes_is_refused() {
        for byte in [0u8, 0x41, 0xff] {
            let e = parse_key(&STANDARD.encode([byte; 32])).unwrap_err();
            assert!(
                e.contains("placeholder") && e.contains("openssl rand -base64 32"),
                "{e}"
            );
        }
        let mut almost = [0u8; 32];
        almost[31] = 1;
        assert_eq!(parse_key(&STANDARD.encode(almost)).unwrap(), almost);
        // As a previous key it is taken: the way off a placeholder is to
        // name it there while its values are re-sealed with a real key.
        assert_eq!(
            parse_previous_key(&STANDARD.encode([0u8; 32])).unwrap(),
            [0u8; 32]
        );
    }
}
