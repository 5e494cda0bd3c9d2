//! The revocation/ban list of one issuer in this VM: the contract's
//! [`RevocationSet`] (sorted runs of keyed digests, searched in place) plus
//! what only the filter needs — a number per list state, so a cached token
//! found clean is not looked up again until the list changes, and then only
//! in the overlay while the base it was found clean in is held.
//!
//! Entries are forgotten past `expires_at` plus this filter's clock skew (the
//! contract's rule). A feed that would push the list past its bound is
//! refused whole (the list then goes stale and the staleness policy decides)
//! rather than silently dropping a revocation.

use std::sync::atomic::{AtomicU64, Ordering};

use authflow_contract::revocation::{
    ApplyError, Blob, Change, Probe, RevocationFeed, RevocationSet, Revoked, Runs,
};

use crate::deny::DenyReason;
use crate::verify::VerifiedToken;

/// Each list state takes a new number from here, unique in the VM, so a
/// token's memo "not revoked in list N" can never match another list.
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

#[derive(Debug, Default)]
pub struct RevocationList {
    set: RevocationSet,
    /// Which list state this is (0: the empty list nothing was applied to yet).
    generation: u64,
    /// Which base the list holds: moves with a snapshot, a compaction,
    /// another VM's base, not with a delta (0: none yet).
    base_generation: u64,
    /// The list is off the feed's line: a delta did not fit it (another
    /// digest key, e.g. the service switched from JSON to the compact feed),
    /// or another VM's copy that should have replaced it was unreadable. The
    /// next poll asks for a snapshot; the list is kept meanwhile, but what
    /// another VM says is current no longer speaks of it.
    needs_snapshot: bool,
    /// The cursor the poll in flight was sent with (`None`: it asked for a
    /// snapshot): its answer speaks of the list as it was then, whatever
    /// this VM adopted since.
    polled_from: Option<String>,
    /// Another VM's copy was taken since that poll was sent.
    adopted_since_poll: bool,
}

impl RevocationList {
    /// The cursor to poll with (none: ask for a snapshot).
    pub fn cursor(&self) -> Option<&str> {
        self.set.cursor().filter(|_| !self.needs_snapshot)
    }

    /// The cursor a poll starting now sends, remembered for its answer.
    pub fn poll(&mut self) -> Option<&str> {
        self.polled_from = self.cursor().map(str::to_owned);
        self.adopted_since_poll = false;
        self.polled_from.as_deref()
    }

    /// Whether a list is held that is not the one the poll in flight was
    /// sent from (another VM's copy taken since): a snapshot answering the
    /// poll may be older than it.
    pub fn superseded_since_poll(&self) -> bool {
        self.is_loaded() && self.adopted_since_poll
    }

    /// The poll in flight is answered: the cursor it was sent with, if it
    /// still is the list's. Only then does a delta or a `304` answering it
    /// speak of this list (never for a poll that asked for a snapshot).
    pub fn end_poll(&mut self) -> Option<String> {
        self.polled_from
            .take()
            .filter(|from| self.cursor() == Some(from))
    }

    /// Whether the next poll asks for a snapshot though a list is held.
    pub fn needs_snapshot(&self) -> bool {
        self.needs_snapshot
    }

    /// Another VM's copy could not be taken: the list held stays, asks for a
    /// snapshot, and goes stale unless this VM's own poll keeps it current.
    pub fn off_feed(&mut self) {
        self.needs_snapshot = true;
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether the list holds a feed: until the first one lands (and after
    /// it is emptied to take another VM's copy) no token can be judged by it.
    pub fn is_loaded(&self) -> bool {
        self.set.is_loaded()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Memory the list holds.
    pub fn bytes_held(&self) -> usize {
        self.set.bytes_held()
    }

    pub fn set(&self) -> &RevocationSet {
        &self.set
    }

    /// Another VM says the list at `cursor` forgot entries at `at` (see
    /// [`RevocationSet::learn_forgot_at`]): taken if this is that list.
    pub fn forgotten_at(&mut self, cursor: &str, at: u64) {
        if self.set.cursor() == Some(cursor) {
            self.set.learn_forgot_at(at);
        }
    }

    /// Applies a feed in the compact layout (snapshot: replace, delta: extend).
    pub fn apply_compact(
        &mut self,
        feed: Blob,
        issuer: &str,
        max_entries: usize,
        skew_secs: u64,
        now: u64,
    ) -> Result<Change, ApplyError> {
        let applied = self.set.apply(feed, issuer, max_entries, skew_secs, now);
        self.applied(applied)
    }

    /// Applies a JSON feed (a service that does not speak the compact one).
    pub fn apply(
        &mut self,
        feed: RevocationFeed,
        issuer: &str,
        max_entries: usize,
        skew_secs: u64,
        now: u64,
    ) -> Result<Change, ApplyError> {
        let applied = self
            .set
            .apply_values(&feed, issuer, max_entries, skew_secs, now);
        self.applied(applied)
    }

    fn applied(&mut self, applied: Result<Change, ApplyError>) -> Result<Change, ApplyError> {
        match &applied {
            Ok(change) => {
                self.needs_snapshot = false;
                match change {
                    Change::Base => self.base_moved(),
                    Change::Overlay => self.moved(),
                }
            }
            Err(ApplyError::KeyMismatch | ApplyError::ClockSteppedBack) => {
                self.needs_snapshot = true
            }
            Err(_) => {}
        }
        applied
    }

    /// Empties the list: it is stale until a snapshot or a shared copy lands.
    pub fn clear(&mut self) {
        self.set.clear();
        self.base_moved();
    }

    /// Takes over the base another VM shared (it replaces the list held).
    pub fn adopt_base(&mut self, base: Blob) {
        self.set.adopt_base(base);
        self.needs_snapshot = false;
        self.adopted_since_poll = true;
        self.base_moved();
    }

    /// Takes over the overlay another VM shared; false when it extends a
    /// base this VM does not hold yet (it is then taken after that base).
    pub fn adopt_overlay(&mut self, overlay: Blob) -> bool {
        let taken = self.set.adopt_overlay(overlay);
        if taken {
            self.adopted_since_poll = true;
            self.moved();
        }
        taken
    }

    fn moved(&mut self) {
        self.generation = NEXT_GENERATION.fetch_add(1, Ordering::Relaxed);
    }

    fn base_moved(&mut self) {
        self.moved();
        self.base_generation = self.generation;
    }

    /// Why the token is revoked, if it is. A cached token found clean in this
    /// list is not looked up again until the list changes: lookups in a large
    /// list miss the CPU cache. Under a stream of revocations the list
    /// changes every poll, but only its overlay: a token found clean in the
    /// base held is then looked up in the overlay alone (deltas only add
    /// entries). Time only makes entries forgotten, so it never makes a
    /// clean token revoked.
    #[inline] // into `Engine::evaluate`, its one caller: the module's size
    pub fn check(&self, token: &VerifiedToken, skew_secs: u64, now: u64) -> Option<DenyReason> {
        // The common case (no feed, or nothing revoked) hashes nothing.
        if self.is_empty() || token.not_revoked_in.get() == self.generation {
            return None;
        }
        // (A list holding entries has a base: its number is never 0.)
        let runs = if token.clean_in_base.get() == self.base_generation {
            Runs::Overlay
        } else {
            Runs::Both
        };
        let found = self.lookup(token, runs, skew_secs, now);
        if found.is_none() {
            token.not_revoked_in.set(self.generation);
            token.clean_in_base.set(self.base_generation);
        }
        found
    }

    fn lookup(
        &self,
        token: &VerifiedToken,
        runs: Runs,
        skew_secs: u64,
        now: u64,
    ) -> Option<DenyReason> {
        let probe = Probe {
            jti: token.jti.as_deref(),
            sid: token.sid.as_deref(),
            sub: token.subject.as_deref(),
            issued_at: token.issued_at,
        };
        self.set
            .check_in(runs, &probe, skew_secs, now)
            .map(|r| match r {
                Revoked::SubjectBanned => DenyReason::SubjectBanned,
                Revoked::SessionRevoked => DenyReason::SessionRevoked,
                Revoked::TokenRevoked => DenyReason::TokenRevoked,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use authflow_contract::revocation::set::COMPACT_AT;
    use authflow_contract::revocation::{BannedSubject, RevokedSession, RevokedToken};

    fn token(jti: &str, sid: &str, sub: &str, iat: u64) -> VerifiedToken {
        VerifiedToken {
            subject: Some(sub.into()),
            issued_at: Some(iat),
            jti: Some(jti.into()),
            sid: Some(sid.into()),
            ..VerifiedToken::new(crate::ProviderId::FIRST, "iss".into(), iat + 900)
        }
    }

    fn feed(snapshot: bool, cursor: &str) -> RevocationFeed {
        RevocationFeed {
            issuer: "iss".into(),
            cursor: cursor.into(),
            snapshot,
            ..Default::default()
        }
    }

    /// A cached token found clean is not looked up again — until the list
    /// changes, by a delta, a snapshot, or another list adopted wholesale.
    #[test]
    fn a_clean_memo_never_outlives_its_list() {
        let mut set = RevocationList::default();
        let t = token("j1", "s1", "u1", 1000);
        assert_eq!(set.check(&t, 0, 1000), None);
        let mut f = feed(true, "1");
        f.revoked_tokens.push(RevokedToken {
            jti: "other".into(),
            expires_at: 2000,
        });
        set.apply(f, "iss", 10, 0, 1000).unwrap();
        assert_eq!(set.check(&t, 0, 1000), None);
        assert_eq!(set.check(&t, 0, 1000), None, "memo hit");
        let mut f = feed(false, "2");
        f.revoked_tokens.push(RevokedToken {
            jti: "j1".into(),
            expires_at: 2000,
        });
        set.apply(f, "iss", 10, 0, 1000).unwrap();
        assert_eq!(
            set.check(&t, 0, 1000),
            Some(DenyReason::TokenRevoked),
            "a delta revoking it wins over the memo"
        );

        // A list built elsewhere (another VM's copy) never shares a number with this one.
        let t2 = token("j2", "s2", "u2", 1000);
        assert_eq!(set.check(&t2, 0, 1000), None);
        let mut other = RevocationList::default();
        let mut f = feed(true, "9");
        f.banned_subjects.push(BannedSubject {
            sub: "u2".into(),
            not_before: 1500,
            expires_at: 2400,
        });
        other.apply(f, "iss", 10, 0, 1000).unwrap();
        set.clear();
        set.adopt_base(other.set().base().clone());
        assert_eq!(set.check(&t2, 0, 1000), Some(DenyReason::SubjectBanned));
    }

    /// Tokens keep their memos across every kind of change — deltas,
    /// compactions, snapshots, another VM's base and overlay — and the
    /// memoized answer (an overlay-only lookup while the base is the one a
    /// token was found clean in) is always the whole list's.
    #[test]
    fn memoized_checks_always_agree_with_the_whole_list() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let tokens: Vec<VerifiedToken> = (0..40)
            .map(|i| {
                token(
                    &format!("j{}", i % 20),
                    &format!("s{}", i % 13),
                    &format!("u{}", i % 7),
                    1000 + (i % 5) * 100,
                )
            })
            .collect();
        let mut cursor = 0u64;
        let mut random_feed = |snapshot: bool, n: u64, next: &mut dyn FnMut(u64) -> u64| {
            cursor += 1;
            let mut f = feed(snapshot, &cursor.to_string());
            for _ in 0..n {
                match next(3) {
                    0 => f.revoked_tokens.push(RevokedToken {
                        jti: format!("j{}", next(30)),
                        expires_at: 5000,
                    }),
                    1 => f.revoked_sessions.push(RevokedSession {
                        sid: format!("s{}", next(20)),
                        expires_at: 5000,
                    }),
                    _ => f.banned_subjects.push(BannedSubject {
                        sub: format!("u{}", next(10)),
                        not_before: 900 + next(600),
                        expires_at: 5000,
                    }),
                }
            }
            f
        };
        let (mut revoked_seen, mut overlay_only_rounds) = (0, 0);
        for round in 0..300 {
            let mut list = RevocationList::default();
            list.apply(
                random_feed(true, next(6), &mut next),
                "iss",
                100_000,
                0,
                1000,
            )
            .unwrap();
            for step in 0..12 {
                let base_before = list.base_generation;
                match next(10) {
                    0 => drop(
                        list.apply(
                            random_feed(true, next(6), &mut next),
                            "iss",
                            100_000,
                            0,
                            1000,
                        )
                        .unwrap(),
                    ),
                    // Past `COMPACT_AT`: the overlay folds into a new base.
                    1 if round % 10 == 0 => drop(
                        list.apply(
                            random_feed(false, COMPACT_AT as u64 + 1, &mut next),
                            "iss",
                            100_000,
                            0,
                            1000,
                        )
                        .unwrap(),
                    ),
                    2 => {
                        // Another VM's copy: its base, then its overlay.
                        let mut other = RevocationList::default();
                        other
                            .apply(
                                random_feed(true, next(6), &mut next),
                                "iss",
                                100_000,
                                0,
                                1000,
                            )
                            .unwrap();
                        other
                            .apply(
                                random_feed(false, next(3), &mut next),
                                "iss",
                                100_000,
                                0,
                                1000,
                            )
                            .unwrap();
                        if next(2) == 0 {
                            list.clear();
                        }
                        list.adopt_base(other.set().base().clone());
                        assert!(list.adopt_overlay(other.set().overlay().clone()));
                    }
                    _ => drop(
                        list.apply(
                            random_feed(false, 1 + next(2), &mut next),
                            "iss",
                            100_000,
                            0,
                            1000,
                        )
                        .unwrap(),
                    ),
                }
                if list.base_generation == base_before {
                    overlay_only_rounds += 1;
                }
                for t in &tokens {
                    let whole = list.lookup(t, Runs::Both, 0, 1000);
                    assert_eq!(
                        list.check(t, 0, 1000),
                        whole,
                        "round {round} step {step}: {:?}",
                        t.jti
                    );
                    assert_eq!(list.check(t, 0, 1000), whole, "again, from the memo");
                    revoked_seen += usize::from(whole.is_some());
                }
            }
        }
        assert!(
            revoked_seen > 1000 && overlay_only_rounds > 1000,
            "the sequences exercise both paths: {revoked_seen} {overlay_only_rounds}"
        );
    }

    #[test]
    fn deltas_snapshots_and_checks() {
        let mut set = RevocationList::default();
        let mut f = feed(true, "1");
        f.revoked_tokens.push(RevokedToken {
            jti: "j1".into(),
            expires_at: 2000,
        });
        set.apply(f, "iss", 10, 0, 1000).unwrap();
        assert_eq!(
            set.check(&token("j1", "s", "u", 1000), 0, 1000),
            Some(DenyReason::TokenRevoked)
        );
        assert_eq!(set.check(&token("j2", "s", "u", 1000), 0, 1000), None);

        let mut f = feed(false, "2");
        f.revoked_sessions.push(RevokedSession {
            sid: "s9".into(),
            expires_at: 2000,
        });
        f.banned_subjects.push(BannedSubject {
            sub: "bad".into(),
            not_before: 1500,
            expires_at: 2400,
        });
        set.apply(f, "iss", 10, 0, 1000).unwrap();
        assert_eq!(set.cursor(), Some("2"));
        assert_eq!(
            set.check(&token("j1", "s", "u", 1000), 0, 1000),
            Some(DenyReason::TokenRevoked),
            "delta keeps earlier entries"
        );
        assert_eq!(
            set.check(&token("x", "s9", "u", 1000), 0, 1000),
            Some(DenyReason::SessionRevoked)
        );
        assert_eq!(
            set.check(&token("x", "s", "bad", 1499), 0, 1000),
            Some(DenyReason::SubjectBanned)
        );
        assert_eq!(
            set.check(&token("x", "s", "bad", 1500), 0, 1000),
            None,
            "tokens issued after the ban pass"
        );

        set.apply(feed(true, "3"), "iss", 10, 0, 1000).unwrap();
        assert!(set.is_empty(), "a snapshot replaces everything");
    }

    /// An entry lasts until its `expires_at` plus the skew this filter allows,
    /// whatever prunes it: a later delta, a snapshot, another VM's copy.
    #[test]
    fn entries_are_forgotten_only_past_expiry_plus_skew() {
        let mut set = RevocationList::default();
        let mut f = feed(true, "1");
        f.revoked_tokens.push(RevokedToken {
            jti: "old".into(),
            expires_at: 50,
        });
        f.revoked_tokens.push(RevokedToken {
            jti: "new".into(),
            expires_at: 500,
        });
        f.revoked_sessions.push(RevokedSession {
            sid: "s".into(),
            expires_at: 500,
        });
        f.banned_subjects.push(BannedSubject {
            sub: "u".into(),
            not_before: 400,
            expires_at: 500,
        });
        set.apply(f, "iss", 10, 30, 100).unwrap();
        assert_eq!(set.len(), 3, "50 + 30 < 100: only `old` is gone");

        // The next delta arrives one second past `expires_at`: nothing revives.
        let mut f = feed(false, "2");
        f.revoked_tokens.push(RevokedToken {
            jti: "later".into(),
            expires_at: 900,
        });
        set.apply(f, "iss", 10, 30, 501).unwrap();
        assert_eq!(
            set.lookup(&token("new", "s", "u", 300), Runs::Both, 30, 530),
            Some(DenyReason::SubjectBanned)
        );
        assert_eq!(
            set.lookup(&token("x", "s", "v", 300), Runs::Both, 30, 530),
            Some(DenyReason::SessionRevoked)
        );
        assert_eq!(
            set.lookup(&token("new", "x", "v", 300), Runs::Both, 30, 530),
            Some(DenyReason::TokenRevoked),
            "kept through exp + skew, inclusive"
        );
        assert_eq!(
            set.lookup(&token("new", "s", "u", 300), Runs::Both, 30, 531),
            None,
            "forgotten one second later"
        );
        assert_eq!(
            set.lookup(&token("later", "x", "v", 300), Runs::Both, 30, 531),
            Some(DenyReason::TokenRevoked)
        );
    }

    #[test]
    fn refuses_wrong_issuer_and_overflow_keeping_last_good() {
        let mut set = RevocationList::default();
        let mut f = feed(true, "1");
        f.revoked_tokens.push(RevokedToken {
            jti: "a".into(),
            expires_at: 500,
        });
        set.apply(f, "iss", 1, 0, 100).unwrap();
        let mut other = feed(true, "2");
        other.issuer = "evil".into();
        assert_eq!(
            set.apply(other, "iss", 1, 0, 100),
            Err(ApplyError::WrongIssuer)
        );
        let mut big = feed(false, "3");
        big.revoked_tokens.push(RevokedToken {
            jti: "b".into(),
            expires_at: 500,
        });
        assert_eq!(
            set.apply(big, "iss", 1, 0, 100),
            Err(ApplyError::TooManyEntries(2))
        );
        assert_eq!(set.cursor(), Some("1"));
        assert_eq!(set.len(), 1);
    }

    /// A compact delta on a list built from JSON (a service upgraded in
    /// between) cannot be merged: the list is kept and a snapshot asked for.
    #[test]
    fn a_delta_of_another_key_asks_for_a_snapshot() {
        let mut set = RevocationList::default();
        let mut f = feed(true, "e1.1");
        f.revoked_tokens.push(RevokedToken {
            jti: "a".into(),
            expires_at: 500,
        });
        set.apply(f, "iss", 10, 0, 100).unwrap();
        let mut delta = feed(false, "e1.2");
        delta.revoked_tokens.push(RevokedToken {
            jti: "b".into(),
            expires_at: 500,
        });
        let compact = authflow_contract::revocation::set::encode(
            &delta,
            authflow_contract::revocation::SetKey::derive("iss", "e1"),
        );
        assert_eq!(
            set.apply_compact(compact, "iss", 10, 0, 100),
            Err(ApplyError::KeyMismatch)
        );
        assert_eq!(set.cursor(), None, "the next poll asks for a snapshot");
        assert_eq!(
            set.check(&token("a", "s", "u", 50), 0, 100),
            Some(DenyReason::TokenRevoked),
            "the list is kept meanwhile"
        );
        let mut snapshot = feed(true, "e1.2");
        snapshot.revoked_tokens = vec![
            RevokedToken {
                jti: "a".into(),
                expires_at: 500,
            },
            RevokedToken {
                jti: "b".into(),
                expires_at: 500,
            },
        ];
        let compact = authflow_contract::revocation::set::encode(
            &snapshot,
            authflow_contract::revocation::SetKey::derive("iss", "e1"),
        );
        set.apply_compact(compact, "iss", 10, 0, 100).unwrap();
        assert_eq!(set.cursor(), Some("e1.2"));
        assert_eq!(
            set.check(&token("b", "s", "u", 50), 0, 100),
            Some(DenyReason::TokenRevoked)
        );
    }

    /// What one VM shares (its base and overlay bytes) another VM adopts as
    /// is; an overlay of a base it has not adopted yet waits for that base.
    #[test]
    fn shared_copies_round_trip() {
        let mut leader = RevocationList::default();
        let mut f = feed(true, "7");
        f.revoked_tokens.push(RevokedToken {
            jti: "a".into(),
            expires_at: 500,
        });
        f.banned_subjects.push(BannedSubject {
            sub: "u".into(),
            not_before: 10,
            expires_at: 500,
        });
        leader.apply(f, "iss", 10, 0, 100).unwrap();
        let mut f = feed(false, "8");
        f.revoked_sessions.push(RevokedSession {
            sid: "s".into(),
            expires_at: 500,
        });
        assert_eq!(leader.apply(f, "iss", 10, 0, 100), Ok(Change::Overlay));

        let mut follower = RevocationList::default();
        let overlay = Blob::parse(leader.set().overlay().bytes().to_vec()).unwrap();
        assert!(!follower.adopt_overlay(overlay.clone()), "no base yet");
        follower.adopt_base(Blob::parse(leader.set().base().bytes().to_vec()).unwrap());
        assert!(follower.adopt_overlay(overlay));
        assert_eq!(follower.len(), 3);
        assert_eq!(follower.cursor(), Some("8"));
        assert_eq!(
            follower.check(&token("x", "s", "v", 50), 0, 100),
            Some(DenyReason::SessionRevoked)
        );
        assert_eq!(
            follower.check(&token("a", "x", "v", 50), 0, 100),
            Some(DenyReason::TokenRevoked)
        );
    }
}
