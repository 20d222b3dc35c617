//! The timestamps of the text log: RFC 3339 UTC with microseconds, as
//! tracing-subscriber's default timer writes them
//! (`2026-11-23T14:55:23.123456Z`), with the date and time of day formatted
//! once per second on each thread. The default formats every part of every
//! line's time through `core::fmt`: a fifth of the cost of an access-log
//! line, which every management request writes (docs/BENCHMARKS.md).

use std::cell::Cell;

use latchkey_core::{Clock, SystemClock};
use time::OffsetDateTime;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// `YYYY-MM-DDTHH:MM:SS`
const SECOND_LEN: usize = 19;
/// `YYYY-MM-DDTHH:MM:SS.uuuuuuZ`
const LEN: usize = SECOND_LEN + 8;

#[derive(Debug, Clone, Copy, Default)]
pub struct LogTime;

thread_local! {
    /// The last second this thread formatted, and its text.
    static SECOND: Cell<(i64, [u8; SECOND_LEN])> = const { Cell::new((i64::MIN, [0; SECOND_LEN])) };
}

impl FormatTime for LogTime {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        let text = text_of(SystemClock.now());
        // Only ASCII digits and separators were written.
        w.write_str(std::str::from_utf8(&text).map_err(|_| std::fmt::Error)?)
    }
}

/// The timestamp of `now`, its second taken from this thread's cache when
/// it is the second formatted last.
fn text_of(now: OffsetDateTime) -> [u8; LEN] {
    let unix = now.unix_timestamp();
    let second = SECOND.with(|cached| {
        let (at, text) = cached.get();
        if at == unix {
            return text;
        }
        let text = second_text(now);
        cached.set((unix, text));
        text
    });
    with_micros(second, now.microsecond())
}

/// `YYYY-MM-DDTHH:MM:SS` of `t` (a year outside 0 to 9999 is written as
/// 9999 or 0000: no log line is written then).
fn second_text(t: OffsetDateTime) -> [u8; SECOND_LEN] {
    let mut out = *b"0000-00-00T00:00:00";
    let year = u32::try_from(t.year()).unwrap_or(0).min(9999);
    digits(&mut out[0..4], year);
    digits(&mut out[5..7], u32::from(u8::from(t.month())));
    digits(&mut out[8..10], u32::from(t.day()));
    digits(&mut out[11..13], u32::from(t.hour()));
    digits(&mut out[14..16], u32::from(t.minute()));
    digits(&mut out[17..19], u32::from(t.second()));
    out
}

/// The second's text followed by `.uuuuuuZ`.
fn with_micros(second: [u8; SECOND_LEN], micros: u32) -> [u8; LEN] {
    let mut out = [0u8; LEN];
    out[..SECOND_LEN].copy_from_slice(&second);
    out[SECOND_LEN] = b'.';
    digits(&mut out[SECOND_LEN + 1..LEN - 1], micros);
    out[LEN - 1] = b'Z';
    out
}

/// Writes `value` as decimal digits filling `out` (zero-padded on the left;
/// higher digits that do not fit are dropped).
fn digits(out: &mut [u8], mut value: u32) {
    for place in out.iter_mut().rev() {
        // value % 10 < 10 fits in a u8.
        *place = b'0' + u8::try_from(value % 10).unwrap_or(0);
        value /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::format_description::well_known::Rfc3339;

    /// The text for `t`, as `format_time` writes it.
    fn text_at(t: OffsetDateTime) -> String {
        String::from_utf8(text_of(t).to_vec()).expect("ascii")
    }

    #[test]
    fn writes_what_rfc_3339_with_microseconds_says() {
        // Instants spread over 1970 to 2100, with every kind of fraction.
        let mut unix: i64 = 0;
        let mut micros: i64 = 0;
        while unix < 4_102_444_800 {
            let nanos = i128::from(unix) * 1_000_000_000 + i128::from(micros) * 1_000 + 789;
            let t = OffsetDateTime::from_unix_timestamp_nanos(nanos).expect("in range");
            let expected = t
                .replace_nanosecond(u32::try_from(micros * 1_000).expect("fits"))
                .expect("valid")
                .format(&Rfc3339)
                .expect("formats");
            // `time` drops trailing zeros of the fraction; we always write six digits.
            let ours = text_at(t);
            let (whole, fraction) = ours.split_once('.').expect("a fraction");
            let fraction = fraction.trim_end_matches('Z');
            let value: u32 = fraction.parse().expect("digits");
            assert_eq!(fraction.len(), 6, "{ours}");
            assert_eq!(i64::from(value), micros, "{ours}");
            assert!(expected.starts_with(whole), "{ours} against {expected}");
            unix += 86_399 * 17 + 3_607;
            micros = (micros * 7 + 123_457) % 1_000_000;
        }
    }

    #[test]
    fn a_second_is_formatted_once_and_reused_only_within_it() {
        let at = |s: &str| OffsetDateTime::parse(s, &Rfc3339).expect("parses");
        let mut line = String::new();
        LogTime
            .format_time(&mut Writer::new(&mut line))
            .expect("formats");
        assert_eq!(line.len(), LEN, "{line}");
        assert!(OffsetDateTime::parse(&line, &Rfc3339).is_ok(), "{line}");
        for (t, expected) in [
            ("2026-11-23T14:55:23.000001Z", "2026-11-23T14:55:23.000001Z"),
            ("2026-11-23T14:55:23.9Z", "2026-11-23T14:55:23.900000Z"),
            ("2026-11-23T14:55:24.999999Z", "2026-11-23T14:55:24.999999Z"),
            ("2026-11-23T14:55:23.5Z", "2026-11-23T14:55:23.500000Z"),
            ("2024-02-29T23:59:59.5Z", "2024-02-29T23:59:59.500000Z"),
            ("2024-03-01T00:00:00Z", "2024-03-01T00:00:00.000000Z"),
        ] {
            assert_eq!(text_at(at(t)), expected);
        }
    }
}
