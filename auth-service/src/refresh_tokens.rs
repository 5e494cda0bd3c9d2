//! The refresh token's form: `<session id>~<random>~<tag>`, the tag an HMAC
//! of the first two parts under a key derived from the KEK.
//!
//! The database keeps only a session's newest rotated-out tokens
//! (`store::ROTATED_REFRESH_TOKENS_KEPT`). Without the tag, a token pushed
//! out of that history was simply unknown: a thief holding a stolen token
//! and device secret could rotate a few hundred times, and when the owner
//! came back with the old token nothing was detected. With it, the service
//! still knows the token as one it issued to that session, and judges it as
//! reuse (see `sessions::refresh`). Only the service can make a tag, so
//! nobody can forge a "reuse" of a session they never held a token of.
//!
//! `~` is in neither part (hex, base64url), in neither the refresh cookie's
//! `.` separator, and is sent as is in a form or JSON body.

use crate::domain::{random_secret, Secret};
use crate::kek::DerivedKeys;

/// What the keys of this module are derived from the KEK for.
pub const KEY_PURPOSE: &str = "refresh-token";

const SEPARATOR: char = '~';

/// What a token's tag tells of it.
#[derive(Debug, PartialEq, Eq)]
pub struct Minted<'a> {
    pub session_id: &'a str,
    /// Issued once its session was bound to a DPoP key: only that key's
    /// proofs can spend it, even pushed out of the history.
    pub dpop_bound: bool,
}

/// A fresh refresh token of session `session_id`.
pub fn mint(keys: &DerivedKeys, session_id: &str, dpop_bound: bool) -> Secret {
    let random = random_secret();
    let tag = keys.tag(&tagged(session_id, random.expose(), dpop_bound));
    Secret::new(format!(
        "{session_id}{SEPARATOR}{}{SEPARATOR}{tag}",
        random.expose()
    ))
}

/// The session `token` was minted for, and whether bound, when its tag
/// holds (under the current KEK or one still in `kek.previous`). Tokens of
/// the older form (one random string) name none.
pub fn session_of<'a>(keys: &DerivedKeys, token: &'a str) -> Option<Minted<'a>> {
    let mut parts = token.split(SEPARATOR);
    let (session_id, random, tag) = (parts.next()?, parts.next()?, parts.next()?);
    // Each part as minted (hex, base64url): nothing else reaches the MAC.
    let minted = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if parts.next().is_some() || !minted(session_id) || !minted(random) {
        return None;
    }
    [false, true]
        .into_iter()
        .find(|bound| keys.verifies(&tagged(session_id, random, *bound), tag))
        .map(|dpop_bound| Minted {
            session_id,
            dpop_bound,
        })
}

fn tagged<'a>(session_id: &'a str, random: &'a str, dpop_bound: bool) -> [&'a [u8]; 4] {
    [
        // A label of its own for a bound token, first: neither label begins
        // the other, so no token's parts can be spelt to take the other's
        // tag. An unbound token's is the tag of earlier releases.
        if dpop_bound {
            b"authflow refresh token v1 dpop-bound\0"
        } else {
            b"authflow refresh token v1\0"
        },
        session_id.as_bytes(),
        b"\0",
        random.as_bytes(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kek::{generate_key, parse_key, Kek};

    fn keys(kek: &[u8; 32], previous: &[[u8; 32]]) -> DerivedKeys {
        Kek::test_keys(KEY_PURPOSE, kek, previous)
    }

    fn unbound(session_id: &str) -> Minted<'_> {
        Minted {
            session_id,
            dpop_bound: false,
        }
    }

    /// A token pushed out of a bound session's history still says it was
    /// issued under the binding; one of an earlier release reads as unbound.
    #[test]
    fn a_token_says_whether_it_was_issued_under_a_dpop_binding() {
        let k = keys(&parse_key(&generate_key()).unwrap(), &[]);
        let bound = mint(&k, "b0b", true);
        assert_eq!(
            session_of(&k, bound.expose()),
            Some(Minted {
                session_id: "b0b",
                dpop_bound: true
            })
        );
        let random = "r4nd0m";
        let earlier = k.tag(&[
            b"authflow refresh token v1\0",
            b"b0b",
            b"\0",
            random.as_bytes(),
        ]);
        assert_eq!(
            session_of(&k, &format!("b0b~{random}~{earlier}")),
            Some(unbound("b0b"))
        );
        // The bound tag on the unbound spelling's parts names nothing else.
        let (_, rest) = bound.expose().split_once('~').unwrap();
        assert_eq!(session_of(&k, &format!("b0c~{rest}")), None);
        // Nor a bound token's parts spelt with more in them (a NUL and a
        // label) to take its tag for an unbound one's.
        let (random, tag) = rest.split_once('~').unwrap();
        for spelt in [
            format!("b0b~{random}\0dpop-bound~{tag}"),
            format!("b0b~{random} dpop-bound~{tag}"),
            format!("b0b\0~{random}~{tag}"),
        ] {
            assert_eq!(session_of(&k, &spelt), None, "{spelt:?}");
        }
    }

    #[test]
    fn a_minted_token_names_its_session_and_nothing_else_does() {
        let k = keys(&parse_key(&generate_key()).unwrap(), &[]);
        let token = mint(&k, "0123abcd", false);
        let text = token.expose();
        assert_eq!(session_of(&k, text), Some(unbound("0123abcd")));
        assert_ne!(
            mint(&k, "0123abcd", false).expose(),
            text,
            "random each time"
        );

        // Another session's id, a changed random part or tag, extra parts,
        // the older form: none names a session.
        let (_, rest) = text.split_once('~').unwrap();
        assert_eq!(session_of(&k, &format!("ffff~{rest}")), None);
        let mut flipped = text.to_owned();
        let last = flipped.pop().unwrap();
        flipped.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(session_of(&k, &flipped), None);
        assert_eq!(session_of(&k, &format!("{text}~x")), None);
        assert_eq!(session_of(&k, random_secret().expose()), None);
        assert_eq!(session_of(&k, "~~"), None);
        assert_eq!(session_of(&k, ""), None);

        // Under another KEK: not ours.
        let other = keys(&parse_key(&generate_key()).unwrap(), &[]);
        assert_eq!(session_of(&other, text), None);
    }

    #[test]
    fn a_token_minted_before_a_kek_rotation_still_names_its_session() {
        let old = parse_key(&generate_key()).unwrap();
        let new = parse_key(&generate_key()).unwrap();
        let token = mint(&keys(&old, &[]), "5e55", false);
        assert_eq!(
            session_of(&keys(&new, &[old]), token.expose()),
            Some(unbound("5e55"))
        );
        assert_eq!(session_of(&keys(&new, &[]), token.expose()), None);
    }
}
