//! Strict base64 decoders for the verification path: they write into the
//! caller's buffer (no allocation) and accept exactly what the `base64`
//! crate's `STANDARD` and `URL_SAFE_NO_PAD` engines accept, with the same
//! bytes (property-tested against the crate below): no padding for the
//! URL-safe form, and no non-zero bits left over in the last character.

/// An alphabet's values; 0xFF outside it.
const fn values(alphabet: &[u8; 64]) -> [u8; 256] {
    let mut table = [0xFFu8; 256];
    let mut i = 0;
    while i < alphabet.len() {
        table[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    table
}

/// Four tables, one per position in a group of four characters: the
/// character's six bits already shifted into place in a 24-bit group, or
/// [`INVALID`] for a character outside the alphabet. A group is then the
/// OR of four lookups, and one OR over all groups tells if any character
/// was invalid.
struct Tables([[u32; 256]; 4]);

const INVALID: u32 = 1 << 31;

const fn tables(alphabet: &[u8; 64]) -> Tables {
    let values = values(alphabet);
    let mut t = [[INVALID; 256]; 4];
    let mut c = 0;
    while c < 256 {
        let v = values[c];
        if v != 0xFF {
            let v = v as u32;
            t[0][c] = v << 18;
            t[1][c] = v << 12;
            t[2][c] = v << 6;
            t[3][c] = v;
        }
        c += 1;
    }
    Tables(t)
}

static STANDARD: Tables =
    tables(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/");
static URL_SAFE: Tables =
    tables(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_");

impl Tables {
    /// The 24 bits of up to four characters (missing ones count as `A`),
    /// with [`INVALID`] set if any is outside the alphabet.
    fn group(&self, chars: &[u8]) -> u32 {
        let mut n = 0;
        for (table, &c) in self.0.iter().zip(chars) {
            n |= table[usize::from(c)];
        }
        n
    }
}

/// Decodes whole groups of four characters into three bytes each; the OR
/// of the groups' bits (with [`INVALID`] set if any character was).
fn groups(tables: &Tables, input: &[u8], out: &mut [u8]) -> u32 {
    let mut seen = 0;
    for (chars, bytes) in input.chunks_exact(4).zip(out.chunks_exact_mut(3)) {
        let n = tables.0[0][usize::from(chars[0])]
            | tables.0[1][usize::from(chars[1])]
            | tables.0[2][usize::from(chars[2])]
            | tables.0[3][usize::from(chars[3])];
        seen |= n;
        bytes.copy_from_slice(&n.to_be_bytes()[1..]);
    }
    seen
}

fn all_valid(seen: u32) -> bool {
    seen & INVALID == 0
}

/// Decodes standard base64 without padding whose length is a multiple of
/// four into exactly `out.len()` bytes; false on any other input. Every
/// such input has one decoding and the base64 crate's decoder gives the
/// same bytes.
pub(crate) fn decode_whole_groups(input: &[u8], out: &mut [u8]) -> bool {
    if !input.len().is_multiple_of(4) || input.len() / 4 * 3 != out.len() {
        return false;
    }
    all_valid(groups(&STANDARD, input, out))
}

/// Decodes unpadded base64url into the start of `out`, returning the
/// decoded length; `None` when the input is not canonical unpadded
/// base64url or `out` is too small (as `URL_SAFE_NO_PAD.decode_slice`).
pub(crate) fn decode_url(input: &[u8], out: &mut [u8]) -> Option<usize> {
    let rem = input.len() % 4;
    if rem == 1 {
        return None;
    }
    let whole = input.len() / 4;
    let len = whole * 3 + rem.saturating_sub(1);
    let out = out.get_mut(..len)?;
    let (input, tail) = input.split_at(whole * 4);
    let (out, out_tail) = out.split_at_mut(whole * 3);
    let mut seen = groups(&URL_SAFE, input, out);
    if !tail.is_empty() {
        // Two or three characters: 12 or 18 bits for 8 or 16; the bits
        // left over must be zero.
        let n = URL_SAFE.group(tail);
        seen |= n;
        let [_, a, b, c] = n.to_be_bytes();
        let spare = match tail.len() {
            2 => u32::from(b) << 8 | u32::from(c),
            _ => u32::from(c),
        };
        if spare != 0 {
            return None;
        }
        out_tail.copy_from_slice(&[a, b][..out_tail.len()]);
    }
    all_valid(seen).then_some(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD as B64_STANDARD, URL_SAFE_NO_PAD};
    use proptest::prelude::*;

    #[test]
    fn known_values() {
        let mut out = [0u8; 8];
        assert_eq!(decode_url(b"", &mut out), Some(0));
        assert_eq!(decode_url(b"Zg", &mut out), Some(1));
        assert_eq!(&out[..1], b"f");
        assert_eq!(decode_url(b"Zm8", &mut out), Some(2));
        assert_eq!(&out[..2], b"fo");
        assert_eq!(decode_url(b"Zm9v", &mut out), Some(3));
        assert_eq!(decode_url(b"Zh", &mut out), None, "non-zero trailing bits");
        assert_eq!(decode_url(b"Zm9", &mut out), None, "non-zero trailing bits");
        assert_eq!(decode_url(b"Zg==", &mut out), None, "padding");
        assert_eq!(decode_url(b"Z", &mut out), None);
        assert_eq!(decode_url(b"+/8", &mut out), None, "standard alphabet");
        assert_eq!(decode_url(b"-_8", &mut out), Some(2));
        assert_eq!(decode_url(b"Zm9vYmFy", &mut [0u8; 5]), None, "too small");
    }

    proptest! {
        #[test]
        fn whole_group_decoding_reads_back_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 27)) {
            let mut out = [0u8; 27];
            prop_assert!(decode_whole_groups(B64_STANDARD.encode(&bytes).as_bytes(), &mut out));
            prop_assert_eq!(&out[..], &bytes[..]);
        }

        #[test]
        fn whole_group_decoding_matches_the_base64_crate(s in "[A-Za-z0-9+/=!-]{0,40}") {
            let mut out = [0u8; 27];
            let ours = decode_whole_groups(s.as_bytes(), &mut out);
            match B64_STANDARD.decode(&s) {
                Ok(bytes) if bytes.len() == 27 && !s.contains('=') => {
                    prop_assert!(ours);
                    prop_assert_eq!(&out[..], &bytes[..]);
                }
                _ => prop_assert!(!ours),
            }
        }

        #[test]
        fn url_decoding_reads_back_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let mut out = [0u8; 100];
            let n = decode_url(URL_SAFE_NO_PAD.encode(&bytes).as_bytes(), &mut out);
            prop_assert_eq!(n, Some(bytes.len()));
            prop_assert_eq!(&out[..bytes.len()], &bytes[..]);
        }

        #[test]
        fn url_decoding_matches_the_base64_crate(s in "[A-Za-z0-9_=+/.-]{0,60}", cap in 0usize..50) {
            let mut ours = vec![0u8; cap];
            let mut theirs = vec![0u8; cap];
            let a = decode_url(s.as_bytes(), &mut ours);
            let b = URL_SAFE_NO_PAD.decode_slice(&s, &mut theirs).ok();
            prop_assert_eq!(a, b);
            if let Some(n) = a {
                prop_assert_eq!(&ours[..n], &theirs[..n]);
            }
        }

        #[test]
        fn url_decoding_matches_the_base64_crate_on_any_bytes(s in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut ours = [0u8; 40];
            let a = decode_url(&s, &mut ours);
            let b = URL_SAFE_NO_PAD.decode(&s).ok();
            prop_assert_eq!(a.map(|n| ours[..n].to_vec()), b);
        }
    }
}
