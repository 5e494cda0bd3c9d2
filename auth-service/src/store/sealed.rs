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

/// The value sealed with the current KEK, or `None` when it already is
/// (a value still in clear, from before sealing, is sealed as it is).
pub fn resealed(kek: &Kek, purpose: &str, value: &[u8]) -> StoreResult<Option<String>> {
    if kek.is_current(value) {
        return Ok(None);
    }
    let clear = if Kek::is_sealed(value) {
        open(kek, purpose, value)?
    } else {
        value.to_vec()
    };
    seal(kek, purpose, &clear).map(Some)
}
