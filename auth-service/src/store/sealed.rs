//! What both stores seal with the KEK (see `kek.rs`), and under which
//! purpose: the associated data that ties a sealed value to its row.

use crate::kek::Kek;

use super::{StoreError, StoreResult, StoredKey};

pub fn totp_purpose(user_id: &str) -> String {
    format!("totp:{user_id}")
}

pub fn key_purpose(kid: &str) -> String {
    format!("signing_key:{kid}")
}

pub fn open(kek: &Kek, purpose: &str, value: &[u8]) -> StoreResult<Vec<u8>> {
    kek.open(purpose, value).map_err(StoreError::Sealed)
}

/// `key` as read from its row, with its private half (if any) opened. One
/// this process's KEK cannot open is left out and the reason kept: the key's
/// public half is still published and verified (see `KeyRing::reload`).
pub fn open_signing_key(kek: &Kek, mut key: StoredKey) -> StoredKey {
    if !key.private_key.is_empty() {
        match open(kek, &key_purpose(&key.kid), &key.private_key) {
            Ok(clear) => key.private_key = clear,
            Err(e) => {
                key.private_key = Vec::new();
                key.private_key_unopened = Some(e.to_string());
            }
        }
    }
    key
}

pub fn seal(kek: &Kek, purpose: &str, value: &[u8]) -> StoreResult<String> {
    kek.seal(purpose, value).map_err(StoreError::Sealed)
}

/// Which values this process leaves as they are: those sealed with its
/// current KEK, and those sealed with a KEK another instance put in use
/// after it (`kek_succession`). During a rotation's rollout an instance
/// that has the new key only as `kek.previous` would otherwise re-seal,
/// under the old key it still has as `kek.key`, what the instances already
/// on the new key sealed — the values flipping between the two keys, and
/// sealed again under the one being retired (perhaps because it leaked),
/// until the rollout ends.
pub struct Kept {
    /// SQL `LIKE` patterns of the kept values' beginnings.
    patterns: Vec<String>,
}

impl Kept {
    /// `newer`: ids of the KEKs put in use after this process's current one.
    /// Each must be one this process has (in `kek.previous`, during a
    /// rotation's rollout): a process still on a KEK a rotation retired (a
    /// CLI's environment, a forgotten deployment) would keep what it cannot
    /// open, and seal what it writes (a rotated signing key, a second
    /// factor) under a key the other instances may no longer have.
    pub fn new(kek: &Kek, newer: &[String]) -> StoreResult<Self> {
        // First: a running process that misses the newest key still seals
        // with the newest one it has.
        kek.follow_succession(newer);
        if let Some(id) = newer.iter().find(|id| !kek.holds(id)) {
            return Err(StoreError::Sealed(format!(
                "the database has secrets sealed with key-encryption key {id}, put in use after \
                 the configured one ({}): configure {id} as `kek` (or, while a rotation rolls out, \
                 in `kek_previous`)",
                kek.id()
            )));
        }
        let patterns = std::iter::once(kek.current_prefix())
            .chain(newer.iter().map(|id| Kek::prefix_of(id)))
            .map(|prefix| format!("{prefix}%"))
            .collect();
        Ok(Kept { patterns })
    }

    /// The patterns, to bind after the other parameters of [`Kept::excluded`]'s query.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// `NOT (column LIKE $first) AND NOT (column LIKE $first+1) …`: the values not kept.
    pub fn excluded(&self, column: &str, first: usize) -> String {
        (first..first + self.patterns.len())
            .map(|n| format!("NOT ({column} LIKE ${n})"))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    fn keeps(&self, value: &[u8]) -> bool {
        self.patterns.iter().any(|p| {
            let prefix = p.trim_end_matches('%');
            value.starts_with(prefix.as_bytes())
        })
    }
}

/// The value sealed with the KEK that seals ([`Kek::follow_succession`]:
/// the current one, or a newer one this process has), or `None` when `kept` leaves it
/// as it is (a value still in clear, from before sealing, is sealed as it is).
pub fn resealed(
    kek: &Kek,
    kept: &Kept,
    purpose: &str,
    value: &[u8],
) -> StoreResult<Option<String>> {
    if kept.keeps(value) {
        return Ok(None);
    }
    let clear = if Kek::is_sealed(value) {
        open(kek, purpose, value)?
    } else {
        value.to_vec()
    };
    seal(kek, purpose, &clear).map(Some)
}
