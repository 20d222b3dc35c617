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

const URL_SAFE_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64url's values; 0xFF outside the alphabet.
static URL_SAFE_VALUES: [u8; 256] = values(URL_SAFE_ALPHABET);

/// Eight tables, one per position in two groups of four characters: the
/// character's six bits already where they land in the six decoded bytes
/// read as a little-endian `u64`, or [`INVALID_64`] outside the alphabet.
/// Two groups are then the OR of eight lookups, stored as they are (no
/// byte swap, no combining of the groups).
struct Tables8([[u64; 256]; 8]);

const INVALID_64: u64 = 1 << 63;

const fn tables8(alphabet: &[u8; 64]) -> Tables8 {
    let values = values(alphabet);
    let mut t = [[INVALID_64; 256]; 8];
    let mut c = 0;
    while c < 256 {
        let v = values[c];
        if v != 0xFF {
            let mut k = 0;
            while k < 8 {
                let mut bits = 0u64;
                let mut i = 0;
                while i < 6 {
                    // Bit i of the character, from its most significant,
                    // is bit p of the decoded stream, from the first
                    // byte's most significant.
                    if v & (0x20 >> i) != 0 {
                        let p = 6 * k + i;
                        bits |= 1 << (8 * (p / 8) + 7 - p % 8);
                    }
                    i += 1;
                }
                t[k][c] = bits;
                k += 1;
            }
        }
        c += 1;
    }
    Tables8(t)
}

static URL_SAFE: Tables8 = tables8(URL_SAFE_ALPHABET);

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
    let (read, len) = decode_url_run(input, out)?;
    (read == input.len()).then_some(len)
}

/// Decodes the base64url text at the start of `input`, up to its first
/// character outside the alphabet (or its end): `(characters read, bytes
/// written)`, exactly what [`decode_url`] answers for those characters
/// alone, and `None` when it answers `None`. A JWT's part is decoded and
/// the dot after it found in one pass.
pub(crate) fn decode_url_run(input: &[u8], out: &mut [u8]) -> Option<(usize, usize)> {
    let t = &URL_SAFE.0;
    let (mut read, mut written) = (0, 0);
    // Two groups at a time (six bytes written at once) while both are in
    // the alphabet.
    for (c, bytes) in input.chunks_exact(8).zip(out.chunks_exact_mut(6)) {
        let six = t[0][usize::from(c[0])]
            | t[1][usize::from(c[1])]
            | t[2][usize::from(c[2])]
            | t[3][usize::from(c[3])]
            | t[4][usize::from(c[4])]
            | t[5][usize::from(c[5])]
            | t[6][usize::from(c[6])]
            | t[7][usize::from(c[7])];
        if six & INVALID_64 != 0 {
            break;
        }
        bytes.copy_from_slice(&six.to_le_bytes()[..6]);
        read += 8;
        written += 6;
    }
    if let (Some(c), Some(bytes)) = (input.get(read..read + 4), out.get_mut(written..written + 3)) {
        let three = t[0][usize::from(c[0])]
            | t[1][usize::from(c[1])]
            | t[2][usize::from(c[2])]
            | t[3][usize::from(c[3])];
        if three & INVALID_64 == 0 {
            bytes.copy_from_slice(&three.to_le_bytes()[..3]);
            read += 4;
            written += 3;
        }
    }
    // What is left of the run: fewer than four characters, or four that
    // do not fit in `out`.
    let value = |i: usize| {
        input
            .get(read + i)
            .map_or(0xFF, |&c| URL_SAFE_VALUES[usize::from(c)])
    };
    let (a, b) = (value(0), value(1));
    if a == 0xFF {
        return Some((read, written));
    }
    if b == 0xFF {
        // One character is never canonical.
        return None;
    }
    let c = value(2);
    if c == 0xFF {
        // Two characters: 12 bits for 8; the last four must be zero.
        if b & 0xF != 0 {
            return None;
        }
        *out.get_mut(written)? = a << 2 | b >> 4;
        return Some((read + 2, written + 1));
    }
    if value(3) != 0xFF || c & 0x3 != 0 {
        // Four more that did not fit, or three whose last two bits (of
        // 18 for 16) are not zero.
        return None;
    }
    out.get_mut(written..written + 2)?
        .copy_from_slice(&[a << 2 | b >> 4, b << 4 | c >> 2]);
    Some((read + 3, written + 2))
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

        /// A run ends at the first character outside the alphabet and
        /// decodes as the base64 crate decodes those characters alone.
        #[test]
        fn url_run_decoding_matches_the_base64_crate(s in "[A-Za-z0-9_=+/.-]{0,60}", cap in 0usize..50) {
            let end = s
                .bytes()
                .position(|c| !(c.is_ascii_alphanumeric() || c == b'-' || c == b'_'))
                .unwrap_or(s.len());
            let mut ours = vec![0u8; cap];
            let mut theirs = vec![0u8; cap];
            let a = decode_url_run(s.as_bytes(), &mut ours);
            let b = URL_SAFE_NO_PAD.decode_slice(&s[..end], &mut theirs).ok();
            prop_assert_eq!(a, b.map(|n| (end, n)));
            if let Some((_, n)) = a {
                prop_assert_eq!(&ours[..n], &theirs[..n]);
            }
        }

        /// Long runs, exactly fitting buffers and buffers one byte short,
        /// followed by a dot and more text.
        #[test]
        fn url_run_decoding_of_encoded_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..120), short in any::<bool>(), after in "[.+=/]?[A-Za-z0-9]{0,5}") {
            let text = format!("{}{after}", URL_SAFE_NO_PAD.encode(&bytes));
            let encoded_len = text.len() - after.len();
            let cap = bytes.len().saturating_sub(usize::from(short));
            let mut ours = vec![0u8; cap];
            let run = decode_url_run(text.as_bytes(), &mut ours);
            if after.is_empty() || !after.as_bytes()[0].is_ascii_alphanumeric() {
                if short && !bytes.is_empty() {
                    prop_assert_eq!(run, None);
                } else {
                    prop_assert_eq!(run, Some((encoded_len, bytes.len())));
                    prop_assert_eq!(&ours[..], &bytes[..]);
                }
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
