//! The top-level member names of a JSON object, each as often as it is
//! written, and whether any object in it names a member twice: oracles
//! independent of the contract's reader (serde_json's own map keeps only the
//! last of two equal names).

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The names in order, or `None` when the text is not one JSON object.
pub fn member_names(json: &[u8]) -> Option<Vec<String>> {
    struct Names;
    impl<'de> Visitor<'de> for Names {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<Vec<String>, A::Error> {
            let mut names = Vec::new();
            while let Some((name, _)) = members.next_entry::<String, IgnoredAny>()? {
                names.push(name);
            }
            Ok(names)
        }
    }
    let mut reader = serde_json::Deserializer::from_slice(json);
    let names = serde::Deserializer::deserialize_map(&mut reader, Names).ok()?;
    reader.end().ok()?;
    Some(names)
}

/// Whether a JSON object names some member twice, in it or in any object
/// within it at any depth (`false` for anything else).
pub fn names_a_member_twice(json: &[u8]) -> bool {
    let mut reader = serde_json::Deserializer::from_slice(json);
    let Ok(twice) = reader.deserialize_map(Twice) else { return false };
    reader.end().is_ok() && twice
}

/// Reads a whole JSON value: whether one of its objects names a member twice.
struct Twice;

impl<'de> DeserializeSeed<'de> for Twice {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Twice {
    type Value = bool;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
    // Every element and member is read to the end, so that the text is still checked whole.
    fn visit_seq<A: SeqAccess<'de>>(self, mut elements: A) -> Result<bool, A::Error> {
        let mut twice = false;
        while let Some(inside) = elements.next_element_seed(Twice)? {
            twice |= inside;
        }
        Ok(twice)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<bool, A::Error> {
        let (mut names, mut twice) = (Vec::new(), false);
        while let Some(name) = members.next_key::<String>()? {
            twice |= members.next_value_seed(Twice)?;
            names.push(name);
        }
        names.sort();
        Ok(twice || names.windows(2).any(|pair| pair[0] == pair[1]))
    }
}
