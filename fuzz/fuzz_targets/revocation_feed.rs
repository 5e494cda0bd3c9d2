//! Arbitrary bytes into both revocation feed decoders the filter uses — the
//! compact layout (`Blob::parse`, what the filter asks for) and JSON (a
//! service without the compact encoding, read as the filter reads it and
//! compared with serde_json) — then applied to a list that
//! already holds entries. An applied feed must be enforced: every entry whose
//! tokens could still pass (up to `expires_at` + clock skew) kills them; a
//! refused feed changes nothing; the list stays within its bound and what
//! one VM shares of it (base and overlay bytes) another adopts unchanged. A
//! delta never loads a list that holds none.
#![no_main]

use authflow_contract::revocation::blob::Blob;
use authflow_contract::revocation::{
    set::encode, BannedSubject, Kind, RevocationFeed, RevokedSession, RevokedToken, SetKey, MAX_COMPACT_FEED_BYTES,
};
use authflow_filter_core::revocation::RevocationList;
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
        subject: sub.map(str::to_owned),
        issued_at,
        jti: jti.map(str::to_owned),
        sid: sid.map(str::to_owned),
        ..VerifiedToken::new(ProviderId::FIRST, ISSUER.into(), NOW + 900)
    }
}

fn key() -> SetKey {
    SetKey::derive(ISSUER, "epoch")
}

/// A list holding one entry of each kind, built from a compact snapshot.
fn existing() -> RevocationList {
    let mut list = RevocationList::default();
    let feed = RevocationFeed {
        issuer: ISSUER.into(),
        cursor: "0".into(),
        snapshot: true,
        revoked_tokens: vec![RevokedToken { jti: "old-jti".into(), expires_at: NOW + 600 }],
        revoked_sessions: vec![RevokedSession { sid: "old-sid".into(), expires_at: NOW + 600 }],
        banned_subjects: vec![BannedSubject { sub: "old-sub".into(), not_before: NOW - 10, expires_at: NOW + 600 }],
    };
    assert!(list.apply_compact(encode(&feed, key()), ISSUER, MAX_ENTRIES, SKEW, NOW).is_ok());
    list
}

/// Another VM adopting what `list` shares holds the same entries.
fn assert_shares_the_same(list: &RevocationList) {
    let mut copy = RevocationList::default();
    copy.adopt_base(Blob::parse(list.set().base().bytes().to_vec()).expect("a shared base parses"));
    assert!(copy.adopt_overlay(Blob::parse(list.set().overlay().bytes().to_vec()).expect("a shared overlay parses")));
    assert_eq!(copy.len(), list.len());
    assert_eq!(copy.cursor(), list.cursor());
}

fn refused_changed_nothing(list: &RevocationList, before: usize) {
    assert_eq!(list.len(), before, "a refused feed changed the list");
    assert_eq!(list.set().cursor(), Some("0"));
}

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_COMPACT_FEED_BYTES {
        return;
    }
    // The compact layout: every digest a parsed feed carries is enforced.
    if let Ok(blob) = Blob::parse(data.to_vec()) {
        if !blob.is_snapshot() {
            let mut empty = RevocationList::default();
            assert!(empty.apply_compact(blob.clone(), ISSUER, MAX_ENTRIES, SKEW, NOW).is_err() && !empty.is_loaded(), "a delta loaded a list");
        }
        let mut list = existing();
        let before = list.len();
        if list.apply_compact(blob.clone(), ISSUER, MAX_ENTRIES, SKEW, NOW).is_err() {
            refused_changed_nothing(&list, before);
            return;
        }
        assert!(list.len() <= MAX_ENTRIES);
        for kind in Kind::ALL {
            for e in blob.entries(kind).filter(|e| e.expires_at.saturating_add(SKEW) >= NOW) {
                let held = [list.set().overlay(), list.set().base()].into_iter().filter_map(|run| run.find(kind, &e.digest)).count();
                assert!(held > 0, "an applied {kind:?} entry is not held");
            }
        }
        if !blob.is_snapshot() {
            assert!(list.check(&token(Some("old-jti"), None, None, Some(NOW)), SKEW, NOW).is_some(), "a delta dropped an earlier revocation");
        }
        assert_shares_the_same(&list);
        return;
    }
    // JSON, read as the filter reads it: what it accepts serde_json reads
    // the same; what only serde_json accepts has a member name twice or a
    // struct written as an array (refused on purpose).
    let ours = authflow_contract::json::from_slice::<RevocationFeed>(data);
    match (&ours, serde_json::from_slice::<RevocationFeed>(data)) {
        (Ok(feed), reference) => assert_eq!(Some(feed), reference.ok().as_ref(), "read otherwise than serde_json reads it"),
        (Err(e), Ok(_)) => {
            let refused_on_purpose = authflow_contract::json::borrowed::Json::read(data).is_err() || e.to_string().contains("invalid type: sequence, expected struct");
            assert!(refused_on_purpose, "refused what serde_json reads: {e}");
        }
        (Err(_), Err(_)) => {}
    }
    // Every value of an applied feed kills its tokens.
    let Ok(feed) = ours else { return };
    if !feed.snapshot {
        let mut empty = RevocationList::default();
        assert!(empty.apply(feed.clone(), ISSUER, MAX_ENTRIES, SKEW, NOW).is_err() && !empty.is_loaded(), "a delta loaded a list");
    }
    let mut list = existing();
    let before = list.len();
    // The tokens each live value must kill, checked (and found clean, so
    // memoized) before the feed lands: a delta must reach them through the
    // memo, which looks in the overlay alone while the base is unchanged.
    let live = |expires_at: u64| expires_at.saturating_add(SKEW) >= NOW;
    let must_die: Vec<(VerifiedToken, String)> = feed
        .revoked_tokens
        .iter()
        .filter(|t| live(t.expires_at))
        .map(|t| (token(Some(&t.jti), None, None, Some(NOW)), format!("revoked jti {:?}", t.jti)))
        .chain(feed.revoked_sessions.iter().filter(|s| live(s.expires_at)).map(|s| (token(None, Some(&s.sid), None, Some(NOW)), format!("revoked sid {:?}", s.sid))))
        .chain(feed.banned_subjects.iter().filter(|b| live(b.expires_at)).map(|b| (token(None, None, Some(&b.sub), b.not_before.checked_sub(1)), format!("banned sub {:?}", b.sub))))
        .collect();
    for (t, _) in &must_die {
        let _ = list.check(t, SKEW, NOW);
    }
    if list.apply(feed.clone(), ISSUER, MAX_ENTRIES, SKEW, NOW).is_err() {
        refused_changed_nothing(&list, before);
        return;
    }
    assert!(list.len() <= MAX_ENTRIES);
    for (t, what) in &must_die {
        assert!(list.check(t, SKEW, NOW).is_some(), "{what} passes");
    }
    assert_shares_the_same(&list);
});
