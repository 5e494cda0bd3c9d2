//! JSON read in place: strings borrowed from the text (copied only where
//! they hold an escape), each object a sorted vector of its members.
//!
//! Every fresh access token's header and claims, and every DPoP proof's
//! claims, are read once and then dropped: serde_json's `Map` (a B-tree of
//! owned strings) spent most of that read allocating, inserting and freeing.
//! Read this way, a fresh token costs a vector per object and no string.
//!
//! Member names are unique in every object at any depth: serde_json's own
//! map keeps the last of two, but a protocol that refuses duplicates (JWS
//! headers and JWT claims, RFC 7515 §4 and RFC 7519 §4) reads its objects
//! this way, so that no other reader of the same text can see another `alg`,
//! `jwk`'s `x`, `cnf`'s `jkt` or claim than authflow did. Nesting stays
//! bounded by serde_json's recursion limit (128 levels).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Number;

/// A JSON value whose strings borrow from the text they were read from.
#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Object<'a>),
}

/// A JSON object: its members sorted by name, each name once.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Object<'a>(Vec<(Cow<'a, str>, Json<'a>)>);

impl<'a> Object<'a> {
    /// `bytes` as one JSON object with unique member names at any depth.
    pub fn read(bytes: &'a [u8]) -> Result<Self, serde_json::Error> {
        match parse(bytes, OUTER_MEMBERS)? {
            Json::Object(object) => Ok(object),
            _ => Err(de::Error::custom("a JSON object was expected")),
        }
    }

    /// The members, sorted by name.
    pub fn members_in_order(&self) -> &[(Cow<'a, str>, Json<'a>)] {
        &self.0
    }

    /// The member named `name`.
    pub fn get(&self, name: &str) -> Option<&Json<'a>> {
        let at = self
            .0
            .binary_search_by(|(member, _)| member.as_ref().cmp(name))
            .ok()?;
        self.0.get(at).map(|(_, value)| value)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Member names, in byte order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(name, _)| name.as_ref())
    }

    /// The members, in name order.
    pub fn members(&self) -> impl Iterator<Item = (&str, &Json<'a>)> {
        self.0.iter().map(|(name, value)| (name.as_ref(), value))
    }
}

impl<'a> Json<'a> {
    /// `bytes` as one JSON value, with unique member names at any depth.
    pub fn read(bytes: &'a [u8]) -> Result<Self, serde_json::Error> {
        parse(bytes, 0)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Json::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Json<'a>]> {
        match self {
            Json::Array(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&Object<'a>> {
        match self {
            Json::Object(object) => Some(object),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }

    /// The member `name` of an object; `None` for anything else.
    pub fn get(&self, name: &str) -> Option<&Json<'a>> {
        self.as_object()?.get(name)
    }
}

impl<'de> Deserialize<'de> for Object<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_map(JsonVisitor {
                members: OUTER_MEMBERS,
            })
            .and_then(|value| match value {
                Json::Object(object) => Ok(object),
                _ => Err(de::Error::custom("a JSON object was expected")),
            })
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor { members: 0 })
    }
}

/// The one place serde_json reads text: into a [`Json`], through
/// `deserialize_any` alone (see the parent module for why).
fn parse(bytes: &[u8], members: usize) -> Result<Json<'_>, serde_json::Error> {
    let mut reader = serde_json::Deserializer::from_slice(bytes);
    let value = (&mut reader).deserialize_any(JsonVisitor { members })?;
    reader.end()?;
    Ok(value)
}

/// Room made up front for the members of the outermost object: a token's
/// usual claims, read without growing the vector (each growth a copy).
/// Objects within start empty: a document of many small objects must not
/// claim that much room for each (16 KiB of `{"a":1},` would be 1.3 MB).
const OUTER_MEMBERS: usize = 16;

struct JsonVisitor {
    /// Members to make room for before the first is read.
    members: usize,
}

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value with unique member names")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json<'de>, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json<'de>, E> {
        Ok(Json::Number(v.into()))
    }

    /// serde_json's reader yields finite numbers only (as its `Value` does, anything else would be `null`).
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json<'de>, E> {
        Ok(Number::from_f64(v).map_or(Json::Null, Json::Number))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(v.to_owned())))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut elements: A) -> Result<Json<'de>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = elements.next_element()? {
            items.push(item);
        }
        items.shrink_to_fit();
        Ok(Json::Array(items))
    }

    /// Members collected, then sorted by name: a name given twice sits next
    /// to its twin, and is refused. (Sorting bounds the work at n log n for
    /// an object of many members, where a search per insert would not.)
    fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<Json<'de>, A::Error> {
        let mut object = Vec::with_capacity(self.members);
        while let Some(name) = members.next_key_seed(Name)? {
            object.push((name, members.next_value()?));
        }
        object.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
        if object
            .windows(2)
            .any(|pair| matches!(pair, [(a, _), (b, _)] if a == b))
        {
            return Err(de::Error::custom("a member name appears twice"));
        }
        // A vector grows to twice what it holds: a document of many small
        // objects (a JSON revocation feed) would keep that slack in every one.
        if self.members == 0 {
            object.shrink_to_fit();
        }
        Ok(Json::Object(Object(object)))
    }
}

/// A member name, borrowed where it has no escape.
struct Name;

impl<'de> DeserializeSeed<'de> for Name {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Name {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn read(text: &str) -> Result<Object<'_>, String> {
        Object::read(text.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_what_serde_json_reads() {
        let text = r#"{"b": [1, -1, 1.5, 2.5e-3, -9223372036854775808, 18446744073709551615, "s\u00e9", true, null, [], {}],
                       "a": {"z": {"y": [{"x": 1}, {"x": -2}]}}, "c": "plain", "\u0064": "esc\"aped"}"#;
        let ours = read(text).unwrap();
        let reference: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).unwrap();
        fn same(ours: &Json<'_>, reference: &serde_json::Value) -> bool {
            match (ours, reference) {
                (Json::Null, serde_json::Value::Null) => true,
                (Json::Bool(a), serde_json::Value::Bool(b)) => a == b,
                (Json::Number(a), serde_json::Value::Number(b)) => a == b,
                (Json::String(a), serde_json::Value::String(b)) => a == b,
                (Json::Array(a), serde_json::Value::Array(b)) => {
                    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same(a, b))
                }
                (Json::Object(a), serde_json::Value::Object(b)) => {
                    a.names().eq(b.keys().map(String::as_str))
                        && a.members().zip(b.values()).all(|((_, a), b)| same(a, b))
                }
                _ => false,
            }
        }
        assert!(same(
            &Json::Object(ours.clone()),
            &serde_json::Value::Object(reference)
        ));
        assert_eq!(
            ours.get("d").and_then(Json::as_str),
            Some("esc\"aped"),
            "an escaped name is found by its text"
        );
        assert!(
            matches!(ours.get("c"), Some(Json::String(Cow::Borrowed("plain")))),
            "no copy without an escape"
        );
        assert_eq!(
            ours.get("a")
                .and_then(|a| a.get("z"))
                .and_then(|z| z.get("y"))
                .and_then(Json::as_array)
                .map(<[_]>::len),
            Some(2)
        );
        assert_eq!(
            (
                ours.get("missing"),
                Json::Null.get("a"),
                Json::Bool(true).as_u64()
            ),
            (None, None, None)
        );
    }

    #[test]
    fn a_name_seen_twice_is_refused_at_any_depth() {
        for twice in [
            r#"{"a": 1, "a": 1}"#,
            r#"{"a": 1, "b": 2, "a": null}"#,
            r#"{"\u0061": 1, "a": 2}"#,
            r#"{"jwk": {"kty": "OKP", "x": "thief", "x": "own"}}"#,
            r#"{"cnf": {"jkt": "A", "jkt": "B"}}"#,
            r#"{"keys": [{"x": 1}, {"y": 1, "y": 1}]}"#,
            r#"{"a": [[[{"b": [{"c": null, "c": null}]}]]]}"#,
        ] {
            assert!(read(twice).unwrap_err().contains("twice"), "{twice}");
        }
        // Equal names in different objects are no repetition.
        assert!(read(r#"{"a": {"a": {"a": [{"a": 1}, {"a": -2}]}}}"#).is_ok());
    }

    #[test]
    fn only_one_object_is_read() {
        for not_an_object in ["[]", "1", "null", "\"a\"", "{} {}", "{", "", r#"{"a": 1,}"#] {
            assert!(read(not_an_object).is_err(), "{not_an_object}");
        }
    }

    #[test]
    fn only_the_outermost_object_claims_room_up_front() {
        // 16 KiB of small objects must not claim room for 16 members each.
        let small: Vec<&str> = vec![r#"{"b":1}"#; 2_000];
        let text = format!(r#"{{"a":[{}]}}"#, small.join(","));
        let object = read(&text).unwrap();
        assert!(
            object.0.capacity() >= OUTER_MEMBERS,
            "the outermost object: a token's claims without growing"
        );
        let items = object.get("a").and_then(Json::as_array).unwrap();
        let room: usize = items
            .iter()
            .filter_map(Json::as_object)
            .map(|o| o.0.capacity())
            .sum();
        assert!(
            room <= 4 * items.len(),
            "{room} member slots for {} one-member objects",
            items.len()
        );
    }

    #[test]
    fn deep_nesting_and_many_members_are_bounded() {
        let nested = |depth: usize, open: &str, close: &str| {
            format!(r#"{{"a": {}1{}}}"#, open.repeat(depth), close.repeat(depth))
        };
        for (open, close) in [("[", "]"), (r#"{"a": "#, "}")] {
            let e = read(&nested(10_000, open, close)).unwrap_err();
            assert!(e.contains("recursion limit"), "{open}: {e}");
            assert!(read(&nested(100, open, close)).is_ok(), "{open}");
        }
        // Many members: found by name, a late twin still refused.
        let many: Vec<String> = (0..5_000).map(|i| format!(r#""m{i}": {i}"#)).collect();
        let text = format!("{{{}}}", many.join(","));
        let object = read(&text).unwrap();
        assert_eq!(object.get("m4321").and_then(Json::as_u64), Some(4321));
        assert!(read(&format!(r#"{{{}, "m0": 0}}"#, many.join(",")))
            .unwrap_err()
            .contains("twice"));
    }
}
