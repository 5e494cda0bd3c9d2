//! Keeping each provider's revocation list current in one VM, as the
//! background side does it: a fetched feed applied, the base and overlay
//! another worker VM shared adopted, and the time the list was last known
//! current (what staleness is measured from). The glue only moves bytes
//! between the host's shared data and these.
//!
//! The worker VMs of one Envoy share the list as the lease VM holds it: the
//! base (replaced on a snapshot or a compaction) and the overlay (the deltas
//! since). A delta alone means nothing without its base, so a VM adopts the
//! base first and an overlay only once it holds that overlay's base; and a
//! delta the feed answers is taken only onto the list its poll was sent
//! from. A list is replaced only by one that has parsed.

use authflow_contract::revocation::set::CLOCK_STEP_BACK_TOLERANCE_SECS;
use authflow_contract::revocation::{ApplyError, Blob, Change, MAX_CLOCK_SKEW_SECS};

use crate::engine::Engine;
use crate::fetch::{FeedBody, FetchEnd};
use crate::provider_id::ProviderId;

/// One VM's word that the list at `cursor` was current at `at_ms` (its
/// poll got nothing newer), and that it forgot entries last at
/// `forgot_secs` (see [`RevocationSet::learn_forgot_at`]): shared with the
/// other VMs as `<at_ms> <forgot_secs> <cursor>`.
///
/// [`RevocationSet::learn_forgot_at`]: authflow_contract::revocation::RevocationSet::learn_forgot_at
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FreshStamp {
    pub at_ms: u64,
    pub forgot_secs: u64,
    pub cursor: String,
}

impl FreshStamp {
    pub fn to_bytes(&self) -> Vec<u8> {
        format!("{} {} {}", self.at_ms, self.forgot_secs, self.cursor).into_bytes()
    }

    pub fn parse(bytes: &[u8]) -> Option<FreshStamp> {
        let (at_ms, rest) = std::str::from_utf8(bytes).ok()?.split_once(' ')?;
        let (forgot_secs, cursor) = rest.split_once(' ')?;
        Some(FreshStamp {
            at_ms: at_ms.parse().ok()?,
            forgot_secs: forgot_secs.parse().ok()?,
            cursor: cursor.to_owned(),
        })
    }
}

/// A feed applied: how the fetch ended, and what the other VMs must take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedApplied {
    /// News (`Fresh`) only when the cursor moved: a long poll goes on at
    /// once only after news.
    pub end: FetchEnd,
    /// The base changed (a snapshot, or a delta that compacted into it):
    /// share the base again, then the overlay. Otherwise the overlay alone.
    pub base_changed: bool,
}

/// How long past its `expires_at` this VM keeps an entry: the longest skew
/// any configuration may allow, and the time a request's clock may lag the
/// clock the list is pruned by. A poll answer is applied at the callout's
/// own reading, but a request is judged with the last tick's, a second or
/// more behind on a starved worker; an entry forgotten by the newer reading
/// would let its token through for as long (the same as a clock stepped
/// back, which this also covers).
const KEPT_PAST_EXPIRY_SECS: u64 = MAX_CLOCK_SKEW_SECS + CLOCK_STEP_BACK_TOLERANCE_SECS;

/// Marks a list current at `at_ms` (at most `now_ms`). The mark never moves
/// back, except from a reading later than `now_ms`: the wall clock stepped
/// back since, and that old reading would otherwise keep the list "fresh"
/// (see `Engine::evaluate`, which measures the age both ways) for as long as
/// the step, whatever the feed answers meanwhile.
fn mark_fresh(fresh_at_ms: &mut u64, at_ms: u64, now_ms: u64) {
    *fresh_at_ms = if *fresh_at_ms > now_ms {
        at_ms
    } else {
        (*fresh_at_ms).max(at_ms)
    };
}

/// Whether a list of `len` entries holds more than `max` live ones
/// (`live` counts them; only asked when `len` is over).
fn over_bound(len: usize, max: usize, live: impl FnOnce() -> usize) -> bool {
    len > max && live() > max
}

impl Engine {
    /// The cursor the next poll of `id` sends (none: it asks for a
    /// snapshot), remembered as the one its answer is judged against.
    pub fn revocation_poll(&mut self, id: ProviderId) -> Option<String> {
        self.provider_mut(id)?.revocations.poll().map(str::to_owned)
    }

    /// How long the service may hold the next long poll of `id` (at most
    /// `wait_ms`): its answer, which marks the list fresh, must come before
    /// the list goes stale, `timeout_ms` allowed for the network. A poll
    /// retried after one that failed late in its wait, or the first of a VM
    /// that just took the lease, has less than the full wait left.
    pub fn revocation_wait_ms(
        &self,
        id: ProviderId,
        now_ms: u64,
        wait_ms: u64,
        timeout_ms: u64,
    ) -> u64 {
        let Some(state) = self.provider(id) else {
            return 0;
        };
        let fresh_at = state.revocations_fresh_at_ms;
        if fresh_at > now_ms {
            // Read before the wall clock stepped back: how old is unknown.
            return 0;
        }
        let stale_at = fresh_at.saturating_add(self.config.revocation.max_staleness_ms);
        stale_at
            .saturating_sub(now_ms)
            .saturating_sub(timeout_ms)
            .min(wait_ms)
    }

    /// Applies a feed fetched for `id` (the answer to the last
    /// [`revocation_poll`](Self::revocation_poll)) and marks the list
    /// current. A delta is taken only onto the list its poll was sent from:
    /// one answering a poll for a snapshot, or reaching a list that changed
    /// meanwhile (another VM's copy adopted, or none loaded), is refused
    /// ([`ApplyError::DeltaWithoutBase`]); a snapshot is refused by a list
    /// taken from another VM since the poll was sent
    /// ([`ApplyError::Superseded`]: it may be the older of the two). A
    /// refused feed leaves the list and its freshness as they were.
    pub fn apply_feed(
        &mut self,
        id: ProviderId,
        body: FeedBody,
        now_ms: u64,
    ) -> Result<FeedApplied, ApplyError> {
        // Entries are kept for the longest skew any configuration may allow,
        // not this one's: the list this VM builds is shared with every
        // configuration that trusts this issuer through this source (and
        // with the next one, on a configuration update), and one that allows
        // more skew accepts a token, so needs its revocation, for longer
        // (and a little longer still: [`KEPT_PAST_EXPIRY_SECS`]).
        // Each lookup still ignores what is past `expires_at` plus its own skew.
        let (max, skew) = (self.config.revocation.max_entries, KEPT_PAST_EXPIRY_SECS);
        let Some(issuer) = self.config.provider(id).map(|p| p.issuer.clone()) else {
            return Err(ApplyError::WrongIssuer);
        };
        let Some(state) = self.provider_mut(id) else {
            return Err(ApplyError::WrongIssuer);
        };
        let list = &mut state.revocations;
        let superseded = list.superseded_since_poll();
        let sent_cursor = list.end_poll();
        let snapshot = match &body {
            FeedBody::Compact(blob) => blob.is_snapshot(),
            FeedBody::Json(feed) => feed.snapshot,
        };
        if !snapshot && sent_cursor.is_none() {
            return Err(ApplyError::DeltaWithoutBase);
        }
        if snapshot && superseded {
            return Err(ApplyError::Superseded);
        }
        let change = match body {
            FeedBody::Compact(blob) => list.apply_compact(blob, &issuer, max, skew, now_ms / 1000),
            FeedBody::Json(feed) => list.apply(feed, &issuer, max, skew, now_ms / 1000),
        }?;
        let moved = list.cursor() != sent_cursor.as_deref();
        mark_fresh(&mut state.revocations_fresh_at_ms, now_ms, now_ms);
        Ok(FeedApplied {
            end: if moved {
                FetchEnd::Fresh { etag: None }
            } else {
                FetchEnd::NotModified
            },
            base_changed: change == Change::Base,
        })
    }

    /// The poll of `id` was answered `304` at `now_ms`: the list is current
    /// if it still holds the cursor the poll was sent with. Whether it is.
    pub fn revocations_unchanged(&mut self, id: ProviderId, now_ms: u64) -> bool {
        let Some(state) = self.provider_mut(id) else {
            return false;
        };
        let current = state.revocations.end_poll().is_some();
        if current {
            mark_fresh(&mut state.revocations_fresh_at_ms, now_ms, now_ms);
        }
        current
    }

    /// What this VM tells the others after its poll of `id` found the list
    /// current at `now_ms` (none: it holds no list a poll can go on from).
    pub fn fresh_stamp(&self, id: ProviderId, now_ms: u64) -> Option<FreshStamp> {
        let list = &self.provider(id)?.revocations;
        Some(FreshStamp {
            at_ms: now_ms,
            forgot_secs: list.set().forgot_at(),
            cursor: list.cursor()?.to_owned(),
        })
    }

    /// Another VM found the list of `id` current ([`fresh_stamp`](Self::fresh_stamp)).
    /// That speaks only of the list it polled from: a VM holding another
    /// one (older, newer, or none it could read) is not made current by it.
    /// Never moves back (but see [`mark_fresh`]: a clock that stepped back).
    /// `now_ms`: this VM's clock; a stamp later than it was written before
    /// the clock stepped back and says nothing of how old the list is now.
    ///
    /// When the list at that cursor forgot entries is taken whatever the
    /// stamp's time (a time ahead of the clock is what a step back is
    /// measured against), before [`distrust_revocations_forgotten_ahead`](Self::distrust_revocations_forgotten_ahead).
    pub fn revocations_current_at(&mut self, id: ProviderId, stamp: &FreshStamp, now_ms: u64) {
        let Some(state) = self.provider_mut(id) else {
            return;
        };
        state
            .revocations
            .forgotten_at(&stamp.cursor, stamp.forgot_secs);
        if stamp.at_ms <= now_ms && state.revocations.cursor() == Some(stamp.cursor.as_str()) {
            mark_fresh(&mut state.revocations_fresh_at_ms, stamp.at_ms, now_ms);
        }
    }

    /// Empties the list of `id`: it is stale until a snapshot or another
    /// VM's base lands (a delta loads no list).
    pub fn clear_revocations(&mut self, id: ProviderId) {
        if let Some(state) = self.provider_mut(id) {
            state.revocations.clear();
        }
    }

    /// Takes the base another VM shared in place of the list of `id` (the
    /// list held is dropped only once the new one has parsed). False when
    /// the bytes are no base: the list held then stays, asks for a snapshot
    /// when this VM polls, and is no longer made current by what the other
    /// VMs fetch, so it goes stale and the staleness policy decides, until a
    /// readable base comes.
    ///
    /// A base over this configuration's `revocation.max_entries` is not
    /// taken either: another configuration (trusting the issuer through the
    /// same source, with a larger bound) may have built it, and this one's
    /// VMs would hold what its own poll refuses.
    pub fn adopt_revocation_base(&mut self, id: ProviderId, bytes: Vec<u8>, now_ms: u64) -> bool {
        let max = self.config.revocation.max_entries;
        let Some(state) = self.provider_mut(id) else {
            return false;
        };
        match Blob::parse(bytes) {
            Ok(base)
                if over_bound(base.len(), max, || {
                    base.count_needed(KEPT_PAST_EXPIRY_SECS, now_ms / 1000)
                }) =>
            {
                state.revocations.off_feed();
                false
            }
            Ok(base) => {
                state.revocations.adopt_base(base);
                true
            }
            Err(_) => {
                state.revocations.off_feed();
                false
            }
        }
    }

    /// Takes the overlay another VM shared. False when it is unreadable or
    /// extends a base this VM does not hold yet: it is then taken again
    /// after that base.
    pub fn adopt_revocation_overlay(
        &mut self,
        id: ProviderId,
        bytes: Vec<u8>,
        now_ms: u64,
    ) -> bool {
        let max = self.config.revocation.max_entries;
        let Some(state) = self.provider_mut(id) else {
            return false;
        };
        if state.revocations.cursor().is_none() {
            return false;
        }
        let Ok(overlay) = Blob::parse(bytes) else {
            return false;
        };
        // Over this configuration's bound (see `adopt_revocation_base`).
        let base = state.revocations.set().base();
        let total = base.len() + overlay.len();
        if over_bound(total, max, || {
            base.count_needed(KEPT_PAST_EXPIRY_SECS, now_ms / 1000)
                + overlay.count_needed(KEPT_PAST_EXPIRY_SECS, now_ms / 1000)
        }) {
            state.revocations.off_feed();
            return false;
        }
        state.revocations.adopt_overlay(overlay)
    }

    /// Whether the clock stepped back below a time the list of `id` forgot
    /// entries at (see [`RevocationSet::clock_stepped_back`]): the entries
    /// forgotten then may cover tokens that pass again now, and no delta
    /// resends them. The list then vouches for nothing (the staleness
    /// policy decides) until a snapshot replaces it: this VM's next poll
    /// asks for one, and neither a `304`, a delta, nor another VM's stamp
    /// makes it current; another VM's base taken since does. True only
    /// when this call found it (for one log line).
    ///
    /// [`RevocationSet::clock_stepped_back`]: authflow_contract::revocation::RevocationSet::clock_stepped_back
    pub fn distrust_revocations_forgotten_ahead(&mut self, id: ProviderId, now_ms: u64) -> bool {
        let Some(state) = self.provider_mut(id) else {
            return false;
        };
        if !state.revocations.set().clock_stepped_back(now_ms / 1000) {
            return false;
        }
        state.revocations.off_feed();
        std::mem::take(&mut state.revocations_fresh_at_ms) != 0
    }

    /// The base and the overlay of `id` as this VM holds them, for the others.
    pub fn revocation_blobs(&self, id: ProviderId) -> Option<(&[u8], &[u8])> {
        let set = self.provider(id)?.revocations.set();
        Some((set.base().bytes(), set.overlay().bytes()))
    }

    /// How many entries the list of `id` holds.
    pub fn revocation_entries(&self, id: ProviderId) -> usize {
        self.provider(id).map_or(0, |p| p.revocations.len())
    }
}

#[cfg(test)]
mod tests {
    use authflow_contract::revocation::{
        BannedSubject, Probe, RevocationFeed, RevokedSession, RevokedToken,
    };

    use super::*;
    use crate::FilterConfig;

    const ISS: &str = "https://auth.test";
    const NOW_MS: u64 = 1_900_000_000_000;
    /// The reader's clock when it takes another VM's stamp (after every stamp here).
    const LATER_MS: u64 = NOW_MS + 60_000;

    fn engine() -> Engine {
        let config = serde_json::json!({"providers": [{"name": "p", "issuer": ISS, "audiences": ["api"], "algorithms": ["EdDSA"],
            "jwks": {"remote": {"cluster": "auth", "path": "/jwks"}},
            "revocations": {"cluster": "auth", "path": "/v1/revocations"}}]});
        Engine::new(
            FilterConfig::from_json(config.to_string().as_bytes()).unwrap(),
            NOW_MS,
        )
    }

    fn feed(cursor: &str, snapshot: bool, jti: &str) -> FeedBody {
        let expires_at = NOW_MS / 1000 + 900;
        FeedBody::Json(RevocationFeed {
            issuer: ISS.into(),
            cursor: cursor.into(),
            snapshot,
            revoked_tokens: vec![RevokedToken {
                jti: jti.into(),
                expires_at,
            }],
            revoked_sessions: vec![RevokedSession {
                sid: format!("s-{jti}"),
                expires_at,
            }],
            banned_subjects: vec![BannedSubject {
                sub: format!("u-{jti}"),
                not_before: NOW_MS / 1000,
                expires_at,
            }],
        })
    }

    /// What a poll at the current cursor gets when nothing happened.
    fn empty_delta(cursor: &str) -> FeedBody {
        FeedBody::Json(RevocationFeed {
            issuer: ISS.into(),
            cursor: cursor.into(),
            snapshot: false,
            revoked_tokens: vec![],
            revoked_sessions: vec![],
            banned_subjects: vec![],
        })
    }

    fn fresh_at(e: &Engine) -> u64 {
        e.provider(ProviderId::FIRST)
            .unwrap()
            .revocations_fresh_at_ms
    }

    fn cursor(e: &Engine) -> Option<&str> {
        e.provider(ProviderId::FIRST).unwrap().revocations.cursor()
    }

    /// A poll sent now, answered with `body` at `now_ms`.
    fn polled(e: &mut Engine, body: FeedBody, now_ms: u64) -> Result<FeedApplied, ApplyError> {
        e.revocation_poll(ProviderId::FIRST);
        e.apply_feed(ProviderId::FIRST, body, now_ms)
    }

    /// Whether the list of `e` revokes the `jti` of [`feed`]'s entries.
    fn revokes(e: &Engine, jti: &str) -> bool {
        let probe = Probe {
            jti: Some(jti),
            ..Probe::default()
        };
        e.provider(ProviderId::FIRST)
            .unwrap()
            .revocations
            .set()
            .check(&probe, 0, NOW_MS / 1000)
            .is_some()
    }

    /// What the lease VM shares, as owned bytes (the host hands copies out).
    fn shared(e: &Engine) -> (Vec<u8>, Vec<u8>) {
        let (base, overlay) = e.revocation_blobs(ProviderId::FIRST).unwrap();
        (base.to_vec(), overlay.to_vec())
    }

    /// A long poll is held no longer than the list has left before it goes
    /// stale (less the network allowance): a poll retried after one that
    /// failed late (a service instance gone mid-wait), or the first one of a
    /// new lease holder, held the full wait, and every worker answered 503
    /// for the rest of it though the service was up.
    #[test]
    fn a_long_poll_is_held_no_longer_than_the_list_stays_fresh() {
        let mut e = engine();
        let id = ProviderId::FIRST;
        let (wait, timeout) = (30_000, 5_000);
        // Defaults: 45 s of staleness allowed.
        polled(&mut e, feed("1", true, "a"), NOW_MS).unwrap();
        assert_eq!(e.revocation_wait_ms(id, NOW_MS + 200, wait, timeout), wait);
        // A poll that failed after 20 s: 20 s left, 5 of them for the network.
        assert_eq!(
            e.revocation_wait_ms(id, NOW_MS + 25_000, wait, timeout),
            15_000
        );
        assert_eq!(e.revocation_wait_ms(id, NOW_MS + 40_000, wait, timeout), 0);
        assert_eq!(e.revocation_wait_ms(id, NOW_MS + 90_000, wait, timeout), 0);
        // A clock stepped back: the list's age is unknown, no wait.
        assert_eq!(e.revocation_wait_ms(id, NOW_MS - 60_000, wait, timeout), 0);
        // An answer makes the list fresh again: the full wait.
        polled(&mut e, empty_delta("1"), NOW_MS + 41_000).unwrap();
        assert_eq!(
            e.revocation_wait_ms(id, NOW_MS + 41_000, wait, timeout),
            wait
        );
    }

    #[test]
    fn a_feed_is_news_only_when_its_cursor_moved() {
        let mut e = engine();
        let id = ProviderId::FIRST;
        let first = polled(&mut e, feed("1", true, "a"), NOW_MS + 10).unwrap();
        assert_eq!(
            first,
            FeedApplied {
                end: FetchEnd::Fresh { etag: None },
                base_changed: true
            },
            "a snapshot is a new base"
        );
        assert_eq!(e.revocation_entries(id), 3);
        assert_eq!(fresh_at(&e), NOW_MS + 10, "current as of the answer");
        let same = polled(&mut e, empty_delta("1"), NOW_MS + 20).unwrap();
        assert_eq!(same.end, FetchEnd::NotModified, "same cursor: nothing new");
        assert_eq!(fresh_at(&e), NOW_MS + 20, "but the list is current");
        let delta = polled(&mut e, feed("2", false, "b"), NOW_MS + 30).unwrap();
        assert_eq!(
            delta,
            FeedApplied {
                end: FetchEnd::Fresh { etag: None },
                base_changed: false
            },
            "a small delta: overlay only"
        );
        assert_eq!(
            e.revocation_entries(id),
            6,
            "a delta keeps what came before"
        );
    }

    #[test]
    fn a_refused_feed_changes_nothing() {
        let mut e = engine();
        let id = ProviderId::FIRST;
        e.apply_feed(id, feed("1", true, "a"), NOW_MS + 10).unwrap();
        let FeedBody::Json(mut foreign) = feed("3", true, "c") else {
            unreachable!()
        };
        foreign.issuer = "https://other".into();
        assert_eq!(
            e.apply_feed(id, FeedBody::Json(foreign), NOW_MS + 40),
            Err(ApplyError::WrongIssuer)
        );
        assert_eq!(
            (e.revocation_entries(id), fresh_at(&e), cursor(&e)),
            (3, NOW_MS + 10, Some("1"))
        );
    }

    #[test]
    fn another_vm_takes_the_base_then_the_overlay() {
        let (mut lease, mut worker) = (engine(), engine());
        let id = ProviderId::FIRST;
        lease.apply_feed(id, feed("1", true, "a"), NOW_MS).unwrap();
        polled(&mut lease, feed("2", false, "b"), NOW_MS).unwrap();
        let (base, overlay) = shared(&lease);

        assert!(
            !worker.adopt_revocation_overlay(id, overlay.clone(), NOW_MS),
            "an overlay without its base is not taken"
        );
        assert_eq!(worker.revocation_entries(id), 0);
        assert!(worker.adopt_revocation_base(id, base, NOW_MS));
        assert_eq!(
            worker.revocation_entries(id),
            3,
            "the base alone: the snapshot"
        );
        assert!(worker.adopt_revocation_overlay(id, overlay, NOW_MS));
        assert_eq!(
            worker.revocation_entries(id),
            6,
            "the merged list, not the last delta"
        );
        assert_eq!(cursor(&worker), Some("2"));
    }

    #[test]
    fn an_overlay_of_another_base_is_not_taken() {
        let (mut old, mut new, mut worker) = (engine(), engine(), engine());
        let id = ProviderId::FIRST;
        old.apply_feed(id, feed("1", true, "a"), NOW_MS).unwrap();
        new.apply_feed(id, feed("5", true, "x"), NOW_MS).unwrap();
        polled(&mut new, feed("6", false, "y"), NOW_MS).unwrap();
        worker.adopt_revocation_base(id, shared(&old).0, NOW_MS);
        assert!(
            !worker.adopt_revocation_overlay(id, shared(&new).1, NOW_MS),
            "it extends a base this VM does not hold"
        );
        assert_eq!(
            (worker.revocation_entries(id), cursor(&worker)),
            (3, Some("1"))
        );
    }

    /// A copy that does not parse never replaces the list held: it stays,
    /// asks for a snapshot, and what the other VMs say is current no longer
    /// speaks of it (it goes stale) — until a readable base comes.
    #[test]
    fn an_unreadable_base_keeps_the_list_held() {
        let (mut lease, mut worker) = (engine(), engine());
        let id = ProviderId::FIRST;
        lease.apply_feed(id, feed("1", true, "a"), NOW_MS).unwrap();
        assert!(worker.adopt_revocation_base(id, shared(&lease).0, NOW_MS));
        worker.revocations_current_at(
            id,
            &lease.fresh_stamp(id, NOW_MS + 1_000).unwrap(),
            LATER_MS,
        );
        assert!(!worker.adopt_revocation_base(id, b"not a list".to_vec(), NOW_MS));
        assert_eq!(
            (worker.revocation_entries(id), cursor(&worker)),
            (3, None),
            "kept; the next poll asks for a snapshot"
        );
        assert!(revokes(&worker, "a"));
        worker.revocations_current_at(
            id,
            &lease.fresh_stamp(id, NOW_MS + 9_000).unwrap(),
            LATER_MS,
        );
        assert_eq!(
            fresh_at(&worker),
            NOW_MS + 1_000,
            "not current by another VM's word"
        );
        assert!(!worker.adopt_revocation_overlay(id, b"\0\0".to_vec(), NOW_MS));
        assert!(
            !worker.adopt_revocation_overlay(id, shared(&lease).1, NOW_MS),
            "an overlay of the base it could not take"
        );

        polled(&mut lease, feed("2", true, "b"), NOW_MS + 10_000).unwrap();
        assert!(worker.adopt_revocation_base(id, shared(&lease).0, NOW_MS));
        worker.revocations_current_at(
            id,
            &lease.fresh_stamp(id, NOW_MS + 10_000).unwrap(),
            LATER_MS,
        );
        assert_eq!(
            (cursor(&worker), fresh_at(&worker)),
            (Some("2"), NOW_MS + 10_000),
            "back on the shared list"
        );
    }

    /// The polling worker has a poll out (sent with cursor 1) when another
    /// worker's copy comes in and cannot be read; then the delta answering
    /// the poll lands. It must not become the whole list, nor extend one it
    /// does not belong to: it is refused, and the next poll asks for a
    /// snapshot.
    #[test]
    fn a_delta_never_becomes_the_whole_list() {
        let mut e = engine();
        let id = ProviderId::FIRST;
        polled(&mut e, feed("1", true, "a"), NOW_MS).unwrap();
        assert_eq!(e.revocation_poll(id).as_deref(), Some("1"));
        assert!(!e.adopt_revocation_base(id, b"not a list".to_vec(), NOW_MS));
        assert_eq!(
            e.apply_feed(id, feed("2", false, "b"), NOW_MS + 10),
            Err(ApplyError::DeltaWithoutBase)
        );
        assert!(
            revokes(&e, "a") && !revokes(&e, "b"),
            "the list held is kept"
        );
        assert_eq!(fresh_at(&e), NOW_MS, "and not made current");
        assert_eq!(
            e.revocation_poll(id),
            None,
            "the next poll asks for a snapshot"
        );
        assert_eq!(
            e.apply_feed(id, feed("2", false, "b"), NOW_MS + 20),
            Err(ApplyError::DeltaWithoutBase),
            "a delta is no answer to it"
        );
        e.revocation_poll(id);
        assert!(e.apply_feed(id, feed("3", true, "c"), NOW_MS + 30).is_ok());
        assert!(
            revokes(&e, "c") && !revokes(&e, "a"),
            "the snapshot is the list"
        );
        assert_eq!((cursor(&e), fresh_at(&e)), (Some("3"), NOW_MS + 30));

        // A list never loaded (or emptied) takes no delta either.
        let mut cold = engine();
        cold.revocation_poll(id);
        assert_eq!(
            cold.apply_feed(id, feed("2", false, "b"), NOW_MS),
            Err(ApplyError::DeltaWithoutBase)
        );
        e.clear_revocations(id);
        e.revocation_poll(id);
        assert_eq!(
            e.apply_feed(id, feed("4", false, "d"), NOW_MS + 40),
            Err(ApplyError::DeltaWithoutBase)
        );
        assert_eq!((e.revocation_entries(id), cursor(&e)), (0, None));
    }

    /// A feed that names no cursor leaves nothing for the next poll to send:
    /// that poll goes out without `since` (a request for a snapshot), and a
    /// `304` or a delta answering it speaks of no list. Taken, the list was
    /// made current by a `304` to a request that named nothing, and extended
    /// by a delta from nowhere.
    #[test]
    fn a_feed_without_a_cursor_is_refused() {
        let mut e = engine();
        let id = ProviderId::FIRST;
        polled(&mut e, feed("1", true, "a"), NOW_MS).unwrap();
        assert!(matches!(
            polled(&mut e, feed("", false, "b"), NOW_MS + 10),
            Err(ApplyError::Malformed(_))
        ));
        assert!(matches!(
            polled(&mut e, feed("", true, "c"), NOW_MS + 20),
            Err(ApplyError::Malformed(_))
        ));
        assert_eq!((cursor(&e), fresh_at(&e)), (Some("1"), NOW_MS));
        assert!(revokes(&e, "a") && !revokes(&e, "b") && !revokes(&e, "c"));
        // Had it been taken: the next poll names no cursor, yet a `304` to it
        // would vouch for the list.
        let poll = e.revocation_poll(id);
        assert_eq!(
            crate::fetch::feed_path("/f", poll.as_deref(), 0),
            "/f?since=1"
        );
        assert!(e.revocations_unchanged(id, NOW_MS + 30));
    }

    /// This VM's poll is out (from cursor 1) when it adopts another VM's list
    /// (cursor 5): the delta from 1 and a `304` for 1 speak of another list
    /// than the one held now. The delta is refused, the `304` makes nothing
    /// current; the next poll goes on from the list held.
    #[test]
    fn an_answer_for_the_list_before_an_adoption_is_not_taken() {
        let (mut lease, mut e) = (engine(), engine());
        let id = ProviderId::FIRST;
        polled(&mut e, feed("1", true, "a"), NOW_MS).unwrap();
        lease.apply_feed(id, feed("5", true, "x"), NOW_MS).unwrap();
        e.revocation_poll(id);
        assert!(e.adopt_revocation_base(id, shared(&lease).0, NOW_MS));
        assert_eq!(
            e.apply_feed(id, feed("2", false, "b"), NOW_MS + 10),
            Err(ApplyError::DeltaWithoutBase)
        );
        assert!(revokes(&e, "x") && !revokes(&e, "b"));
        e.revocation_poll(id);
        lease.apply_feed(id, feed("6", true, "y"), NOW_MS).unwrap();
        assert!(e.adopt_revocation_base(id, shared(&lease).0, NOW_MS));
        assert!(
            !e.revocations_unchanged(id, NOW_MS + 20),
            "a 304 for cursor 5, the list is at 6"
        );
        assert_eq!(fresh_at(&e), NOW_MS);
        assert_eq!(e.revocation_poll(id).as_deref(), Some("6"));
        assert!(e.revocations_unchanged(id, NOW_MS + 30));
        assert_eq!(fresh_at(&e), NOW_MS + 30);
        assert!(
            !e.revocations_unchanged(id, NOW_MS + 40),
            "one answer per poll"
        );
    }

    /// A slow snapshot answer (cursor 7, without `r`) lands after this VM
    /// took a newer list from the VM that took the lease over meanwhile
    /// (cursor 9, revoking `r`): refused, so `r` stays revoked and the list
    /// is not marked current by the older one.
    #[test]
    fn a_late_snapshot_does_not_roll_back_a_newer_list() {
        let (mut lease, mut e) = (engine(), engine());
        let id = ProviderId::FIRST;
        assert_eq!(
            e.revocation_poll(id),
            None,
            "a VM with no list asks for a snapshot"
        );
        lease.apply_feed(id, feed("9", true, "r"), NOW_MS).unwrap();
        assert!(e.adopt_revocation_base(id, shared(&lease).0, NOW_MS));
        assert_eq!(
            e.apply_feed(id, feed("7", true, "a"), NOW_MS + 10),
            Err(ApplyError::Superseded)
        );
        assert!(revokes(&e, "r") && !revokes(&e, "a"));
        assert_eq!(cursor(&e), Some("9"));
        // Asked from the list held, a snapshot (the service reset its cursors) is taken.
        assert_eq!(e.revocation_poll(id).as_deref(), Some("9"));
        e.apply_feed(id, feed("11", true, "s"), NOW_MS + 20)
            .unwrap();
        assert!(revokes(&e, "s") && !revokes(&e, "r"));
        assert_eq!((cursor(&e), fresh_at(&e)), (Some("11"), NOW_MS + 20));
    }

    #[test]
    fn known_current_never_moves_back() {
        let mut e = engine();
        polled(&mut e, feed("1", true, "a"), NOW_MS).unwrap();
        let stamp = |at_ms| FreshStamp {
            at_ms,
            forgot_secs: NOW_MS / 1000,
            cursor: "1".into(),
        };
        e.revocations_current_at(ProviderId::FIRST, &stamp(NOW_MS + 5_000), LATER_MS);
        e.revocations_current_at(ProviderId::FIRST, &stamp(NOW_MS + 1_000), LATER_MS);
        assert_eq!(fresh_at(&e), NOW_MS + 5_000);
    }

    /// Finding: the stamp another VM shared made any list current, also one
    /// other than the list that VM polled from (an older copy a worker still
    /// held, missing what was revoked since).
    #[test]
    fn a_stamp_makes_current_only_the_list_it_was_measured_on() {
        let (mut lease, mut worker) = (engine(), engine());
        let id = ProviderId::FIRST;
        polled(&mut lease, feed("1", true, "a"), NOW_MS).unwrap();
        assert!(worker.adopt_revocation_base(id, shared(&lease).0, NOW_MS));
        worker.revocations_current_at(id, &lease.fresh_stamp(id, NOW_MS).unwrap(), LATER_MS);
        polled(&mut lease, feed("2", false, "r2"), NOW_MS + 1_000).unwrap();
        let stamp = lease.fresh_stamp(id, NOW_MS + 2_000).unwrap();
        assert_eq!(FreshStamp::parse(&stamp.to_bytes()), Some(stamp.clone()));
        worker.revocations_current_at(id, &stamp, LATER_MS);
        assert_eq!(
            fresh_at(&worker),
            NOW_MS,
            "still as old as the list it holds (without r2)"
        );
        assert!(worker.adopt_revocation_overlay(id, shared(&lease).1, NOW_MS));
        worker.revocations_current_at(id, &stamp, LATER_MS);
        assert_eq!(fresh_at(&worker), NOW_MS + 2_000);
        assert_eq!(FreshStamp::parse(b"12"), None);
        assert_eq!(FreshStamp::parse(b"x 1"), None);
    }

    /// The host clock runs an hour ahead while a delta lands: its entry
    /// (its token good for 15 more minutes by the right clock) is forgotten
    /// as dead. Once the clock is corrected, nothing the feed sends again
    /// would bring it back: the list stops vouching for itself, asks for a
    /// snapshot, and is made current by nothing else.
    #[test]
    fn a_list_that_forgot_entries_ahead_of_the_clock_wants_a_snapshot() {
        let (mut lease, mut worker) = (engine(), engine());
        let id = ProviderId::FIRST;
        let ahead_ms = NOW_MS + 3_600_000;
        polled(&mut lease, feed("1", true, "a"), NOW_MS).unwrap();
        polled(&mut lease, feed("2", false, "r"), ahead_ms).unwrap();
        assert!(!revokes(&lease, "r"), "forgotten at the jumped time");
        let (base, overlay) = shared(&lease);
        assert!(worker.adopt_revocation_base(id, base, ahead_ms));
        assert!(worker.adopt_revocation_overlay(id, overlay, ahead_ms));
        let stamp = lease.fresh_stamp(id, ahead_ms).unwrap();
        worker.revocations_current_at(id, &stamp, ahead_ms);
        assert!(!lease.distrust_revocations_forgotten_ahead(id, ahead_ms));
        // A step back within the tolerance changes nothing.
        assert!(!lease.distrust_revocations_forgotten_ahead(id, ahead_ms - 5_000));

        let back_ms = NOW_MS + 10_000;
        for e in [&mut lease, &mut worker] {
            assert!(e.distrust_revocations_forgotten_ahead(id, back_ms));
            assert!(
                !e.distrust_revocations_forgotten_ahead(id, back_ms),
                "said once"
            );
            assert_eq!(fresh_at(e), 0, "stale at once");
            assert_eq!(e.revocation_poll(id), None, "asks for a snapshot");
        }
        // What the poll sent before the correction brings makes nothing current.
        assert!(!lease.revocations_unchanged(id, back_ms));
        assert_eq!(
            lease.apply_feed(id, empty_delta("2"), back_ms),
            Err(ApplyError::DeltaWithoutBase)
        );
        assert_eq!(lease.fresh_stamp(id, back_ms), None, "vouches for nothing");
        // Nor does a stamp of the old list from a VM that did not notice.
        let old_list = FreshStamp {
            at_ms: back_ms,
            ..stamp
        };
        worker.revocations_current_at(id, &old_list, back_ms);
        assert_eq!((fresh_at(&lease), fresh_at(&worker)), (0, 0));

        // The snapshot brings the entry back and makes the list current; the
        // other VMs take its base.
        lease.revocation_poll(id);
        lease.apply_feed(id, feed("3", true, "r"), back_ms).unwrap();
        assert!(revokes(&lease, "r"));
        assert_eq!(fresh_at(&lease), back_ms);
        assert!(!lease.distrust_revocations_forgotten_ahead(id, back_ms));
        assert!(worker.adopt_revocation_base(id, shared(&lease).0, back_ms));
        assert!(!worker.distrust_revocations_forgotten_ahead(id, back_ms));
        worker.revocations_current_at(id, &lease.fresh_stamp(id, back_ms).unwrap(), back_ms);
        assert!(revokes(&worker, "r"));
        assert_eq!(fresh_at(&worker), back_ms);
    }

    /// A VM that took the shared list later than the lease VM built it (a
    /// worker VM started, or configured again, a minute after the last
    /// change) forgot nothing then: its list is the lease VM's. A time
    /// daemon then steps the clock back 20 s. The lease VM, which built the
    /// list, rightly goes on (nothing was forgotten after its clock's new
    /// time), and so must the worker: it took its own adoption time as a
    /// time it forgot entries at, distrusted the list, and nothing but a
    /// new base (a snapshot the feed may not send for days) made it current
    /// again; with `on_stale: deny` every token request it served got 503.
    #[test]
    fn a_list_taken_after_it_was_built_is_not_distrusted_for_the_builders_step() {
        let (mut lease, mut worker) = (engine(), engine());
        let id = ProviderId::FIRST;
        polled(&mut lease, feed("1", true, "a"), NOW_MS).unwrap();
        let started_ms = NOW_MS + 60_000;
        assert!(worker.adopt_revocation_base(id, shared(&lease).0, started_ms));
        worker.revocations_current_at(id, &lease.fresh_stamp(id, started_ms).unwrap(), started_ms);
        assert_eq!(fresh_at(&worker), started_ms);

        let back_ms = started_ms - 20_000;
        assert!(!lease.distrust_revocations_forgotten_ahead(id, back_ms));
        assert!(!worker.distrust_revocations_forgotten_ahead(id, back_ms));
        // The lease VM's next poll finds the list unchanged.
        lease.revocation_poll(id);
        assert!(lease.revocations_unchanged(id, back_ms + 1_000));
        let stamp = lease.fresh_stamp(id, back_ms + 1_000).unwrap();
        worker.revocations_current_at(id, &stamp, back_ms + 1_000);
        assert_eq!(
            fresh_at(&worker),
            back_ms + 1_000,
            "the worker holds the very list the lease VM vouches for"
        );
    }

    /// The other way round: a list built while the clock ran an hour ahead
    /// (its entries forgotten by that clock), taken by a VM configured after
    /// the clock was corrected. Measured against its own time of taking it,
    /// that VM saw no step and vouched for the list; measured against its
    /// builder's forget time, it refuses to, as the builder does.
    #[test]
    fn a_list_built_ahead_of_the_clock_and_taken_after_the_correction_is_distrusted() {
        let (mut lease, mut late) = (engine(), engine());
        let id = ProviderId::FIRST;
        let ahead_ms = NOW_MS + 3_600_000;
        polled(&mut lease, feed("1", true, "a"), NOW_MS).unwrap();
        polled(&mut lease, feed("2", false, "r"), ahead_ms).unwrap();
        let stamp = lease.fresh_stamp(id, ahead_ms).unwrap();
        let (base, overlay) = shared(&lease);

        let back_ms = NOW_MS + 10_000;
        assert!(late.adopt_revocation_base(id, base, back_ms));
        assert!(late.adopt_revocation_overlay(id, overlay, back_ms));
        // The lease VM's stamp, from before the correction: ahead of the
        // clock, so it makes nothing current, but says when the list forgot.
        late.revocations_current_at(id, &stamp, back_ms);
        late.distrust_revocations_forgotten_ahead(id, back_ms);
        // Not even a stamp of that list made after the correction.
        let after = FreshStamp {
            at_ms: back_ms,
            ..stamp.clone()
        };
        late.revocations_current_at(id, &after, back_ms);
        assert_eq!(fresh_at(&late), 0, "vouches for nothing");
        assert_eq!(late.revocation_poll(id), None, "asks for a snapshot");
        assert!(lease.distrust_revocations_forgotten_ahead(id, back_ms));

        // A word about another list's forget time changes nothing here.
        let (mut other_vm, mut worker) = (engine(), engine());
        polled(&mut other_vm, feed("1", true, "a"), NOW_MS).unwrap();
        let (base, overlay) = shared(&lease);
        assert!(worker.adopt_revocation_base(id, base, back_ms));
        assert!(worker.adopt_revocation_overlay(id, overlay, back_ms));
        worker.revocations_current_at(id, &stamp, back_ms);
        worker.revocations_current_at(id, &other_vm.fresh_stamp(id, NOW_MS).unwrap(), back_ms);
        worker.distrust_revocations_forgotten_ahead(id, back_ms);
        assert_eq!(worker.revocation_poll(id), None);
    }
}
