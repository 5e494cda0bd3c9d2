//! The revocation feed as this process sees it: the newest cursor (kept in
//! memory so a `304` never touches the database) and a revocation set used
//! to check this service's own tokens (admin calls, ext_authz).
//!
//! A revocation outlives what it kills. Events store the newest `exp` they
//! cover; tokens pass verifiers until that `exp` plus their clock skew, so an
//! event is kept, published and honoured until `exp` + the retention margin
//! (`revocation_retention_secs`, at least every verifier's skew), and each
//! published entry says so in its `expires_at` (its forget-after time).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::RwLock;

use authflow_contract::revocation::{still_needed, BannedSubject, RevocationFeed, RevokedSession, RevokedToken};

use crate::feed_notify::FeedNotifier;
use crate::store::{FeedEvent, FeedKind, Store, StoreError};

#[derive(Default)]
struct RevocationSet {
    seq: i64,
    jtis: HashMap<String, i64>,
    sids: HashMap<String, i64>,
    /// sub → (not_before, expires_at)
    bans: HashMap<String, (i64, i64)>,
}

impl RevocationSet {
    fn apply(&mut self, e: &FeedEvent) {
        match e.kind {
            FeedKind::Token => {
                let exp = self.jtis.entry(e.subject.clone()).or_insert(e.expires_at);
                *exp = (*exp).max(e.expires_at);
            }
            FeedKind::Session => {
                let exp = self.sids.entry(e.subject.clone()).or_insert(e.expires_at);
                *exp = (*exp).max(e.expires_at);
            }
            FeedKind::Subject => {
                let nb = e.not_before.unwrap_or(0);
                let entry = self.bans.entry(e.subject.clone()).or_insert((nb, e.expires_at));
                *entry = (entry.0.max(nb), entry.1.max(e.expires_at));
            }
        }
        self.seq = self.seq.max(e.seq);
    }

    fn forget_expired(&mut self, retention: Retention, now: i64) {
        self.jtis.retain(|_, exp| retention.needed(*exp, now));
        self.sids.retain(|_, exp| retention.needed(*exp, now));
        self.bans.retain(|_, (_, exp)| retention.needed(*exp, now));
    }
}

/// How long past the `exp` it covers an event is kept (the retention margin).
#[derive(Clone, Copy, Debug)]
struct Retention(i64);

impl Retention {
    /// Whether an event covering tokens up to `exp` still matters at `now`.
    fn needed(self, exp: i64, now: i64) -> bool {
        let u = |v: i64| u64::try_from(v).unwrap_or(0);
        still_needed(u(exp), u(self.0), u(now))
    }

    /// The newest `exp` whose events no longer matter at `now` (the store's cut-off).
    fn forgotten_through(self, now: i64) -> i64 {
        now.saturating_sub(self.0).saturating_sub(1)
    }

    /// The forget-after time published for an event covering tokens up to `exp`.
    fn forget_after(self, exp: i64) -> i64 {
        exp.saturating_add(self.0)
    }
}

pub struct Feed {
    epoch: String,
    retention: Retention,
    head: AtomicI64,
    pruned_through: AtomicI64,
    set: RwLock<RevocationSet>,
    sync_lock: tokio::sync::Mutex<()>,
    /// Wakes long polls once `head` moves.
    notifier: FeedNotifier,
    /// Answers built from the database (deltas and snapshots), for `/metrics`.
    store_reads: AtomicU64,
    /// The delta built last: the long polls one change wakes all ask for it.
    last_delta: tokio::sync::Mutex<Option<LastDelta>>,
}

/// A delta from cursor `from` built while the head was `head`.
struct LastDelta {
    from: i64,
    head: i64,
    feed: RevocationFeed,
}

/// What a `since` cursor asks for.
pub enum FeedAnswer {
    NotModified,
    Body(RevocationFeed),
}

impl Feed {
    /// `retention_secs`: how long past its token's `exp` an entry is kept
    /// (at least the largest clock skew of any verifier of these tokens);
    /// `max_waiters`: long polls held open at once.
    pub async fn load(store: &dyn Store, retention_secs: u64, max_waiters: usize, now: i64) -> Result<Self, StoreError> {
        let feed = Self {
            epoch: store.epoch().await?,
            retention: Retention(i64::try_from(retention_secs).unwrap_or(i64::MAX)),
            head: AtomicI64::new(0),
            pruned_through: AtomicI64::new(0),
            set: RwLock::new(RevocationSet::default()),
            sync_lock: tokio::sync::Mutex::new(()),
            notifier: FeedNotifier::new(0, max_waiters),
            store_reads: AtomicU64::new(0),
            last_delta: tokio::sync::Mutex::new(None),
        };
        feed.sync(store, now).await?;
        Ok(feed)
    }

    /// Pulls events newer than what this process has seen. Called after every
    /// revoking write (before it is acknowledged) and periodically.
    pub async fn sync(&self, store: &dyn Store, now: i64) -> Result<(), StoreError> {
        let _one_at_a_time = self.sync_lock.lock().await;
        let head = store.feed_head().await?;
        let after = self.set.read().map(|s| s.seq).unwrap_or(0);
        let events = store.feed_events_after(after, self.retention.forgotten_through(now)).await?;
        if let Ok(mut set) = self.set.write() {
            for e in &events {
                set.apply(e);
            }
            set.seq = set.seq.max(head.head);
            set.forget_expired(self.retention, now);
        }
        self.pruned_through.fetch_max(head.pruned_through, Ordering::SeqCst);
        self.head.fetch_max(head.head, Ordering::SeqCst);
        // After `head` and the set: a woken waiter answers from both.
        self.notifier.bump(head.head);
        Ok(())
    }

    /// Deletes the events no token can outlive any more; returns how many.
    pub async fn prune(&self, store: &dyn Store, now: i64) -> Result<u64, StoreError> {
        store.prune_feed(self.retention.forgotten_through(now)).await
    }

    /// Its counters in the Prometheus text format.
    pub fn render_metrics(&self) -> String {
        format!(
            "# HELP authflow_feed_store_reads_total Revocation feed answers read from the database (long polls woken together share one).\n\
             # TYPE authflow_feed_store_reads_total counter\nauthflow_feed_store_reads_total {}\n",
            self.store_reads.load(Ordering::Relaxed)
        )
    }

    pub fn cursor(&self) -> String {
        format!("{}.{}", self.epoch, self.head.load(Ordering::SeqCst))
    }

    /// The sequence number in `cursor` if it was issued by this database.
    fn parse_cursor(&self, cursor: &str) -> Option<i64> {
        let (epoch, seq) = cursor.split_once('.')?;
        (epoch == self.epoch).then(|| seq.parse::<i64>().ok()).flatten().filter(|s| *s >= 0)
    }

    /// For a long poll that would be answered `304` now: waits (parked, under
    /// the waiter cap) until the head passes `since` or `wait` is over; whether
    /// it passed. Over the cap it returns at once: the caller answers as a plain poll.
    pub async fn wait_past(&self, since: &str, wait: std::time::Duration) -> bool {
        let (Some(seq), Some(slot)) = (self.parse_cursor(since), self.notifier.try_park()) else { return false };
        self.notifier.wait_past(&slot, seq, wait).await
    }

    /// Answers `GET /v1/revocations?since=`; the 304 path reads memory only.
    pub async fn answer(&self, store: &dyn Store, issuer: &str, since: Option<&str>, now: i64) -> Result<FeedAnswer, StoreError> {
        let head = self.head.load(Ordering::SeqCst);
        let pruned = self.pruned_through.load(Ordering::SeqCst);
        let since = since.and_then(|c| self.parse_cursor(c));
        let delta_from = since.filter(|s| *s >= pruned && *s <= head);
        if delta_from == Some(head) {
            return Ok(FeedAnswer::NotModified);
        }
        let Some(from) = delta_from else { return Ok(FeedAnswer::Body(self.read(store, issuer, None, head, now).await?)) };
        // Every long poll a change wakes holds the same cursor and asks for the
        // same delta at once: the first reads it, the others wait on the lock
        // and share it, rather than queueing one database read each.
        let mut last = self.last_delta.lock().await;
        if let Some(hit) = last.as_ref().filter(|d| d.from == from && d.head == head) {
            return Ok(FeedAnswer::Body(hit.feed.clone()));
        }
        let feed = self.read(store, issuer, Some(from), head, now).await?;
        *last = Some(LastDelta { from, head, feed: feed.clone() });
        Ok(FeedAnswer::Body(feed))
    }

    /// The delta after `delta_from`, or a snapshot without it, from the database.
    async fn read(&self, store: &dyn Store, issuer: &str, delta_from: Option<i64>, head: i64, now: i64) -> Result<RevocationFeed, StoreError> {
        let after = delta_from.unwrap_or(0);
        self.store_reads.fetch_add(1, Ordering::Relaxed);
        let events = store.feed_events_after(after, self.retention.forgotten_through(now)).await?;
        let newest = events.iter().map(|e| e.seq).max().unwrap_or(0).max(head);
        let mut feed = RevocationFeed {
            issuer: issuer.to_owned(),
            cursor: format!("{}.{}", self.epoch, newest),
            snapshot: delta_from.is_none(),
            ..RevocationFeed::default()
        };
        // One entry per key, the widest one wins (a key may be revoked twice).
        let mut set = RevocationSet::default();
        for e in &events {
            set.apply(e);
        }
        let u = |exp: i64| u64::try_from(self.retention.forget_after(exp)).unwrap_or(0);
        let mut tokens: Vec<_> = set.jtis.into_iter().collect();
        tokens.sort();
        feed.revoked_tokens = tokens.into_iter().map(|(jti, exp)| RevokedToken { jti, expires_at: u(exp) }).collect();
        let mut sessions: Vec<_> = set.sids.into_iter().collect();
        sessions.sort();
        feed.revoked_sessions = sessions.into_iter().map(|(sid, exp)| RevokedSession { sid, expires_at: u(exp) }).collect();
        let mut bans: Vec<_> = set.bans.into_iter().collect();
        bans.sort();
        feed.banned_subjects = bans
            .into_iter()
            .map(|(sub, (nb, exp))| BannedSubject { sub, not_before: u64::try_from(nb).unwrap_or(0), expires_at: u(exp) })
            .collect();
        Ok(feed)
    }

    /// Whether a token with this `exp` may still pass a verifier somewhere
    /// (so revoking it still matters).
    pub fn may_still_pass(&self, exp: i64, now: i64) -> bool {
        self.retention.needed(exp, now)
    }

    /// Is a token with these claims revoked, per what this process knows?
    pub fn is_revoked(&self, jti: Option<&str>, sid: &str, sub: Option<&str>, issued_at: i64, now: i64) -> bool {
        let Ok(set) = self.set.read() else { return true };
        let live = |exp: &i64| self.retention.needed(*exp, now);
        jti.and_then(|j| set.jtis.get(j)).is_some_and(live)
            || set.sids.get(sid).is_some_and(live)
            || sub.and_then(|s| set.bans.get(s)).is_some_and(|(nb, exp)| live(exp) && issued_at < *nb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    const EXP: i64 = 1_900_000_000;
    const MARGIN: u64 = 600;

    async fn store(dir: &tempfile::TempDir) -> SqliteStore {
        let kek = crate::kek::Kek::new(&crate::kek::parse_key(&crate::kek::generate_key()).unwrap(), &[]).unwrap();
        SqliteStore::open(&format!("sqlite://{}", dir.path().join("feed.db").display()), std::sync::Arc::new(kek)).await.unwrap()
    }

    fn event(kind: FeedKind, subject: &str, not_before: Option<i64>) -> FeedEvent {
        FeedEvent { seq: 1, kind, subject: subject.into(), not_before, expires_at: EXP }
    }

    /// Tokens pass this service (and every filter) until `exp` plus a skew:
    /// a revoked jti, a logged-out session and a ban all hold at `exp` + 1 s
    /// and up to the retention margin, on the service's own checks.
    #[tokio::test]
    async fn own_checks_refuse_revoked_tokens_past_their_exp() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let feed = Feed::load(&store, MARGIN, 10, EXP - 10).await.unwrap();
        if let Ok(mut set) = feed.set.write() {
            set.apply(&event(FeedKind::Token, "j1", None));
            set.apply(&event(FeedKind::Session, "s1", None));
            set.apply(&event(FeedKind::Subject, "u1", Some(EXP - 100)));
        }
        let iat = EXP - 900;
        for now in [EXP + 1, EXP + 30, EXP + 600] {
            assert!(feed.is_revoked(Some("j1"), "other", None, iat, now), "jti at exp+{}", now - EXP);
            assert!(feed.is_revoked(None, "s1", None, iat, now), "sid at exp+{}", now - EXP);
            assert!(feed.is_revoked(None, "other", Some("u1"), iat, now), "ban at exp+{}", now - EXP);
        }
        assert!(!feed.is_revoked(Some("j1"), "s1", Some("u1"), iat, EXP + 601), "forgotten past the margin");
    }

    /// The feed publishes an entry until its token's `exp` plus the retention
    /// margin, with that moment as its `expires_at`, and the store keeps it as long.
    #[tokio::test]
    async fn feed_keeps_and_publishes_entries_until_exp_plus_margin() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        store.revoke_token("j1", EXP - 10, EXP).await.unwrap();
        let feed = Feed::load(&store, MARGIN, 10, EXP - 10).await.unwrap();
        for now in [EXP + 1, EXP + 600] {
            feed.prune(&store, now).await.unwrap();
            feed.sync(&store, now).await.unwrap();
            let FeedAnswer::Body(body) = feed.answer(&store, "iss", None, now).await.unwrap() else { panic!() };
            assert_eq!(body.revoked_tokens.len(), 1, "published at exp+{}", now - EXP);
            assert_eq!(body.revoked_tokens[0].expires_at, u64::try_from(EXP + 600).unwrap(), "forget-after = exp + margin");
        }
        assert_eq!(feed.prune(&store, EXP + 601).await.unwrap(), 1);
        feed.sync(&store, EXP + 601).await.unwrap();
        let FeedAnswer::Body(body) = feed.answer(&store, "iss", None, EXP + 601).await.unwrap() else { panic!() };
        assert_eq!(body.entry_count(), 0);
    }
}
