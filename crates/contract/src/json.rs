//! JSON text → serde types, with structs read from JSON objects only.
//!
//! serde's derive lets every struct also be read from a JSON array (its
//! fields in order), and serde_json builds that second reader for each struct
//! it deserializes: about 15 KB of the filter's Wasm module. Nothing in the
//! contract sends a struct as an array, so [`from_slice`] routes every struct
//! to serde_json's object reader (an array is refused as the wrong type) and
//! the array readers are never built. Everything else reads exactly as with
//! `serde_json::from_slice`, error messages and positions included.
//!
//! Every JSON document the filter reads goes through here: one deserializer
//! type, so each type's reader is built once. Untyped JSON (a JWS's parts, a
//! key set, the configuration's inline keys and claim map) is read by
//! [`borrowed`], whose objects refuse a member name given twice.

use std::fmt;

pub mod borrowed;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};

/// `serde_json::from_slice`, except that a struct must be a JSON object.
pub fn from_slice<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, serde_json::Error> {
    let mut json = serde_json::Deserializer::from_slice(bytes);
    let value = T::deserialize(ObjectsOnly(&mut json))?;
    json.end()?;
    Ok(value)
}

/// Wraps each piece of a deserialization (the deserializer, visitors, seeds,
/// map / sequence / enum access) so that nested values are wrapped too, down
/// to the last struct.
struct ObjectsOnly<T>(T);

/// Forwards `deserialize_*` methods to the wrapped deserializer, with the
/// visitor wrapped.
macro_rules! forward_deserialize {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, Self::Error> {
            self.0.$method($($arg,)* ObjectsOnly(visitor))
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for ObjectsOnly<D> {
    type Error = D::Error;

    /// The one change: a struct is read as a map, never as a sequence.
    fn deserialize_struct<V: Visitor<'de>>(self, _name: &'static str, _fields: &'static [&'static str], visitor: V) -> Result<V::Value, Self::Error> {
        self.0.deserialize_map(ObjectsOnly(visitor))
    }

    forward_deserialize! {
        deserialize_any(), deserialize_bool(), deserialize_i8(), deserialize_i16(), deserialize_i32(),
        deserialize_i64(), deserialize_i128(), deserialize_u8(), deserialize_u16(), deserialize_u32(),
        deserialize_u64(), deserialize_u128(), deserialize_f32(), deserialize_f64(), deserialize_char(),
        deserialize_str(), deserialize_string(), deserialize_bytes(), deserialize_byte_buf(),
        deserialize_option(), deserialize_unit(), deserialize_unit_struct(name: &'static str),
        deserialize_newtype_struct(name: &'static str), deserialize_seq(), deserialize_tuple(len: usize),
        deserialize_tuple_struct(name: &'static str, len: usize), deserialize_map(),
        deserialize_enum(name: &'static str, variants: &'static [&'static str]),
        deserialize_identifier(), deserialize_ignored_any(),
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// Forwards `visit_*` methods that carry a plain value.
macro_rules! forward_visit {
    ($($method:ident($ty:ty)),* $(,)?) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
            self.0.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for ObjectsOnly<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }

    forward_visit! {
        visit_bool(bool), visit_i8(i8), visit_i16(i16), visit_i32(i32), visit_i64(i64), visit_i128(i128),
        visit_u8(u8), visit_u16(u16), visit_u32(u32), visit_u64(u64), visit_u128(u128),
        visit_f32(f32), visit_f64(f64), visit_char(char), visit_str(&str), visit_borrowed_str(&'de str),
        visit_string(String), visit_bytes(&[u8]), visit_borrowed_bytes(&'de [u8]), visit_byte_buf(Vec<u8>),
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.0.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.0.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        self.0.visit_some(ObjectsOnly(deserializer))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        self.0.visit_newtype_struct(ObjectsOnly(deserializer))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.0.visit_seq(ObjectsOnly(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.0.visit_map(ObjectsOnly(map))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        self.0.visit_enum(ObjectsOnly(data))
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for ObjectsOnly<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(ObjectsOnly(deserializer))
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for ObjectsOnly<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Self::Error> {
        self.0.next_element_seed(ObjectsOnly(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for ObjectsOnly<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Self::Error> {
        self.0.next_key_seed(ObjectsOnly(seed))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Self::Error> {
        self.0.next_value_seed(ObjectsOnly(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for ObjectsOnly<A> {
    type Error = A::Error;
    type Variant = ObjectsOnly<A::Variant>;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self::Variant), Self::Error> {
        let (value, variant) = self.0.variant_seed(ObjectsOnly(seed))?;
        Ok((value, ObjectsOnly(variant)))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for ObjectsOnly<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), Self::Error> {
        self.0.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Self::Error> {
        self.0.newtype_variant_seed(ObjectsOnly(seed))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Self::Error> {
        self.0.tuple_variant(len, ObjectsOnly(visitor))
    }

    /// serde_json reads a struct variant's content with its struct reader
    /// (objects and arrays); the contract has no struct variants.
    fn struct_variant<V: Visitor<'de>>(self, fields: &'static [&'static str], visitor: V) -> Result<V::Value, Self::Error> {
        self.0.struct_variant(fields, ObjectsOnly(visitor))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use serde::Deserialize;
    use serde_json::{Map, Value};

    use super::from_slice;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        name: String,
        #[serde(default)]
        count: Option<u64>,
        items: Vec<Inner>,
        #[serde(default)]
        choice: Option<Choice>,
        #[serde(default)]
        labels: BTreeMap<String, String>,
        #[serde(default)]
        extra: Option<Value>,
        #[serde(default)]
        flag: bool,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Inner {
        id: i64,
        #[serde(default)]
        tags: Vec<String>,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Choice {
        Plain,
        Wrapped(Inner),
        Names(Vec<String>),
    }

    /// Read both ways: the results (or error messages) must be the same.
    fn both<T: for<'a> Deserialize<'a> + std::fmt::Debug + PartialEq>(text: &str) -> Result<T, String> {
        let ours = from_slice::<T>(text.as_bytes()).map_err(|e| e.to_string());
        let reference = serde_json::from_slice::<T>(text.as_bytes()).map_err(|e| e.to_string());
        assert_eq!(ours, reference, "{text}");
        ours
    }

    #[test]
    fn objects_read_as_serde_json_reads_them() {
        let outer: Outer = both(
            r#"{"name": "a\u00e9\"b", "count": 7, "items": [{"id": -3, "tags": ["x", "y"]}, {"id": 4}],
               "choice": {"wrapped": {"id": 1}}, "labels": {"b": "2", "a": "1"},
               "extra": {"k": [1, 2.5, null, true, {"z": "w"}]}, "flag": true}"#,
        )
        .unwrap();
        assert_eq!(outer.items.len(), 2);
        assert_eq!(outer.choice, Some(Choice::Wrapped(Inner { id: 1, tags: vec![] })));
        both::<Outer>(r#"{"name": "n", "items": [], "choice": "plain", "count": null}"#).unwrap();
        both::<Outer>(r#"{"name": "n", "items": [], "choice": {"names": ["p", "q"]}}"#).unwrap();
        both::<Map<String, Value>>(r#"{"iss": "x", "exp": 1e3, "aud": ["a"], "n": -0.5, "big": 18446744073709551615}"#).unwrap();
        both::<Value>(r#"[{"a": {}}, [], "s", 1, 1.5, false, null]"#).unwrap();
    }

    #[test]
    fn errors_are_serde_json_errors_with_their_positions() {
        for bad in [
            r#"{"name": "n", "items": [], "bogus": 1}"#,
            r#"{"name": 1, "items": []}"#,
            r#"{"name": "n", "items": [{"id": "1"}]}"#,
            r#"{"name": "n", "items": [], "choice": "other"}"#,
            r#"{"name": "n", "items": [], "count": -1}"#,
            r#"{"name": "n", "items": []} trailing"#,
            r#"{"name": "n", "items": [}"#,
            r#"{"items": []}"#,
            "",
        ] {
            let e = both::<Outer>(bad).unwrap_err();
            assert!(e.contains("line 1 column") || e.contains("EOF"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_struct_written_as_an_array_is_refused() {
        assert!(serde_json::from_slice::<Inner>(br#"[1, ["t"]]"#).is_ok(), "serde_json alone takes it");
        let e = from_slice::<Inner>(br#"[1, ["t"]]"#).unwrap_err().to_string();
        assert_eq!(e, "invalid type: sequence, expected struct Inner at line 1 column 0");
        let e = from_slice::<Outer>(br#"{"name": "n", "items": [[1]]}"#).unwrap_err().to_string();
        assert!(e.starts_with("invalid type: sequence, expected struct Inner"), "{e}");
    }
}
