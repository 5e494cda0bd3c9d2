//! Verified-token cache: a token seen before is not verified again.
//!
//! Keyed by the exact token bytes (hashed with std's keyed SipHash, compared
//! in full on lookup), so a different token can never hit another's entry —
//! and the per-request cost is one fast hash, not a SHA-256. Entries live until the token's `exp`; the time,
//! revocation and device checks still run on every request. Bounded: when
//! full, expired entries go first, then the oldest (FIFO is enough here — a
//! miss costs one signature check, not correctness).

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use crate::verify::VerifiedToken;

pub struct TokenCache {
    max_entries: usize,
    entries: HashMap<Rc<str>, Rc<VerifiedToken>>,
    order: VecDeque<Rc<str>>,
}

impl TokenCache {
    pub fn new(max_entries: usize) -> Self {
        TokenCache { max_entries, entries: HashMap::new(), order: VecDeque::new() }
    }

    pub fn get(&self, key: &str) -> Option<Rc<VerifiedToken>> {
        self.entries.get(key).cloned()
    }

    pub fn insert(&mut self, key: &str, token: Rc<VerifiedToken>, now: u64) {
        if self.max_entries == 0 {
            return;
        }
        if self.entries.len() >= self.max_entries {
            self.evict(now);
        }
        let key: Rc<str> = Rc::from(key);
        if self.entries.insert(Rc::clone(&key), token).is_none() {
            self.order.push_back(key);
        }
    }

    fn evict(&mut self, now: u64) {
        self.entries.retain(|_, t| t.expires_at >= now);
        self.order.retain(|k| self.entries.contains_key(k));
        while self.entries.len() >= self.max_entries {
            match self.order.pop_front() {
                Some(k) => {
                    self.entries.remove(&k);
                }
                None => break,
            }
        }
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
        Rc::new(VerifiedToken {
            provider: 0,
            issuer: "i".into(),
            subject: None,
            expires_at: exp,
            not_before: None,
            issued_at: None,
            jti: None,
            sid: None,
            roles: vec![],
            scopes: vec![],
            dfp: None,
            identity_headers: Rc::from(Vec::new()),
        })
    }

    #[test]
    fn bounded_expired_first_then_oldest() {
        let mut c = TokenCache::new(3);
        c.insert("t1", token(100), 0);
        c.insert("t2", token(10), 0);
        c.insert("t3", token(100), 0);
        c.insert("t4", token(100), 50); // t2 expired at 50: it goes
        assert!(c.get("t2").is_none());
        assert_eq!(c.len(), 3);
        c.insert("t5", token(100), 50); // none expired: the oldest goes
        assert!(c.get("t1").is_none());
        assert!(c.get("t5").is_some());
        assert!(c.get("t5x").is_none(), "exact bytes only");
        assert_eq!(c.len(), 3);
        c.clear();
        assert!(c.is_empty());
    }
}
