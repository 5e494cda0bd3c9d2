//! Verified-token cache: a token seen before is not verified again.
//!
//! Keyed by the exact token bytes (compared in full on lookup), so a different
//! token can never hit another's entry. Only the token's last
//! [`HASHED_TAIL_BYTES`] go through a keyed SipHash: that tail is
//! signature, unique per token, and hashing the whole token was most of the
//! cost of a cache hit. The SipHash key comes from the glue (the host's
//! random bytes, [`TokenCache::new`]). Entries live
//! until the token's `exp`; the time, revocation and device checks still run
//! on every request. Bounded, and O(1) amortised per insert: when full the
//! oldest entry goes (a miss costs one signature check, not correctness), and
//! expired entries are swept at most once per [`SWEEP_INTERVAL_SECS`].

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::rc::Rc;

use siphasher::sip::SipHasher13;

use crate::verify::VerifiedToken;

/// How often (at most) the cache looks for expired entries.
pub const SWEEP_INTERVAL_SECS: u64 = 60;

/// How much of a token's end is hashed (the whole token when shorter).
pub const HASHED_TAIL_BYTES: usize = 48;

/// SipHash over the tail of what is hashed. Equal tokens have equal tails, so
/// this agrees with `Eq`; tokens sharing a tail (only forgeries can) merely
/// share a bucket, and they never get in: only verified tokens are inserted.
///
/// Keyed here rather than by std's `RandomState`: on WASI that draws its key
/// through a panicking `expect` whose message prints WASI's error names, 2 KB
/// of module. SipHash-1-3 as std's `HashMap` uses it (std exposes no keyed
/// 1-3 of its own): a round fewer per 8 bytes, and one at the end, than
/// the 2-4 of std's deprecated `SipHasher`, on every request.
#[derive(Clone, Copy)]
struct TailHash([u64; 2]);

struct TailHasher(SipHasher13);

impl BuildHasher for TailHash {
    type Hasher = TailHasher;
    fn build_hasher(&self) -> TailHasher {
        TailHasher(SipHasher13::new_with_keys(self.0[0], self.0[1]))
    }
}

impl Hasher for TailHasher {
    fn write(&mut self, bytes: &[u8]) {
        let tail = bytes
            .get(bytes.len().saturating_sub(HASHED_TAIL_BYTES)..)
            .unwrap_or(bytes);
        self.0.write(tail);
    }
    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

pub struct TokenCache {
    max_entries: usize,
    entries: HashMap<Rc<str>, Rc<VerifiedToken>, TailHash>,
    order: VecDeque<Rc<str>>,
    last_sweep: u64,
}

impl TokenCache {
    /// `hash_key`: random per VM, so nobody outside can aim tokens at one bucket.
    pub fn new(max_entries: usize, hash_key: [u64; 2]) -> Self {
        TokenCache {
            max_entries,
            entries: HashMap::with_hasher(TailHash(hash_key)),
            order: VecDeque::new(),
            last_sweep: 0,
        }
    }

    pub fn get(&self, key: &str) -> Option<Rc<VerifiedToken>> {
        self.entries.get(key).cloned()
    }

    pub fn insert(&mut self, key: &str, token: Rc<VerifiedToken>, now: u64) {
        if self.max_entries == 0 {
            return;
        }
        if now >= self.last_sweep.saturating_add(SWEEP_INTERVAL_SECS) {
            self.sweep_expired(now);
        }
        while self.entries.len() >= self.max_entries {
            match self.order.pop_front() {
                Some(oldest) => {
                    self.entries.remove(&oldest);
                }
                None => break,
            }
        }
        let key: Rc<str> = Rc::from(key);
        if self.entries.insert(Rc::clone(&key), token).is_none() {
            self.order.push_back(key);
        }
    }

    /// O(n), so rare: drops tokens past `exp` to make room for live ones.
    fn sweep_expired(&mut self, now: u64) {
        self.last_sweep = now;
        self.entries.retain(|_, t| t.expires_at >= now);
        let entries = &self.entries;
        self.order.retain(|k| entries.contains_key(k));
    }

    /// Forget everything (the provider's keys changed: a removed key must not live on in here).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(exp: u64) -> Rc<VerifiedToken> {
        Rc::new(VerifiedToken::new(
            crate::ProviderId::FIRST,
            "i".into(),
            exp,
        ))
    }

    #[test]
    fn bounded_oldest_first_and_expired_swept() {
        let mut c = TokenCache::new(3, [1, 2]);
        c.insert("t1", token(100), 10);
        c.insert("t2", token(20), 10);
        c.insert("t3", token(100), 10);
        c.insert("t4", token(100), 11); // full: the oldest goes
        assert!(c.get("t1").is_none());
        assert!(c.get("t4").is_some());
        assert_eq!(c.len(), 3);
        assert!(c.get("t4x").is_none(), "exact bytes only");
        // A minute later the sweep drops t2 (expired at 20) before anything live goes.
        c.insert("t5", token(200), 10 + SWEEP_INTERVAL_SECS);
        assert!(c.get("t2").is_none());
        assert!(c.get("t3").is_some() && c.get("t4").is_some() && c.get("t5").is_some());
        c.clear();
        assert!(c.is_empty());
    }

    #[test]
    fn a_full_cache_stays_cheap() {
        let mut c = TokenCache::new(1_000, [3, 4]);
        for i in 0..100_000u64 {
            c.insert(&format!("token-{i}"), token(1_000_000), 1 + i / 1_000);
        }
        assert_eq!(c.len(), 1_000);
        assert!(c.get("token-99999").is_some());
        assert_eq!(c.order.len(), 1_000);
    }
}
