//! Arbitrary bytes into the revocation feed parser (the filter's
//! `serde_json::from_slice::<RevocationFeed>`), then applied to a list that
//! already holds entries. An applied feed must be enforced: every entry whose
//! tokens could still pass (up to `expires_at` + clock skew) kills them; a refused feed changes nothing;
//! the list stays within its bound and survives its own snapshot.
#![no_main]

use std::cell::Cell;
use std::rc::Rc;

use authflow_contract::revocation::{BannedSubject, RevocationFeed, RevokedSession, RevokedToken, MAX_FEED_BYTES};
use authflow_filter_core::revocation::RevocationSet;
use authflow_filter_core::verify::VerifiedToken;
use authflow_filter_core::ProviderId;
use libfuzzer_sys::fuzz_target;

const ISSUER: &str = "https://auth.test";
const NOW: u64 = 1_900_000_000;
const MAX_ENTRIES: usize = 64;
/// The clock skew tokens are accepted with: entries must outlive their `expires_at` by it.
const SKEW: u64 = 30;

fn token(jti: Option<&str>, sid: Option<&str>, sub: Option<&str>, issued_at: Option<u64>) -> VerifiedToken {
    VerifiedToken {
        provider: ProviderId::FIRST,
        issuer: ISSUER.into(),
        subject: sub.map(str::to_owned),
        expires_at: NOW + 900,
        not_before: None,
        issued_at,
        jti: jti.map(str::to_owned),
        sid: sid.map(str::to_owned),
        roles: vec![],
        scopes: vec![],
        dfp: None,
        identity_headers: Rc::from(Vec::new()),
        not_revoked_in: Cell::new(0),
    }
}

fn existing() -> RevocationSet {
    let mut set = RevocationSet::default();
    let feed = RevocationFeed {
        issuer: ISSUER.into(),
        cursor: "0".into(),
        snapshot: true,
        revoked_tokens: vec![RevokedToken { jti: "old-jti".into(), expires_at: NOW + 600 }],
        revoked_sessions: vec![RevokedSession { sid: "old-sid".into(), expires_at: NOW + 600 }],
        banned_subjects: vec![BannedSubject { sub: "old-sub".into(), not_before: NOW - 10, expires_at: NOW + 600 }],
    };
    assert!(set.apply(feed, ISSUER, MAX_ENTRIES, SKEW, NOW).is_ok());
    set
}

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_FEED_BYTES {
        return;
    }
    let Ok(feed) = serde_json::from_slice::<RevocationFeed>(data) else { return };
    let mut set = existing();
    let before = set.len();
    if set.apply(feed.clone(), ISSUER, MAX_ENTRIES, SKEW, NOW).is_err() {
        assert_eq!(set.len(), before, "a refused feed changed the list");
        assert_eq!(set.cursor(), Some("0"));
        return;
    }
    assert!(set.len() <= MAX_ENTRIES);
    assert_eq!(set.cursor(), Some(feed.cursor.as_str()));
    for t in feed.revoked_tokens.iter().filter(|t| t.expires_at.saturating_add(SKEW) >= NOW) {
        assert!(set.check(&token(Some(&t.jti), None, None, Some(NOW))).is_some(), "revoked jti {:?} passes", t.jti);
    }
    for s in feed.revoked_sessions.iter().filter(|s| s.expires_at.saturating_add(SKEW) >= NOW) {
        assert!(set.check(&token(None, Some(&s.sid), None, Some(NOW))).is_some(), "revoked sid {:?} passes", s.sid);
    }
    for b in feed.banned_subjects.iter().filter(|b| b.expires_at.saturating_add(SKEW) >= NOW) {
        let issued = b.not_before.checked_sub(1);
        assert!(set.check(&token(None, None, Some(&b.sub), issued)).is_some(), "banned sub {:?} passes", b.sub);
    }
    // A delta keeps what was there before.
    if !feed.snapshot {
        assert!(set.check(&token(Some("old-jti"), None, None, Some(NOW))).is_some(), "a delta dropped an earlier revocation");
    }
    // The snapshot one VM hands to another describes the same list.
    let mut copy = RevocationSet::default();
    assert!(copy.apply(set.to_snapshot(ISSUER), ISSUER, MAX_ENTRIES, SKEW, NOW).is_ok());
    assert_eq!(copy.len(), set.len());
});
