//! The revocation/ban list of one issuer, as pulled from the feed.
//!
//! Three maps, each entry with the time after which it can be forgotten, so
//! memory follows the number of *live* revocations, not history. "Forgotten"
//! means past `expires_at` plus this filter's clock skew: a token is accepted
//! until its `exp` plus the skew, and its revocation must last as long. A feed that
//! would push the list past its bound is refused whole (the list then goes
//! stale and the staleness policy decides) rather than silently dropping a
//! revocation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use authflow_contract::revocation::{still_needed, BannedSubject, RevocationFeed, RevokedSession, RevokedToken};

use crate::deny::DenyReason;
use crate::verify::VerifiedToken;

/// Each list a feed produces takes a new number from here, unique in the VM,
/// so a token's memo "not revoked in list N" can never match another list.
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

#[derive(Debug, Default, Clone)]
pub struct RevocationSet {
    tokens: HashMap<String, u64>,
    sessions: HashMap<String, u64>,
    /// sub → (not_before, expires_at)
    bans: HashMap<String, (u64, u64)>,
    cursor: Option<String>,
    /// Which list this is (0: the empty list nothing was applied to yet).
    generation: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ApplyError {
    WrongIssuer,
    TooManyEntries(usize),
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::WrongIssuer => write!(f, "feed is for another issuer"),
            Self::TooManyEntries(n) => write!(f, "feed would hold {n} live entries, over the configured maximum"),
        }
    }
}

impl RevocationSet {
    pub fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }

    pub fn len(&self) -> usize {
        self.tokens.len() + self.sessions.len() + self.bans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies a snapshot (replace) or delta (merge), then forgets the entries
    /// no token could outlive any more (see [`RevocationSet::prune`]).
    pub fn apply(&mut self, feed: RevocationFeed, issuer: &str, max_entries: usize, skew_secs: u64, now: u64) -> Result<(), ApplyError> {
        if feed.issuer != issuer {
            return Err(ApplyError::WrongIssuer);
        }
        let mut next = if feed.snapshot { RevocationSet::default() } else { self.clone_without_cursor() };
        for RevokedToken { jti, expires_at } in feed.revoked_tokens {
            let e = next.tokens.entry(jti).or_insert(expires_at);
            *e = (*e).max(expires_at);
        }
        for RevokedSession { sid, expires_at } in feed.revoked_sessions {
            let e = next.sessions.entry(sid).or_insert(expires_at);
            *e = (*e).max(expires_at);
        }
        for BannedSubject { sub, not_before, expires_at } in feed.banned_subjects {
            let e = next.bans.entry(sub).or_insert((not_before, expires_at));
            *e = (e.0.max(not_before), e.1.max(expires_at));
        }
        next.prune(skew_secs, now);
        if next.len() > max_entries {
            return Err(ApplyError::TooManyEntries(next.len()));
        }
        next.cursor = Some(feed.cursor);
        next.generation = NEXT_GENERATION.fetch_add(1, Ordering::Relaxed);
        *self = next;
        Ok(())
    }

    fn clone_without_cursor(&self) -> Self {
        RevocationSet { cursor: None, ..self.clone() }
    }

    /// Forgets entries past `expires_at` + `skew_secs`: until then a token they
    /// kill still passes the time checks, which tolerate the same skew.
    pub fn prune(&mut self, skew_secs: u64, now: u64) {
        let needed = |exp: &u64| still_needed(*exp, skew_secs, now);
        self.tokens.retain(|_, exp| needed(exp));
        self.sessions.retain(|_, exp| needed(exp));
        self.bans.retain(|_, (_, exp)| needed(exp));
    }

    /// Why this token is no longer good, if it is not.
    /// Why the token is revoked, if it is. A cached token found clean in this
    /// list is not looked up again until the list changes: lookups in a large
    /// list miss the CPU cache, and the list changes rarely. (Pruning only
    /// drops entries, so it never makes a clean token revoked.)
    pub fn check(&self, token: &VerifiedToken) -> Option<DenyReason> {
        // The common case (no feed, or nothing revoked) hashes nothing.
        if self.is_empty() || token.not_revoked_in.get() == self.generation {
            return None;
        }
        let found = self.lookup(token);
        if found.is_none() {
            token.not_revoked_in.set(self.generation);
        }
        found
    }

    fn lookup(&self, token: &VerifiedToken) -> Option<DenyReason> {
        if let Some(sub) = &token.subject {
            if let Some((not_before, _)) = self.bans.get(sub) {
                // Tokens issued before the ban die; a token without `iat` cannot prove it is newer.
                if token.issued_at.is_none_or(|iat| iat < *not_before) {
                    return Some(DenyReason::SubjectBanned);
                }
            }
        }
        // After the ban check: a ban usually ends the sessions too, and "account
        // disabled" is the answer that tells the client what happened.
        if token.sid.as_ref().is_some_and(|s| self.sessions.contains_key(s)) {
            return Some(DenyReason::SessionRevoked);
        }
        if token.jti.as_ref().is_some_and(|j| self.tokens.contains_key(j)) {
            return Some(DenyReason::TokenRevoked);
        }
        None
    }

    /// The whole list as a snapshot feed: how one VM hands it to the others.
    pub fn to_snapshot(&self, issuer: &str) -> RevocationFeed {
        RevocationFeed {
            issuer: issuer.to_owned(),
            cursor: self.cursor.clone().unwrap_or_default(),
            snapshot: true,
            revoked_tokens: self.tokens.iter().map(|(jti, &expires_at)| RevokedToken { jti: jti.clone(), expires_at }).collect(),
            revoked_sessions: self.sessions.iter().map(|(sid, &expires_at)| RevokedSession { sid: sid.clone(), expires_at }).collect(),
            banned_subjects: self
                .bans
                .iter()
                .map(|(sub, &(not_before, expires_at))| BannedSubject { sub: sub.clone(), not_before, expires_at })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(jti: &str, sid: &str, sub: &str, iat: u64) -> VerifiedToken {
        VerifiedToken {
            provider: crate::ProviderId::FIRST,
            issuer: "iss".into(),
            subject: Some(sub.into()),
            expires_at: iat + 900,
            not_before: None,
            issued_at: Some(iat),
            jti: Some(jti.into()),
            sid: Some(sid.into()),
            roles: vec![],
            scopes: vec![],
            dfp: None,
            identity_headers: std::rc::Rc::from(Vec::new()),
            not_revoked_in: std::cell::Cell::new(0),
        }
    }

    /// A cached token found clean is not looked up again — until the list
    /// changes, by a delta, a snapshot, or another list adopted wholesale.
    #[test]
    fn a_clean_memo_never_outlives_its_list() {
        let mut set = RevocationSet::default();
        let t = token("j1", "s1", "u1", 1000);
        assert_eq!(set.check(&t), None);
        let mut f = feed(true, "1");
        f.revoked_tokens.push(RevokedToken { jti: "other".into(), expires_at: 2000 });
        set.apply(f, "iss", 10, 0, 1000).unwrap();
        assert_eq!(set.check(&t), None);
        assert_eq!(set.check(&t), None, "memo hit");
        let mut f = feed(false, "2");
        f.revoked_tokens.push(RevokedToken { jti: "j1".into(), expires_at: 2000 });
        set.apply(f, "iss", 10, 0, 1000).unwrap();
        assert_eq!(set.check(&t), Some(DenyReason::TokenRevoked), "a delta revoking it wins over the memo");

        // A list built elsewhere (another VM's snapshot) never shares a number with this one.
        let t2 = token("j2", "s2", "u2", 1000);
        assert_eq!(set.check(&t2), None);
        let mut other = RevocationSet::default();
        let mut f = feed(true, "9");
        f.banned_subjects.push(BannedSubject { sub: "u2".into(), not_before: 1500, expires_at: 2400 });
        other.apply(f, "iss", 10, 0, 1000).unwrap();
        assert_eq!(other.check(&t2), Some(DenyReason::SubjectBanned));
        set = other;
        assert_eq!(set.check(&t2), Some(DenyReason::SubjectBanned));
    }

    fn feed(snapshot: bool, cursor: &str) -> RevocationFeed {
        RevocationFeed { issuer: "iss".into(), cursor: cursor.into(), snapshot, ..Default::default() }
    }

    #[test]
    fn deltas_snapshots_and_checks() {
        let mut set = RevocationSet::default();
        let mut f = feed(true, "1");
        f.revoked_tokens.push(RevokedToken { jti: "j1".into(), expires_at: 2000 });
        set.apply(f, "iss", 10, 0, 1000).unwrap();
        assert_eq!(set.check(&token("j1", "s", "u", 1000)), Some(DenyReason::TokenRevoked));
        assert_eq!(set.check(&token("j2", "s", "u", 1000)), None);

        let mut f = feed(false, "2");
        f.revoked_sessions.push(RevokedSession { sid: "s9".into(), expires_at: 2000 });
        f.banned_subjects.push(BannedSubject { sub: "bad".into(), not_before: 1500, expires_at: 2400 });
        set.apply(f, "iss", 10, 0, 1000).unwrap();
        assert_eq!(set.cursor(), Some("2"));
        assert_eq!(set.check(&token("j1", "s", "u", 1000)), Some(DenyReason::TokenRevoked), "delta keeps earlier entries");
        assert_eq!(set.check(&token("x", "s9", "u", 1000)), Some(DenyReason::SessionRevoked));
        assert_eq!(set.check(&token("x", "s", "bad", 1499)), Some(DenyReason::SubjectBanned));
        assert_eq!(set.check(&token("x", "s", "bad", 1500)), None, "tokens issued after the ban pass");

        set.apply(feed(true, "3"), "iss", 10, 0, 1000).unwrap();
        assert!(set.is_empty(), "a snapshot replaces everything");
    }

    /// An entry lasts until its `expires_at` plus the skew this filter allows,
    /// whatever prunes it: a later delta, a snapshot, another VM's copy.
    #[test]
    fn entries_are_forgotten_only_past_expiry_plus_skew() {
        let mut set = RevocationSet::default();
        let mut f = feed(true, "1");
        f.revoked_tokens.push(RevokedToken { jti: "old".into(), expires_at: 50 });
        f.revoked_tokens.push(RevokedToken { jti: "new".into(), expires_at: 500 });
        f.revoked_sessions.push(RevokedSession { sid: "s".into(), expires_at: 500 });
        f.banned_subjects.push(BannedSubject { sub: "u".into(), not_before: 400, expires_at: 500 });
        set.apply(f, "iss", 10, 30, 100).unwrap();
        assert_eq!(set.len(), 3, "50 + 30 < 100: only `old` is gone");

        // The next delta arrives one second past `expires_at`: nothing revives.
        let mut f = feed(false, "2");
        f.revoked_tokens.push(RevokedToken { jti: "later".into(), expires_at: 900 });
        set.apply(f, "iss", 10, 30, 501).unwrap();
        let t = token("new", "s", "u", 300);
        assert_eq!(set.lookup(&t), Some(DenyReason::SubjectBanned));
        assert_eq!(set.lookup(&token("x", "s", "v", 300)), Some(DenyReason::SessionRevoked));
        assert_eq!(set.lookup(&token("new", "x", "v", 300)), Some(DenyReason::TokenRevoked));

        let mut copy = RevocationSet::default();
        copy.apply(set.to_snapshot("iss"), "iss", 10, 30, 530).unwrap();
        assert_eq!(copy.len(), 4, "kept through exp + skew, inclusive");
        copy.prune(30, 531);
        assert_eq!(copy.len(), 1, "only `later` is left");
    }

    #[test]
    fn refuses_wrong_issuer_and_overflow_keeping_last_good() {
        let mut set = RevocationSet::default();
        let mut f = feed(true, "1");
        f.revoked_tokens.push(RevokedToken { jti: "a".into(), expires_at: 500 });
        set.apply(f, "iss", 1, 0, 100).unwrap();
        let mut other = feed(true, "2");
        other.issuer = "evil".into();
        assert_eq!(set.apply(other, "iss", 1, 0, 100), Err(ApplyError::WrongIssuer));
        let mut big = feed(false, "3");
        big.revoked_tokens.push(RevokedToken { jti: "b".into(), expires_at: 500 });
        assert_eq!(set.apply(big, "iss", 1, 0, 100), Err(ApplyError::TooManyEntries(2)));
        assert_eq!(set.cursor(), Some("1"));
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn snapshot_round_trip() {
        let mut set = RevocationSet::default();
        let mut f = feed(true, "7");
        f.revoked_tokens.push(RevokedToken { jti: "a".into(), expires_at: 500 });
        f.banned_subjects.push(BannedSubject { sub: "u".into(), not_before: 10, expires_at: 500 });
        set.apply(f, "iss", 10, 0, 100).unwrap();
        let mut copy = RevocationSet::default();
        copy.apply(set.to_snapshot("iss"), "iss", 10, 0, 100).unwrap();
        assert_eq!(copy.len(), 2);
        assert_eq!(copy.cursor(), Some("7"));
    }
}
