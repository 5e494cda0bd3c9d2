//! The stored form of a mailed sign-in code: an HMAC under a key derived
//! from the KEK, over the challenge id and the code. A code has six digits
//! (20 bits): a plain hash of it in the database is undone in a second by
//! anyone who reads the table (a replica, a backup, a read-only role), who
//! could then finish the sign-in pending on it with a first try. The KEK is
//! kept outside the database, as for the sealed secrets.

use crate::domain::hash_secret;
use crate::domain::secret::hashes_match;
use crate::kek::DerivedKeys;

/// What the keys of this module are derived from the KEK for.
pub const KEY_PURPOSE: &str = "signin-code";

/// Marks the keyed form; a value without it is the plain SHA-256 that
/// instances of earlier releases write (read during a rolling upgrade).
const KEYED: &str = "k1:";

/// What is stored for `code`, mailed for challenge `challenge_id`.
pub fn stored_form(keys: &DerivedKeys, challenge_id: &str, code: &str) -> String {
    format!("{KEYED}{}", keys.tag(&parts(challenge_id, code)))
}

/// Whether `code` is the one whose stored form is `stored` (constant time;
/// under the current KEK or one in `kek.previous`).
pub fn matches(keys: &DerivedKeys, challenge_id: &str, code: &str, stored: &str) -> bool {
    match stored.strip_prefix(KEYED) {
        Some(tag) => keys.verifies(&parts(challenge_id, code), tag),
        None => hashes_match(&hash_secret(code), stored),
    }
}

fn parts<'a>(challenge_id: &'a str, code: &'a str) -> [&'a [u8]; 4] {
    [
        b"authflow sign-in code v1\0",
        challenge_id.as_bytes(),
        b"\0",
        code.as_bytes(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kek::{generate_key, parse_key, Kek};

    fn keys(kek: &[u8; 32], previous: &[[u8; 32]]) -> DerivedKeys {
        Kek::test_keys(KEY_PURPOSE, kek, previous)
    }

    #[test]
    fn a_stored_code_is_found_only_with_the_kek_and_its_own_challenge() {
        let kek = parse_key(&generate_key()).unwrap();
        let k = keys(&kek, &[]);
        let stored = stored_form(&k, "ch1", "123456");
        assert!(matches(&k, "ch1", "123456", &stored));
        assert!(!matches(&k, "ch1", "123457", &stored));
        assert!(!matches(&k, "ch2", "123456", &stored), "another challenge");
        let other = keys(&parse_key(&generate_key()).unwrap(), &[]);
        assert!(!matches(&other, "ch1", "123456", &stored), "another KEK");
        // Across a KEK rotation, a code mailed just before it still works.
        let new = parse_key(&generate_key()).unwrap();
        assert!(matches(&keys(&new, &[kek]), "ch1", "123456", &stored));
    }

    #[test]
    fn a_plain_hash_from_an_instance_of_an_earlier_release_still_matches() {
        let k = keys(&parse_key(&generate_key()).unwrap(), &[]);
        let earlier = hash_secret("654321");
        assert!(matches(&k, "ch1", "654321", &earlier));
        assert!(!matches(&k, "ch1", "654320", &earlier));
    }
}
