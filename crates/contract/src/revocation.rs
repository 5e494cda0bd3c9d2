//! The revocation feed: `GET /v1/revocations?since=CURSOR`.
//!
//! The service answers with what changed since `CURSOR` (a delta), `304` when
//! nothing did, or a full snapshot (`snapshot: true`) when the cursor is
//! unknown or too old. Every entry carries `expires_at`: its forget-after time.
//!
//! A token is accepted until its `exp` plus the verifier's clock skew, so an
//! entry must outlive the tokens it kills by that much: the service publishes
//! `expires_at` = the newest covered `exp` plus its retention margin (at least
//! [`MAX_CLOCK_SKEW_SECS`] by default), and a verifier keeps an entry while
//! [`still_needed`] says so for its own skew on top.

use serde::{Deserialize, Serialize};

pub mod blob;
pub mod digest;
pub mod set;

pub use blob::{Blob, BlobError};
pub use digest::{Kind, SetKey};
pub use set::{ApplyError, Change, Probe, RevocationSet, Revoked, Runs};

pub const FEED_PATH: &str = "/v1/revocations";
/// Largest JSON feed body the filter accepts (a 100k-entry snapshot fits).
pub const MAX_FEED_BYTES: usize = 16 * 1024 * 1024;
/// Media type of the compact feed (the layout of [`blob`]); a client asks for
/// it with `Accept`, JSON stays the default.
pub const COMPACT_FEED_TYPE: &str = "application/vnd.authflow.revocations.v1";
/// Most live entries a filter's list may be set to hold
/// (`revocation.max_entries`): what the largest compact snapshot it reads
/// carries. A list allowed to grow past it would be kept up by deltas, then
/// never loaded again whole: not by a new worker, nor after an outage.
pub const MAX_LIST_ENTRIES: usize = 2_000_000;
/// Largest compact feed body the filter accepts: [`MAX_LIST_ENTRIES`] of
/// the longest kind (a ban's 32 bytes) and the longest header.
pub const MAX_COMPACT_FEED_BYTES: usize = MAX_LIST_ENTRIES * 32 + 4096;
const _: () = assert!(
    blob::HEADER_LEN + blob::MAX_ISSUER_LEN + blob::MAX_CURSOR_LEN + 64 <= 4096,
    "a header fits beside the entries"
);

/// The largest clock skew a filter may tolerate on `exp` / `nbf`. The service's
/// default retention margin equals it, so every entry it publishes outlives
/// its tokens in any filter a valid configuration can describe.
pub const MAX_CLOCK_SKEW_SECS: u64 = 600;

/// Whether an entry that may be forgotten after `expires_at` must still be
/// kept at `now` by a verifier that accepts tokens up to `skew_secs` past
/// their `exp` (`now <= exp + skew` passes, so this is inclusive too).
pub fn still_needed(expires_at: u64, skew_secs: u64, now: u64) -> bool {
    now <= expires_at.saturating_add(skew_secs)
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object")]
pub struct RevocationFeed {
    /// Issuer these entries belong to (the `iss` of the tokens they kill).
    pub issuer: String,
    /// Opaque; send it back as `since` on the next poll. Never empty (a
    /// filter refuses a feed without one: its next poll could name no position).
    pub cursor: String,
    /// True: these entries replace everything known before. False: a delta.
    pub snapshot: bool,
    #[serde(default)]
    pub revoked_tokens: Vec<RevokedToken>,
    #[serde(default)]
    pub revoked_sessions: Vec<RevokedSession>,
    #[serde(default)]
    pub banned_subjects: Vec<BannedSubject>,
}

/// One access token, by `jti`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(expecting = "an object")]
pub struct RevokedToken {
    pub jti: String,
    pub expires_at: u64,
}

/// Every token of one session, by `sid`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(expecting = "an object")]
pub struct RevokedSession {
    pub sid: String,
    pub expires_at: u64,
}

/// Every token of `sub` issued before `not_before` (seconds since the epoch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(expecting = "an object")]
pub struct BannedSubject {
    pub sub: String,
    pub not_before: u64,
    pub expires_at: u64,
}

impl RevocationFeed {
    pub fn entry_count(&self) -> usize {
        self.revoked_tokens.len() + self.revoked_sessions.len() + self.banned_subjects.len()
    }

    /// Sorts each list by value and keeps one entry per value, the widest
    /// (a value may have been revoked twice).
    pub fn merge_duplicates(&mut self) {
        self.revoked_tokens
            .sort_by(|a, b| a.jti.cmp(&b.jti).then(b.expires_at.cmp(&a.expires_at)));
        self.revoked_tokens
            .dedup_by(|later, kept| later.jti == kept.jti);
        self.revoked_sessions
            .sort_by(|a, b| a.sid.cmp(&b.sid).then(b.expires_at.cmp(&a.expires_at)));
        self.revoked_sessions
            .dedup_by(|later, kept| later.sid == kept.sid);
        self.banned_subjects.sort_by(|a, b| a.sub.cmp(&b.sub));
        self.banned_subjects.dedup_by(|later, kept| {
            let same = later.sub == kept.sub;
            if same {
                kept.not_before = kept.not_before.max(later.not_before);
                kept.expires_at = kept.expires_at.max(later.expires_at);
            }
            same
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape_is_stable() {
        let feed = RevocationFeed {
            issuer: "https://auth.example".into(),
            cursor: "42".into(),
            snapshot: false,
            revoked_tokens: vec![RevokedToken {
                jti: "j1".into(),
                expires_at: 100,
            }],
            revoked_sessions: vec![RevokedSession {
                sid: "s1".into(),
                expires_at: 200,
            }],
            banned_subjects: vec![BannedSubject {
                sub: "u1".into(),
                not_before: 50,
                expires_at: 950,
            }],
        };
        let json = serde_json::to_value(&feed).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "issuer": "https://auth.example", "cursor": "42", "snapshot": false,
                "revoked_tokens": [{"jti": "j1", "expires_at": 100}],
                "revoked_sessions": [{"sid": "s1", "expires_at": 200}],
                "banned_subjects": [{"sub": "u1", "not_before": 50, "expires_at": 950}]
            })
        );
        let back: RevocationFeed = serde_json::from_value(json).unwrap();
        assert_eq!(back, feed);
        assert_eq!(back.entry_count(), 3);
    }

    /// A token with `exp` = 100 passes a verifier with 30 s of skew up to and
    /// including 130: its revocation must be kept exactly that long.
    #[test]
    fn an_entry_is_needed_while_its_tokens_could_pass() {
        assert!(still_needed(100, 30, 100));
        assert!(still_needed(100, 30, 101));
        assert!(still_needed(100, 30, 130));
        assert!(!still_needed(100, 30, 131));
        assert!(still_needed(u64::MAX, 30, u64::MAX), "no overflow");
    }
}
