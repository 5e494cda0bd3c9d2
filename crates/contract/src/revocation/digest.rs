//! Keyed 128-bit digests: how a revoked value is stored and looked up.
//!
//! A list keeps `SHA-256(domain ‖ key ‖ kind ‖ value)` truncated to 16 bytes
//! instead of the value. Why this stays exact in practice:
//! - a valid token is wrongly denied only if its `jti` / `sid` / `sub` shares a
//!   digest with a revoked value of the same kind. With n live entries that is
//!   a chance of n / 2^128 per lookup: with a million entries and a million
//!   lookups a second, one false match is expected every ~10^19 years;
//! - nobody can *choose* such a match: the key is derived from the issuer and
//!   the feed's epoch (a random value of the service's database), so nothing
//!   can be precomputed, and hitting one given revoked digest is a second
//!   preimage of SHA-256 truncated to 128 bits (~2^128 work), not a birthday
//!   search. A collision an attacker builds between two values of their own
//!   (~2^64 work) only gets their own token denied.

use sha2::{Digest as _, Sha256};

/// The 16 bytes a revoked value is stored as.
pub type Digest = [u8; 16];

/// What a digest identifies: the three lists of the feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// One access token, by `jti`.
    Token,
    /// Every token of a session, by `sid`.
    Session,
    /// Every token of a subject issued before a time, by `sub`.
    Subject,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Token, Kind::Session, Kind::Subject];

    fn tag(self) -> u8 {
        match self {
            Kind::Token => b't',
            Kind::Session => b's',
            Kind::Subject => b'u',
        }
    }
}

/// The key every digest of one list is computed with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetKey(pub [u8; 16]);

impl SetKey {
    /// The key of the lists an issuer publishes under one feed epoch (the
    /// part of the cursor that changes only with the service's database).
    pub fn derive(issuer: &str, epoch: &str) -> SetKey {
        let mut h = Sha256::new();
        h.update(b"authflow revocation key v1\0");
        h.update((issuer.len() as u64).to_le_bytes());
        h.update(issuer.as_bytes());
        h.update(epoch.as_bytes());
        SetKey(truncate(&h.finalize()))
    }

    pub fn digest(&self, kind: Kind, value: &str) -> Digest {
        let mut h = Sha256::new();
        h.update(b"authflow revocation v1\0");
        h.update(self.0);
        h.update([kind.tag()]);
        h.update(value.as_bytes());
        truncate(&h.finalize())
    }
}

fn truncate(full: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (o, b) in out.iter_mut().zip(full) {
        *o = *b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_depend_on_key_kind_and_value() {
        let a = SetKey::derive("iss", "epoch1");
        let b = SetKey::derive("iss", "epoch2");
        assert_ne!(a, b);
        assert_ne!(
            a.digest(Kind::Token, "x"),
            b.digest(Kind::Token, "x"),
            "keyed"
        );
        assert_ne!(
            a.digest(Kind::Token, "x"),
            a.digest(Kind::Session, "x"),
            "kinds never meet"
        );
        assert_ne!(a.digest(Kind::Token, "x"), a.digest(Kind::Token, "y"));
        assert_eq!(
            a.digest(Kind::Token, "x"),
            SetKey::derive("iss", "epoch1").digest(Kind::Token, "x"),
            "both sides agree"
        );
    }
}
