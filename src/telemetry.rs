//! The tracing subscriber, built once per process.

use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

use crate::config::{LogFormat, LogSection};

/// Installs the global subscriber. `RUST_LOG` overrides `log.level`. Logs go to
/// stderr so that commands which print results (`dialout jobs`, `roster convert`)
/// keep stdout clean. Colours only on a terminal (and without `NO_COLOR`): escape codes
/// have no place in a log file, and styling every job span's fields costs the worker a
/// quarter of its CPU.
pub fn init(log: &LogSection) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let colours = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colours);
    // A second init (tests) is harmless: the first subscriber stays.
    let _ = match log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Human => builder.fmt_fields(PlainFields).try_init(),
    };
}

/// Human-format fields as `name=value`, the message bare: what the default formatter
/// writes without colours, at a fraction of its cost. Every job opens a span with
/// three fields, so this is on the worker's hot path. Like the default it escapes
/// terminal control characters, in every text it writes (not only the message), so a
/// payload or a peer's error text cannot drive the terminal that shows the log.
struct PlainFields;

impl<'w> FormatFields<'w> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = PlainVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct PlainVisitor<'w> {
    writer: Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    /// Records one field, unless an earlier one failed to write.
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.write_field(field, value);
        }
    }

    /// Writes the separator and the field's name (none for the message), then `value`.
    fn write_field(
        &mut self,
        field: &Field,
        value: impl FnOnce(&mut Writer<'_>) -> fmt::Result,
    ) -> fmt::Result {
        if !self.first {
            self.writer.write_char(' ')?;
        }
        self.first = false;
        let name = field.name();
        if name != "message" {
            self.writer
                .write_str(name.strip_prefix("r#").unwrap_or(name))?;
            self.writer.write_char('=')?;
        }
        value(&mut self.writer)
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |w| write!(w, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |w| write!(w, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.field(field, |w| Escaping(w).write_str(value));
        } else {
            self.field(field, |w| write!(Escaping(w), "{value:?}"));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.field(field, |w| {
            write!(Escaping(w), "{value}")?;
            let mut source = value.source();
            if source.is_some() {
                write!(w, " {}.sources=[", field.name())?;
                while let Some(error) = source {
                    write!(Escaping(w), "{error}")?;
                    source = error.source();
                    if source.is_some() {
                        w.write_str(", ")?;
                    }
                }
                w.write_char(']')?;
            }
            Ok(())
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, |w| write!(Escaping(w), "{value:?}"));
    }
}

/// Writes through, spelling out the characters a terminal would act on (as
/// tracing-subscriber's default formatter does).
struct Escaping<'a, 'w>(&'a mut Writer<'w>);

impl fmt::Write for Escaping<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(at) = rest.find(|c: char| {
            matches!(
                c,
                '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}'
            )
        }) {
            self.0.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            if c.is_ascii() {
                write!(self.0, "\\x{:02x}", c as u32)?;
            } else {
                write!(self.0, "\\u{{{:x}}}", c as u32)?;
            }
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::PlainFields;

    /// Everything the subscriber writes, for inspection.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(emit: impl FnOnce()) -> String {
        let out = Captured::default();
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .fmt_fields(PlainFields)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = out.0.lock().expect("not poisoned").clone();
        String::from_utf8(bytes).expect("utf-8 log")
    }

    #[test]
    fn job_spans_and_fields_read_as_the_default_format_does() {
        let text = logged(|| {
            let span = tracing::info_span!("job", id = 42_i64, kind = %"noop", attempt = 1_i32);
            let _in = span.enter();
            tracing::info!(host = "pbx-1", ok = true, "attempt ended");
        });
        assert!(
            text.contains("job{id=42 kind=noop attempt=1}: attempt ended host=\"pbx-1\" ok=true"),
            "{text}"
        );
    }

    #[test]
    fn control_characters_from_outside_are_spelled_out() {
        let hostile = "red \x1b[31m bell \x07 c1 \u{9b}";
        let error = std::io::Error::other(hostile);
        let text = logged(|| {
            tracing::warn!(peer = %hostile, error = &error as &dyn std::error::Error, "{hostile}");
        });
        assert!(
            !text.contains(['\x1b', '\x07', '\u{9b}']),
            "raw control characters in {text:?}"
        );
        assert!(
            text.contains("red \\x1b[31m bell \\x07 c1 \\u{9b}"),
            "{text}"
        );
        assert_eq!(text.matches("\\x1b[31m").count(), 3, "{text}");
    }
}
