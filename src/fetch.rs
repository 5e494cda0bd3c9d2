//! Background fetches of one provider's keys and revocation list: schedule,
//! in-flight bookkeeping, and turning a callout response into new state.

use authflow_filter_core::request::HeaderBlock;
use authflow_contract::jwk::MAX_JWKS_BYTES;
use authflow_contract::revocation::{RevocationFeed, MAX_FEED_BYTES};
use authflow_contract::KeySet;
use authflow_filter_core::config::Upstream;
use authflow_filter_core::fetch::{shared_key, Document};
use authflow_filter_core::schedule::FetchSchedule;

use crate::shared::SharedSlot;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Jwks,
    Revocations,
}

/// One periodically fetched document of one provider.
pub struct Fetcher {
    pub upstream: Upstream,
    pub schedule: FetchSchedule,
    pub slot: SharedSlot,
    /// Token of the callout in flight and when to give up on it.
    pub in_flight: Option<(u32, u64)>,
    pub etag: Option<String>,
    /// Bumped whenever a fetch ends (well or not) or shared data brings news:
    /// paused requests re-evaluate once it moves.
    pub generation: u64,
}

impl Fetcher {
    pub fn new(upstream: Upstream, issuer: &str, resource: Resource) -> Self {
        let document = match resource {
            Resource::Jwks => Document::Jwks,
            Resource::Revocations => Document::Revocations,
        };
        Fetcher {
            schedule: FetchSchedule::new(upstream.interval_ms, upstream.min_refetch_interval_ms),
            slot: SharedSlot::new(shared_key(document, issuer, &upstream)),
            upstream,
            in_flight: None,
            etag: None,
            generation: 0,
        }
    }

    /// Forget a callout that never answered (its context went away, the host dropped it).
    pub fn expire_in_flight(&mut self, now_ms: u64) {
        if self.in_flight.is_some_and(|(_, deadline)| now_ms > deadline) {
            self.in_flight = None;
            self.generation += 1;
        }
    }

    /// Long enough for the holder to renew on its next round, short enough
    /// that a holder that stopped ticking is replaced within about one interval.
    pub fn lease_ttl_ms(&self) -> u64 {
        self.upstream.interval_ms.saturating_add((self.upstream.interval_ms / 2).max(1_000))
    }
}

/// What a callout answered, reduced to what matters.
pub enum Answer<T> {
    NotModified,
    Fresh(T, Vec<u8>),
    Failed(String),
}

pub fn status_of(headers: &HeaderBlock) -> u32 {
    headers.first(":status").and_then(|v| v.parse().ok()).unwrap_or(0)
}

pub fn jwks_answer(status: u32, body_size: usize, body: impl FnOnce(usize) -> Option<Vec<u8>>) -> Answer<KeySet> {
    match status {
        304 => Answer::NotModified,
        200 if body_size > MAX_JWKS_BYTES => Answer::Failed(format!("JWKS of {body_size} bytes is over the limit")),
        200 => match body(body_size) {
            Some(bytes) => match KeySet::parse(&bytes) {
                Ok(set) => Answer::Fresh(set, bytes),
                Err(e) => Answer::Failed(e.to_string()),
            },
            None => Answer::Failed("JWKS response had no body".into()),
        },
        0 => Answer::Failed("no response (cluster unreachable or timeout)".into()),
        other => Answer::Failed(format!("JWKS endpoint answered HTTP {other}")),
    }
}

pub fn feed_answer(status: u32, body_size: usize, body: impl FnOnce(usize) -> Option<Vec<u8>>) -> Answer<RevocationFeed> {
    match status {
        304 => Answer::NotModified,
        200 if body_size > MAX_FEED_BYTES => Answer::Failed(format!("revocation feed of {body_size} bytes is over the limit")),
        200 => match body(body_size) {
            Some(bytes) => match serde_json::from_slice::<RevocationFeed>(&bytes) {
                Ok(feed) => Answer::Fresh(feed, bytes),
                Err(e) => Answer::Failed(format!("revocation feed is not valid: {e}")),
            },
            None => Answer::Failed("revocation feed response had no body".into()),
        },
        0 => Answer::Failed("no response (cluster unreachable or timeout)".into()),
        other => Answer::Failed(format!("revocation feed answered HTTP {other}")),
    }
}

/// `since` cursors are opaque; keep them to URL-safe characters.
pub fn feed_path(base: &str, cursor: Option<&str>) -> String {
    match cursor {
        Some(c) if !c.is_empty() => {
            let encoded: String = c
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            let sep = if base.contains('?') { '&' } else { '?' };
            format!("{base}{sep}since={encoded}")
        }
        _ => base.to_owned(),
    }
}
