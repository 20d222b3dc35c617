//! The fields of a text log line, written as tracing-subscriber's default
//! writes them (`message name="text" count=3`), but without formatting
//! every name and `=` through styling wrappers and `core::fmt`: that made
//! up most of an access-log line's cost, and the line most of the cost of
//! an authenticated read such as `GET /v1/apps/{id}` (docs/BENCHMARKS.md).
//!
//! One difference is deliberate: control characters in the message and in
//! values written with `%` (Display) or as errors are escaped (`\x0a`,
//! `\u{9b}`), so no value can start a forged line or send a terminal
//! escape. tracing-subscriber escapes only some of them, and only in the
//! message and errors; values written with `?` (Debug) were escaped by
//! Debug already.

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// The [`FormatFields`] of the text log.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogFields;

impl<'writer> FormatFields<'writer> for LogFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = FieldWriter {
            out: writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct FieldWriter<'w> {
    out: Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl FieldWriter<'_> {
    /// Writes the separator and `name=` (nothing for the message); false
    /// if the field is not written at all.
    fn begin(&mut self, field: &Field) -> bool {
        let name = field.name();
        // Metadata of `log` records, already part of the line.
        if self.result.is_err() || name.starts_with("log.") {
            return false;
        }
        self.result = self.pad().and_then(|()| {
            if name == "message" {
                return Ok(());
            }
            self.out
                .write_str(name.strip_prefix("r#").unwrap_or(name))?;
            self.out.write_char('=')
        });
        self.result.is_ok()
    }

    fn pad(&mut self) -> fmt::Result {
        if self.first {
            self.first = false;
            Ok(())
        } else {
            self.out.write_char(' ')
        }
    }
}

impl Visit for FieldWriter<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.begin(field) {
            return;
        }
        self.result = if field.name() == "message" {
            Escaping(&mut self.out).write_str(value)
        } else if value
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
        {
            // What `{:?}` writes for printable ASCII without quotes or
            // backslashes, without a trip through the formatter.
            self.out.write_char('"').and_then(|()| {
                self.out.write_str(value)?;
                self.out.write_char('"')
            })
        } else {
            write!(self.out, "{value:?}")
        };
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.begin(field) {
            let mut digits = [0u8; 20];
            self.result = self.out.write_str(decimal(value, &mut digits));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.begin(field) {
            let mut digits = [0u8; 20];
            let magnitude = decimal(value.unsigned_abs(), &mut digits);
            self.result = if value < 0 {
                self.out
                    .write_char('-')
                    .and_then(|()| self.out.write_str(magnitude))
            } else {
                self.out.write_str(magnitude)
            };
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.begin(field) {
            self.result = self.out.write_str(if value { "true" } else { "false" });
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if !self.begin(field) {
            return;
        }
        self.result = write!(Escaping(&mut self.out), "{value}");
        if let Some(mut source) = value.source() {
            let name = field.name();
            self.result = self.result.and_then(|()| {
                write!(self.out, " {name}.sources=[")?;
                loop {
                    write!(Escaping(&mut self.out), "{source}")?;
                    match source.source() {
                        Some(next) => {
                            self.out.write_str(", ")?;
                            source = next;
                        }
                        None => break,
                    }
                }
                self.out.write_char(']')
            });
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.begin(field) {
            self.result = write!(Escaping(&mut self.out), "{value:?}");
        }
    }
}

/// `value` in decimal, written into the end of `buf`.
fn decimal(mut value: u64, buf: &mut [u8; 20]) -> &str {
    let mut start = buf.len();
    loop {
        start -= 1;
        // value % 10 < 10 fits in a u8.
        buf[start] = b'0' + u8::try_from(value % 10).unwrap_or(0);
        value /= 10;
        if value == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buf[start..]).unwrap_or("?")
}

/// Writes through to `0`, escaping C0 control characters (newlines and
/// tabs too), DEL and C1 control characters.
struct Escaping<'a, 'w>(&'a mut Writer<'w>);

/// Control characters, and the separators and direction marks that some
/// log viewers show as a line break or use to reorder text.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

impl Write for Escaping<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // In UTF-8 those characters start with a byte below 0x20, 0x7f,
        // 0xc2 (C1) or 0xe2 (U+2028 to U+2069): most text has none.
        if !s
            .bytes()
            .any(|b| b < 0x20 || b == 0x7f || b == 0xc2 || b == 0xe2)
        {
            return self.0.write_str(s);
        }
        let mut clean = 0;
        for (at, c) in s.char_indices() {
            if needs_escape(c) {
                self.0.write_str(&s[clean..at])?;
                let code = u32::from(c);
                if code < 0x80 {
                    write!(self.0, "\\x{code:02x}")?;
                } else {
                    write!(self.0, "\\u{{{code:x}}}")?;
                }
                clean = at + c.len_utf8();
            }
        }
        self.0.write_str(&s[clean..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use proptest::prelude::*;
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("buffer").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    /// The lines `emit` logs, with tracing-subscriber's field formatter
    /// and with ours (no time, no colours).
    fn both(emit: impl Fn()) -> (String, String) {
        let theirs = Buffer::default();
        let ours = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .without_time()
            .with_ansi(false)
            .with_writer(theirs.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, &emit);
        let subscriber = tracing_subscriber::fmt()
            .without_time()
            .with_ansi(false)
            .fmt_fields(LogFields)
            .with_writer(ours.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, &emit);
        let text =
            |b: Buffer| String::from_utf8(b.0.lock().expect("buffer").clone()).expect("utf-8");
        (text(theirs), text(ours))
    }

    #[derive(Debug)]
    struct Failure(&'static str, Option<Box<Failure>>);

    impl fmt::Display for Failure {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Failure {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn an_access_line_reads_as_before() {
        let (theirs, ours) = both(|| {
            let (method, path) = ("GET", "/v1/apps/ap_gcWIZsarUN29uCUy0hrKGh");
            tracing::info!(target: "latchkey::access", method, path, status = 200u16, latency_us = 123u64, "request");
            tracing::warn!(
                r#type = "x",
                delta = -42i64,
                ok = true,
                big = u64::MAX,
                "two {} three",
                2
            );
            let error = Failure(
                "outer",
                Some(Box::new(Failure(
                    "middle",
                    Some(Box::new(Failure("inner", None))),
                ))),
            );
            tracing::error!(
                error = &error as &(dyn std::error::Error + 'static),
                "failed"
            );
            tracing::info!(name = %"plain display", list = ?vec![1, 2], "");
        });
        assert_eq!(ours, theirs);
        assert!(ours.contains(r#"request method="GET" path="/v1/apps/ap_gcWIZsarUN29uCUy0hrKGh" status=200 latency_us=123"#), "{ours}");
        assert!(
            ours.contains("error=outer error.sources=[middle, inner]"),
            "{ours}"
        );
    }

    #[test]
    fn control_characters_cannot_forge_a_line_or_a_terminal_escape() {
        let (_, ours) = both(|| {
            tracing::info!(path = "/a\nb", shown = %"x\n2026-01-01T00:00:00Z  INFO forged", "m\x1b[31m\u{9b}end\r\t\u{2028}\u{202e}");
        });
        assert_eq!(ours.matches('\n').count(), 1, "{ours}");
        assert!(
            !ours.contains(['\x1b', '\r', '\t', '\u{9b}', '\u{2028}', '\u{202e}']),
            "{ours}"
        );
        assert!(
            ours.contains(r"m\x1b[31m\u{9b}end\x0d\x09\u{2028}\u{202e}"),
            "{ours}"
        );
        assert!(ours.contains(r#"path="/a\nb""#), "{ours}");
        assert!(ours.contains(r"shown=x\x0a2026"), "{ours}");
    }

    /// Any text: str values are written by Debug, which escapes what it must.
    const TEXT: &str = "[^\\p{Cc}]{0,40}";

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Text without the characters escaped here: the same line as
        /// tracing-subscriber's, whatever the value of each field.
        #[test]
        fn matches_the_default_formatter(
            s in TEXT,
            d in "[^\\p{Cc}\u{2028}-\u{202e}\u{2066}-\u{2069}]{0,20}",
            m in "[^\\p{Cc}\u{2028}-\u{202e}\u{2066}-\u{2069}]{0,30}",
            n in any::<u64>(),
            i in any::<i64>(),
            b in any::<bool>(),
        ) {
            let (theirs, ours) = both(|| {
                tracing::info!(text = s.as_str(), shown = %d, n, i, b, "{}", m);
                tracing::info!(text = s.as_str(), debugged = ?d);
            });
            prop_assert_eq!(ours, theirs);
        }
    }
}
