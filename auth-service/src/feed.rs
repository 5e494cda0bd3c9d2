//! The revocation feed as this process sees it: the newest cursor (kept in
//! memory so a `304` never touches the database) and a revocation set used
//! to check this service's own tokens (admin calls, ext_authz).
//!
//! A revocation outlives what it kills. Events store the newest `exp` they
//! cover; tokens pass verifiers until that `exp` plus their clock skew, so an
//! event is kept, published and honoured until `exp` + the retention margin
//! (`revocation_retention_secs`, at least every verifier's skew), and each
//! published entry says so in its `expires_at` (its forget-after time).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use authflow_contract::revocation::set::encode;
use authflow_contract::revocation::{
    still_needed, BannedSubject, Probe, RevocationFeed, RevocationSet, RevokedSession,
    RevokedToken, SetKey,
};

use crate::feed_notify::FeedNotifier;
use crate::store::{bounded, FeedEvent, FeedHead, FeedKind, Store, StoreError};

/// What this process checks its own tokens against: the contract's list,
/// with entries keyed by the `exp` they cover (the retention margin is the
/// skew it is checked with), and the newest event applied.
#[derive(Default)]
struct OwnList {
    seq: i64,
    set: RevocationSet,
    /// The newest event applied, as read: checked against the database at
    /// each sync (see [`history_diverged`]).
    newest: Option<FeedEvent>,
}

/// The issuer name of this process's own list (it never leaves the process).
const OWN: &str = "";

impl OwnList {
    fn apply(&mut self, events: &[FeedEvent], retention: Retention, now: i64) {
        let mut feed = events_feed(events, |exp| exp);
        feed.issuer = OWN.into();
        feed.cursor = self.seq.to_string();
        // The first events load the list; later ones extend it.
        feed.snapshot = !self.set.is_loaded();
        // Unbounded: the database is the bound.
        let _ = self
            .set
            .apply_values(&feed, OWN, usize::MAX, retention.secs(), u(now));
        self.seq = events.iter().map(|e| e.seq).fold(self.seq, i64::max);
        if let Some(last) = events.last() {
            self.newest = Some(last.clone());
        }
    }
}

/// Whether the database no longer holds `newest` (the newest event this
/// process applied) as it was: its history went back (a restore, a failover
/// to a replica that missed the last commits) and the sequence number was
/// handed out again to another revocation, or the event is gone though no
/// instance could have pruned it yet (it covers tokens past `pruned_by_none`:
/// see [`Retention::pruned_by_none`]). `events`: those from `newest.seq` on.
/// The head alone cannot tell once new writes have brought it back to
/// where it was.
/// `pruned_through`: the newest event the database says was ever pruned
/// (an instance with a shorter retention, during a rolling change, prunes
/// sooner than this one would).
fn history_diverged(
    newest: &FeedEvent,
    events: &[FeedEvent],
    (pruned_by_none, pruned_through): (i64, i64),
) -> bool {
    match events.first() {
        Some(first) if first.seq == newest.seq => first != newest,
        // Not read: forgotten (here, or pruned by an instance whose clock
        // is ahead or whose retention is shorter), or lost with the history.
        _ => newest.expires_at > pruned_by_none && newest.seq > pruned_through,
    }
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The events as feed entries (one per value, the widest), each with
/// `expires_at` = `forget_after(exp)`.
fn events_feed(events: &[FeedEvent], forget_after: impl Fn(i64) -> i64) -> RevocationFeed {
    let mut feed = RevocationFeed::default();
    for e in events {
        let expires_at = u(forget_after(e.expires_at));
        match e.kind {
            FeedKind::Token => feed.revoked_tokens.push(RevokedToken {
                jti: e.subject.clone(),
                expires_at,
            }),
            FeedKind::Session => feed.revoked_sessions.push(RevokedSession {
                sid: e.subject.clone(),
                expires_at,
            }),
            FeedKind::Subject => {
                let not_before = u(e.not_before.unwrap_or(0));
                feed.banned_subjects.push(BannedSubject {
                    sub: e.subject.clone(),
                    not_before,
                    expires_at,
                });
            }
        }
    }
    feed.merge_duplicates();
    feed
}

#[cfg(test)]
const INSTANCE_CLOCK_MARGIN: i64 = crate::clock::INSTANCE_CLOCK_MARGIN_SECS as i64;

/// How long past the `exp` it covers an event is kept (the retention margin).
#[derive(Clone, Copy, Debug)]
struct Retention(i64);

impl Retention {
    /// Whether an event covering tokens up to `exp` still matters at `now`,
    /// on this instance or one whose clock is behind by the margin.
    fn needed(self, exp: i64, now: i64) -> bool {
        still_needed(
            u(exp),
            self.secs(),
            u(now.saturating_sub(self.instance_margin())),
        )
    }

    fn secs(self) -> u64 {
        u(self.0)
    }

    /// The newest `exp` whose events no longer matter at `now` (the store's
    /// cut-off), on any instance: one whose clock is behind this one's by
    /// less than [`Self::instance_margin`] still publishes them as
    /// needed, so they are kept, and published here, that much longer.
    fn forgotten_through(self, now: i64) -> i64 {
        now.saturating_sub(self.0)
            .saturating_sub(self.instance_margin())
            .saturating_sub(1)
    }

    /// [`INSTANCE_CLOCK_MARGIN_SECS`](crate::clock::INSTANCE_CLOCK_MARGIN_SECS),
    /// never more than the retention itself (a margin of a few seconds, set
    /// below the configurable minimum by tests, stays short).
    fn instance_margin(self) -> i64 {
        let margin = i64::try_from(crate::clock::INSTANCE_CLOCK_MARGIN_SECS).unwrap_or(i64::MAX);
        margin.min(self.0)
    }

    /// The newest `exp` an instance whose clock is ahead of `now` by less
    /// than [`Self::instance_margin`] may have pruned already: an event
    /// covering later tokens missing from the database was lost, not pruned.
    fn pruned_by_none(self, now: i64) -> i64 {
        now.saturating_sub(self.0)
    }

    /// The forget-after time published for an event covering tokens up to `exp`.
    fn forget_after(self, exp: i64) -> i64 {
        exp.saturating_add(self.0)
    }
}

/// The sequence number in `cursor` if it was issued in `epoch`.
fn cursor_in(epoch: &str, cursor: &str) -> Option<i64> {
    position_in(epoch, cursor).map(|(seq, _)| seq)
}

/// The position `cursor` names if it was issued in `epoch`: the sequence
/// number, and the [`digest`] of the event there when the cursor carries one
/// (`<epoch>.<seq>.<digest>`; cursors of earlier releases have none).
fn position_in<'a>(epoch: &str, cursor: &'a str) -> Option<(i64, Option<&'a str>)> {
    let mut parts = cursor.split('.');
    let (cursor_epoch, seq) = (parts.next()?, parts.next()?);
    let digest = parts.next();
    if cursor_epoch != epoch || parts.next().is_some() {
        return None;
    }
    let seq = seq.parse::<i64>().ok().filter(|s| *s >= 0)?;
    Some((seq, digest))
}

/// A short digest of an event, carried in the cursor of the position it is
/// at: a cursor from a history that went back (the database failed over to
/// a replica that missed the event, or was restored) names an event that is
/// not there any more, which any instance tells at once, one that restarted
/// since too, however many revocations took the lost numbers meanwhile.
fn digest(e: &FeedEvent) -> String {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    h.update(e.kind.as_str());
    h.update([0]);
    h.update(&e.subject);
    h.update([0]);
    h.update(e.not_before.unwrap_or(-1).to_le_bytes());
    h.update(e.expires_at.to_le_bytes());
    hex::encode(&h.finalize()[..8])
}

/// `<epoch>.<seq>`, with the digest of the event at `seq` when it is known.
fn cursor_text(epoch: &str, seq: i64, at: Option<&FeedEvent>) -> String {
    match at.filter(|e| e.seq == seq) {
        Some(e) => format!("{epoch}.{seq}.{}", digest(e)),
        None => format!("{epoch}.{seq}"),
    }
}

pub struct Feed {
    epoch: RwLock<String>,
    retention: Retention,
    head: AtomicI64,
    pruned_through: AtomicI64,
    set: RwLock<OwnList>,
    sync_lock: tokio::sync::Mutex<()>,
    /// Wakes long polls once `head` moves.
    notifier: FeedNotifier,
    /// Answers built from the database (deltas and snapshots), for `/metrics`.
    store_reads: AtomicU64,
    /// The delta read last, or being read: the long polls one change wakes
    /// all ask for it. Held only to look at or swap the slot, never across a read.
    last_delta: std::sync::Mutex<Option<Arc<SharedDelta<DeltaRead>>>>,
    /// The snapshot read last, or being read: what every poll without a
    /// cursor (a fleet of filters starting, all the parked polls a new epoch
    /// wakes, anyone at all) is answered with for a while at that head,
    /// rather than one read of the whole list each (see `shared_snapshot`).
    last_snapshot: std::sync::Mutex<Option<LastSnapshot>>,
    /// Counts the epochs this process began: a delta read in one is never
    /// shared in the next, where the same sequence numbers name other events.
    generation: AtomicU64,
    /// The last sync failed: the database may hold acknowledged events not loaded here.
    behind: AtomicBool,
    /// A revoking write this process acknowledged (it committed) may be
    /// missing from its list: the sync after it failed, and none has worked
    /// since. The list then vouches for no token (see [`Self::is_revoked`]):
    /// the write's revocation would otherwise be admitted here until the
    /// list goes stale, counted from the sync *before* the write.
    write_unloaded: AtomicBool,
    /// When the last sync that worked began (the monotonic clock: a wall
    /// clock stepped back would stretch the bound).
    synced_at: std::sync::Mutex<Instant>,
    /// How long after [`Self::synced_at`] the list still vouches for a token.
    max_staleness: Duration,
    /// The most events a delta spans (see [`MAX_DELTA_EVENTS`]).
    max_delta_events: i64,
}

/// The bound of a list whose syncs keep failing, until set
/// (`revocation.max_staleness_secs`): the filter's default bound, so the
/// service's own checks fail closed no later than a filter left at it.
pub const DEFAULT_MAX_STALENESS: Duration = Duration::from_secs(45);

/// This process's list is too old to vouch for a token: its syncs have been
/// failing for longer than the bound, and another instance may have revoked it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaleList;

/// The most events a delta answer spans; a cursor further behind gets the
/// snapshot. Any caller may send any cursor, and each cursor's delta is read
/// on its own: from a made-up cursor far behind, that is most of the events
/// table and its encoding per request. The snapshot is shared, at most one
/// read a second. A filter that polls or long-polls is never this far behind
/// but after a long absence, or a burst of revocations between two polls.
const MAX_DELTA_EVENTS: i64 = 4096;

/// The delta from cursor `from` to head `head` in epoch `generation`,
/// read once by the first poll that asks for it and shared with the others.
struct SharedDelta<T = Arc<FeedBody>> {
    generation: u64,
    /// The epoch its cursor was read in (and its answer is labelled with).
    epoch: String,
    from: i64,
    /// The digest the cursor gave for the event at `from`.
    digest: Option<String>,
    head: i64,
    feed: tokio::sync::OnceCell<T>,
}

/// A delta as read: `None` when its cursor names another event than the
/// one at its position (a history that went back, or a made-up digest),
/// which gets the shared snapshot.
type DeltaRead = Option<Arc<FeedBody>>;

/// The `from` of a shared snapshot (cursors are never negative).
const SNAPSHOT: i64 = -1;

/// The snapshot read last: the second it was read in, and how far the
/// history was pruned then.
struct LastSnapshot {
    read_at: i64,
    pruned_through: i64,
    slot: Arc<SharedDelta>,
}

/// For how many seconds a snapshot read at one head is handed out again.
/// What it holds stays true until the head moves; only entries past their
/// retention may linger in it (until the next prune, which ends its reuse),
/// and every reader drops those by their expiry.
const SNAPSHOT_REUSE_SECS: i64 = 60;

impl<T> SharedDelta<T> {
    fn answers(
        &self,
        generation: u64,
        epoch: &str,
        (from, digest): (i64, Option<&str>),
        head: i64,
    ) -> bool {
        (self.generation, self.from, self.head) == (generation, from, head)
            && self.epoch == epoch
            && self.digest.as_deref() == digest
    }
}

/// One answer of the feed, and its encodings: made once, when the first
/// poll that shares the answer asks for them. A snapshot of a long list takes
/// tens of milliseconds to encode (a million entries, most of a second):
/// encoded per poll, a few anonymous polls a second without a cursor would
/// keep every core busy.
pub struct FeedBody {
    feed: RevocationFeed,
    /// The epoch its cursor is in: what the compact layout's digests are keyed by.
    epoch: String,
    compact: tokio::sync::OnceCell<axum::body::Bytes>,
    json: tokio::sync::OnceCell<axum::body::Bytes>,
}

/// The two encodings of a [`FeedBody`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// The compact binary layout (README, "Compact revocation feed").
    Compact,
    /// The JSON the contract defines.
    Json,
}

impl FeedBody {
    fn new(feed: RevocationFeed, epoch: &str) -> Self {
        Self {
            feed,
            epoch: epoch.to_owned(),
            compact: tokio::sync::OnceCell::new(),
            json: tokio::sync::OnceCell::new(),
        }
    }

    /// The key of the compact layout's digests: one per issuer and database
    /// epoch, so a delta always extends the snapshot a filter took.
    pub fn digest_key(&self) -> SetKey {
        SetKey::derive(&self.feed.issuer, &self.epoch)
    }

    fn cell(&self, encoding: Encoding) -> &tokio::sync::OnceCell<axum::body::Bytes> {
        match encoding {
            Encoding::Compact => &self.compact,
            Encoding::Json => &self.json,
        }
    }

    fn encode(&self, encoding: Encoding) -> axum::body::Bytes {
        match encoding {
            Encoding::Compact => encode(&self.feed, self.digest_key())
                .bytes()
                .to_vec()
                .into(),
            // Plain data with string keys: serializing it cannot fail.
            Encoding::Json => serde_json::to_vec(&self.feed).unwrap_or_default().into(),
        }
    }

    /// This answer in `encoding`, made by the first poll that asks for it.
    /// Made on a thread for blocking work: on a runtime thread, a long
    /// list's encoding held every request that thread would have served,
    /// and each poll waiting for it held another thread. Made by a task of
    /// its own: a poll that goes away (its client hung up) leaves it to
    /// finish for the others rather than to be begun again by the next.
    /// An error only when the encoding panicked.
    pub async fn encoded(
        self: &Arc<Self>,
        encoding: Encoding,
    ) -> Result<axum::body::Bytes, tokio::task::JoinError> {
        if let Some(bytes) = self.cell(encoding).get() {
            return Ok(bytes.clone());
        }
        let body = Arc::clone(self);
        let made = tokio::spawn(async move {
            let cell = body.cell(encoding);
            cell.get_or_try_init(|| {
                let body = Arc::clone(&body);
                tokio::task::spawn_blocking(move || body.encode(encoding))
            })
            .await
            .cloned()
        });
        made.await?
    }
}

impl std::ops::Deref for FeedBody {
    type Target = RevocationFeed;

    fn deref(&self) -> &RevocationFeed {
        &self.feed
    }
}

/// What a `since` cursor asks for.
pub enum FeedAnswer {
    NotModified,
    /// Shared by the polls answered with the same read.
    Body(Arc<FeedBody>),
}

impl Feed {
    /// `retention_secs`: how long past its token's `exp` an entry is kept
    /// (at least the largest clock skew of any verifier of these tokens);
    /// `max_waiters`: long polls held open at once.
    pub async fn load(
        store: &dyn Store,
        retention_secs: u64,
        max_waiters: usize,
        now: i64,
    ) -> Result<Self, StoreError> {
        let feed = Self {
            epoch: RwLock::new(store.epoch().await?),
            retention: Retention(i64::try_from(retention_secs).unwrap_or(i64::MAX)),
            head: AtomicI64::new(0),
            pruned_through: AtomicI64::new(0),
            set: RwLock::new(OwnList::default()),
            sync_lock: tokio::sync::Mutex::new(()),
            notifier: FeedNotifier::new(0, max_waiters),
            store_reads: AtomicU64::new(0),
            last_delta: std::sync::Mutex::new(None),
            last_snapshot: std::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            behind: AtomicBool::new(false),
            write_unloaded: AtomicBool::new(false),
            synced_at: std::sync::Mutex::new(Instant::now()),
            max_staleness: DEFAULT_MAX_STALENESS,
            max_delta_events: MAX_DELTA_EVENTS,
        };
        feed.sync(store, now).await?;
        Ok(feed)
    }

    /// Pulls events newer than what this process has seen. Called after every
    /// revoking write (before it is acknowledged) and periodically. Until one
    /// works again after a failure, every poll catches up before it is
    /// answered (the write before the failed sync was acknowledged).
    pub async fn sync(&self, store: &dyn Store, now: i64) -> Result<(), StoreError> {
        self.sync_marking(store, now, false).await
    }

    /// [`Self::sync`] right after a revoking write committed: if it fails,
    /// the list vouches for no token until a sync works again (the write
    /// is acknowledged all the same: it committed).
    pub async fn sync_after_write(&self, store: &dyn Store, now: i64) -> Result<(), StoreError> {
        self.sync_marking(store, now, true).await
    }

    async fn sync_marking(
        &self,
        store: &dyn Store,
        now: i64,
        after_write: bool,
    ) -> Result<(), StoreError> {
        let _one_at_a_time = self.sync_lock.lock().await;
        let began = Instant::now();
        // Every wait on the database in it is bounded: a read never answered
        // must not hold the lock, and every later sync behind it (each is
        // followed by `?`: given up there, it is as if that read had failed).
        // The sync as a whole is not: a long list read over a slow link takes
        // as long as it takes, while rows keep coming.
        let synced = self.sync_locked(store, now).await;
        // Under the lock: a sync that worked must not clear the flag a later
        // one that failed has set.
        self.behind.store(synced.is_err(), Ordering::SeqCst);
        if synced.is_ok() {
            *self.lock_synced_at() = began;
            self.write_unloaded.store(false, Ordering::SeqCst);
        } else if after_write {
            self.write_unloaded.store(true, Ordering::SeqCst);
        }
        synced
    }

    /// Sets how long the list vouches for tokens after its last sync that
    /// worked (`revocation.max_staleness_secs`).
    pub fn with_max_staleness(mut self, bound: Duration) -> Self {
        self.max_staleness = bound;
        self
    }

    /// Whether memory may lack what the database holds: the last sync
    /// failed, or the last that worked is older than the bound.
    fn behind(&self) -> bool {
        self.behind.load(Ordering::SeqCst) || self.stale()
    }

    /// Whether the last sync that worked is older than the bound: the
    /// database may hold revocations (another instance's) missing here.
    fn stale(&self) -> bool {
        self.lock_synced_at().elapsed() > self.max_staleness
    }

    fn lock_synced_at(&self) -> std::sync::MutexGuard<'_, Instant> {
        // Nothing panics while holding it; a poisoned time is still a time.
        self.synced_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn sync_locked(&self, store: &dyn Store, now: i64) -> Result<(), StoreError> {
        let head = bounded(store.feed_head()).await?;
        match head.epoch.as_deref() {
            // Another instance found the history went back, or the restore
            // step (`feed new-epoch`) ran: cursors of this one's epoch name
            // positions of a history the database no longer holds.
            Some(epoch) if epoch != self.epoch() => {
                tracing::warn!("the database holds a new revocation feed epoch; taking it");
                self.begin_epoch(epoch.to_owned(), &head);
            }
            _ if head.head < self.head.load(Ordering::SeqCst) => {
                self.start_new_epoch(store, &head).await?;
            }
            _ => {}
        }
        // The clock stepped back below a time the list forgot entries at:
        // what it forgot may cover tokens that pass again, and the events
        // already read are not read again. Reloaded whole from the database
        // (which forgets by `clock::forget_now`) — replaced only once that
        // read worked: emptied first, the list would vouch for every revoked
        // token while the read runs, and for as long as it fails.
        let stepped_back = self
            .set
            .read()
            .is_ok_and(|s| s.set.clock_stepped_back(u(now)));
        let forgotten_through = self.retention.forgotten_through(now);
        let (after, newest) = if stepped_back {
            (0, None)
        } else {
            self.set
                .read()
                .map(|s| (s.seq, s.newest.clone()))
                .unwrap_or_default()
        };
        // From the newest event applied on, to check it is still there as it was.
        let from = newest.as_ref().map_or(after, |e| after.min(e.seq - 1));
        let mut events = store.feed_events_after(from, forgotten_through).await?;
        let pruned_by_none = self.retention.pruned_by_none(now);
        let pruned = (pruned_by_none, head.pruned_through);
        if newest.is_some_and(|n| history_diverged(&n, &events, pruned)) {
            self.start_new_epoch(store, &head).await?;
            events = store.feed_events_after(0, forgotten_through).await?;
        }
        if let Ok(mut set) = self.set.write() {
            if stepped_back {
                tracing::warn!("the clock stepped back; the revocation list is reloaded");
                *set = OwnList::default();
            }
            let after = set.seq;
            events.retain(|e| e.seq > after);
            set.apply(&events, self.retention, now);
            set.seq = set.seq.max(head.head);
        }
        self.pruned_through
            .fetch_max(head.pruned_through, Ordering::SeqCst);
        self.head.fetch_max(head.head, Ordering::SeqCst);
        // After `head` and the set: a woken waiter answers from both.
        self.notifier.bump(head.head);
        Ok(())
    }

    /// Deletes the events no token can outlive any more; returns how many.
    pub async fn prune(&self, store: &dyn Store, now: i64) -> Result<u64, StoreError> {
        store
            .prune_feed(self.retention.forgotten_through(now))
            .await
    }

    /// Its counters in the Prometheus text format.
    pub fn render_metrics(&self) -> String {
        format!(
            "# HELP authflow_feed_store_reads_total Revocation feed answers read from the database (long polls woken together share one).\n\
             # TYPE authflow_feed_store_reads_total counter\nauthflow_feed_store_reads_total {}\n",
            self.store_reads.load(Ordering::Relaxed)
        )
    }

    /// The database is behind what this process already published: its
    /// history went back (restored, or failed over to a replica that missed
    /// the last commits), and the sequence numbers of the lost events will be
    /// (or were) handed out again. Cursors issued before would then skip the
    /// new events: a new epoch (the one another instance may have started
    /// already), so every poller gets a snapshot, and this process's own
    /// list reloaded from nothing.
    async fn start_new_epoch(&self, store: &dyn Store, head: &FeedHead) -> Result<(), StoreError> {
        let epoch = bounded(store.renew_epoch(&self.epoch())).await?;
        tracing::error!(
            db_head = head.head,
            known_head = self.head.load(Ordering::SeqCst),
            "the revocation feed went back in the database; new feed epoch"
        );
        self.begin_epoch(epoch, head);
        Ok(())
    }

    /// Starts answering in `epoch` from nothing: the list reloaded, every
    /// cursor of the epoch before answered with a snapshot.
    fn begin_epoch(&self, epoch: String, head: &FeedHead) {
        if let Ok(mut e) = self.epoch.write() {
            *e = epoch;
        }
        if let Ok(mut set) = self.set.write() {
            *set = OwnList::default();
        }
        self.head.store(head.head, Ordering::SeqCst);
        self.pruned_through
            .store(head.pruned_through, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
        *self.lock_last_delta() = None;
        // Parked long polls hold cursors of the old epoch: answer them now.
        self.notifier.new_epoch(head.head);
    }

    fn epoch(&self) -> String {
        self.epoch.read().map(|e| e.clone()).unwrap_or_default()
    }

    pub fn cursor(&self) -> String {
        let newest = self.set.read().ok().and_then(|s| s.newest.clone());
        cursor_text(
            &self.epoch(),
            self.head.load(Ordering::SeqCst),
            newest.as_ref(),
        )
    }

    /// Whether the event this process knows at `seq` is another than the
    /// one `digest` names (not known here: no).
    fn other_event_at(&self, seq: i64, digest_named: &str) -> bool {
        self.set.read().is_ok_and(|s| {
            s.newest
                .as_ref()
                .is_some_and(|e| e.seq == seq && digest(e) != digest_named)
        })
    }

    /// The sequence number in `cursor` if it was issued by this database.
    fn parse_cursor(&self, cursor: &str) -> Option<i64> {
        cursor_in(&self.epoch(), cursor)
    }

    /// Long polls parked right now.
    pub fn waiting(&self) -> usize {
        self.notifier.waiting()
    }

    /// Answers every parked long poll now (each gets its `304` or delta, and
    /// its filter polls again, at another instance), and parks none from now
    /// on: the service is stopping, and a parked poll would hold the stop for
    /// up to its `wait`.
    pub fn stop_waiters(&self) {
        self.notifier.stop();
    }

    /// For a long poll that would be answered `304` now: waits (parked, under
    /// the waiter cap) until the head passes `since` or `wait` is over; whether
    /// it passed. Over the cap it returns at once: the caller answers as a plain poll.
    pub async fn wait_past(&self, since: &str, wait: std::time::Duration) -> bool {
        let epochs = self.notifier.epochs();
        let Some(seq) = self.parse_cursor(since) else {
            // Answered 304 a moment ago, of an epoch replaced since: answer again.
            return true;
        };
        let Some(slot) = self.notifier.try_park() else {
            return false;
        };
        let passed = self.notifier.wait_past(&slot, seq, epochs, wait).await;
        passed || self.parse_cursor(since).is_none()
    }

    /// Answers `GET /v1/revocations?since=&wait=`: a `304` is held up to
    /// `wait` for something newer, then answered again, whether or not
    /// anything came: a sync that failed meanwhile (the database gone) must
    /// not let the `304` computed before the wait vouch for a list this
    /// instance no longer knows to be current. `now` is read at each answer.
    pub async fn answer_within(
        &self,
        store: &dyn Store,
        issuer: &str,
        since: Option<&str>,
        wait: std::time::Duration,
        now: impl Fn() -> i64,
    ) -> Result<FeedAnswer, StoreError> {
        let answer = self.answer(store, issuer, since, now()).await?;
        match (&answer, since) {
            (FeedAnswer::NotModified, Some(cursor)) if !wait.is_zero() => {
                self.wait_past(cursor, wait).await;
                self.answer(store, issuer, Some(cursor), now()).await
            }
            _ => Ok(answer),
        }
    }

    /// Answers `GET /v1/revocations?since=`; the 304 path reads memory only.
    pub async fn answer(
        &self,
        store: &dyn Store,
        issuer: &str,
        since: Option<&str>,
        now: i64,
    ) -> Result<FeedAnswer, StoreError> {
        // Before the cursor is read: a new epoch bumps it after the cursors change.
        let generation = self.generation.load(Ordering::SeqCst);
        // The answer names the epoch its cursor was read in, even if a new
        // one begins while it is read (its next poll then gets a snapshot).
        let epoch = self.epoch();
        let position = since.and_then(|c| position_in(&epoch, c));
        let since = position.map(|(seq, _)| seq);
        let named = position.and_then(|(_, digest)| digest);
        if since > Some(self.head.load(Ordering::SeqCst)) || self.behind() {
            // A cursor from another instance that saw a newer write than this
            // one has synced yet (milliseconds, on one database), the last
            // sync failed, or none has run for longer than the list vouches
            // for (the periodic syncs stopped without failing): catch up
            // first, rather than answer a whole snapshot to a current
            // poller, or a 304 over an acknowledged write or another
            // instance's ban.
            // While a sync runs, its result is this one's: such cursors (anyone
            // may send one) never queue syncs ahead of a revoking write's.
            match self.sync_lock.try_lock() {
                Ok(free) => {
                    drop(free);
                    self.sync(store, now).await?;
                }
                Err(_) => {
                    drop(self.sync_lock.lock().await);
                    // That sync failed too: still behind, so no 304 (nor a
                    // delta from memory's head) over the acknowledged write.
                    // Its failure is this poll's answer, as its success would
                    // have been: a sync of its own each, the polls that waited
                    // together would fail one after another (each up to the
                    // database's timeout) ahead of a revoking write's sync.
                    if self.behind() {
                        return Err(StoreError::Database(sqlx::Error::Io(
                            std::io::Error::other("the revocation feed's last sync failed"),
                        )));
                    }
                }
            }
        }
        let head = self.head.load(Ordering::SeqCst);
        let pruned = self.pruned_through.load(Ordering::SeqCst);
        let mut delta_from = since
            .filter(|s| *s >= pruned && *s <= head)
            .filter(|s| head - s <= self.max_delta_events);
        // The cursor names an event the history here no longer has at its
        // position: a snapshot.
        if delta_from.is_some_and(|s| named.is_some_and(|d| self.other_event_at(s, d))) {
            delta_from = None;
        }
        if delta_from == Some(head) {
            return Ok(FeedAnswer::NotModified);
        }
        let Some(from) = delta_from else {
            return self
                .shared_snapshot(store, issuer, (generation, &epoch), head, now)
                .await
                .map(FeedAnswer::Body);
        };
        // Every long poll a change wakes holds the same cursor and asks for the
        // same delta at once: the first reads it, the others wait for that
        // read and share it, rather than queueing one database read each. A
        // poll from another cursor does not wait for that read (nor take its
        // slot: any caller may send any cursor): it reads on its own.
        let shared = {
            let mut last = self.lock_last_delta();
            match last.as_ref() {
                Some(slot) if slot.answers(generation, &epoch, (from, named), head) => {
                    Some(Arc::clone(slot))
                }
                // Another cursor's read, under way (a poll holds the slot
                // besides this one); one that failed or whose poll went
                // away holds it no more.
                Some(slot)
                    if slot.generation == generation
                        && !slot.feed.initialized()
                        && Arc::strong_count(slot) > 1 =>
                {
                    None
                }
                _ => {
                    let slot = Arc::new(SharedDelta {
                        generation,
                        epoch: epoch.clone(),
                        from,
                        digest: named.map(str::to_owned),
                        head,
                        feed: tokio::sync::OnceCell::new(),
                    });
                    *last = Some(Arc::clone(&slot));
                    Some(slot)
                }
            }
        };
        let read_delta = || async {
            let delta = self
                .read_delta(store, issuer, &epoch, (from, named), head, now)
                .await?;
            Ok::<_, StoreError>(delta.map(Arc::new))
        };
        let delta = match shared {
            None => read_delta().await?,
            // A read that fails (or whose poll went away) leaves the cell
            // empty: the next poll waiting on it reads in its place.
            Some(shared) => shared.feed.get_or_try_init(read_delta).await?.clone(),
        };
        match delta {
            Some(feed) => Ok(FeedAnswer::Body(feed)),
            // The cursor names an event the history here no longer has at
            // its position, or a made-up one: the snapshot every such poll
            // shares, not a read of the whole list each.
            None => self
                .shared_snapshot(store, issuer, (generation, &epoch), head, now)
                .await
                .map(FeedAnswer::Body),
        }
    }

    /// The snapshot at `head` at `now`: read once and handed to every poll
    /// asking for it in the [`SNAPSHOT_REUSE_SECS`] after it, or while that
    /// read is under way. A whole list may take seconds to read (a million
    /// entries), and polls without a cursor come from anyone: a read each
    /// second would keep a core busy, and reads would pile up.
    async fn shared_snapshot(
        &self,
        store: &dyn Store,
        issuer: &str,
        (generation, epoch): (u64, &str),
        head: i64,
        now: i64,
    ) -> Result<Arc<FeedBody>, StoreError> {
        let pruned_through = self.pruned_through.load(Ordering::SeqCst);
        let slot = {
            let mut last = self
                .last_snapshot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match last.as_ref() {
                Some(last)
                    if last.slot.answers(generation, epoch, (SNAPSHOT, None), head)
                        && last.pruned_through == pruned_through
                        && ((0..SNAPSHOT_REUSE_SECS).contains(&(now - last.read_at))
                            || !last.slot.feed.initialized()) =>
                {
                    Arc::clone(&last.slot)
                }
                _ => {
                    let slot = Arc::new(SharedDelta {
                        generation,
                        epoch: epoch.to_owned(),
                        from: SNAPSHOT,
                        digest: None,
                        head,
                        feed: tokio::sync::OnceCell::new(),
                    });
                    *last = Some(LastSnapshot {
                        read_at: now,
                        pruned_through,
                        slot: Arc::clone(&slot),
                    });
                    slot
                }
            }
        };
        let feed = slot
            .feed
            .get_or_try_init(|| async {
                Ok::<_, StoreError>(Arc::new(
                    self.read_snapshot(store, issuer, epoch, head, now).await?,
                ))
            })
            .await?;
        Ok(Arc::clone(feed))
    }

    fn lock_last_delta(&self) -> std::sync::MutexGuard<'_, Option<Arc<SharedDelta<DeltaRead>>>> {
        // Nothing panics while holding it; a poisoned slot is still a valid one.
        self.last_delta
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The delta after `from`, from the database; `None` when the digest
    /// its cursor `named` there is not that of the event at `from` (a
    /// history that went back): the caller answers with the snapshot.
    async fn read_delta(
        &self,
        store: &dyn Store,
        issuer: &str,
        epoch: &str,
        (from, named): (i64, Option<&str>),
        head: i64,
        now: i64,
    ) -> Result<Option<FeedBody>, StoreError> {
        self.store_reads.fetch_add(1, Ordering::Relaxed);
        let forgotten_through = self.retention.forgotten_through(now);
        // From the cursor's own event on, to check it.
        let after = if named.is_some() { from - 1 } else { from };
        let mut events = store.feed_events_after(after, forgotten_through).await?;
        let other = events
            .first()
            .is_some_and(|e| e.seq == from && named.is_some_and(|d| digest(e) != d));
        if other {
            return Ok(None);
        }
        events.retain(|e| e.seq > from);
        Ok(Some(self.body(issuer, epoch, &events, false, head)))
    }

    /// The snapshot, from the database.
    async fn read_snapshot(
        &self,
        store: &dyn Store,
        issuer: &str,
        epoch: &str,
        head: i64,
        now: i64,
    ) -> Result<FeedBody, StoreError> {
        self.store_reads.fetch_add(1, Ordering::Relaxed);
        let forgotten_through = self.retention.forgotten_through(now);
        let events = store.feed_events_after(0, forgotten_through).await?;
        Ok(self.body(issuer, epoch, &events, true, head))
    }

    /// An answer of `events`, its cursor at the newest of them or `head`.
    fn body(
        &self,
        issuer: &str,
        epoch: &str,
        events: &[FeedEvent],
        snapshot: bool,
        head: i64,
    ) -> FeedBody {
        let newest = events.iter().map(|e| e.seq).max().unwrap_or(0).max(head);
        let retention = self.retention;
        let feed = RevocationFeed {
            issuer: issuer.to_owned(),
            cursor: cursor_text(epoch, newest, events.last()),
            snapshot,
            ..events_feed(events, |exp| retention.forget_after(exp))
        };
        FeedBody::new(feed, epoch)
    }

    /// Whether a token with this `exp` may still pass a verifier somewhere
    /// (so revoking it still matters).
    pub fn may_still_pass(&self, exp: i64, now: i64) -> bool {
        self.retention.needed(exp, now)
    }

    /// Is a token with these claims revoked, per what this process knows?
    /// [`StaleList`] when it is not on a list whose syncs have failed for
    /// longer than the bound: as a filter does, the list then vouches for
    /// nothing (another instance may have banned its user meanwhile).
    pub fn is_revoked(
        &self,
        jti: Option<&str>,
        sid: &str,
        sub: Option<&str>,
        issued_at: i64,
        now: i64,
    ) -> Result<bool, StaleList> {
        let Ok(own) = self.set.read() else {
            return Ok(true);
        };
        let probe = Probe {
            jti,
            sid: Some(sid),
            sub,
            issued_at: Some(u(issued_at)),
        };
        if own
            .set
            .check(&probe, self.retention.secs(), u(now))
            .is_some()
        {
            return Ok(true);
        }
        if self.stale() || self.write_unloaded.load(Ordering::SeqCst) {
            return Err(StaleList);
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    const EXP: i64 = 1_900_000_000;
    const MARGIN: u64 = 600;

    async fn store(dir: &tempfile::TempDir) -> SqliteStore {
        let kek = crate::kek::Kek::new(
            &crate::kek::parse_key(&crate::kek::generate_key()).unwrap(),
            &[],
        )
        .unwrap();
        SqliteStore::open(
            &format!("sqlite://{}", dir.path().join("feed.db").display()),
            std::sync::Arc::new(kek),
        )
        .await
        .unwrap()
    }

    fn event(kind: FeedKind, subject: &str, not_before: Option<i64>) -> FeedEvent {
        FeedEvent {
            seq: 1,
            kind,
            subject: subject.into(),
            not_before,
            expires_at: EXP,
        }
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
            let events = [
                event(FeedKind::Token, "j1", None),
                event(FeedKind::Session, "s1", None),
                event(FeedKind::Subject, "u1", Some(EXP - 100)),
            ];
            set.apply(&events, feed.retention, EXP - 10);
        }
        let iat = EXP - 900;
        for now in [EXP + 1, EXP + 30, EXP + 600] {
            assert!(
                feed.is_revoked(Some("j1"), "other", None, iat, now) == Ok(true),
                "jti at exp+{}",
                now - EXP
            );
            assert!(
                feed.is_revoked(None, "s1", None, iat, now) == Ok(true),
                "sid at exp+{}",
                now - EXP
            );
            assert!(
                feed.is_revoked(None, "other", Some("u1"), iat, now) == Ok(true),
                "ban at exp+{}",
                now - EXP
            );
        }
        assert!(
            feed.is_revoked(Some("j1"), "s1", Some("u1"), iat, EXP + 601) == Ok(false),
            "forgotten past the margin"
        );
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
            let FeedAnswer::Body(body) = feed.answer(&store, "iss", None, now).await.unwrap()
            else {
                panic!()
            };
            assert_eq!(
                body.revoked_tokens.len(),
                1,
                "published at exp+{}",
                now - EXP
            );
            assert_eq!(
                body.revoked_tokens[0].expires_at,
                u64::try_from(EXP + 600).unwrap(),
                "forget-after = exp + margin"
            );
        }
        // Kept (and published) past that by the instances' clock margin.
        let gone = EXP + 601 + INSTANCE_CLOCK_MARGIN;
        assert_eq!(feed.prune(&store, gone - 1).await.unwrap(), 0);
        assert_eq!(feed.prune(&store, gone).await.unwrap(), 1);
        feed.sync(&store, gone).await.unwrap();
        let FeedAnswer::Body(body) = feed.answer(&store, "iss", None, gone).await.unwrap() else {
            panic!()
        };
        assert_eq!(body.entry_count(), 0);
    }

    /// Finding: instances sharing the database may read their clocks a few
    /// seconds apart. One running 5 s ahead pruned (and stopped publishing)
    /// an entry while the others still publish it as needed, and a filter
    /// allowing the largest skew still passes its token: a filter taking a
    /// snapshot then (a new Envoy, a restart) never learns of it, and the
    /// revoked token passes there. One-time ids (DPoP proofs, client
    /// assertions) are kept `INSTANCE_CLOCK_MARGIN_SECS` longer for exactly
    /// this; revocations were not.
    #[tokio::test]
    async fn an_instance_clock_ahead_prunes_no_entry_still_needed() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        store.revoke_token("j1", EXP - 10, EXP).await.unwrap();
        let right = Feed::load(&store, MARGIN, 10, EXP - 10).await.unwrap();
        let ahead = Feed::load(&store, MARGIN, 10, EXP - 10).await.unwrap();
        let real_now = EXP + i64::try_from(MARGIN).unwrap() - 4;
        assert!(right.may_still_pass(EXP, real_now));
        ahead.prune(&store, real_now + 5).await.unwrap();
        for (name, feed) in [("the instance ahead", &ahead), ("another", &right)] {
            let FeedAnswer::Body(body) = feed.answer(&store, "iss", None, real_now).await.unwrap()
            else {
                panic!()
            };
            assert_eq!(
                body.revoked_tokens.len(),
                1,
                "{name}: a snapshot taken now must still hold j1"
            );
        }
        let FeedAnswer::Body(body) = ahead
            .answer(&store, "iss", None, real_now + 5)
            .await
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            body.revoked_tokens.len(),
            1,
            "nor may the instance ahead leave it out of its own snapshots"
        );
    }

    /// A second connection to the test database, to break it under a feed.
    async fn raw_connection(dir: &tempfile::TempDir) -> sqlx::SqlitePool {
        sqlx::SqlitePool::connect(&format!(
            "sqlite://{}",
            dir.path().join("feed.db").display()
        ))
        .await
        .unwrap()
    }

    /// Renames table `from` to `to`: what reads `from` fails until it is back.
    async fn rename(raw: &sqlx::SqlitePool, from: &str, to: &str) {
        sqlx::query(&format!("ALTER TABLE {from} RENAME TO {to}"))
            .execute(raw)
            .await
            .unwrap();
    }

    /// Finding: a sync that failed right after a revoking write (the write
    /// committed, the read after it did not) was only logged; the instance
    /// kept answering `304` from memory until some later sync worked (on
    /// SQLite, the maintenance tick). The next poll now catches up first.
    #[tokio::test]
    async fn a_poll_after_a_failed_sync_catches_up_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let feed = Feed::load(&store, MARGIN, 10, EXP - 10).await.unwrap();
        let cursor = feed.cursor();
        store.revoke_token("j-late", EXP - 10, EXP).await.unwrap();
        let raw = raw_connection(&dir).await;
        rename(&raw, "revocation_events", "held_away").await;
        assert!(
            feed.sync(&store, EXP - 10).await.is_err(),
            "the read after the write fails"
        );
        rename(&raw, "held_away", "revocation_events").await;
        raw.close().await;
        let answer = feed
            .answer(&store, "iss", Some(&cursor), EXP - 10)
            .await
            .unwrap();
        assert!(
            jtis(&answer).contains(&"j-late".to_string()),
            "the poll after the failure gets the acknowledged revocation (got {:?})",
            jtis(&answer)
        );
    }

    /// Finding: a `304` was refused only after a sync that failed, not when
    /// none had run for longer than the list vouches for (the instance's
    /// periodic sync task stopped, its database notifications lost). A
    /// filter polling only that instance took `304` after `304` as current,
    /// and another instance's ban never reached it. The poll catches up first.
    #[tokio::test]
    async fn a_poll_to_an_instance_unsynced_past_its_bound_catches_up_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let feed = Feed::load(&store, MARGIN, 10, EXP - 10)
            .await
            .unwrap()
            .with_max_staleness(Duration::from_secs(1));
        let cursor = feed.cursor();
        // Another instance's write: nothing tells this one.
        store
            .revoke_token("j-elsewhere", EXP - 10, EXP)
            .await
            .unwrap();
        let answer = feed
            .answer(&store, "iss", Some(&cursor), EXP - 10)
            .await
            .unwrap();
        assert!(
            matches!(answer, FeedAnswer::NotModified),
            "within the bound, memory answers"
        );
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        let answer = feed
            .answer(&store, "iss", Some(&cursor), EXP - 10)
            .await
            .unwrap();
        assert!(
            jtis(&answer).contains(&"j-elsewhere".to_string()),
            "past the bound, the poll gets the other instance's revocation (got {:?})",
            jtis(&answer)
        );
    }

    /// A list whose syncs have failed past the bound vouches for no token,
    /// and still refuses those it knows revoked; a sync that works ends it.
    #[tokio::test]
    async fn a_list_unsynced_past_its_bound_vouches_for_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        store.revoke_token("j-known", EXP - 10, EXP).await.unwrap();
        let feed = Feed::load(&store, MARGIN, 10, EXP - 10)
            .await
            .unwrap()
            .with_max_staleness(Duration::from_millis(100));
        let check = |jti| feed.is_revoked(Some(jti), "s", None, EXP - 900, EXP - 10);
        assert_eq!(check("j-other"), Ok(false));
        assert_eq!(check("j-known"), Ok(true), "loaded");
        let raw = raw_connection(&dir).await;
        // The feed's head is unreadable: every sync fails, nothing is lost.
        rename(&raw, "meta", "held_away").await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(feed.sync(&store, EXP - 10).await.is_err());
        assert_eq!(check("j-other"), Err(StaleList));
        assert_eq!(check("j-known"), Ok(true));
        rename(&raw, "held_away", "meta").await;
        raw.close().await;
        feed.sync(&store, EXP - 10).await.unwrap();
        assert_eq!(check("j-other"), Ok(false));
    }

    /// A long poll parked on an instance that then loses its database: the
    /// `304` worked out before the wait vouched for the list when the wait
    /// ran out, though another instance may have taken a ban meanwhile, and
    /// the filter marked its list current on it.
    #[tokio::test]
    async fn a_long_poll_is_not_answered_304_once_the_instance_has_fallen_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let feed = Feed::load(&store, MARGIN, 10, EXP - 10).await.unwrap();
        let cursor = feed.cursor();
        let raw = raw_connection(&dir).await;
        let wait = std::time::Duration::from_millis(300);
        let poll = feed.answer_within(&store, "iss", Some(&cursor), wait, || EXP - 10);
        let fall_behind = async {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            rename(&raw, "revocation_events", "held_away").await;
            assert!(feed.sync(&store, EXP - 10).await.is_err());
        };
        let (answer, ()) = tokio::join!(poll, fall_behind);
        assert!(
            answer.is_err(),
            "no 304 from an instance whose last sync failed: {:?}",
            answer.map(|a| matches!(a, FeedAnswer::NotModified))
        );
    }

    /// Polls that waited for a sync that failed share its failure (an
    /// error, never a `304`), as they share a success. Each running a sync
    /// of its own under `sync_lock`, k polls waiting together answered after
    /// k failed syncs in turn while the database failed slowly (a pool's
    /// acquire timeout, a lock, a failover: up to 10 s a read), and a
    /// revoking write's sync (and the logout's answer) queued behind them
    /// all; `/v1/revocations` is public, so anyone set the queue's length.
    #[tokio::test]
    async fn polls_that_waited_for_a_failed_sync_do_not_each_queue_another() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let feed = Feed::load(&store, MARGIN, 10, EXP - 10).await.unwrap();
        let cursor = feed.cursor();
        let raw = raw_connection(&dir).await;
        // A slow database: each read of `meta` takes a while (a view that
        // counts first), and the events cannot be read at all.
        rename(&raw, "meta", "meta_real").await;
        sqlx::query(
            "CREATE VIEW meta AS SELECT * FROM meta_real WHERE \
             (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 800000) \
              SELECT count(*) FROM c) > 0",
        )
        .execute(&raw)
        .await
        .unwrap();
        rename(&raw, "revocation_events", "held_away").await;
        // How long one failed sync takes: the polls come a tenth of that
        // after the next one began, while it holds the lock.
        let started = std::time::Instant::now();
        assert!(feed.sync(&store, EXP - 10).await.is_err(), "behind");
        let one = started.elapsed();
        let in_flight = feed.sync(&store, EXP - 10);
        let polls = async {
            tokio::time::sleep(one / 10).await;
            tokio::join!(
                feed.answer(&store, "iss", Some(&cursor), EXP - 10),
                feed.answer(&store, "iss", Some(&cursor), EXP - 10),
                feed.answer(&store, "iss", Some(&cursor), EXP - 10),
            )
        };
        let (synced, polls) = tokio::join!(in_flight, polls);
        assert!(synced.is_err(), "the events cannot be read");
        for answer in <[_; 3]>::from(polls) {
            match answer {
                Err(e) => assert!(
                    e.to_string().contains("last sync failed"),
                    "a poll that waited for the failed sync ran one of its own: {e}"
                ),
                Ok(_) => panic!("an answer (a 304?) over a failed sync"),
            }
        }
    }

    /// The body of an answer that must have one (a delta or a snapshot).
    fn body_of(answer: FeedAnswer) -> Arc<FeedBody> {
        match answer {
            FeedAnswer::Body(body) => body,
            FeedAnswer::NotModified => panic!("a 304 where a body was due"),
        }
    }

    /// A database holding one revocation (`j1`), and an instance on it.
    async fn with_one_revocation(dir: &tempfile::TempDir) -> (SqliteStore, Feed) {
        let primary = store(dir).await;
        primary.revoke_token("j1", EXP - 10, EXP).await.unwrap();
        let feed = Feed::load(&primary, MARGIN, 10, EXP - 10).await.unwrap();
        (primary, feed)
    }

    /// A consistent copy of the database as it is now (what a backup, or a
    /// replica lagging behind the primary, holds).
    async fn backup(dir: &tempfile::TempDir, name: &str) -> String {
        let path = dir.path().join(name);
        let pool = sqlx::SqlitePool::connect(&format!(
            "sqlite://{}",
            dir.path().join("feed.db").display()
        ))
        .await
        .unwrap();
        sqlx::query(&format!("VACUUM INTO '{}'", path.display()))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        format!("sqlite://{}", path.display())
    }

    async fn open(url: &str) -> SqliteStore {
        let kek = crate::kek::Kek::new(
            &crate::kek::parse_key(&crate::kek::generate_key()).unwrap(),
            &[],
        )
        .unwrap();
        SqliteStore::open(url, std::sync::Arc::new(kek))
            .await
            .unwrap()
    }

    impl Feed {
        /// What a delta read begun before the epoch changed leaves behind:
        /// its answer, in the slot it took then.
        async fn store_in_flight_delta_of_the_lost_history(
            &self,
            from: i64,
            head: i64,
            answer: &FeedAnswer,
        ) {
            let FeedAnswer::Body(feed) = answer else {
                panic!("a delta")
            };
            let generation = self.generation.load(Ordering::SeqCst) - 1;
            // Labelled as the current epoch: the generation alone keeps it apart.
            *self.lock_last_delta() = Some(Arc::new(SharedDelta {
                generation,
                epoch: self.epoch(),
                from,
                digest: None,
                head,
                feed: tokio::sync::OnceCell::new_with(Some(Some(Arc::clone(feed)))),
            }));
        }
    }

    fn jtis(answer: &FeedAnswer) -> Vec<String> {
        match answer {
            FeedAnswer::NotModified => vec![],
            FeedAnswer::Body(b) => b.revoked_tokens.iter().map(|t| t.jti.clone()).collect(),
        }
    }

    /// The database goes back in time under a running instance (a failover
    /// to a replica that had not received the last commits, a restore from
    /// a backup): the epoch is stored in the database, so it is the same,
    /// and the sequence numbers the lost events had are handed out again.
    /// A revocation acknowledged after that must still reach the filter
    /// whose cursor was issued before it, and the service's own checks:
    /// also when it brings the head back to where this instance had seen it
    /// (one event lost) before any sync noticed it lower, so the head alone
    /// no longer tells (the filter got `304` over it, then the deltas after).
    #[tokio::test]
    async fn a_revocation_after_the_database_went_back_reaches_current_pollers() {
        for lost in [2, 1] {
            let dir = tempfile::tempdir().unwrap();
            let (primary, feed) = with_one_revocation(&dir).await;
            let replica = backup(&dir, "replica.db").await;
            // More revocations; a filter polls and takes them.
            for i in 0..lost {
                primary
                    .revoke_token(&format!("j-lost-{i}"), EXP - 10, EXP)
                    .await
                    .unwrap();
            }
            feed.sync(&primary, EXP - 10).await.unwrap();
            let filter_cursor = feed.cursor();
            // The primary is lost; the instance goes on against the replica.
            let replica = open(&replica).await;
            // An admin revokes a token: committed, synced, acknowledged.
            replica.revoke_token("j-new", EXP - 10, EXP).await.unwrap();
            feed.sync(&replica, EXP - 10).await.unwrap();
            let answer = feed
                .answer(&replica, "iss", Some(&filter_cursor), EXP - 10)
                .await
                .unwrap();
            assert!(
                jtis(&answer).contains(&"j-new".to_string()),
                "{lost} lost: the filter at {filter_cursor} gets the new revocation (got {:?})",
                jtis(&answer)
            );
            assert!(
                feed.is_revoked(Some("j-new"), "s", None, EXP - 900, EXP - 10) == Ok(true),
                "{lost} lost: the service's own checks see the acknowledged revocation"
            );
        }
    }

    /// A history written again with the very same content lost nothing:
    /// no new epoch (every filter would reload the whole list for nothing).
    #[tokio::test]
    async fn the_same_revocation_written_again_is_no_lost_history() {
        let dir = tempfile::tempdir().unwrap();
        let primary = store(&dir).await;
        primary.revoke_token("j1", EXP - 10, EXP).await.unwrap();
        let _ = Feed::load(&primary, MARGIN, 10, EXP - 10).await.unwrap();
        let same = backup(&dir, "same.db").await;
        primary.revoke_token("j2", EXP - 10, EXP).await.unwrap();
        let feed = Feed::load(&primary, MARGIN, 10, EXP - 10).await.unwrap();
        let cursor = feed.cursor();
        let same = open(&same).await;
        same.revoke_token("j2", EXP - 10, EXP).await.unwrap();
        feed.sync(&same, EXP - 10).await.unwrap();
        assert_eq!(feed.cursor(), cursor, "the same history: no new epoch");
    }

    /// The newest event this instance applied is pruned by another whose
    /// clock is a little ahead (within the instance margin): gone from the
    /// database, but not lost with a history that went back. No new epoch
    /// (every filter would reload the whole list for nothing).
    #[tokio::test]
    async fn an_event_pruned_by_an_instance_whose_clock_is_ahead_is_no_lost_history() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        store.revoke_token("j1", EXP - 10, EXP).await.unwrap();
        let feed = Feed::load(&store, MARGIN, 10, EXP - 10).await.unwrap();
        let cursor = feed.cursor();
        let ahead = EXP + MARGIN as i64 + INSTANCE_CLOCK_MARGIN + 1;
        assert_eq!(feed.prune(&store, ahead).await.unwrap(), 1);
        let epoch = |c: &str| c.split('.').next().unwrap().to_owned();
        for behind in [1, INSTANCE_CLOCK_MARGIN / 2, INSTANCE_CLOCK_MARGIN - 1] {
            feed.sync(&store, ahead - behind).await.unwrap();
            assert_eq!(epoch(&feed.cursor()), epoch(&cursor), "{behind} s behind");
        }
    }

    /// The same when no instance that applied the lost event is left (all
    /// restarted after the database outage): nothing in memory tells, and
    /// the filter's cursor named a position the new revocations took. The
    /// cursor names the event at its position: another one there now means
    /// a snapshot, however many revocations took the lost numbers.
    #[tokio::test]
    async fn a_cursor_naming_a_lost_event_gets_a_snapshot_from_an_instance_that_never_saw_it() {
        for writes_after in [1, 3] {
            let dir = tempfile::tempdir().unwrap();
            let (primary, feed) = with_one_revocation(&dir).await;
            let replica = backup(&dir, "replica.db").await;
            primary.revoke_token("j2", EXP - 10, EXP).await.unwrap();
            feed.sync(&primary, EXP - 10).await.unwrap();
            let FeedAnswer::Body(answer) =
                feed.answer(&primary, "iss", None, EXP - 10).await.unwrap()
            else {
                panic!("a snapshot")
            };
            let filter_cursor = answer.cursor.clone();
            // Every instance restarts on the replica; revocations are written.
            let replica = open(&replica).await;
            let restarted = Feed::load(&replica, MARGIN, 10, EXP - 10).await.unwrap();
            for i in 0..writes_after {
                replica
                    .revoke_token(&format!("j-new-{i}"), EXP - 10, EXP)
                    .await
                    .unwrap();
            }
            restarted.sync(&replica, EXP - 10).await.unwrap();
            let answer = restarted
                .answer(&replica, "iss", Some(&filter_cursor), EXP - 10)
                .await
                .unwrap();
            let FeedAnswer::Body(body) = &answer else {
                panic!("{writes_after}: 304 over the new revocations")
            };
            assert!(body.snapshot, "{writes_after}: a snapshot");
            assert!(
                jtis(&answer).contains(&"j-new-0".to_string()),
                "{writes_after}: got {:?}",
                jtis(&answer)
            );
        }
    }

    /// A cursor of the same history keeps getting deltas and `304`s, and
    /// one of an earlier release (no digest) is still read.
    #[tokio::test]
    async fn cursors_of_the_same_history_get_deltas() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        store.revoke_token("j1", EXP - 10, EXP).await.unwrap();
        let feed = Feed::load(&store, MARGIN, 10, EXP - 10).await.unwrap();
        let cursor = feed.cursor();
        assert_eq!(cursor.split('.').count(), 3, "{cursor}");
        assert!(matches!(
            feed.answer(&store, "iss", Some(&cursor), EXP - 10)
                .await
                .unwrap(),
            FeedAnswer::NotModified
        ));
        store.revoke_token("j2", EXP - 10, EXP).await.unwrap();
        feed.sync(&store, EXP - 10).await.unwrap();
        let old_form = cursor.rsplit_once('.').unwrap().0.to_owned();
        for c in [&cursor, &old_form] {
            let answer = feed.answer(&store, "iss", Some(c), EXP - 10).await.unwrap();
            let FeedAnswer::Body(body) = &answer else {
                panic!("a delta")
            };
            assert!(!body.snapshot, "{c}");
            assert_eq!(jtis(&answer), ["j2"], "{c}");
        }
    }

    /// An instance with a shorter retention (a rolling configuration
    /// change, or the CLI run with another file) prunes the newest event
    /// this one applied: pruned, not lost (the database says so).
    #[tokio::test]
    async fn an_event_pruned_by_an_instance_with_a_shorter_retention_is_no_lost_history() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        store.revoke_token("j1", EXP - 10, EXP).await.unwrap();
        let long = Feed::load(&store, MARGIN, 10, EXP - 10).await.unwrap();
        let short = Feed::load(&store, 60, 10, EXP - 10).await.unwrap();
        let epoch = long.cursor().split('.').next().unwrap().to_owned();
        let later = EXP + 60 + INSTANCE_CLOCK_MARGIN + 1;
        assert_eq!(short.prune(&store, later).await.unwrap(), 1);
        long.sync(&store, later).await.unwrap();
        assert!(long.cursor().starts_with(&epoch), "a new epoch for nothing");
    }

    /// Two instances on one database that went back: the one that noticed
    /// started a new epoch in the database; the other, which had not seen
    /// the lost event, kept its old epoch in memory and answered cursors of
    /// the lost history over the new one. Every instance takes the epoch the
    /// database holds; so does one running when the restore step
    /// (`authflow-auth feed new-epoch`) renews it.
    #[tokio::test]
    async fn every_instance_takes_the_epoch_the_database_holds() {
        let dir = tempfile::tempdir().unwrap();
        let primary = store(&dir).await;
        primary.revoke_token("j1", EXP - 10, EXP).await.unwrap();
        let (a, b) = (
            Feed::load(&primary, MARGIN, 10, EXP - 10).await.unwrap(),
            Feed::load(&primary, MARGIN, 10, EXP - 10).await.unwrap(),
        );
        let replica = backup(&dir, "replica.db").await;
        primary.revoke_token("j2", EXP - 10, EXP).await.unwrap();
        a.sync(&primary, EXP - 10).await.unwrap();
        let filter_cursor = a.cursor();
        let replica = open(&replica).await;
        a.sync(&replica, EXP - 10).await.unwrap();
        assert_ne!(a.cursor(), filter_cursor, "a noticed: a new epoch");
        b.sync(&replica, EXP - 10).await.unwrap();
        replica.revoke_token("j-new", EXP - 10, EXP).await.unwrap();
        b.sync(&replica, EXP - 10).await.unwrap();
        assert_eq!(a.epoch(), b.epoch(), "b takes the database's epoch");
        let answer = b
            .answer(&replica, "iss", Some(&filter_cursor), EXP - 10)
            .await
            .unwrap();
        assert!(
            jtis(&answer).contains(&"j-new".to_string()),
            "got {:?}",
            jtis(&answer)
        );

        // The restore step run while an instance is up.
        let running = b.cursor();
        let old = replica.epoch().await.unwrap();
        let renewed = replica.renew_epoch(&old).await.unwrap();
        b.sync(&replica, EXP - 10).await.unwrap();
        assert!(
            b.cursor().starts_with(&renewed),
            "{} after {running}",
            b.cursor()
        );
    }

    /// A delta read that was under way when the database went back finishes
    /// after the new epoch began and leaves its answer for the polls that
    /// share it. A poll of the new history with the same numbers (cursor 1,
    /// head 3: the sequence numbers of lost events are handed out again) must
    /// read the new events, not take the lost history's delta: those would
    /// stand in for the new revocations under a cursor of the new epoch.
    #[tokio::test]
    async fn a_delta_read_across_the_database_going_back_is_not_shared_after() {
        let dir = tempfile::tempdir().unwrap();
        let (primary, feed) = with_one_revocation(&dir).await;
        let replica = backup(&dir, "replica.db").await;
        let at_one = feed.cursor();
        primary.revoke_token("j2", EXP - 10, EXP).await.unwrap();
        primary.revoke_token("j3", EXP - 10, EXP).await.unwrap();
        feed.sync(&primary, EXP - 10).await.unwrap();
        let lost = feed
            .answer(&primary, "iss", Some(&at_one), EXP - 10)
            .await
            .unwrap();
        assert_eq!(jtis(&lost), ["j2", "j3"]);
        let replica = open(&replica).await;
        feed.sync(&replica, EXP - 10).await.unwrap();
        // The read under way stores its answer now, after the new epoch began.
        feed.store_in_flight_delta_of_the_lost_history(1, 3, &lost)
            .await;
        let new_at_one = feed.cursor();
        replica.revoke_token("j-x", EXP - 10, EXP).await.unwrap();
        replica.revoke_token("j-y", EXP - 10, EXP).await.unwrap();
        feed.sync(&replica, EXP - 10).await.unwrap();
        let answer = feed
            .answer(&replica, "iss", Some(&new_at_one), EXP - 10)
            .await
            .unwrap();
        assert_eq!(
            jtis(&answer),
            ["j-x", "j-y"],
            "a poll at {new_at_one} gets the new history's revocations"
        );
    }

    /// After the database went back (head 3 → 1) and a new epoch began, a
    /// filter that took the new snapshot long-polls with its new cursor: with
    /// nothing new, the poll must wait. The long-poll watch still held the
    /// old head (it only moves forwards), so every such poll was "past" at
    /// once and answered 304 immediately, turning each filter's long poll
    /// into a busy loop until the new history caught up with the lost one.
    #[tokio::test]
    async fn long_polls_still_wait_after_the_database_went_back() {
        let dir = tempfile::tempdir().unwrap();
        let (primary, feed) = with_one_revocation(&dir).await;
        let replica = backup(&dir, "replica.db").await;
        primary.revoke_token("j2", EXP - 10, EXP).await.unwrap();
        primary.revoke_token("j3", EXP - 10, EXP).await.unwrap();
        feed.sync(&primary, EXP - 10).await.unwrap();
        let replica = open(&replica).await;
        feed.sync(&replica, EXP - 10).await.unwrap();
        // The filter takes the snapshot of the new epoch, and its cursor.
        let cursor = feed.cursor();
        assert!(matches!(
            feed.answer(&replica, "iss", Some(&cursor), EXP - 10)
                .await
                .unwrap(),
            FeedAnswer::NotModified
        ));
        let started = std::time::Instant::now();
        let passed = feed
            .wait_past(&cursor, std::time::Duration::from_millis(500))
            .await;
        assert!(
            !passed && started.elapsed() >= std::time::Duration::from_millis(400),
            "a long poll at the head of the new epoch returned at once (passed: {passed}, after {:?})",
            started.elapsed()
        );
        // And a revocation in the new history still wakes it.
        let waiter = feed.wait_past(&cursor, std::time::Duration::from_secs(5));
        let writer = async {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            replica.revoke_token("j-new", EXP - 10, EXP).await.unwrap();
            feed.sync(&replica, EXP - 10).await.unwrap();
        };
        let (woken, ()) = tokio::join!(waiter, writer);
        assert!(woken, "the new revocation wakes the long poll");
    }

    /// The same after a restart: the service comes back on the restored
    /// database, and revocations are written (admin calls, the CLI, another
    /// instance) before a filter's poll gets through. The filter's cursor
    /// names a position of the lost history, and no running instance saw
    /// the head go back: the restore step (`authflow-auth feed new-epoch`,
    /// in the README's backup section) starts a new epoch.
    #[tokio::test]
    async fn a_cursor_from_a_lost_history_is_not_taken_for_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let primary = store(&dir).await;
        primary.revoke_token("j1", EXP - 10, EXP).await.unwrap();
        // The service ran on this database before the backup (its epoch is in it).
        let _ = Feed::load(&primary, MARGIN, 10, EXP - 10).await.unwrap();
        let restored = backup(&dir, "backup.db").await;
        primary.revoke_token("j2", EXP - 10, EXP).await.unwrap();
        primary.revoke_token("j3", EXP - 10, EXP).await.unwrap();
        let before = Feed::load(&primary, MARGIN, 10, EXP - 10).await.unwrap();
        let filter_cursor = before.cursor();
        let restored = open(&restored).await;
        let old = restored.epoch().await.unwrap();
        assert_ne!(
            restored.renew_epoch(&old).await.unwrap(),
            old,
            "the restore step"
        );
        restored
            .revoke_token("j-new-1", EXP - 10, EXP)
            .await
            .unwrap();
        restored
            .revoke_token("j-new-2", EXP - 10, EXP)
            .await
            .unwrap();
        let after = Feed::load(&restored, MARGIN, 10, EXP - 10).await.unwrap();
        let answer = after
            .answer(&restored, "iss", Some(&filter_cursor), EXP - 10)
            .await
            .unwrap();
        let got = jtis(&answer);
        assert!(
            got.contains(&"j-new-1".to_string()) && got.contains(&"j-new-2".to_string()),
            "the filter at {filter_cursor} gets the revocations of the restored history (got {got:?})"
        );
    }

    /// Every poll without a cursor (a fleet of filters starting, the polls
    /// a new epoch wakes, or anyone at all, the endpoint is open) read the
    /// whole list from the database on its own: a few hundred at once held
    /// every connection of the pool, and revoking writes waited behind
    /// them. Polls at one head share one read.
    #[tokio::test]
    async fn polls_without_a_cursor_share_one_read_of_the_list() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(store(&dir).await);
        store.revoke_token("j1", EXP - 10, EXP).await.unwrap();
        let feed = Arc::new(Feed::load(&*store, MARGIN, 10, EXP - 10).await.unwrap());
        let reads = || feed.store_reads.load(Ordering::Relaxed);
        let before = reads();
        let polls: Vec<_> = (0..50)
            .map(|_| {
                let (feed, store) = (Arc::clone(&feed), Arc::clone(&store));
                tokio::spawn(async move { feed.answer(&*store, "iss", None, EXP - 10).await })
            })
            .collect();
        for poll in polls {
            assert_eq!(jtis(&poll.await.unwrap().unwrap()), ["j1"]);
        }
        assert_eq!(reads() - before, 1, "one read for every poll");
        let _ = feed.answer(&*store, "iss", None, EXP - 10).await.unwrap();
        assert_eq!(reads() - before, 1, "in the same second, the same read");

        // A write moves the head: the next snapshot has it.
        store.revoke_token("j2", EXP - 5, EXP).await.unwrap();
        feed.sync(&*store, EXP - 5).await.unwrap();
        let answer = feed.answer(&*store, "iss", None, EXP - 5).await.unwrap();
        assert_eq!(jtis(&answer), ["j1", "j2"]);
        assert_eq!(reads() - before, 2);
        // At the same head, the same read in the seconds after it: polls
        // without a cursor once a second (a fleet of filters starting over
        // minutes, or anyone) read a list of a million once, not each second.
        let later = EXP - 5 + SNAPSHOT_REUSE_SECS - 1;
        let _ = feed.answer(&*store, "iss", None, later).await.unwrap();
        assert_eq!(reads() - before, 2);
        // Read again once that is over (entries past their retention leave
        // it), or when the clock went back.
        let _ = feed.answer(&*store, "iss", None, later + 1).await.unwrap();
        assert_eq!(reads() - before, 3);
        let _ = feed.answer(&*store, "iss", None, EXP - 100).await.unwrap();
        assert_eq!(reads() - before, 4);
    }

    /// A delta was read for each cursor on its own: anyone could send
    /// made-up cursors far behind the head, each one a read of most of the
    /// events table and its encoding. A cursor that far behind gets the
    /// shared snapshot.
    #[tokio::test]
    async fn cursors_far_behind_share_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut feed) = with_one_revocation(&dir).await;
        feed.max_delta_events = 2;
        for jti in ["j2", "j3", "j4"] {
            store.revoke_token(jti, EXP - 10, EXP).await.unwrap();
        }
        feed.sync(&store, EXP - 10).await.unwrap();
        let epoch = feed.epoch();
        let head = feed.head.load(Ordering::SeqCst);
        let reads = || feed.store_reads.load(Ordering::Relaxed);
        let before = reads();
        for behind in [3, 4] {
            let cursor = format!("{epoch}.{}", head - behind);
            let body = body_of(
                feed.answer(&store, "iss", Some(&cursor), EXP - 10)
                    .await
                    .unwrap(),
            );
            assert!(body.snapshot, "{behind} events behind");
            assert_eq!(body.revoked_tokens.len(), 4);
        }
        assert_eq!(reads() - before, 1, "one shared read");
        // Within the span: a delta of its own.
        let cursor = format!("{epoch}.{}", head - 2);
        let answer = feed
            .answer(&store, "iss", Some(&cursor), EXP - 10)
            .await
            .unwrap();
        assert_eq!(jtis(&answer), ["j3", "j4"]);
        assert!(!body_of(answer).snapshot);
    }

    /// A cursor one event behind whose digest names another event was
    /// answered with a snapshot read on its own: anyone could send such
    /// cursors (a made-up digest each) and have the whole events table read
    /// and encoded per request, past the bound on deltas. It gets the
    /// shared snapshot.
    #[tokio::test]
    async fn cursors_naming_another_event_share_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let (store, feed) = with_one_revocation(&dir).await;
        for jti in ["j2", "j3"] {
            store.revoke_token(jti, EXP - 10, EXP).await.unwrap();
        }
        feed.sync(&store, EXP - 10).await.unwrap();
        let epoch = feed.epoch();
        let head = feed.head.load(Ordering::SeqCst);
        let mut bodies = Vec::new();
        for made_up in ["0000000000000000", "0000000000000001", "ffffffffffffffff"] {
            let cursor = format!("{epoch}.{}.{made_up}", head - 1);
            let body = body_of(
                feed.answer(&store, "iss", Some(&cursor), EXP - 10)
                    .await
                    .unwrap(),
            );
            assert!(body.snapshot, "{made_up}: a snapshot");
            assert_eq!(body.revoked_tokens.len(), 3);
            bodies.push(body);
        }
        let shared = body_of(feed.answer(&store, "iss", None, EXP - 10).await.unwrap());
        for body in &bodies {
            assert!(
                Arc::ptr_eq(body, &shared),
                "one shared read and encoding of the list, not one per made-up cursor"
            );
        }
    }

    /// Sharing the read was not enough: each poll encoded the whole list
    /// again (JSON or the compact layout), tens of milliseconds for a long
    /// list, so a few anonymous polls a second kept the cores busy. The
    /// polls sharing an answer share its encodings.
    #[tokio::test]
    async fn polls_sharing_an_answer_share_its_encodings() {
        let dir = tempfile::tempdir().unwrap();
        let (store, feed) = with_one_revocation(&dir).await;
        let (a, b) = (
            body_of(feed.answer(&store, "iss", None, EXP - 10).await.unwrap()),
            body_of(feed.answer(&store, "iss", None, EXP - 10).await.unwrap()),
        );
        let encoded = |body: &Arc<FeedBody>, encoding| {
            let body = Arc::clone(body);
            async move { body.encoded(encoding).await.unwrap() }
        };
        let (compact, json) = (
            encoded(&b, Encoding::Compact).await,
            encoded(&b, Encoding::Json).await,
        );
        assert_eq!(
            encoded(&a, Encoding::Compact).await.as_ptr(),
            compact.as_ptr(),
            "one compact encoding"
        );
        assert_eq!(
            encoded(&a, Encoding::Json).await.as_ptr(),
            json.as_ptr(),
            "one JSON encoding"
        );
        let json: RevocationFeed = serde_json::from_slice(&json).unwrap();
        assert_eq!(json.revoked_tokens.len(), 1);
        let compact = authflow_contract::revocation::blob::Blob::parse(compact.to_vec());
        assert_eq!(
            compact.map(|blob| blob.len()).ok(),
            Some(1),
            "the compact layout reads back"
        );
    }

    /// An encoding took the thread of the poll that asked for it first, and
    /// each poll sharing it waited on a thread of its own: at a million
    /// entries the service's threads could all be held for most of a second
    /// by anonymous polls, sign-ins and health checks waiting behind them.
    /// On a runtime of one thread, another request runs while a poll waits.
    #[tokio::test]
    async fn a_poll_waiting_for_an_encoding_leaves_its_thread_to_other_requests() {
        let dir = tempfile::tempdir().unwrap();
        let (store, feed) = with_one_revocation(&dir).await;
        let body = body_of(feed.answer(&store, "iss", None, EXP - 10).await.unwrap());
        for encoding in [Encoding::Json, Encoding::Compact] {
            let served = Arc::new(std::sync::atomic::AtomicBool::new(false));
            tokio::spawn({
                let served = Arc::clone(&served);
                async move { served.store(true, Ordering::SeqCst) }
            });
            body.encoded(encoding).await.unwrap();
            assert!(
                served.load(Ordering::SeqCst),
                "{encoding:?}: another request served while the poll waited for the encoding"
            );
        }
    }

    /// A poll whose client hangs up while the encoding it began is under
    /// way leaves it to finish: the next poll gets it rather than beginning
    /// another (a client hanging up again and again would otherwise begin
    /// one each time, all of them running on).
    #[tokio::test]
    async fn an_encoding_its_poll_left_is_finished_for_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let (store, feed) = with_one_revocation(&dir).await;
        let body = body_of(feed.answer(&store, "iss", None, EXP - 10).await.unwrap());
        for encoding in [Encoding::Json, Encoding::Compact] {
            // Polled once, then dropped: its client hung up.
            let left = futures_util::FutureExt::now_or_never(body.encoded(encoding));
            assert!(
                left.is_none(),
                "{encoding:?}: the poll left before the encoding was made"
            );
            let mut finished = None;
            for _ in 0..500 {
                finished = body.cell(encoding).get().cloned();
                if finished.is_some() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            let finished = finished
                .unwrap_or_else(|| panic!("{encoding:?}: the encoding was given up with its poll"));
            assert_eq!(
                body.encoded(encoding).await.unwrap().as_ptr(),
                finished.as_ptr(),
                "{encoding:?}: the next poll gets the finished encoding"
            );
        }
    }

    /// A poller holding the cursor another instance answered (one write
    /// ahead of this instance's head) is current: `304`, not a snapshot of
    /// the whole list. The instance catches up with the database first.
    #[tokio::test]
    async fn a_cursor_ahead_of_this_instance_is_not_answered_with_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        store.revoke_token("j1", EXP - 10, EXP).await.unwrap();
        let (a, b) = (
            Feed::load(&store, MARGIN, 10, EXP - 10).await.unwrap(),
            Feed::load(&store, MARGIN, 10, EXP - 10).await.unwrap(),
        );
        store.revoke_token("j2", EXP - 10, EXP).await.unwrap();
        a.sync(&store, EXP - 10).await.unwrap();
        assert_ne!(a.cursor(), b.cursor(), "b has not seen the write yet");
        let answer = b
            .answer(&store, "iss", Some(&a.cursor()), EXP - 10)
            .await
            .unwrap();
        assert!(
            matches!(answer, FeedAnswer::NotModified),
            "a current poller never gets the whole list"
        );
        assert_eq!(a.cursor(), b.cursor());
    }

    /// The process's clock runs hours ahead while it syncs: its own list
    /// (what its token endpoint and `ext_authz` check against) forgets a
    /// revocation made meanwhile, whose token is still good by the right
    /// clock, and the event is never read again. Once the clock is
    /// corrected, every later delta would be refused by the list. The list
    /// is reloaded whole from the database instead.
    #[tokio::test]
    async fn own_list_reloads_once_the_clock_steps_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        store.revoke_token("j1", EXP - 10, EXP).await.unwrap();
        let feed = Feed::load(&store, MARGIN, 10, EXP - 10).await.unwrap();
        let ahead = EXP + 7200;
        store.revoke_token("j2", EXP - 10, EXP).await.unwrap();
        feed.sync(&store, ahead).await.unwrap();
        let back = EXP - 5;
        store.revoke_token("j3", back, EXP).await.unwrap();
        feed.sync(&store, back).await.unwrap();
        for jti in ["j1", "j2", "j3"] {
            assert!(
                feed.is_revoked(Some(jti), "s", None, EXP - 900, back) == Ok(true),
                "{jti} once the clock is back"
            );
        }
    }
}
