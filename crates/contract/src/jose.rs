//! The compact JWS serialization (RFC 7515 §7.1) and its JOSE header (§4), read
//! one way for every JWS authflow looks at: access tokens (the filter's
//! screen) and DPoP proofs (the filter and the auth service).
//!
//! Every JSON part (the header, a token's claims, a proof's claims) is read
//! as an object whose member names are unique, in it and in every object
//! within it at any depth ([`crate::json::borrowed::Object`]): RFC 7515 §4 and
//! RFC 7519 §4 let a parser either refuse a name seen twice or keep the last
//! one; refusing means no other reader of the same JWS can see a different
//! `alg`, `kid`, `jwk` (or `x` within it), `cnf.jkt` or claim than authflow did.

use crate::json::borrowed::{Json, Object};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// The three base64url parts of a compact JWS: `header.payload.signature`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactParts<'a> {
    pub header: &'a str,
    pub payload: &'a str,
    pub signature: &'a str,
}

impl<'a> CompactParts<'a> {
    /// Exactly three dot-separated parts (any of them may be empty), else `None`.
    pub fn split(compact: &'a str) -> Option<Self> {
        let mut parts = compact.split('.');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(header), Some(payload), Some(signature), None) => Some(Self {
                header,
                payload,
                signature,
            }),
            _ => None,
        }
    }

    /// Length of `header.payload`: the signed bytes are the compact form's first this many.
    pub fn signing_input_len(&self) -> usize {
        self.header.len() + 1 + self.payload.len()
    }
}

/// Why a JSON part of a compact JWS could not be read (any cause is the same
/// refusal to the caller: a malformed JWS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unreadable;

/// A base64url part (no padding, canonical) decoded into `buffer` (its
/// previous content dropped) and read from there as a JSON object with unique
/// member names at any depth: the object borrows its strings from `buffer`.
pub fn decode_object<'b>(part: &str, buffer: &'b mut Vec<u8>) -> Result<Object<'b>, Unreadable> {
    buffer.clear();
    URL_SAFE_NO_PAD
        .decode_vec(part, buffer)
        .map_err(|_| Unreadable)?;
    Object::read(buffer).map_err(|_| Unreadable)
}

/// Header members that bring a key, or a way to fetch one, with the JWS;
/// and `crit`, extensions it must be understood with (§4.1.11): authflow
/// implements none of them.
const KEY_OR_EXTENSION: [&str; 5] = ["jwk", "jku", "x5u", "x5c", "crit"];

/// A JOSE header. Members keep their JSON type, and `null` counts as
/// present: an access token and a DPoP proof refuse a wrong type differently.
#[derive(Debug, Default)]
pub struct JoseHeader<'b>(Object<'b>);

impl<'b> From<Object<'b>> for JoseHeader<'b> {
    /// A header part already read by [`decode_object`] (e.g. within the caller's own size bound).
    fn from(members: Object<'b>) -> Self {
        Self(members)
    }
}

impl<'b> JoseHeader<'b> {
    /// Decodes and reads a header part (into `buffer`, see [`decode_object`]).
    pub fn decode(part: &str, buffer: &'b mut Vec<u8>) -> Result<Self, Unreadable> {
        decode_object(part, buffer).map(Self)
    }

    pub fn alg(&self) -> Option<&Json<'b>> {
        self.0.get("alg")
    }

    pub fn typ(&self) -> Option<&Json<'b>> {
        self.0.get("typ")
    }

    pub fn kid(&self) -> Option<&Json<'b>> {
        self.0.get("kid")
    }

    /// A public key carried in the header (a DPoP proof's only key; never trusted for access tokens).
    pub fn jwk(&self) -> Option<&Json<'b>> {
        self.0.get("jwk")
    }

    /// Whether the header names critical extensions (`crit`).
    pub fn has_critical(&self) -> bool {
        self.0.contains("crit")
    }

    /// Whether the header points at or carries key material (`jwk`, `jku`,
    /// `x5u`, `x5c`), or names critical extensions.
    pub fn has_key_or_extension(&self) -> bool {
        KEY_OR_EXTENSION
            .iter()
            .any(|member| self.0.contains(member))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn b64(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    /// A header read from `json` with its own buffer.
    fn header(json: &str) -> Result<JoseHeader<'static>, Unreadable> {
        JoseHeader::decode(&b64(json), Box::leak(Box::default()))
    }

    fn object(json: &str) -> Result<Object<'static>, Unreadable> {
        decode_object(&b64(json), Box::leak(Box::default()))
    }

    fn text(s: &str) -> Json<'_> {
        Json::String(Cow::Borrowed(s))
    }

    #[test]
    fn splits_exactly_three_parts() {
        let parts = CompactParts::split("aa.bbb.c").unwrap();
        assert_eq!(
            (parts.header, parts.payload, parts.signature),
            ("aa", "bbb", "c")
        );
        assert_eq!(parts.signing_input_len(), "aa.bbb".len());
        assert_eq!(CompactParts::split("a.b.").unwrap().signature, "");
        for bad in ["", "a", "a.b", "a.b.c.d", "a.b.c."] {
            assert_eq!(CompactParts::split(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn reads_the_judged_members_and_skips_the_rest() {
        let h =
            header(r#"{"alg":"ES256","typ":"JWT","kid":"k1","x-other":{"deep":[1,2]}}"#).unwrap();
        assert!(!h.has_key_or_extension() && !h.has_critical());
        assert_eq!(
            (h.alg(), h.typ(), h.kid(), h.jwk()),
            (
                Some(&text("ES256")),
                Some(&text("JWT")),
                Some(&text("k1")),
                None
            )
        );
        let h = header(r#"{"alg":7,"typ":null}"#).unwrap();
        assert_eq!(
            (h.alg(), h.typ()),
            (Some(&Json::Number(7.into())), Some(&Json::Null)),
            "types kept, null present"
        );
    }

    #[test]
    fn a_key_or_critical_extension_is_seen_whatever_its_value() {
        for member in ["jwk", "jku", "x5u", "x5c", "crit"] {
            for value in ["null", "{}", "\"x\"", "[]", "0"] {
                let h = header(&format!(r#"{{"alg":"ES256","{member}":{value}}}"#)).unwrap();
                assert!(h.has_key_or_extension(), "{member}: {value}");
                assert_eq!(h.has_critical(), member == "crit");
            }
        }
    }

    #[test]
    fn a_member_named_twice_is_refused() {
        for header in [
            r#"{"alg":"ES256","alg":"none"}"#,
            r#"{"alg":"ES256","kid":"a","kid":"b"}"#,
            r#"{"alg":"ES256","jwk":{},"jwk":{}}"#,
            r#"{"alg":"ES256","crit":[],"crit":[]}"#,
        ] {
            assert_eq!(self::header(header).unwrap_err(), Unreadable, "{header}");
        }
        // Any member: another reader may judge what authflow does not.
        assert!(header(r#"{"alg":"ES256","x":1,"x":2}"#).is_err());
        assert_eq!(
            object(r#"{"sub":"a","sub":"admin"}"#),
            Err(Unreadable),
            "claims too"
        );
    }

    #[test]
    fn a_member_named_twice_inside_a_member_is_refused() {
        // A token bound to one key for a reader keeping the first `jkt`, to another for one keeping the last.
        assert_eq!(
            object(r#"{"sub":"a","cnf":{"jkt":"A","jkt":"B"}}"#),
            Err(Unreadable)
        );
        assert_eq!(
            object(r#"{"sub":"a","aud":["x",{"y":1,"y":2}]}"#),
            Err(Unreadable),
            "in an array too"
        );
        let jwk = r#"{"alg":"EdDSA","jwk":{"kty":"OKP","crv":"Ed25519","x":"thief","x":"own"}}"#;
        assert_eq!(header(jwk).unwrap_err(), Unreadable);
        let cnf = object(r#"{"sub":"a","cnf":{"jkt":"B"}}"#).unwrap();
        assert_eq!(
            cnf.get("cnf").and_then(|c| c.get("jkt")),
            Some(&text("B")),
            "read once, it is read"
        );
    }

    #[test]
    fn only_canonical_base64url_of_a_json_object_is_read() {
        let object = b64(r#"{"alg":"ES256"}"#);
        let mut buffer = b"left over".to_vec();
        assert!(
            JoseHeader::decode(&object, &mut buffer).is_ok(),
            "a used buffer is emptied first"
        );
        for bad in [
            format!("{object}="),
            object.replace('J', "+"),
            b64(r#"["ES256"]"#),
            b64("not json"),
            b64(r#"{"alg":"ES256"} x"#),
            String::new(),
        ] {
            assert!(
                JoseHeader::decode(&bad, &mut Vec::new()).is_err(),
                "{bad:?}"
            );
        }
    }
}
