//! JSON text → serde types: the text read once into [`borrowed::Json`] by
//! serde_json, the type then read from that tree.
//!
//! Why not `serde_json::from_slice` straight into the type — the filter's
//! Wasm module, and duplicates:
//! - serde_json's reader is generic over the visitor, so each type read
//!   gets its own copy of the parser's paths, and its typed readers describe
//!   a value of the wrong type with serde's `Unexpected`, whose display of a
//!   float links core's float formatting (about 18 KB of code, though nothing
//!   here prints a float). Here serde_json parses into one type, and each
//!   type's reader is a walk over the tree: a match, no parsing.
//! - serde's derive lets every struct also be read from a JSON array (its
//!   fields in order); here a struct is an object, and the array readers are
//!   never built.
//! - A member name given twice is refused in every object at any depth, as
//!   in a token's parts (serde_json's own maps keep the last of the two).
//!
//! A syntax error is told by its kind, line and column (not in serde_json's
//! words: see [`unreadable`]); a value of the wrong kind is serde's message
//! with the value's place in the document (`providers[0].jwks: unknown field ...`).
//!
//! Every JSON document the filter reads goes through here or through
//! [`borrowed`] directly (a JWS's parts, a key set).

use std::borrow::Cow;
use std::fmt;
use std::slice;

pub mod borrowed;

use borrowed::Json;
use serde::de::{
    self, Deserialize, DeserializeSeed, Deserializer, EnumAccess, Expected, MapAccess, SeqAccess,
    Unexpected, VariantAccess, Visitor,
};

/// `bytes` as a `T`; a struct must be a JSON object, a member name appear
/// once per object.
pub fn from_slice<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, Error> {
    let document = Json::read(bytes).map_err(|e| Error::new(unreadable(&e)))?;
    T::deserialize(Node(&document))
}

/// Why the text is not a JSON document, by kind and place. Not serde_json's
/// `Display`: its errors may carry an `io::Error`, whose display links the C
/// library's table of error texts and std's error kind names (2.7 KB of the
/// filter's module) though a slice is never read through I/O.
fn unreadable(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Eof => "the JSON ends early",
        // The one refusal of the tree's reader (`borrowed`) beside syntax.
        serde_json::error::Category::Data => "a member name appears twice",
        _ => "not valid JSON (or nested over 128 deep)",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

/// Longest member name an error's path shows whole.
const MAX_NAME_IN_PATH: usize = 64;

/// Why a document could not be read as the type asked for.
#[derive(Debug)]
pub struct Error {
    message: String,
    /// Where in the document: `a.b[2]`, empty for the whole.
    path: String,
}

impl Error {
    fn new(message: String) -> Self {
        Error {
            message,
            path: String::new(),
        }
    }

    /// The error as seen from the object holding `name`. A name is the
    /// document's: in the path its control characters are `?` and it is cut
    /// at [`MAX_NAME_IN_PATH`] characters, so that a logged error stays one
    /// line of bounded length.
    fn within(self, name: &str) -> Self {
        self.under(&one_line(name))
    }

    /// The error as seen from the array holding item `index`.
    fn at(self, index: usize) -> Self {
        self.under(&format!("[{index}]"))
    }

    fn under(mut self, step: &str) -> Self {
        if !(self.path.is_empty() || self.path.starts_with('[')) {
            self.path.insert(0, '.');
        }
        self.path.insert_str(0, step);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.path.is_empty() {
            true => f.write_str(&self.message),
            false => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    /// Every other message (serde's `unknown field`, `unknown variant`, a
    /// type's own) may quote the document whole: kept to one bounded line.
    fn custom<T: fmt::Display>(message: T) -> Self {
        Error::new(one_line_within(&message.to_string(), MAX_MESSAGE))
    }

    fn invalid_type(unexpected: Unexpected<'_>, expected: &dyn Expected) -> Self {
        Error::new(format!(
            "invalid type: {}, expected {expected}",
            Described(unexpected)
        ))
    }

    fn invalid_value(unexpected: Unexpected<'_>, expected: &dyn Expected) -> Self {
        Error::new(format!(
            "invalid value: {}, expected {expected}",
            Described(unexpected)
        ))
    }
}

/// `text` (a member name, a string value: the document's) as an error shows
/// it: control characters as `?`, cut at [`MAX_NAME_IN_PATH`] characters, so
/// that a logged error stays one line of bounded length.
fn one_line(text: &str) -> String {
    one_line_within(text, MAX_NAME_IN_PATH)
}

/// The longest message shown whole: room for serde's list of expected names.
const MAX_MESSAGE: usize = 1024;

fn one_line_within(text: &str, max_chars: usize) -> String {
    let mut shown: String = text
        .chars()
        .take(max_chars)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().nth(max_chars).is_some() {
        shown.push('…');
    }
    shown
}

/// An unexpected value in serde_json's words, without serde's display of a
/// float (see the module's note), a string shown by [`one_line`] (not by
/// `Debug`, whose escapes link Unicode tables into the filter's module).
struct Described<'a>(Unexpected<'a>);

impl fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Unexpected::Bool(b) => write!(f, "boolean `{b}`"),
            Unexpected::Unsigned(n) => write!(f, "integer `{n}`"),
            Unexpected::Signed(n) => write!(f, "integer `{n}`"),
            // Not the value: printing a float links a float formatter into
            // the filter's module (about 2 KB), for a rare message.
            Unexpected::Float(_) => f.write_str("floating point"),
            Unexpected::Char(c) => write!(f, "character `{c}`"),
            Unexpected::Str(s) => write!(f, "string \"{}\"", one_line(s)),
            Unexpected::Bytes(_) => f.write_str("byte array"),
            Unexpected::Unit => f.write_str("null"),
            Unexpected::Option => f.write_str("Option value"),
            Unexpected::NewtypeStruct => f.write_str("newtype struct"),
            Unexpected::Seq => f.write_str("sequence"),
            Unexpected::Map => f.write_str("map"),
            Unexpected::Enum => f.write_str("enum"),
            Unexpected::UnitVariant => f.write_str("unit variant"),
            Unexpected::NewtypeVariant => f.write_str("newtype variant"),
            Unexpected::TupleVariant => f.write_str("tuple variant"),
            Unexpected::StructVariant => f.write_str("struct variant"),
            Unexpected::Other(other) => f.write_str(other),
        }
    }
}

/// `Deserializer` methods that read as another one of them does.
macro_rules! forward_to {
    ($($to:ident: $($method:ident$(($($arg:ident: $ty:ty),*))?)*;)*) => {$($(
        fn $method<V: Visitor<'de>>(self, $($(_: $ty,)*)? visitor: V) -> Result<V::Value, Error> {
            self.$to(visitor)
        }
    )*)*};
}

/// One value of the tree, read as whatever the visitor asks for.
struct Node<'b, 'de>(&'b Json<'de>);

impl<'de> Node<'_, 'de> {
    fn unexpected(&self) -> Unexpected<'_> {
        match self.0 {
            Json::Null => Unexpected::Unit,
            Json::Bool(b) => Unexpected::Bool(*b),
            Json::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => Unexpected::Unsigned(u),
                (_, Some(i)) => Unexpected::Signed(i),
                _ => Unexpected::Float(n.as_f64().unwrap_or_default()),
            },
            Json::String(s) => Unexpected::Str(s),
            Json::Array(_) => Unexpected::Seq,
            Json::Object(_) => Unexpected::Map,
        }
    }

    fn wrong(&self, expected: &dyn Expected) -> Error {
        de::Error::invalid_type(self.unexpected(), expected)
    }
}

/// A string of the tree: borrowed from the text where it has no escape.
fn visit_text<'de, V: Visitor<'de>>(text: &Cow<'de, str>, visitor: V) -> Result<V::Value, Error> {
    match text {
        Cow::Borrowed(s) => visitor.visit_borrowed_str(s),
        Cow::Owned(s) => visitor.visit_str(s),
    }
}

impl<'b, 'de> Deserializer<'de> for Node<'b, 'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Json::Null => visitor.visit_unit(),
            Json::Bool(b) => visitor.visit_bool(*b),
            Json::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => visitor.visit_u64(u),
                (_, Some(i), _) => visitor.visit_i64(i),
                (_, _, f) => visitor.visit_f64(f.unwrap_or_default()),
            },
            Json::String(s) => visit_text(s, visitor),
            Json::Array(items) => visitor.visit_seq(Items {
                items: items.iter(),
                index: 0,
            }),
            Json::Object(object) => visitor.visit_map(Members {
                members: object.members_in_order().iter(),
                value: None,
            }),
        }
    }

    /// A struct is an object: an array (or anything else) is the wrong type.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Json::Object(object) => visitor.visit_map(Members {
                members: object.members_in_order().iter(),
                value: None,
            }),
            _ => Err(self.wrong(&visitor)),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Json::Array(items) => visitor.visit_seq(Items {
                items: items.iter(),
                index: 0,
            }),
            _ => Err(self.wrong(&visitor)),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Json::String(text) => visit_text(text, visitor),
            _ => Err(self.wrong(&visitor)),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Json::Bool(b) => visitor.visit_bool(*b),
            _ => Err(self.wrong(&visitor)),
        }
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0.as_u64() {
            Some(n) => visitor.visit_u64(n),
            None => Err(self.wrong(&visitor)),
        }
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Json::Number(n) if n.is_i64() || n.is_u64() => match n.as_i64() {
                Some(i) => visitor.visit_i64(i),
                None => Err(self.wrong(&visitor)),
            },
            _ => Err(self.wrong(&visitor)),
        }
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Json::Number(n) => visitor.visit_f64(n.as_f64().unwrap_or_default()),
            _ => Err(self.wrong(&visitor)),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Json::Null => visitor.visit_unit(),
            _ => Err(self.wrong(&visitor)),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Json::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    /// A unit variant is its name; any variant an object of one member, the
    /// variant's name and its content.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            Json::String(name) => visitor.visit_enum(Variant {
                name,
                content: None,
            }),
            Json::Object(object) => match object.members_in_order() {
                [(name, content)] => visitor.visit_enum(Variant {
                    name,
                    content: Some(content),
                }),
                _ => Err(de::Error::custom(
                    "an enum variant is a string or an object of one member",
                )),
            },
            _ => Err(self.wrong(&visitor)),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    // Each kind asked for is looked for alone (as serde_json's typed readers
    // do): with the full match of `deserialize_any`, every visitor would
    // carry a call to each of its methods.
    serde::forward_to_deserialize_any! { bytes byte_buf }
    forward_to! {
        deserialize_u64: deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u128;
        deserialize_i64: deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i128;
        deserialize_f64: deserialize_f32;
        deserialize_str: deserialize_string deserialize_char deserialize_identifier;
        deserialize_unit: deserialize_unit_struct(name: &'static str);
        deserialize_seq: deserialize_tuple(len: usize) deserialize_tuple_struct(name: &'static str, len: usize);
    }
}

/// An array's items, in order.
struct Items<'b, 'de> {
    items: slice::Iter<'b, Json<'de>>,
    index: usize,
}

impl<'de> SeqAccess<'de> for Items<'_, 'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        let Some(item) = self.items.next() else {
            return Ok(None);
        };
        let index = self.index;
        self.index += 1;
        seed.deserialize(Node(item))
            .map(Some)
            .map_err(|e| e.at(index))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// An object's members, in the order of their names.
struct Members<'b, 'de> {
    members: slice::Iter<'b, (Cow<'de, str>, Json<'de>)>,
    /// The member whose name was read last.
    value: Option<&'b (Cow<'de, str>, Json<'de>)>,
}

impl<'de> MapAccess<'de> for Members<'_, 'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(member) = self.members.next() else {
            return Ok(None);
        };
        self.value = Some(member);
        seed.deserialize(Name(&member.0)).map(Some)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, Error> {
        let (name, value) = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("a value was asked for before its name"))?;
        seed.deserialize(Node(value)).map_err(|e| e.within(name))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.members.len())
    }
}

/// A member's name, or an enum variant's.
struct Name<'b, 'de>(&'b Cow<'de, str>);

impl<'de> Deserializer<'de> for Name<'_, 'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visit_text(self.0, visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit unit_struct
        newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

/// An enum variant: its name, and its content where written as an object.
struct Variant<'b, 'de> {
    name: &'b Cow<'de, str>,
    content: Option<&'b Json<'de>>,
}

impl<'b, 'de> EnumAccess<'de> for Variant<'b, 'de> {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<(T::Value, Self), Error> {
        Ok((seed.deserialize(Name(self.name))?, self))
    }
}

impl<'de> Variant<'_, 'de> {
    /// The content read by `read`, its errors placed under the variant's
    /// name; a variant written as a plain name has none.
    fn content<T>(
        &self,
        expected: &dyn Expected,
        read: impl FnOnce(Node<'_, 'de>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let content = self
            .content
            .ok_or_else(|| de::Error::invalid_type(Unexpected::UnitVariant, expected))?;
        read(Node(content)).map_err(|e| e.within(self.name))
    }
}

impl<'de> VariantAccess<'de> for Variant<'_, 'de> {
    type Error = Error;

    /// `"name"`, or `{"name": null}` as serde_json reads it too.
    fn unit_variant(self) -> Result<(), Error> {
        match self.content {
            None | Some(Json::Null) => Ok(()),
            Some(other) => Err(Node(other).wrong(&"unit variant")),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        self.content(&"newtype variant", |content| seed.deserialize(content))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        self.content(&"tuple variant", |content| content.deserialize_seq(visitor))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.content(&"struct variant", |content| {
            content.deserialize_struct("", fields, visitor)
        })
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
    fn both<T: for<'a> Deserialize<'a> + std::fmt::Debug + PartialEq>(
        text: &str,
    ) -> Result<T, String> {
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
        assert_eq!(
            outer.choice,
            Some(Choice::Wrapped(Inner {
                id: 1,
                tags: vec![]
            }))
        );
        both::<Outer>(r#"{"name": "n", "items": [], "choice": "plain", "count": null}"#).unwrap();
        both::<Outer>(r#"{"name": "n", "items": [], "choice": {"names": ["p", "q"]}}"#).unwrap();
        both::<Map<String, Value>>(
            r#"{"iss": "x", "exp": 1e3, "aud": ["a"], "n": -0.5, "big": 18446744073709551615}"#,
        )
        .unwrap();
        both::<Value>(r#"[{"a": {}}, [], "s", 1, 1.5, false, null]"#).unwrap();
    }

    #[test]
    fn syntax_errors_are_told_with_serde_json_s_positions() {
        for (bad, kind) in [
            (r#"{"name": "n", "items": []} trailing"#, "not valid JSON"),
            (r#"{"name": "n", "items": [}"#, "not valid JSON"),
            (r#"{"name": 1e400}"#, "not valid JSON"),
            (
                &format!("{}1{}", "[".repeat(200), "]".repeat(200)),
                "not valid JSON",
            ),
            (r#"{"name": "n""#, "the JSON ends early"),
            ("", "the JSON ends early"),
        ] {
            let ours = from_slice::<Outer>(bad.as_bytes()).unwrap_err().to_string();
            let reference =
                serde_json::from_slice::<serde_json::Value>(bad.as_bytes()).unwrap_err();
            assert!(ours.starts_with(kind), "{bad}: {ours}");
            assert!(
                ours.ends_with(&format!(
                    " at line {} column {}",
                    reference.line(),
                    reference.column()
                )),
                "{bad}: {ours}"
            );
        }
        let twice = from_slice::<Outer>(br#"{"a": {"b": 1, "b": 2}}"#).unwrap_err();
        assert!(
            twice
                .to_string()
                .starts_with("a member name appears twice at line 1 column "),
            "{twice}"
        );
    }

    /// serde's message, preceded by the value's place in the document.
    #[test]
    fn a_wrong_value_is_named_by_its_place() {
        for (bad, place, message) in [
            (
                r#"{"name": "n", "items": [], "bogus": 1}"#,
                "",
                "unknown field `bogus`, expected one of `name`, `count`",
            ),
            (
                r#"{"name": 1, "items": []}"#,
                "name: ",
                "invalid type: integer `1`, expected a string",
            ),
            (
                r#"{"name": 1.5, "items": []}"#,
                "name: ",
                "invalid type: floating point, expected a string",
            ),
            (
                r#"{"name": null, "items": []}"#,
                "name: ",
                "invalid type: null, expected a string",
            ),
            (
                r#"{"name": "n", "items": [{"id": 1}, {"id": "1"}]}"#,
                "items[1].id: ",
                "invalid type: string \"1\", expected i64",
            ),
            (
                r#"{"name": "n", "items": [{"id": 1, "tags": ["a", 2]}]}"#,
                "items[0].tags[1]: ",
                "invalid type: integer `2`",
            ),
            (
                r#"{"name": "n", "items": [], "choice": "other"}"#,
                "choice: ",
                "unknown variant `other`, expected one of",
            ),
            (
                r#"{"name": "n", "items": [], "choice": {"wrapped": {"id": true}}}"#,
                "choice.wrapped.id: ",
                "invalid type: boolean `true`",
            ),
            (
                r#"{"name": "n", "items": [], "choice": {"plain": 1}}"#,
                "choice: ",
                "invalid type: integer `1`, expected unit variant",
            ),
            (
                r#"{"name": "n", "items": [], "choice": {"wrapped": null}}"#,
                "choice.wrapped: ",
                "invalid type: null, expected struct Inner",
            ),
            (
                r#"{"name": "n", "items": [], "count": -1}"#,
                "count: ",
                "invalid type: integer `-1`, expected u64",
            ),
            (
                r#"{"name": "n", "items": 3.25}"#,
                "items: ",
                "invalid type: floating point, expected a sequence",
            ),
            (r#"{"items": []}"#, "", "missing field `name`"),
        ] {
            let e = from_slice::<Outer>(bad.as_bytes()).unwrap_err().to_string();
            assert!(e.starts_with(&format!("{place}{message}")), "{bad}: {e}");
            assert!(
                serde_json::from_slice::<Outer>(bad.as_bytes()).is_err(),
                "serde_json refuses it too: {bad}"
            );
        }
    }

    /// Where serde_json's typed readers give a vaguer message, ours names the type.
    #[test]
    fn an_enum_of_the_wrong_type_is_named() {
        let e = from_slice::<Outer>(br#"{"name": "n", "items": [], "choice": 7}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "choice: invalid type: integer `7`, expected enum Choice");
        let e = from_slice::<Outer>(
            br#"{"name": "n", "items": [], "choice": {"plain": null, "names": []}}"#,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "choice: an enum variant is a string or an object of one member"
        );
        let e = from_slice::<Outer>(br#"{"name": "n", "items": [], "choice": {}}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "choice: an enum variant is a string or an object of one member"
        );
        let e = from_slice::<Outer>(br#"{"name": "n", "items": [], "choice": [2.5]}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "choice: invalid type: sequence, expected enum Choice");
        let e = from_slice::<Inner>(br#"{"id": 0.125}"#)
            .unwrap_err()
            .to_string();
        // (The value is not shown: see `Described`.)
        assert_eq!(e, "id: invalid type: floating point, expected i64");
    }

    #[test]
    fn a_struct_written_as_an_array_is_refused() {
        assert!(
            serde_json::from_slice::<Inner>(br#"[1, ["t"]]"#).is_ok(),
            "serde_json alone takes it"
        );
        let e = from_slice::<Inner>(br#"[1, ["t"]]"#)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "invalid type: sequence, expected struct Inner");
        let e = from_slice::<Outer>(br#"{"name": "n", "items": [[1]]}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "items[0]: invalid type: sequence, expected struct Inner");
        let e = from_slice::<Outer>(br#"{"name": "n", "items": [], "choice": {"wrapped": [1]}}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "choice.wrapped: invalid type: sequence, expected struct Inner"
        );
    }

    #[test]
    fn a_path_shows_names_on_one_bounded_line() {
        let e = from_slice::<BTreeMap<String, u64>>(br#"{"a\nb\u0000": "x"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("a?b?: invalid type: string"), "{e}");
        let long = "n".repeat(1000);
        let e = from_slice::<BTreeMap<String, u64>>(format!(r#"{{"{long}": true}}"#).as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!("{}…: invalid type: boolean", "n".repeat(64))),
            "{e}"
        );
        // A string value the same way: one line, bounded.
        let value = format!(r"v\n{}", "v".repeat(1000));
        let e = from_slice::<BTreeMap<String, u64>>(format!(r#"{{"k": "{value}"}}"#).as_bytes())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!(
                "k: invalid type: string \"v?{}…\", expected u64",
                "v".repeat(62)
            )
        );
    }

    /// serde_json keeps the last of two members with one name; here the
    /// document is refused, at any depth, whatever the type read.
    #[test]
    fn a_member_named_twice_is_refused_at_any_depth() {
        for twice in [
            r#"{"name": "a", "name": "b", "items": []}"#,
            r#"{"name": "n", "items": [{"id": 1, "id": 2}]}"#,
            r#"{"name": "n", "items": [], "labels": {"k": "1", "k": "2"}}"#,
            r#"{"name": "n", "items": [], "extra": {"x": {"y": 1, "y": 1}}}"#,
        ] {
            let e = from_slice::<Outer>(twice.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(e.contains("a member name appears twice"), "{twice}: {e}");
        }
        let e = from_slice::<BTreeMap<String, u64>>(br#"{"a": 1, "a": 2}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a member name appears twice"), "{e}");
    }
}
