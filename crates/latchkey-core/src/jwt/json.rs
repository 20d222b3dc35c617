//! The JSON checks that the header and the claims set share: a JOSE
//! header or claims set is one JSON object, and every member of it is JSON
//! text, read by Latchkey or not.

use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// `true` for a member that is present, whatever its value.
pub(super) fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Checked::deserialize(d).map(|Checked| true)
}

/// Any JSON value, read in full and dropped. Unlike serde's `IgnoredAny`,
/// which skips a string without looking at its bytes or escapes, every
/// string (member names included) is read as serde_json reads a string it
/// returns: valid UTF-8, and no `\u` escape of a lone surrogate.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
    }
}

/// Whether `json` is one JSON text with every member valid (see
/// [`Checked`]), whether Latchkey reads it or not. The typed readers
/// check only the members they read; serde skips the others unexamined.
pub(super) fn every_member_is_json_text(json: &[u8]) -> Result<(), serde_json::Error> {
    serde_json::from_slice::<Checked>(json).map(|Checked| ())
}

/// serde's derived structs also accept JSON arrays; a JOSE header or claims
/// set must be an object.
pub(super) fn is_json_object(json: &[u8]) -> bool {
    json.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}
