//! The background fetch of one provider's documents (its key set and its
//! revocation list), as pure decisions the proxy-wasm glue carries out: when
//! to start a fetch, what a callout's end or a refused dispatch means, and
//! whether a request missing its keys should wait for one.
//!
//! The split follows Envoy's `jwt_authn` (`jwks_cache` holds, the async
//! fetcher decides when to fetch): this module decides, the glue only talks
//! to the host.

use authflow_contract::jwk::MAX_JWKS_BYTES;
use authflow_contract::revocation::{
    Blob, RevocationFeed, COMPACT_FEED_TYPE, MAX_COMPACT_FEED_BYTES, MAX_FEED_BYTES,
};
use authflow_contract::KeySet;

use crate::config::Upstream;
use crate::request::HeaderBlock;
use crate::schedule::FetchSchedule;

/// The two documents a provider fetches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Document {
    Jwks,
    Revocations,
}

impl Document {
    pub fn label(self) -> &'static str {
        match self {
            Document::Jwks => "jwks",
            Document::Revocations => "revocations",
        }
    }
}

/// The name under which every worker VM of one Envoy shares a fetched
/// document (and the lease to fetch it). It says what the document *is* —
/// which issuer it belongs to and where it comes from — and not what a
/// configuration calls its provider: two filter configurations on one VM may
/// both name a provider `main`, and one must never adopt the other's keys.
/// Filters that trust the same issuer through the same source, polled alike,
/// share one fetch. The polling is part of the name because the lease is:
/// a filter that long-polls renews the lease on every tick while its poll is
/// held, and a filter sharing it with a tighter staleness bound would never
/// poll, its list only stamped current when the other's held poll ends.
/// So is what can make one filter's fetch fail where another's succeeds (its
/// `timeout_ms`; for revocations its `revocation.max_entries`): the lease
/// holder renews on every retry, and a filter whose fetches keep failing
/// would otherwise keep every other filter's from ever starting. And for
/// revocations the staleness bound, which sizes the holder's waits: a holder
/// with a looser one retried with a wait the other's list went stale in.
pub fn shared_key(
    document: Document,
    issuer: &str,
    source: &Upstream,
    bounds: ListBounds,
) -> String {
    let polling = format!(
        "{} {} {} {} {}",
        source.interval_ms,
        source.wait_ms,
        source.timeout_ms,
        bounds.max_entries,
        bounds.max_staleness_ms
    );
    // JSON quoting keeps the parts apart whatever characters they hold.
    let parts = crate::json_text::string_array([
        issuer,
        &source.cluster,
        &source.authority,
        &source.path,
        &polling,
    ]);
    // `.2`: the revocation stamps' layout since they carry the forget
    // time; a VM of an earlier module (an update draining) shares apart.
    let layout = match document {
        Document::Jwks => "",
        Document::Revocations => ".2",
    };
    format!("authflow:{}{layout}:{parts}", document.label())
}

/// A revocation list's `revocation.max_entries` and `max_staleness_ms`,
/// part of what filters share its fetch by ([`shared_key`]); zeros for a
/// key set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListBounds {
    pub max_entries: usize,
    pub max_staleness_ms: u64,
}

impl From<&crate::config::RevocationPolicy> for ListBounds {
    fn from(policy: &crate::config::RevocationPolicy) -> Self {
        ListBounds {
            max_entries: policy.max_entries,
            max_staleness_ms: policy.max_staleness_ms,
        }
    }
}

/// A callout this VM has out for a document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InFlight {
    pub token: u32,
    pub started_at_ms: u64,
    /// Forget it after this (the host lost it, or its answer never came).
    pub give_up_at_ms: u64,
}

/// Why a request has no key to verify its token with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyNeed {
    /// No key set was ever loaded for the provider.
    NotLoaded,
    /// The token's `kid` is not in the loaded set.
    UnknownKid,
}

/// What to do with such a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyWait {
    /// A fetch is in flight or starts on the next tick: pause until it ends.
    Pause,
    /// No fetch is coming (rate limit, backoff): answer now with the keys there are.
    AnswerNow,
}

/// How a callout ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchEnd {
    /// A new document (with its `ETag`, if any).
    Fresh {
        etag: Option<String>,
    },
    NotModified,
    /// Unreachable, an error status, or a document that was refused.
    Failed,
}

/// What a dispatch the host refused means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Early on (e.g. a `STRICT_DNS` cluster not resolved yet at startup):
    /// retried on a coming tick, not a failed fetch.
    Deferred,
    /// Refused for longer than [`DISPATCH_DEFER_LIMIT_MS`]: a failed fetch
    /// (most likely a cluster name that does not exist).
    Failed,
}

/// How long refused dispatches are retried quietly before they count as failures.
pub const DISPATCH_DEFER_LIMIT_MS: u64 = 10_000;
/// Wait between two dispatch attempts while deferred.
pub const DISPATCH_RETRY_MS: u64 = 200;
/// A callout is forgotten this long after its own timeout.
const IN_FLIGHT_GRACE_MS: u64 = 1_000;
/// Least time between the starts of two long polls, whatever the service
/// answers: a service that answers every poll at once with something "new"
/// is polled at most this often, never in a loop.
pub const MIN_LONG_POLL_GAP_MS: u64 = 100;

/// One periodically fetched document of one provider, in one VM.
#[derive(Debug, Clone)]
pub struct DocumentFetch {
    pub document: Document,
    pub upstream: Upstream,
    /// Where the worker VMs share it (see [`shared_key`]).
    pub shared_key: String,
    schedule: FetchSchedule,
    in_flight: Option<InFlight>,
    etag: Option<String>,
    /// Moves whenever a fetch ends (well or not): requests paused for keys
    /// are decided for good once it moved past the value they saw.
    generation: u64,
    /// A request with an unknown `kid` was granted an early fetch: start it
    /// on the next tick, lease or not.
    early_fetch_granted: bool,
    /// Since when the host refuses to dispatch (reset by a dispatch).
    refused_since_ms: Option<u64>,
    /// The key fetch out carried `If-None-Match` ([`Self::if_none_match`]).
    conditional: bool,
    /// How long the service may hold the poll out: the configured wait, or
    /// less when the list has less time left (what [`feed_path`] was given).
    pub wait_sent_ms: u64,
}

impl DocumentFetch {
    /// Due at once. `bounds`: see [`shared_key`].
    pub fn new(document: Document, issuer: &str, upstream: Upstream, bounds: ListBounds) -> Self {
        DocumentFetch {
            document,
            shared_key: shared_key(document, issuer, &upstream, bounds),
            schedule: FetchSchedule::new(upstream.interval_ms, upstream.min_refetch_interval_ms),
            wait_sent_ms: upstream.wait_ms,
            upstream,
            in_flight: None,
            etag: None,
            generation: 0,
            early_fetch_granted: false,
            refused_since_ms: None,
            conditional: false,
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn in_flight(&self) -> Option<InFlight> {
        self.in_flight
    }

    pub fn is_call(&self, token: u32) -> bool {
        self.in_flight.is_some_and(|c| c.token == token)
    }

    /// The `ETag` of the document this VM holds, for `If-None-Match`.
    pub fn etag(&self) -> Option<&str> {
        self.etag.as_deref()
    }

    /// The `If-None-Match` of the next key fetch: this VM's `ETag`, only
    /// while it holds keys (one without keys asks for the whole set).
    pub fn if_none_match(&mut self, have_keys: bool) -> Option<String> {
        let etag = if have_keys { self.etag.clone() } else { None };
        self.conditional = etag.is_some();
        etag
    }

    /// Whether the key fetch out carried `If-None-Match` (a `304` to one
    /// that did not is a failed fetch, see [`Self::finished`]).
    pub fn sent_etag(&self) -> bool {
        self.conditional
    }

    /// A key set another VM fetched and shared, as this VM installs it.
    /// This VM's `ETag` is forgotten: it named the set this VM last fetched
    /// itself, not this one, and a `304` to it would keep this set (with a
    /// key the issuer withdrew since) as current.
    pub fn adopt_shared_keys(&mut self, bytes: &[u8]) -> Option<KeySet> {
        let set = KeySet::parse_published(bytes).ok()?;
        self.etag = None;
        Some(set)
    }

    /// A request found no key for its token: whether pausing it can help.
    /// Only a fetch that is in flight, or that starts on the next tick, can
    /// bring the key; otherwise the request is answered at once, so that
    /// random `kid`s cannot hold connections for `key_wait_ms` each.
    pub fn key_wait(&mut self, need: KeyNeed, now_ms: u64) -> KeyWait {
        if self.in_flight.is_some() || self.early_fetch_granted {
            return KeyWait::Pause;
        }
        let fetch_coming = match need {
            KeyNeed::UnknownKid => {
                let granted = self.schedule.request_early(now_ms);
                self.early_fetch_granted = granted;
                granted
            }
            // Nothing loaded: this VM fetches as soon as its backoff allows,
            // or retries a dispatch the host deferred.
            KeyNeed::NotLoaded => self.schedule.is_due(now_ms) || self.deferring(now_ms),
        };
        if fetch_coming {
            KeyWait::Pause
        } else {
            KeyWait::AnswerNow
        }
    }

    /// Whether to start a fetch now. `lease` is asked only when this VM
    /// would fetch on schedule, to take the process-wide fetch lease (the
    /// glue passes `true` for a document this VM has not loaded yet: it
    /// fetches for itself).
    pub fn should_start(&mut self, now_ms: u64, lease: impl FnOnce() -> bool) -> bool {
        if let Some(call) = self.in_flight {
            if now_ms <= call.give_up_at_ms {
                return false;
            }
            // Lost: its answer is not coming. Whoever waited for it decides now.
            self.in_flight = None;
            self.generation += 1;
        }
        if !self.schedule.is_due(now_ms) {
            return false;
        }
        self.early_fetch_granted || lease()
    }

    /// The host accepted the callout.
    pub fn started(&mut self, token: u32, now_ms: u64) {
        let give_up = now_ms
            .saturating_add(self.callout_timeout_ms())
            .saturating_add(IN_FLIGHT_GRACE_MS);
        self.in_flight = Some(InFlight {
            token,
            started_at_ms: now_ms,
            give_up_at_ms: give_up,
        });
        self.early_fetch_granted = false;
        self.refused_since_ms = None;
    }

    /// The host refused the callout (e.g. `BadArgument`: the cluster is not
    /// known, or not ready yet). Retried quietly for a while, then a failure.
    pub fn refused(&mut self, now_ms: u64, jitter: f64) -> Refusal {
        let since = *self.refused_since_ms.get_or_insert(now_ms);
        if now_ms.saturating_sub(since) < DISPATCH_DEFER_LIMIT_MS {
            self.schedule.postpone(now_ms, DISPATCH_RETRY_MS);
            return Refusal::Deferred;
        }
        self.early_fetch_granted = false;
        self.schedule.failed(now_ms, jitter);
        self.generation += 1;
        Refusal::Failed
    }

    /// The callout answered (or failed on the way). For a long-polled
    /// document, `Fresh` means the answer brought something new (a revocation
    /// feed whose cursor moved) and `NotModified` that it did not.
    pub fn finished(&mut self, end: FetchEnd, now_ms: u64, jitter: f64) {
        let started_at_ms = self.in_flight.take().map_or(now_ms, |c| c.started_at_ms);
        self.generation += 1;
        let changed = matches!(end, FetchEnd::Fresh { .. });
        // A `304` to a key fetch that named no `ETag` confirms nothing.
        let unconditional_304 = self.document == Document::Jwks
            && end == FetchEnd::NotModified
            && !std::mem::take(&mut self.conditional);
        if unconditional_304 {
            return self.schedule.failed(now_ms, jitter);
        }
        match end {
            FetchEnd::Fresh { etag } => self.etag = etag,
            FetchEnd::NotModified => {}
            FetchEnd::Failed => return self.schedule.failed(now_ms, jitter),
        }
        let long_polled = self.upstream.wait_ms > 0;
        match next_long_poll_at(
            long_polled,
            self.wait_sent_ms,
            started_at_ms,
            now_ms,
            changed,
        ) {
            Some(due_ms) => self.schedule.succeeded_next_at(now_ms, due_ms),
            None => self.schedule.succeeded(now_ms),
        }
    }

    /// The callout's timeout: the network allowance plus the time the service
    /// may hold a long poll.
    pub fn callout_timeout_ms(&self) -> u64 {
        self.upstream
            .timeout_ms
            .saturating_add(self.upstream.wait_ms)
    }

    /// Long enough for the holder to renew on its next round, short enough
    /// that a holder that stopped ticking is replaced within about one interval.
    pub fn lease_ttl_ms(&self) -> u64 {
        self.upstream
            .interval_ms
            .saturating_add((self.upstream.interval_ms / 2).max(1_000))
    }

    /// Whether the lease holder renews its lease now, though no fetch starts:
    /// while its long poll is held, so that the lease outlives a held poll
    /// but not a holder that stopped ticking.
    pub fn renews_lease_while_waiting(&self) -> bool {
        self.upstream.wait_ms > 0 && self.in_flight.is_some()
    }

    /// Whether a fetch is out, or one the host deferred is being retried:
    /// the document may still come, so the upstream is not known to be down.
    pub fn still_coming(&self, now_ms: u64) -> bool {
        self.in_flight.is_some() || self.deferring(now_ms)
    }

    fn deferring(&self, now_ms: u64) -> bool {
        self.refused_since_ms
            .is_some_and(|since| now_ms.saturating_sub(since) < DISPATCH_DEFER_LIMIT_MS)
    }
}

/// When the next long poll starts after one that ended well, or `None`: at
/// the polling interval, like a plain poll. A poll that brought something new
/// is followed at once (the next one waits for what comes after it); so is a
/// `304` the service held for a good part of the wait it was sent (it waits:
/// the list is current as of now; a wait shortened to what the list had left
/// is judged by itself, or the polls would stay short and at the interval).
/// A quick `304` means the service does not wait (an older one, or over its
/// waiter cap): poll at the interval, so it is never hammered.
pub fn next_long_poll_at(
    long_polled: bool,
    wait_sent_ms: u64,
    started_at_ms: u64,
    now_ms: u64,
    changed: bool,
) -> Option<u64> {
    if !long_polled {
        return None;
    }
    let held = now_ms.saturating_sub(started_at_ms) >= wait_sent_ms / 2;
    (changed || held).then(|| now_ms.max(started_at_ms.saturating_add(MIN_LONG_POLL_GAP_MS)))
}

/// What a callout answered, reduced to what matters.
pub enum Answer<T> {
    NotModified,
    Fresh(T, Vec<u8>),
    Failed(String),
}

/// The `:status` of a callout's answer (0 when there is none: no answer came).
pub fn status_of(headers: &HeaderBlock) -> u32 {
    headers
        .first(":status")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A key-set answer. `body(size)` reads the body, only once it is known to fit.
/// A `200` that is a key set is fresh even with no usable key in it (the
/// issuer withdrew its keys: the set held is replaced by an empty one); any
/// other answer fails, and the keys held stay.
pub fn jwks_answer(
    status: u32,
    body_size: usize,
    body: impl FnOnce(usize) -> Option<Vec<u8>>,
) -> Answer<KeySet> {
    match status {
        304 => Answer::NotModified,
        200 if body_size > MAX_JWKS_BYTES => {
            Answer::Failed(format!("JWKS of {body_size} bytes is over the limit"))
        }
        200 => match body(body_size) {
            Some(bytes) => match KeySet::parse_published(&bytes) {
                Ok(set) => Answer::Fresh(set, bytes),
                Err(e) => Answer::Failed(e.to_string()),
            },
            None => Answer::Failed("JWKS response had no body".into()),
        },
        0 => Answer::Failed("no response (cluster unreachable or timeout)".into()),
        other => Answer::Failed(format!("JWKS endpoint answered HTTP {other}")),
    }
}

/// A revocation-feed answer, like [`jwks_answer`].
/// A revocation feed as it came: compact (what the filter asks for) or JSON
/// (a service that does not speak the compact encoding).
#[derive(Debug)]
pub enum FeedBody {
    Compact(Blob),
    Json(RevocationFeed),
}

/// What the filter sends as `Accept` on a feed poll: the compact encoding,
/// JSON from a service that has only that. (A JSON feed is read as a tree
/// before its entries: on wasm32 about twice its size for the moment, some
/// 35 MB for one at [`MAX_FEED_BYTES`], in the one VM that fetches. The
/// compact feed is searched in place.)
pub const FEED_ACCEPT: &str = "application/vnd.authflow.revocations.v1, application/json;q=0.5";

/// A feed answer. `content_type` picks the decoder; `body(size)` reads the
/// body, only once it is known to fit the bound of its encoding.
pub fn feed_answer(
    status: u32,
    content_type: Option<&str>,
    body_size: usize,
    body: impl FnOnce(usize) -> Option<Vec<u8>>,
) -> Answer<FeedBody> {
    let compact = content_type.is_some_and(|t| {
        t.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case(COMPACT_FEED_TYPE))
    });
    let limit = if compact {
        MAX_COMPACT_FEED_BYTES
    } else {
        MAX_FEED_BYTES
    };
    match status {
        304 => Answer::NotModified,
        200 if body_size > limit => Answer::Failed(format!(
            "revocation feed of {body_size} bytes is over the limit"
        )),
        200 => match body(body_size) {
            Some(bytes) if compact => match Blob::parse(bytes) {
                Ok(blob) => Answer::Fresh(FeedBody::Compact(blob), Vec::new()),
                Err(e) => Answer::Failed(format!("revocation feed is not valid: {e}")),
            },
            Some(bytes) => match authflow_contract::json::from_slice::<RevocationFeed>(&bytes) {
                Ok(feed) => Answer::Fresh(FeedBody::Json(feed), Vec::new()),
                Err(e) => Answer::Failed(format!("revocation feed is not valid: {e}")),
            },
            None => Answer::Failed("revocation feed response had no body".into()),
        },
        0 => Answer::Failed("no response (cluster unreachable or timeout)".into()),
        other => Answer::Failed(format!("revocation feed answered HTTP {other}")),
    }
}

/// The feed's path with the cursor (opaque: kept to URL-safe characters) and,
/// for a long poll, how long the service may hold it (only with a cursor:
/// without one the answer is a snapshot, at once).
pub fn feed_path(base: &str, cursor: Option<&str>, wait_ms: u64) -> String {
    let path = cursor_path(base, cursor);
    if cursor.is_some_and(|c| !c.is_empty()) && wait_ms >= 1000 {
        format!("{path}&wait={}", wait_ms / 1000)
    } else {
        path
    }
}

fn cursor_path(base: &str, cursor: Option<&str>) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(cluster: &str, path: &str) -> Upstream {
        Upstream {
            cluster: cluster.into(),
            path: path.into(),
            authority: cluster.into(),
            interval_ms: 1_000,
            timeout_ms: 1_000,
            min_refetch_interval_ms: 1_000,
            wait_ms: 0,
        }
    }

    #[test]
    fn shared_key_is_what_the_document_is_not_what_it_is_called() {
        let a = shared_key(
            Document::Jwks,
            "https://a",
            &upstream("auth", "/jwks"),
            ListBounds::default(),
        );
        assert_eq!(
            a,
            shared_key(
                Document::Jwks,
                "https://a",
                &upstream("auth", "/jwks"),
                ListBounds::default()
            ),
            "same issuer and source: one fetch"
        );
        assert_ne!(
            a,
            shared_key(
                Document::Jwks,
                "https://b",
                &upstream("auth", "/jwks"),
                ListBounds::default()
            ),
            "another issuer"
        );
        assert_ne!(
            a,
            shared_key(
                Document::Jwks,
                "https://a",
                &upstream("other", "/jwks"),
                ListBounds::default()
            ),
            "another cluster"
        );
        assert_ne!(
            a,
            shared_key(
                Document::Jwks,
                "https://a",
                &upstream("auth", "/keys"),
                ListBounds::default()
            ),
            "another path"
        );
        assert_ne!(
            a,
            shared_key(
                Document::Revocations,
                "https://a",
                &upstream("auth", "/jwks"),
                ListBounds::default()
            ),
            "another document"
        );
        let mut other_host = upstream("auth", "/jwks");
        other_host.authority = "auth.other".into();
        assert_ne!(
            a,
            shared_key(
                Document::Jwks,
                "https://a",
                &other_host,
                ListBounds::default()
            ),
            "another authority"
        );
        let mut long_polled = upstream("auth", "/jwks");
        long_polled.wait_ms = 60_000;
        assert_ne!(
            a,
            shared_key(
                Document::Jwks,
                "https://a",
                &long_polled,
                ListBounds::default()
            ),
            "polled otherwise: the lease is not shared"
        );
        let mut slower = upstream("auth", "/jwks");
        slower.interval_ms += 1;
        assert_ne!(
            a,
            shared_key(Document::Jwks, "https://a", &slower, ListBounds::default())
        );
        // A fetch that fails for one filter and not another: each keeps its own lease.
        let impatient = Upstream {
            timeout_ms: 100,
            ..upstream("auth", "/jwks")
        };
        assert_ne!(
            a,
            shared_key(
                Document::Jwks,
                "https://a",
                &impatient,
                ListBounds::default()
            )
        );
        // A list bound tighter for one filter than another: each its own lease.
        for bounds in [
            ListBounds {
                max_entries: 5,
                ..ListBounds::default()
            },
            ListBounds {
                max_staleness_ms: 40_000,
                ..ListBounds::default()
            },
        ] {
            assert_ne!(
                a,
                shared_key(
                    Document::Jwks,
                    "https://a",
                    &upstream("auth", "/jwks"),
                    bounds
                ),
                "{bounds:?}"
            );
        }
        // Separators inside a part cannot make two sources collide.
        assert_ne!(
            shared_key(
                Document::Jwks,
                "i\",\"x",
                &upstream("c", "/p"),
                ListBounds::default()
            ),
            shared_key(
                Document::Jwks,
                "i",
                &upstream("x\",\"c", "/p"),
                ListBounds::default()
            )
        );
    }

    fn jwks(min_refetch_ms: u64) -> DocumentFetch {
        let mut u = upstream("auth", "/jwks");
        u.interval_ms = 300_000;
        u.timeout_ms = 2_000;
        u.min_refetch_interval_ms = min_refetch_ms;
        DocumentFetch::new(Document::Jwks, "https://a", u, ListBounds::default())
    }

    /// Brings a fresh fetch to "loaded, next refresh far away".
    fn loaded(mut f: DocumentFetch, now: u64) -> DocumentFetch {
        assert!(f.should_start(now, || true));
        f.started(1, now);
        f.finished(
            FetchEnd::Fresh {
                etag: Some("\"v1\"".into()),
            },
            now + 10,
            0.5,
        );
        f
    }

    #[test]
    fn unknown_kid_pauses_only_while_a_fetch_is_coming() {
        let mut f = loaded(jwks(60_000), 0);
        assert_eq!(f.etag(), Some("\"v1\""));
        // The first unknown kid is granted the early fetch: it waits for it,
        // and so does every other request until that fetch has ended.
        assert_eq!(f.key_wait(KeyNeed::UnknownKid, 1_000), KeyWait::Pause);
        assert_eq!(
            f.key_wait(KeyNeed::UnknownKid, 1_010),
            KeyWait::Pause,
            "granted, about to start"
        );
        assert!(
            f.should_start(1_050, || false),
            "an early fetch needs no lease"
        );
        assert_eq!(f.if_none_match(true).as_deref(), Some("\"v1\""));
        f.started(2, 1_050);
        assert_eq!(
            f.key_wait(KeyNeed::UnknownKid, 1_060),
            KeyWait::Pause,
            "in flight"
        );
        let seen = f.generation();
        f.finished(FetchEnd::NotModified, 1_100, 0.5);
        assert_ne!(f.generation(), seen, "its waiters are decided now");
        // Rate limited from here on: answered at once, nothing started.
        for t in [1_200, 5_000, 60_999] {
            assert_eq!(
                f.key_wait(KeyNeed::UnknownKid, t),
                KeyWait::AnswerNow,
                "at {t}"
            );
            assert!(!f.should_start(t, || true), "at {t}");
        }
        assert_eq!(
            f.key_wait(KeyNeed::UnknownKid, 61_000),
            KeyWait::Pause,
            "the next early fetch once the floor has passed"
        );
    }

    #[test]
    fn an_unknown_kid_does_not_cut_a_backoff_short() {
        let mut f = loaded(jwks(5_000), 0);
        // The issuer is failing: the refreshes back off, up to a minute.
        let mut now = 300_010;
        for _ in 0..12 {
            while !f.should_start(now, || true) {
                now += 100;
            }
            f.started(1, now);
            f.finished(FetchEnd::Failed, now + 10, 1.0);
            now += 10;
        }
        // Tokens with made-up kids, one per floor, for the rest of the backoff:
        // nothing starts, and nobody waits for a fetch that is not coming.
        let backoff_ends = now + 30_000;
        let mut t = now + 1_000;
        while t < backoff_ends {
            assert_eq!(
                f.key_wait(KeyNeed::UnknownKid, t),
                KeyWait::AnswerNow,
                "at {t}"
            );
            assert!(
                !f.should_start(t, || true),
                "a fetch during the backoff at {t}"
            );
            t += 5_000;
        }
    }

    /// A worker that does not hold the fetch lease fetches early only for an
    /// unknown `kid`. One such fetch that failed (the issuer briefly out)
    /// counted a failure that only its own successful fetch would clear,
    /// and it made none again: the lease holder's periodic fetches keep the
    /// lease, and an early fetch was never granted while a failure counted.
    /// Every token of the next key got 401 on that worker until a shared
    /// set came, up to `refresh_interval_secs`. Once the backoff is over an
    /// unknown `kid` fetches early again.
    #[test]
    fn a_failed_early_fetch_does_not_stop_the_next_one_after_its_backoff() {
        let mut f = loaded(jwks(5_000), 0);
        let no_lease = || false;
        let mut now = 10_000;
        assert_eq!(f.key_wait(KeyNeed::UnknownKid, now), KeyWait::Pause);
        assert!(f.should_start(now, no_lease));
        f.started(2, now);
        f.finished(FetchEnd::Failed, now + 10, 1.0);
        // During its backoff: no early fetch.
        now += 100;
        assert_eq!(f.key_wait(KeyNeed::UnknownKid, now), KeyWait::AnswerNow);
        assert!(!f.should_start(now, no_lease));
        // Long after (the issuer is back): the next unknown `kid` fetches.
        now += 60_000;
        assert_eq!(f.key_wait(KeyNeed::UnknownKid, now), KeyWait::Pause);
        assert!(
            f.should_start(now, no_lease),
            "an early fetch without the lease"
        );
    }

    #[test]
    fn keys_never_loaded_pause_only_when_a_fetch_may_start() {
        let mut f = jwks(1_000);
        assert_eq!(
            f.key_wait(KeyNeed::NotLoaded, 0),
            KeyWait::Pause,
            "due: the next tick fetches"
        );
        assert!(f.should_start(0, || true));
        f.started(1, 0);
        assert_eq!(
            f.key_wait(KeyNeed::NotLoaded, 10),
            KeyWait::Pause,
            "in flight"
        );
        f.finished(FetchEnd::Failed, 20, 0.0);
        // Backing off: no fetch before the backoff ends, so nobody waits for one.
        assert_eq!(f.key_wait(KeyNeed::NotLoaded, 30), KeyWait::AnswerNow);
        assert!(!f.should_start(30, || true));
        assert_eq!(
            f.key_wait(KeyNeed::NotLoaded, 20_000),
            KeyWait::Pause,
            "due again"
        );
    }

    #[test]
    fn a_lost_callout_is_forgotten_after_its_timeout() {
        let mut f = jwks(1_000);
        assert!(f.should_start(0, || true));
        f.started(7, 0);
        assert!(f.is_call(7) && !f.is_call(8));
        assert!(!f.should_start(3_000, || true), "within timeout + grace");
        let seen = f.generation();
        assert!(f.should_start(3_001, || true), "given up: fetch again");
        assert_ne!(f.generation(), seen, "whoever waited for it is decided");
        assert_eq!(f.in_flight(), None);
    }

    #[test]
    fn periodic_fetches_need_the_lease() {
        let mut f = loaded(jwks(1_000), 0);
        assert!(!f.should_start(300_009, || true), "not due yet");
        assert!(
            !f.should_start(300_010, || false),
            "due, but another VM holds the lease"
        );
        assert!(f.should_start(300_010, || true));
    }

    #[test]
    fn feed_cursor_is_escaped() {
        assert_eq!(feed_path("/v1/revocations", None, 0), "/v1/revocations");
        assert_eq!(
            feed_path("/v1/revocations", Some("a b/c"), 0),
            "/v1/revocations?since=a%20b%2Fc"
        );
        assert_eq!(feed_path("/r?x=1", Some("7"), 0), "/r?x=1&since=7");
        assert_eq!(
            feed_path("/r", Some("7"), 20_000),
            "/r?since=7&wait=20",
            "a long poll"
        );
        assert_eq!(
            feed_path("/r", None, 20_000),
            "/r",
            "no cursor: the snapshot, at once"
        );
    }

    #[test]
    fn oversized_or_bodiless_answers_fail() {
        assert!(matches!(
            jwks_answer(200, MAX_JWKS_BYTES + 1, |_| panic!("never read")),
            Answer::Failed(_)
        ));
        assert!(matches!(jwks_answer(200, 10, |_| None), Answer::Failed(_)));
        assert!(matches!(jwks_answer(304, 0, |_| None), Answer::NotModified));
        assert!(matches!(
            feed_answer(0, None, 0, |_| None),
            Answer::Failed(_)
        ));
        assert!(matches!(
            feed_answer(503, None, 0, |_| None),
            Answer::Failed(_)
        ));
        assert!(matches!(
            feed_answer(200, None, MAX_FEED_BYTES + 1, |_| panic!("never read")),
            Answer::Failed(_)
        ));
        let compact = Some(COMPACT_FEED_TYPE);
        assert!(matches!(
            feed_answer(200, compact, MAX_COMPACT_FEED_BYTES + 1, |_| panic!(
                "never read"
            )),
            Answer::Failed(_)
        ));
    }

    /// A `200` that is a key set is the issuer's word on its keys, even when
    /// it holds none the filter can use (the issuer withdrew them): it
    /// replaces the keys held. Anything that is no key set keeps them.
    #[test]
    fn a_key_set_without_usable_keys_is_fresh_and_errors_are_not() {
        let answer = |status: u32, body: &str| {
            let bytes = body.as_bytes().to_vec();
            jwks_answer(status, bytes.len(), |_| Some(bytes))
        };
        let p384 = format!(
            r#"{{"keys":[{{"kty":"EC","crv":"P-384","kid":"k1","x":"{0}","y":"{0}"}}]}}"#,
            "A".repeat(64)
        );
        for (body, skipped) in [
            (r#"{"keys":[]}"#, 0),
            (p384.as_str(), 1),
            (r#"{"keys":[7,"x",{}]}"#, 3),
        ] {
            match answer(200, body) {
                Answer::Fresh(set, bytes) => {
                    assert!(set.keys.is_empty(), "{body}");
                    assert_eq!(
                        (set.skipped, bytes.as_slice()),
                        (skipped, body.as_bytes()),
                        "{body}"
                    );
                }
                _ => panic!("a well-formed key set with no usable key withdraws the keys: {body}"),
            }
        }
        for (status, body) in [
            (410, r#"{"keys":[]}"#),
            (503, ""),
            (0, ""),
            (200, "{}"),
            (200, r#"{"keys":{}}"#),
            (200, r#"{"keys":[] "#),
        ] {
            assert!(
                matches!(answer(status, body), Answer::Failed(_)),
                "{status} {body}: keeps the last good keys"
            );
        }
    }

    /// The content type picks the decoder: a million-entry compact feed is
    /// over the JSON bound but within its own.
    #[test]
    fn feed_answers_decode_by_content_type() {
        let feed = RevocationFeed {
            issuer: "iss".into(),
            cursor: "1".into(),
            snapshot: true,
            ..Default::default()
        };
        let json = serde_json::to_vec(&feed).unwrap();
        assert!(matches!(
            feed_answer(200, Some("application/json"), json.len(), |_| Some(
                json.clone()
            )),
            Answer::Fresh(FeedBody::Json(_), _)
        ));
        let blob = authflow_contract::revocation::set::encode(&feed, Default::default());
        let bytes = blob.bytes().to_vec();
        let typed = Some("Application/Vnd.Authflow.Revocations.v1; q=1");
        assert!(
            matches!(feed_answer(200, typed, bytes.len(), |_| Some(bytes.clone())), Answer::Fresh(FeedBody::Compact(b), _) if b == blob)
        );
        assert!(
            matches!(
                feed_answer(200, Some(COMPACT_FEED_TYPE), json.len(), |_| Some(
                    json.clone()
                )),
                Answer::Failed(_)
            ),
            "JSON labelled compact"
        );
        const {
            assert!(
                MAX_COMPACT_FEED_BYTES > 1_000_000 * 24 + 4096 && MAX_FEED_BYTES < 1_000_000 * 24
            )
        };
    }

    /// A feed or key-set answer the filter cannot read is logged with its
    /// reason (`revocation poll failed: {why}`): the reason must stay one
    /// line of bounded length whatever the upstream sent (no newline or
    /// escape sequence from the body, no megabyte member name).
    #[test]
    fn a_refused_answer_is_logged_on_one_bounded_line() {
        let long = "x".repeat(100_000);
        let bodies = [
            r#"{"issuer":"i","cursor":"1","snapshot":true,"a\nFAKE authflow: provider p: ok\u001b[2J":1}"#
                .to_owned(),
            format!(r#"{{"issuer":"i","cursor":"1","snapshot":true,"{long}":1}}"#),
        ];
        for body in bodies {
            let bytes = body.into_bytes();
            let Answer::Failed(why) =
                feed_answer(200, Some("application/json"), bytes.len(), |_| {
                    Some(bytes.clone())
                })
            else {
                panic!("refused")
            };
            assert!(
                !why.chars().any(char::is_control) && why.len() < 1200,
                "{} bytes: {:?}",
                why.len(),
                why.chars().take(200).collect::<String>()
            );
        }
    }

    #[test]
    fn refused_dispatches_are_deferred_then_failed() {
        let mut f = jwks(1_000);
        assert!(f.should_start(0, || true));
        let seen = f.generation();
        assert_eq!(f.refused(0, 0.5), Refusal::Deferred);
        assert_eq!(
            f.generation(),
            seen,
            "nobody waiting is decided by a deferral"
        );
        assert_eq!(
            f.key_wait(KeyNeed::NotLoaded, 50),
            KeyWait::Pause,
            "the retry is coming"
        );
        assert!(!f.should_start(DISPATCH_RETRY_MS - 1, || true));
        assert!(
            f.should_start(DISPATCH_RETRY_MS, || true),
            "retried shortly"
        );
        assert_eq!(f.refused(9_999, 0.5), Refusal::Deferred);
        assert_eq!(
            f.refused(10_000, 0.5),
            Refusal::Failed,
            "after the bound it is a failure"
        );
        assert_ne!(f.generation(), seen, "and its waiters are decided");
        assert_eq!(
            f.key_wait(KeyNeed::NotLoaded, 10_001),
            KeyWait::AnswerNow,
            "backing off, nothing coming"
        );
        // A dispatch that goes through resets the bound.
        assert!(f.should_start(70_000, || true));
        f.started(3, 70_000);
        f.finished(FetchEnd::Failed, 70_010, 0.5);
        assert!(f.should_start(80_000, || true));
        assert_eq!(f.refused(80_000, 0.5), Refusal::Deferred);
    }

    fn feed(wait_ms: u64) -> DocumentFetch {
        let mut u = upstream("auth", "/v1/revocations");
        u.wait_ms = wait_ms;
        u.timeout_ms = 5_000;
        DocumentFetch::new(Document::Revocations, "https://a", u, ListBounds::default())
    }

    /// Runs one poll from `start` to `end`; whether the next one is due right after.
    fn poll(f: &mut DocumentFetch, start: u64, end: u64, how: FetchEnd) -> bool {
        assert!(f.should_start(start, || true), "due at {start}");
        f.started(9, start);
        f.finished(how, end, 0.5);
        f.should_start(end + MIN_LONG_POLL_GAP_MS, || true)
    }

    #[test]
    fn a_long_poll_follows_at_once_after_news_or_a_held_304() {
        let mut f = feed(20_000);
        assert_eq!(
            f.callout_timeout_ms(),
            25_000,
            "the callout outlives the wait"
        );
        assert!(!f.renews_lease_while_waiting());
        assert!(f.should_start(0, || true));
        f.started(8, 0);
        assert!(
            f.renews_lease_while_waiting(),
            "held: the holder keeps its lease"
        );
        f.finished(FetchEnd::Fresh { etag: None }, 30, 0.5);
        assert!(
            f.should_start(30 + MIN_LONG_POLL_GAP_MS, || true),
            "news: the next poll at once"
        );
        f.started(9, 130);
        f.finished(FetchEnd::Fresh { etag: None }, 140, 0.5);
        assert!(
            poll(&mut f, 240, 20_240, FetchEnd::NotModified),
            "held for the wait: at once"
        );
        assert!(
            poll(&mut f, 20_340, 25_000, FetchEnd::Fresh { etag: None }),
            "woken by news: at once"
        );
    }

    #[test]
    fn a_service_that_does_not_wait_is_polled_at_the_interval() {
        let mut f = feed(20_000);
        let mut t = 0;
        assert!(
            !poll(&mut f, t, t + 5, FetchEnd::NotModified),
            "a quick 304: not again at once"
        );
        for _ in 0..5 {
            t += 5 + 1_000; // the last answer came 5 ms after its start; then the interval
            assert!(!f.should_start(t - 1, || true), "not before the interval");
            assert!(!poll(&mut f, t, t + 5, FetchEnd::NotModified));
        }
        // Even a service that claims news on every quick answer is not looped on.
        let mut starts = 0;
        let mut now = 100_000;
        while now < 101_000 {
            if f.should_start(now, || true) {
                starts += 1;
                f.started(1, now);
                f.finished(FetchEnd::Fresh { etag: None }, now + 1, 0.5);
            }
            now += 1;
        }
        assert!(
            starts <= 1_000 / MIN_LONG_POLL_GAP_MS,
            "{starts} polls in a second"
        );
        // Failures back off as before.
        f.started(2, 200_000);
        f.finished(FetchEnd::Failed, 200_001, 0.5);
        assert!(!f.should_start(200_001 + MIN_LONG_POLL_GAP_MS, || true));
    }

    #[test]
    fn without_a_wait_it_is_plain_polling() {
        let mut f = feed(0);
        assert_eq!(f.callout_timeout_ms(), 5_000);
        assert!(
            !poll(&mut f, 0, 30, FetchEnd::Fresh { etag: None }),
            "at the interval"
        );
        assert_eq!(next_long_poll_at(false, 0, 0, 20_000, true), None);
    }

    /// A poll whose wait was shortened to what the list had left (a retry
    /// after a late failure, the first poll of a new lease holder) was
    /// judged against the configured wait: its held `304` looked quick, the
    /// next poll came at the interval (30 s) with a short wait again, and
    /// so on: news waited up to the interval for as long as that lasted.
    #[test]
    fn a_poll_held_for_the_shortened_wait_it_was_sent_is_followed_at_once() {
        let mut f = feed(30_000);
        f.wait_sent_ms = 10_000;
        assert!(
            poll(&mut f, 0, 10_000, FetchEnd::NotModified),
            "held for the 10 s it was sent: at once"
        );
        f.wait_sent_ms = 0;
        assert!(
            poll(&mut f, 10_100, 10_110, FetchEnd::Fresh { etag: None }),
            "news to a poll sent with no wait (the first, for the whole list): at once"
        );
        assert!(
            poll(&mut f, 10_210, 10_220, FetchEnd::NotModified),
            "a 304 to a poll sent with no wait (no time left): at once, with the full wait"
        );
        f.wait_sent_ms = 30_000;
        assert!(
            !poll(&mut f, 10_320, 10_330, FetchEnd::NotModified),
            "a quick 304 to the full wait: the service does not wait"
        );
    }
}
