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
//! type, so each type's reader is built once.

use std::fmt;

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

/// A JSON object whose member names are all different, in it and in every
/// object within it (member values and array elements, at any depth): read
/// with [`from_slice`], a name seen twice in one object is an error.
/// serde_json's own map keeps the last of two; a protocol that refuses
/// duplicates (JWS headers and JWT claims, RFC 7515 §4 and RFC 7519 §4) reads
/// its objects as this, so that no other reader can see another `jwk`'s `x`
/// or `cnf`'s `jkt` either. Nesting stays bounded by serde_json's recursion
/// limit (128 levels): each nested value is read through its deserializer.
#[derive(Debug, Default, PartialEq)]
pub struct UniqueObject(pub serde_json::Map<String, serde_json::Value>);

impl<'de> Deserialize<'de> for UniqueObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(UniqueNames)
    }
}

/// The top-level object of a [`UniqueObject`] (only an object is expected).
struct UniqueNames;

impl<'de> Visitor<'de> for UniqueNames {
    type Value = UniqueObject;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object with unique member names")
    }

    fn visit_map<A: MapAccess<'de>>(self, members: A) -> Result<UniqueObject, A::Error> {
        unique_members(members).map(UniqueObject)
    }
}

/// Any JSON value whose objects all have unique member names (read with
/// [`from_slice`]): the filter's one reader of untyped JSON (a key set, the
/// configuration's inline keys and claim map), so serde_json's own `Value`
/// reader is not built into the module beside it, and a name given twice is
/// refused there too rather than read as its last copy.
#[derive(Debug, Default, PartialEq)]
pub struct UniqueJson(pub serde_json::Value);

impl<'de> Deserialize<'de> for UniqueJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        UniqueValue.deserialize(deserializer).map(UniqueJson)
    }
}

/// Any JSON value within a [`UniqueObject`], read as serde_json reads a
/// [`serde_json::Value`] except that each of its objects has unique member names.
struct UniqueValue;

impl<'de> DeserializeSeed<'de> for UniqueValue {
    type Value = serde_json::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<serde_json::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueValue {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value with unique member names")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<serde_json::Value, E> {
        Ok(v.into())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<serde_json::Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<serde_json::Value, E> {
        Ok(v.into())
    }

    /// serde_json's reader yields finite numbers only (a non-finite one would be `null`, as in its `Value`).
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<serde_json::Value, E> {
        Ok(v.into())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<serde_json::Value, E> {
        Ok(v.into())
    }

    fn visit_unit<E: de::Error>(self) -> Result<serde_json::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut elements: A) -> Result<serde_json::Value, A::Error> {
        let mut array = Vec::new();
        while let Some(element) = elements.next_element_seed(UniqueValue)? {
            array.push(element);
        }
        Ok(serde_json::Value::Array(array))
    }

    fn visit_map<A: MapAccess<'de>>(self, members: A) -> Result<serde_json::Value, A::Error> {
        unique_members(members).map(serde_json::Value::Object)
    }
}

/// The members of one object, each value read as a [`UniqueValue`]: the one
/// place a repeated name is refused, at the top level and within.
fn unique_members<'de, A: MapAccess<'de>>(mut members: A) -> Result<serde_json::Map<String, serde_json::Value>, A::Error> {
    let mut object = serde_json::Map::new();
    while let Some(name) = members.next_key::<String>()? {
        let value = members.next_value_seed(UniqueValue)?;
        if object.insert(name, value).is_some() {
            return Err(de::Error::custom("a member name appears twice"));
        }
    }
    Ok(object)
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
    fn a_unique_object_refuses_a_name_seen_twice() {
        let read = |text: &str| from_slice::<super::UniqueObject>(text.as_bytes()).map(|o| o.0);
        let object = read(r#"{"a": 1, "b": {"a": 2}, "c": [{"a": 3}]}"#).unwrap();
        assert_eq!(object, serde_json::from_str::<Map<String, Value>>(r#"{"a": 1, "b": {"a": 2}, "c": [{"a": 3}]}"#).unwrap());
        for twice in [r#"{"a": 1, "a": 1}"#, r#"{"a": 1, "b": 2, "a": null}"#, r#"{"\u0061": 1, "a": 2}"#] {
            assert!(read(twice).unwrap_err().to_string().contains("twice"), "{twice}");
        }
        for not_an_object in ["[]", "1", "null", "\"a\"", "{} {}"] {
            assert!(read(not_an_object).is_err(), "{not_an_object}");
        }
    }

    #[test]
    fn a_unique_object_refuses_a_name_seen_twice_at_any_depth() {
        let read = |text: &str| from_slice::<super::UniqueObject>(text.as_bytes()).map(|o| o.0);
        for twice in [
            r#"{"jwk": {"kty": "OKP", "x": "thief", "x": "own"}}"#,
            r#"{"cnf": {"jkt": "A", "jkt": "B"}}"#,
            r#"{"a": {"b": {"c": {"d": 1, "d": 2}}}}"#,
            r#"{"keys": [{"x": 1}, {"y": 1, "y": 1}]}"#,
            r#"{"a": [[[{"b": [{"c": null, "c": null}]}]]]}"#,
            r#"{"a": {"\u0062": 1, "b": 2}}"#,
        ] {
            assert!(read(twice).unwrap_err().to_string().contains("twice"), "{twice}");
        }
        // Equal names in different objects are no repetition, and values read as serde_json reads them.
        let text = r#"{"a": {"a": {"a": [{"a": 1}, {"a": -2}]}}, "b": [1, -1, 1.5, 2.5e-3, -9223372036854775808, 18446744073709551615, "s\u00e9", true, null, [], {}]}"#;
        assert_eq!(read(text).unwrap(), serde_json::from_str::<Map<String, Value>>(text).unwrap());
    }

    #[test]
    fn deep_nesting_is_refused_cleanly() {
        let read = |text: &str| from_slice::<super::UniqueObject>(text.as_bytes()).map(|o| o.0);
        let nested = |depth: usize, open: &str, close: &str| format!(r#"{{"a": {}1{}}}"#, open.repeat(depth), close.repeat(depth));
        for (open, close) in [("[", "]"), (r#"{"a": "#, "}")] {
            // serde_json's recursion limit (128 levels) still holds: an error, not an overflowed stack.
            let e = read(&nested(10_000, open, close)).unwrap_err().to_string();
            assert!(e.contains("recursion limit"), "{open}: {e}");
            assert!(read(&nested(100, open, close)).is_ok(), "{open}");
        }
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
