//! The revocation feed as this process sees it: the newest cursor (kept in
//! memory so a `304` never touches the database) and a revocation set used
//! to check this service's own tokens (admin calls, ext_authz).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::RwLock;

use authflow_contract::revocation::{BannedSubject, RevocationFeed, RevokedSession, RevokedToken};

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

    fn forget_expired(&mut self, now: i64) {
        self.jtis.retain(|_, exp| *exp > now);
        self.sids.retain(|_, exp| *exp > now);
        self.bans.retain(|_, (_, exp)| *exp > now);
    }
}

pub struct Feed {
    epoch: String,
    head: AtomicI64,
    pruned_through: AtomicI64,
    set: RwLock<RevocationSet>,
    sync_lock: tokio::sync::Mutex<()>,
}

/// What a `since` cursor asks for.
pub enum FeedAnswer {
    NotModified,
    Body(RevocationFeed),
}

impl Feed {
    pub async fn load(store: &dyn Store, now: i64) -> Result<Self, StoreError> {
        let feed = Self {
            epoch: store.epoch().await?,
            head: AtomicI64::new(0),
            pruned_through: AtomicI64::new(0),
            set: RwLock::new(RevocationSet::default()),
            sync_lock: tokio::sync::Mutex::new(()),
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
        let events = store.feed_events_after(after, now).await?;
        if let Ok(mut set) = self.set.write() {
            for e in &events {
                set.apply(e);
            }
            set.seq = set.seq.max(head.head);
            set.forget_expired(now);
        }
        self.pruned_through.fetch_max(head.pruned_through, Ordering::SeqCst);
        self.head.fetch_max(head.head, Ordering::SeqCst);
        Ok(())
    }

    pub fn cursor(&self) -> String {
        format!("{}.{}", self.epoch, self.head.load(Ordering::SeqCst))
    }

    /// The sequence number in `cursor` if it was issued by this database.
    fn parse_cursor(&self, cursor: &str) -> Option<i64> {
        let (epoch, seq) = cursor.split_once('.')?;
        (epoch == self.epoch).then(|| seq.parse::<i64>().ok()).flatten().filter(|s| *s >= 0)
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
        let after = delta_from.unwrap_or(0);
        let events = store.feed_events_after(after, now).await?;
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
        let u = |v: i64| u64::try_from(v).unwrap_or(0);
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
            .map(|(sub, (nb, exp))| BannedSubject { sub, not_before: u(nb), expires_at: u(exp) })
            .collect();
        Ok(FeedAnswer::Body(feed))
    }

    /// Is a token with these claims revoked, per what this process knows?
    pub fn is_revoked(&self, jti: Option<&str>, sid: &str, sub: Option<&str>, issued_at: i64, now: i64) -> bool {
        let Ok(set) = self.set.read() else { return true };
        let live = |exp: &i64| *exp > now;
        jti.and_then(|j| set.jtis.get(j)).is_some_and(live)
            || set.sids.get(sid).is_some_and(live)
            || sub.and_then(|s| set.bans.get(s)).is_some_and(|(nb, exp)| *exp > now && issued_at < *nb)
    }
}
