//! Reading members of JSON bodies as the OpenAPI document's JSON Schema
//! describes them, where serde's derived readers differ from it.
//!
//! - An `integer` is any JSON number with no fractional part: JSON Schema
//!   (and RFC 8259, which has one number type) counts `81730.0` and
//!   `8.173e4` as the integer 81730, and clients that hold numbers as
//!   doubles (JavaScript among them) may write them so. serde's `i64`
//!   refuses them.
//! - An `object` is a JSON object: serde's derived struct reader also takes
//!   an array of the members' values in order, so `"profile": [null, null]`
//!   would be read as a profile.

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, Error as _};
use serde_json::{Map, Number, Value};

/// The integer a JSON number stands for, if it has no fractional part and
/// fits in an `i64`.
pub fn integer(n: &Number) -> Option<i64> {
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    // 2^63 as an f64: the i64 range is [-2^63, 2^63).
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    let f = n.as_f64()?;
    // The cast is exact: f is integral and within the i64 range.
    (f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f)).then_some(f as i64)
}

/// The integer a JSON value stands for (see [`integer`]).
pub fn integer_value(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => integer(n),
        _ => None,
    }
}

/// serde `deserialize_with` for an optional integer member: absent or null
/// is None; any number without a fractional part is taken.
pub fn optional_integer<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match Option::<Number>::deserialize(d)? {
        None => Ok(None),
        Some(n) => integer(&n)
            .map(Some)
            .ok_or_else(|| D::Error::custom(format!("invalid value: {n}, expected an integer"))),
    }
}

/// serde `deserialize_with` for a member that must be a JSON object read as
/// `T`.
pub fn object<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<T, D::Error> {
    let map = Map::<String, Value>::deserialize(d)?;
    T::deserialize(Value::Object(map)).map_err(D::Error::custom)
}

/// serde `deserialize_with` for an optional member that, when present and
/// not null, must be a JSON object read as `T`.
pub fn optional_object<'de, D: Deserializer<'de>, T: DeserializeOwned>(
    d: D,
) -> Result<Option<T>, D::Error> {
    match Option::<Map<String, Value>>::deserialize(d)? {
        None => Ok(None),
        Some(map) => T::deserialize(Value::Object(map))
            .map(Some)
            .map_err(D::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        a: Option<String>,
        b: Option<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[serde(default, deserialize_with = "optional_integer")]
        n: Option<i64>,
        #[serde(default, deserialize_with = "optional_object")]
        inner: Option<Inner>,
    }

    fn read(v: Value) -> Result<Outer, serde_json::Error> {
        serde_json::from_str(&v.to_string())
    }

    #[test]
    fn integers_may_be_written_with_a_zero_fraction() {
        for (text, want) in [
            ("81730", 81730),
            ("81730.0", 81730),
            ("8.173e4", 81730),
            ("-0.0", 0),
            ("-9223372036854775808", i64::MIN),
        ] {
            let outer: Outer = serde_json::from_str(&format!("{{\"n\":{text}}}")).expect(text);
            assert_eq!(outer.n, Some(want), "{text}");
        }
        for text in ["81730.5", "1e300", "9223372036854775808", "\"5\"", "true"] {
            assert!(
                serde_json::from_str::<Outer>(&format!("{{\"n\":{text}}}")).is_err(),
                "{text}"
            );
        }
        assert_eq!(read(json!({"n": null})).expect("null").n, None);
        assert_eq!(read(json!({})).expect("absent").n, None);
    }

    #[test]
    fn objects_must_be_objects() {
        let outer = read(json!({"inner": {"a": "x"}})).expect("object");
        assert_eq!(
            outer.inner,
            Some(Inner {
                a: Some("x".into()),
                b: None
            })
        );
        assert_eq!(read(json!({"inner": null})).expect("null").inner, None);
        for bad in [json!([null, null]), json!(["x", "y"]), json!("x"), json!(1)] {
            assert!(read(json!({"inner": bad})).is_err(), "{bad}");
        }
        // The inner struct's own rules still apply.
        assert!(read(json!({"inner": {"c": "x"}})).is_err());
    }
}
