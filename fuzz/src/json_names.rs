//! The top-level member names of a JSON object, each as often as it is
//! written: an oracle independent of the contract's reader (serde_json's own
//! map keeps only the last of two equal names).

use serde::de::{IgnoredAny, MapAccess, Visitor};

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

/// Whether a JSON object names some member twice (`false` for anything else).
pub fn names_a_member_twice(json: &[u8]) -> bool {
    let Some(mut names) = member_names(json) else { return false };
    names.sort();
    names.windows(2).any(|pair| pair[0] == pair[1])
}
