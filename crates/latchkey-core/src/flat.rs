//! A reader for the common shape of JOSE headers and JWT claims sets: one
//! flat JSON object whose names are strings without escapes and whose
//! values are strings without escapes, integers of at most 15 digits,
//! `true`, `false` or `null`.
//!
//! It decides nothing by itself: it answers `None` for any other text
//! (escapes, nesting, decimals, negative numbers, malformed JSON alike),
//! and its callers then hand the text to serde, which either accepts it or
//! gives the precise error. Everything it accepts is valid JSON that serde
//! reads with the same names and values (property-tested in
//! `jwt/tests.rs`), so the fast path accepts nothing the serde path refuses.

/// A member's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    /// The text between the quotes: no escapes, no control characters.
    Str(&'a str),
    /// `0` or `[1-9][0-9]{0,14}`: exact as an f64.
    Int(i64),
    /// `true`, `false` or `null`.
    Other,
}

/// Reads `json` as one object, passing each member to `member` in order.
/// `None` as soon as `member` answers `None` or the text is not of the
/// shape above.
pub(crate) fn object<'a>(
    json: &'a str,
    mut member: impl FnMut(&'a str, Value<'a>) -> Option<()>,
) -> Option<()> {
    let mut r = Reader { s: json, i: 0 };
    r.ws();
    r.eat(b'{')?;
    r.ws();
    if !r.eat_if(b'}') {
        loop {
            let name = r.string()?;
            r.ws();
            r.eat(b':')?;
            r.ws();
            let value = r.value()?;
            member(name, value)?;
            r.ws();
            if r.eat_if(b',') {
                r.ws();
                continue;
            }
            r.eat(b'}')?;
            break;
        }
    }
    r.ws();
    (r.i == json.len()).then_some(())
}

/// The most digits of an integer read here: 10^15 < 2^53, so every such
/// integer is exact as the f64 serde reads numeric dates as.
const MAX_DIGITS: usize = 15;

/// The position of the first `"`, `\` or control character: the end of a
/// string without escapes, or where this reader gives up on it. Eight
/// bytes at a time: in each word the lowest flagged byte is exact (the
/// borrows of the subtractions only flag bytes above a true hit).
pub(crate) fn find_stop(s: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = ONES * 0x80;
    let mut words = s.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        let w = u64::from_le_bytes(bytes);
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        let hits = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (w.wrapping_sub(ONES * 0x20) & !w))
            & HIGH;
        if hits != 0 {
            return Some(at + (hits.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|p| at + p)
}

/// 10^0 to 10^8.
const POW10: [i64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// The number of ASCII digits at the start of eight bytes (the first byte
/// in the lowest bits) and their value.
fn leading_digits(word: u64) -> (usize, i64) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    // Digits become 0 to 9; a byte is not a digit when its high nibble is
    // set before or after adding 6. (Adding 6 carries out of a byte only
    // from a byte that is no digit, so below the first such byte the test
    // is exact.)
    let x = word ^ (ONES * 0x30);
    let not_digit = (x | x.wrapping_add(ONES * 0x06)) & (ONES * 0xF0);
    let count = (not_digit.trailing_zeros() / 8) as usize;
    if count == 0 {
        return (0, 0);
    }
    // Only the digits, moved to the top bytes: the bytes below are then
    // leading zeros. Pairs, then quads, then all eight are combined.
    let mut v = x << (8 * (8 - count));
    v = (v.wrapping_mul(10) + (v >> 8)) & 0x00FF_00FF_00FF_00FF;
    v = (v.wrapping_mul(100) + (v >> 16)) & 0x0000_FFFF_0000_FFFF;
    v = (v.wrapping_mul(10_000) + (v >> 32)) & 0xFFFF_FFFF;
    // At most 99,999,999.
    (count, v as i64)
}

struct Reader<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Reader<'a> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    /// JSON's whitespace (not form feed or vertical tab).
    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    #[inline]
    fn eat_if(&mut self, b: u8) -> bool {
        let found = self.peek() == Some(b);
        if found {
            self.i += 1;
        }
        found
    }

    #[inline]
    fn eat(&mut self, b: u8) -> Option<()> {
        self.eat_if(b).then_some(())
    }

    #[inline(always)]
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        let end = start + find_stop(self.s.as_bytes().get(start..)?)?;
        if self.peek_at(end)? != b'"' {
            return None;
        }
        self.i = end + 1;
        // Both ends are at ASCII quotes, so at character boundaries.
        self.s.get(start..end)
    }

    #[inline]
    fn peek_at(&self, at: usize) -> Option<u8> {
        self.s.as_bytes().get(at).copied()
    }

    fn literal(&mut self, word: &str) -> Option<Value<'a>> {
        let end = self.i.checked_add(word.len())?;
        (self.s.get(self.i..end)? == word).then(|| {
            self.i = end;
            Value::Other
        })
    }

    #[inline(always)]
    fn value(&mut self) -> Option<Value<'a>> {
        match self.peek()? {
            b'"' => self.string().map(Value::Str),
            b'0' => {
                self.i += 1;
                // JSON has no leading zeros.
                match self.peek() {
                    Some(b'0'..=b'9') => None,
                    _ => Some(Value::Int(0)),
                }
            }
            b'1'..=b'9' => {
                let digits = self.s.as_bytes();
                let start = self.i;
                let mut n: i64 = 0;
                // Eight bytes at a time while eight remain.
                while let Some(word) = digits.get(self.i..self.i + 8) {
                    let mut bytes = [0u8; 8];
                    bytes.copy_from_slice(word);
                    let (count, value) = leading_digits(u64::from_le_bytes(bytes));
                    if self.i - start + count > MAX_DIGITS {
                        return None;
                    }
                    n = n * POW10[count] + value;
                    self.i += count;
                    if count < 8 {
                        return Some(Value::Int(n));
                    }
                }
                while let Some(&d) = digits.get(self.i) {
                    if !d.is_ascii_digit() {
                        break;
                    }
                    if self.i - start == MAX_DIGITS {
                        return None;
                    }
                    n = n * 10 + i64::from(d - b'0');
                    self.i += 1;
                }
                Some(Value::Int(n))
            }
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.literal("null"),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(json: &str) -> Option<Vec<(String, Value<'_>)>> {
        let mut out = Vec::new();
        object(json, |name, value| {
            out.push((name.to_string(), value));
            Some(())
        })?;
        Some(out)
    }

    #[test]
    fn reads_the_common_shape() {
        assert_eq!(members("{}"), Some(vec![]));
        assert_eq!(
            members(" {\"a\" : \"x\",\"b\":12,\"c\":true,\"d\":null,\"e\":false}\n"),
            Some(vec![
                ("a".into(), Value::Str("x")),
                ("b".into(), Value::Int(12)),
                ("c".into(), Value::Other),
                ("d".into(), Value::Other),
                ("e".into(), Value::Other),
            ])
        );
        assert_eq!(
            members("{\"n\":\"Jos\u{e9}\"}"),
            Some(vec![("n".into(), Value::Str("Jos\u{e9}"))])
        );
        assert_eq!(
            members("{\"t\":999999999999999}"),
            Some(vec![("t".into(), Value::Int(999_999_999_999_999))])
        );
    }

    #[test]
    fn leaves_everything_else_to_serde() {
        for json in [
            "",
            "[]",
            "{",
            "{,}",
            "{\"a\":1,}",
            "{\"a\":1}x",
            "{\"a\":1}{}",
            "\u{c}{}",
            "{\"a\":\"x\\\"\"}",
            "{\"a\\u0062\":1}",
            "{\"a\":\"\n\"}",
            "{\"a\":1.5}",
            "{\"a\":1e3}",
            "{\"a\":-1}",
            "{\"a\":01}",
            "{\"a\":1000000000000000}",
            "{\"a\":[1]}",
            "{\"a\":{}}",
            "{\"a\":tru}",
            "{\"a\":nulls}",
            "{\"a\" 1}",
            "{a:1}",
        ] {
            assert_eq!(members(json), None, "{json:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn find_stop_finds_the_first_stop(s in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)) {
            let expected = s.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            proptest::prop_assert_eq!(find_stop(&s), expected);
        }

        #[test]
        fn leading_digits_are_counted_and_read(s in "[0-9]{0,9}[^0-9]{0,8}", pad in proptest::collection::vec(proptest::prelude::any::<u8>(), 8)) {
            let mut bytes = [0u8; 8];
            let text = s.as_bytes();
            let n = text.len().min(8);
            bytes[..n].copy_from_slice(&text[..n]);
            bytes[n..].copy_from_slice(&pad[n..]);
            let count = bytes.iter().position(|b| !b.is_ascii_digit()).unwrap_or(8);
            let value = bytes[..count].iter().fold(0i64, |v, d| v * 10 + i64::from(d - b'0'));
            let (c, v) = leading_digits(u64::from_le_bytes(bytes));
            proptest::prop_assert_eq!(c, count);
            if count > 0 {
                proptest::prop_assert_eq!(v, value);
            }
        }

        #[test]
        fn leading_digits_of_any_bytes(bytes in proptest::prelude::any::<[u8; 8]>()) {
            let count = bytes.iter().position(|b| !b.is_ascii_digit()).unwrap_or(8);
            let value = bytes[..count].iter().fold(0i64, |v, d| v * 10 + i64::from(d - b'0'));
            let (c, v) = leading_digits(u64::from_le_bytes(bytes));
            proptest::prop_assert_eq!(c, count);
            if count > 0 {
                proptest::prop_assert_eq!(v, value);
            }
        }

        /// Integers read eight digits at a time where the text allows, one
        /// at a time near its end: the same as a digit-by-digit reading.
        #[test]
        fn integers_of_any_length(n in "[1-9][0-9]{0,17}", after in "[,} \\.e0-9]{0,9}") {
            let json = format!("{{\"a\":{n}{after}");
            let expected = if n.len() > MAX_DIGITS {
                None
            } else {
                let mut full = n.clone();
                full.extend(after.chars().take_while(char::is_ascii_digit));
                let rest = &after[full.len() - n.len()..];
                let closed = rest.trim_start_matches(' ').strip_prefix('}');
                (full.len() <= MAX_DIGITS && closed.is_some_and(|r| r.trim_start_matches(' ').is_empty()))
                    .then(|| full.parse::<i64>().expect("digits"))
            };
            let got = members(&json).map(|m| m[0].1);
            proptest::prop_assert_eq!(got, expected.map(Value::Int));
        }

        #[test]
        fn find_stop_in_text(s in "[ -~\u{e9}\u{20ac}\u{1f600}\"\\\\\n]{0,40}") {
            let b = s.as_bytes();
            let expected = b.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            proptest::prop_assert_eq!(find_stop(b), expected);
        }
    }
}
