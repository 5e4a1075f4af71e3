//! The Moodle upload-users CSV: UTF-8, comma, RFC 4180 quoting, only standard field names.
//!
//! Moodle's `uu_validate_user_upload_columns` rejects the whole file on an unknown or
//! repeated column, and its `csv_import_reader` on any row whose field count differs from
//! the header (`csvweirdcolumns`): the header is fixed here and every row writes every
//! column.

use std::io::{self, Write};

/// Flushes to the underlying writer in chunks this big.
const FLUSH_AT: usize = 256 * 1024;

pub(crate) struct Row<'a> {
    pub(crate) username: &'a str,
    pub(crate) firstname: &'a str,
    pub(crate) lastname: &'a str,
    pub(crate) email: &'a str,
    pub(crate) department: &'a str,
    /// `firstname`, `lastname` and `department` back to back, as the batch keeps them:
    /// one quick check tells whether any of them may need quotes.
    pub(crate) names: &'a str,
}

pub(crate) struct MoodleCsv<W: Write> {
    out: W,
    buf: Vec<u8>,
    password: bool,
    /// What ends every row: the password column, if any, and CRLF.
    row_end: Vec<u8>,
}

impl<W: Write> MoodleCsv<W> {
    pub(crate) fn new(out: W, password: Option<&str>) -> Self {
        let mut row_end = Vec::new();
        if let Some(p) = password {
            row_end.push(b',');
            field(&mut row_end, p);
        }
        row_end.extend_from_slice(b"\r\n");
        Self {
            out,
            buf: Vec::with_capacity(FLUSH_AT + 4096),
            password: password.is_some(),
            row_end,
        }
    }

    pub(crate) fn header(&mut self) -> io::Result<()> {
        self.buf
            .extend_from_slice(b"username,firstname,lastname,email,department");
        if self.password {
            self.buf.extend_from_slice(b",password");
        }
        self.buf.extend_from_slice(b"\r\n");
        Ok(())
    }

    pub(crate) fn row(&mut self, row: &Row<'_>) -> io::Result<()> {
        // username and email are ASCII without delimiters, quotes or spaces by
        // construction (a given email passed `EmailChecker`, whose alphabet has none).
        debug_assert!(!needs_quotes(row.email.as_bytes()), "{}", row.email);
        debug_assert_eq!(
            row.names,
            [row.firstname, row.lastname, row.department].concat()
        );
        let plain = !may_need_quotes(row.names.as_bytes());
        let field = |buf: &mut Vec<u8>, value: &str| {
            let b = value.as_bytes();
            if plain && b.first() != Some(&b' ') && b.last() != Some(&b' ') {
                buf.extend_from_slice(b);
            } else {
                field(buf, value);
            }
        };
        self.buf.extend_from_slice(row.username.as_bytes());
        self.buf.push(b',');
        field(&mut self.buf, row.firstname);
        self.buf.push(b',');
        field(&mut self.buf, row.lastname);
        self.buf.push(b',');
        self.buf.extend_from_slice(row.email.as_bytes());
        self.buf.push(b',');
        field(&mut self.buf, row.department);
        self.buf.extend_from_slice(&self.row_end);
        if self.buf.len() >= FLUSH_AT {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    pub(crate) fn finish(mut self) -> io::Result<()> {
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        self.out.flush()
    }
}

const NEEDS_QUOTES: [bool; 256] = {
    let mut t = [false; 256];
    t[b',' as usize] = true;
    t[b'"' as usize] = true;
    t[b'\r' as usize] = true;
    t[b'\n' as usize] = true;
    t
};

/// RFC 4180: quote when the value holds a comma, quote, CR or LF, or would lose leading
/// or trailing spaces; double the quotes inside.
fn field(buf: &mut Vec<u8>, value: &str) {
    let b = value.as_bytes();
    if !needs_quotes(b) {
        buf.extend_from_slice(b);
        return;
    }
    buf.push(b'"');
    for &c in b {
        if c == b'"' {
            buf.push(b'"');
        }
        buf.push(c);
    }
    buf.push(b'"');
}

fn needs_quotes(b: &[u8]) -> bool {
    let special = may_need_quotes(b) && b.iter().any(|&c| NEEDS_QUOTES[usize::from(c)]);
    special || b.first() == Some(&b' ') || b.last() == Some(&b' ')
}

/// False only when `b` has no comma, quote or byte below 0x0E (so no CR or LF); true may
/// be a false alarm, settled by the exact table. Eight bytes at a time.
fn may_need_quotes(b: &[u8]) -> bool {
    use super::swar::{any, has_below, has_byte};
    any(b, |x| {
        has_below(x, 0x0E) | has_byte(x, b',') | has_byte(x, b'"')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_check() {
        for t in [
            "Juan",
            "",
            "María José García López",
            "Ventas Norte 12345678",
        ] {
            assert!(!may_need_quotes(t.as_bytes()), "{t:?}");
        }
        for t in ["a,b", "12345678\"", "x\ry", "abcdefghijklmno\n", "ñ,"] {
            assert!(may_need_quotes(t.as_bytes()), "{t:?}");
        }
    }
}
