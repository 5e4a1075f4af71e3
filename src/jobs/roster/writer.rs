//! The Moodle upload-users CSV: UTF-8, comma, RFC 4180 quoting, only standard field names.
//!
//! Moodle's `uu_validate_user_upload_columns` rejects the whole file on an unknown or
//! repeated column, and its `csv_import_reader` on any row whose field count differs from
//! the header (`csvweirdcolumns`): the header is fixed here and every row writes every
//! column.

use std::io::{self, Write};

use csv_core::{QuoteStyle, Terminator, WriteResult, Writer, WriterBuilder};

/// Flushes to the underlying writer in chunks this big.
const FLUSH_AT: usize = 256 * 1024;
/// Room past [`FLUSH_AT`] for the row that crosses it (the buffer grows for a bigger row).
const SLACK: usize = 16 * 1024;

pub(crate) struct Row<'a> {
    pub(crate) username: &'a str,
    pub(crate) firstname: &'a str,
    pub(crate) lastname: &'a str,
    pub(crate) email: &'a str,
    pub(crate) department: &'a str,
}

/// csv-core's quoting into a buffer of our own, with room for the whole record before
/// csv-core is called: no call comes back half done.
///
/// It replaced a hand-written writer with an eight-bytes-at-a-time quote check, at a
/// price: 960 against 328 instructions per row for the CSV, 2,475 against 1,861 on the
/// writer thread in all (callgrind, `dialout bench roster --rows 100000`), which makes
/// the writer thread the busier one (the reader's: 2,124; 2,124/2,475 = 0.86). Sixteen
/// alternating pairs of `dialout bench roster` on a loaded machine: median ratio 0.85 of
/// the old throughput, so about 2.3 M rows/s on a quiet one, above the 2 M target.
pub(crate) struct MoodleCsv<W: Write> {
    out: W,
    /// csv-core writes into initialised bytes: at least `FLUSH_AT + SLACK` of them, the
    /// first `len` written.
    buf: Vec<u8>,
    len: usize,
    /// Quotes a value when it holds a comma, quote, CR or LF.
    csv: Writer,
    /// Quotes always: for a value with a leading or trailing space, which a reader that
    /// trims unquoted fields would otherwise lose.
    spaced: Writer,
    password: Option<String>,
}

impl<W: Write> MoodleCsv<W> {
    pub(crate) fn new(out: W, password: Option<&str>) -> Self {
        let builder = |style| {
            WriterBuilder::new()
                .terminator(Terminator::CRLF)
                .quote_style(style)
                .build()
        };
        Self {
            out,
            buf: vec![0; FLUSH_AT + SLACK],
            len: 0,
            csv: builder(QuoteStyle::Necessary),
            spaced: builder(QuoteStyle::Always),
            password: password.map(str::to_owned),
        }
    }

    pub(crate) fn header(&mut self) -> io::Result<()> {
        let names = ["username", "firstname", "lastname", "email", "department"];
        self.record(names, true)
    }

    pub(crate) fn row(&mut self, row: &Row<'_>) -> io::Result<()> {
        let fields = [
            row.username,
            row.firstname,
            row.lastname,
            row.email,
            row.department,
        ];
        self.record(fields, false)
    }

    /// Writes `fields` and the password column, if any: its name in the header.
    fn record(&mut self, fields: [&str; 5], header: bool) -> io::Result<()> {
        let password = match header {
            true => self.password.as_ref().map(|_| "password"),
            false => self.password.as_deref(),
        };
        // csv-core writes at most 2 + 2n bytes for a field of n bytes, then a delimiter or
        // the terminator (at most 2).
        let most = |f: &str| 4 + 2 * f.len();
        let most = fields.iter().map(|f| most(f)).sum::<usize>() + password.map_or(0, most);
        if self.len + most > self.buf.len() {
            self.out.write_all(&self.buf[..self.len])?;
            self.len = 0;
            if most > self.buf.len() {
                self.buf.resize(most, 0);
            }
        }
        let mut at = self.len;
        for (i, value) in fields.into_iter().enumerate() {
            if i > 0 {
                at += all_in(self.csv.delimiter(&mut self.buf[at..]));
            }
            at += field(&mut self.csv, &mut self.spaced, &mut self.buf[at..], value);
        }
        if let Some(p) = password {
            at += all_in(self.csv.delimiter(&mut self.buf[at..]));
            at += field(&mut self.csv, &mut self.spaced, &mut self.buf[at..], p);
        }
        at += all_in(self.csv.terminator(&mut self.buf[at..]));
        self.len = at;
        if self.len >= FLUSH_AT {
            self.out.write_all(&self.buf[..self.len])?;
            self.len = 0;
        }
        Ok(())
    }

    pub(crate) fn finish(mut self) -> io::Result<()> {
        self.out.write_all(&self.buf[..self.len])?;
        self.out.flush()
    }
}

/// Writes one field into `out`, which has room for it: through `spaced` when it has a
/// leading or trailing space, else through `csv`. Returns the bytes written.
fn field(csv: &mut Writer, spaced: &mut Writer, out: &mut [u8], value: &str) -> usize {
    let b = value.as_bytes();
    if b.first() != Some(&b' ') && b.last() != Some(&b' ') {
        let (res, _, n) = csv.field(b, out);
        return all_in((res, n));
    }
    let (res, _, n) = spaced.field(b, out);
    // The closing quote; `csv` writes the delimiter or terminator after it.
    n + all_in((res, 0)) + all_in(spaced.finish(&mut out[n..]))
}

/// The bytes a csv-core call wrote, which had room for all of its input.
fn all_in((res, n): (WriteResult, usize)) -> usize {
    debug_assert!(matches!(res, WriteResult::InputEmpty));
    n
}
