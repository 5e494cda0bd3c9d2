//! `Deserialize` for the configuration's unit-only enums (`"mode": "enforce"`),
//! through one shared visitor. serde's derive builds its enum machinery per
//! type (about 1.2 KB of Wasm each); here each enum adds only its name table.

use std::fmt;

use serde::de::{Deserializer, Error, Visitor};

/// The position of the string `deserializer` holds in `names`; serde's
/// "unknown variant `…`, expected one of …" otherwise.
pub fn variant_index<'de, D: Deserializer<'de>>(
    deserializer: D,
    names: &'static [&'static str],
) -> Result<usize, D::Error> {
    deserializer.deserialize_str(Names(names))
}

struct Names(&'static [&'static str]);

impl Visitor<'_> for Names {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("variant identifier")
    }

    fn visit_str<E: Error>(self, value: &str) -> Result<usize, E> {
        self.0
            .iter()
            .position(|name| *name == value)
            .ok_or_else(|| E::unknown_variant(value, self.0))
    }
}

/// `impl Deserialize` for a unit-only enum from `"name" => Variant` pairs.
macro_rules! deserialize_by_name {
    ($ty:ident { $($name:literal => $variant:ident),+ $(,)? }) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                const NAMES: &[&str] = &[$($name),+];
                const VALUES: &[$ty] = &[$($ty::$variant),+];
                let index = $crate::unit_enum::variant_index(deserializer, NAMES)?;
                VALUES.get(index).copied().ok_or_else(|| serde::de::Error::custom("unknown variant"))
            }
        }
    };
}
pub(crate) use deserialize_by_name;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Colour {
        Red,
        DarkBlue,
    }
    deserialize_by_name!(Colour { "red" => Red, "dark_blue" => DarkBlue });

    #[test]
    fn names_map_to_their_variants() {
        assert_eq!(
            serde_json::from_str::<Colour>(r#""red""#).unwrap(),
            Colour::Red
        );
        assert_eq!(
            serde_json::from_str::<Colour>(r#""dark_blue""#).unwrap(),
            Colour::DarkBlue
        );
    }

    #[test]
    fn an_unknown_name_or_type_is_refused_with_what_is_expected() {
        let e = serde_json::from_str::<Colour>(r#""Red""#)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("unknown variant `Red`, expected `red` or `dark_blue`"),
            "{e}"
        );
        let e = serde_json::from_str::<Colour>("1").unwrap_err().to_string();
        assert!(
            e.starts_with("invalid type: integer `1`, expected variant identifier"),
            "{e}"
        );
    }
}
