//! The password policy (NIST SP 800-63B style: length over composition
//! rules, a block list of the most common choices) and argon2id hashing.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub const MIN_CHARS: usize = 10;
pub const MAX_CHARS: usize = 128;

/// A few of the most common passwords that pass the length rule.
const BLOCKED: &[&str] = &[
    "1234567890",
    "12345678910",
    "123456789012",
    "0123456789",
    "qwertyuiop",
    "password123",
    "password1234",
    "iloveyou123",
    "qwerty12345",
    "abcdefghij",
    "passwordpassword",
    "letmein123",
    "welcome123",
    "1q2w3e4r5t",
    "administrator",
    "changeme123",
];

/// A password that satisfies the policy. `Debug` redacts it.
#[derive(Clone)]
pub struct Password(String);

#[derive(Debug, PartialEq, Eq)]
pub struct PasswordError(pub String);

impl Password {
    pub fn parse(raw: &str, email: &str) -> Result<Self, PasswordError> {
        let chars = raw.chars().count();
        if chars < MIN_CHARS {
            return Err(PasswordError(format!(
                "password must be at least {MIN_CHARS} characters"
            )));
        }
        if chars > MAX_CHARS {
            return Err(PasswordError(format!(
                "password must be at most {MAX_CHARS} characters"
            )));
        }
        let lower = raw.to_lowercase();
        if BLOCKED.contains(&lower.as_str()) {
            return Err(PasswordError("password is too common".into()));
        }
        let mut distinct: Vec<char> = raw.chars().collect();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() < 4 {
            return Err(PasswordError(
                "password needs at least 4 different characters".into(),
            ));
        }
        let local = email.split('@').next().unwrap_or_default();
        if lower == email || (local.len() >= 4 && lower.contains(local)) {
            return Err(PasswordError(
                "password must not contain the email address".into(),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// argon2id with the configured cost; cloned into blocking tasks.
#[derive(Clone)]
pub struct Hasher {
    params: Params,
    /// A real hash of a random password, verified for unknown emails so that
    /// "no such user" costs the same time as "wrong password".
    dummy: String,
    /// How long a verification at today's cost takes here (nanoseconds, a
    /// moving average of the ones run): what a hash of another cost is
    /// padded to (see [`Hasher::verify_padded`]). Shared by the clones.
    current_cost_nanos: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Hasher {
    pub fn new(memory_kib: u32, iterations: u32) -> Result<Self, String> {
        let params = Params::new(memory_kib, iterations, 1, None).map_err(|e| e.to_string())?;
        let mut hasher = Self {
            params,
            dummy: String::new(),
            current_cost_nanos: std::sync::Arc::default(),
        };
        hasher.dummy = hasher.hash(crate::domain::random_secret().expose())?;
        // One verification now, so the first hash of another cost has a time to match.
        let _ = hasher.verify_padded("", None);
        Ok(hasher)
    }

    fn argon(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    pub fn hash(&self, password: &str) -> Result<String, String> {
        let salt = SaltString::generate(&mut OsRng);
        self.argon()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| e.to_string())
    }

    /// Verifies against `stored`, or against the dummy hash when `None`
    /// (always false then, after the same work); and how long the caller
    /// must wait before it answers, so that every answer takes what a
    /// verification at today's cost takes (no variant without the wait: an
    /// answer that skips it tells old accounts apart).
    ///
    /// A stored hash is verified with the cost written in it. One made under
    /// a cheaper cost than today's (the configured cost was raised since)
    /// would answer faster than an unknown address does (its cost is
    /// today's); followed by the dummy's verification, slower: either way
    /// timing told which addresses have accounts. It is padded to the time
    /// of today's cost instead (a wait, not work: no core is held for it).
    /// Its owner's next sign-in replaces it ([`Hasher::needs_rehash`]). One
    /// made under a costlier one (the cost was lowered) stays slower.
    pub fn verify_padded(&self, password: &str, stored: Option<&str>) -> (bool, Duration) {
        let target = stored.unwrap_or(&self.dummy);
        let Ok(parsed) = PasswordHash::new(target) else {
            return (false, Duration::ZERO);
        };
        let started = Instant::now();
        let ok = self
            .argon()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        let took = started.elapsed();
        let pad = if self.of_current_cost(&parsed) {
            self.learn_current_cost(took);
            Duration::ZERO
        } else {
            self.current_cost().saturating_sub(took)
        };
        (ok && stored.is_some(), pad)
    }

    /// What a verification at today's cost takes here.
    fn current_cost(&self) -> Duration {
        Duration::from_nanos(self.current_cost_nanos.load(Ordering::Relaxed))
    }

    /// Takes one more verification at today's cost into the average (an
    /// eighth of its weight: the machine's load moves it, one outlier does not).
    fn learn_current_cost(&self, took: Duration) {
        let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .current_cost_nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(if old == 0 {
                    took
                } else {
                    old - old / 8 + took / 8
                })
            });
    }

    /// Whether `stored` was made under another cost than the one configured
    /// now (or cannot be read): its owner's next right password replaces it.
    pub fn needs_rehash(&self, stored: &str) -> bool {
        PasswordHash::new(stored).map_or(true, |parsed| !self.of_current_cost(&parsed))
    }

    /// Whether `hash` was made with the cost configured now.
    fn of_current_cost(&self, hash: &PasswordHash<'_>) -> bool {
        Params::try_from(hash).is_ok_and(|p| {
            p.m_cost() == self.params.m_cost()
                && p.t_cost() == self.params.t_cost()
                && p.p_cost() == self.params.p_cost()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        assert!(Password::parse("correct horse battery", "a@b.c").is_ok());
        assert!(Password::parse("short", "a@b.c").is_err());
        assert!(Password::parse("1234567890", "a@b.c").is_err());
        assert!(Password::parse("aaaaaaaaaaaa", "a@b.c").is_err());
        assert!(Password::parse("my-alice-password", "alice@b.c").is_err());
        assert!(Password::parse(&"ab1c".repeat(40), "a@b.c").is_err());
    }

    #[test]
    fn hash_and_verify() {
        let h = Hasher::new(1024, 1).unwrap();
        let stored = h.hash("correct horse battery").unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(h.verify_padded("correct horse battery", Some(&stored)).0);
        assert!(!h.verify_padded("wrong horse battery", Some(&stored)).0);
        assert!(!h.verify_padded("correct horse battery", None).0);
        assert!(!format!(
            "{:?}",
            Password::parse("correct horse battery", "a@b.c").unwrap()
        )
        .contains("horse"));
    }

    /// A hash of a cheaper cost than today's is padded to today's time (a
    /// wait the caller makes), rather than followed by a second, dummy
    /// verification; one of today's cost, the dummy's, or a costlier one is not.
    #[test]
    fn only_a_hash_of_a_cheaper_cost_is_padded() {
        let cheaper = Hasher::new(1024, 1).unwrap().hash("pw").unwrap();
        let costlier = Hasher::new(32 * 1024, 3).unwrap().hash("pw").unwrap();
        let h = Hasher::new(8 * 1024, 2).unwrap();
        let today = h.hash("pw").unwrap();
        assert_eq!(h.verify_padded("x", None), (false, Duration::ZERO));
        assert_eq!(h.verify_padded("pw", Some(&today)), (true, Duration::ZERO));
        let (ok, pad) = h.verify_padded("pw", Some(&cheaper));
        assert!(ok);
        assert!(pad > Duration::ZERO, "{pad:?}");
        assert!(pad <= h.current_cost());
        assert_eq!(
            h.verify_padded("pw", Some(&costlier)),
            (true, Duration::ZERO)
        );
    }
}
