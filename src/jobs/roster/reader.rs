//! Bytes to rows: bounded line reading, encodings, binary sniffing, format detection,
//! and the two layouts (the seed's whitespace layout and CSV/TSV with a header).
//!
//! Encoding is decided **per line**: a line that is valid UTF-8 is UTF-8, any other line
//! is Windows-1252 (a superset of Latin-1 for printable text). That needs no look-ahead,
//! keeps memory flat, and copes with files pasted together from two sources. The price:
//! a Windows-1252 line that happens to be valid UTF-8 (only possible with sequences like
//! "Ã±", which do not occur in real names) would be read as UTF-8.

use std::io::{self, BufRead};
use std::ops::Range;

use super::rules::{is_particle, longest_no_email_marker, may_start_no_email_marker};

/// Windows-1252 to `out` (replacing what it held). Every byte has a character (the five
/// undefined ones map to the C1 controls, as in the WHATWG Encoding Standard), so nothing is
/// ever replaced.
pub(crate) fn decode_cp1252(bytes: &[u8], out: &mut String) {
    out.clear();
    let mut decoder = encoding_rs::WINDOWS_1252.new_decoder_without_bom_handling();
    // At most three UTF-8 bytes per input byte: `None` only past `usize::MAX`.
    out.reserve(
        decoder
            .max_utf8_buffer_length(bytes.len())
            .unwrap_or(usize::MAX),
    );
    let (result, read, _) = decoder.decode_to_string(bytes, out, true);
    debug_assert!(matches!(result, encoding_rs::CoderResult::InputEmpty) && read == bytes.len());
}

/// What a reader found first that means "this is not a roster".
pub(crate) fn sniff_binary(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(b"PK\x03\x04") {
        return Some("a ZIP archive (an .xlsx/.ods spreadsheet?); save it as CSV");
    }
    if head.starts_with(&[0xD0, 0xCF, 0x11, 0xE0]) {
        return Some("an old Excel/Office file (.xls); save it as CSV");
    }
    if head.starts_with(b"%PDF") {
        return Some("a PDF document");
    }
    if head.starts_with(&[0xFF, 0xFE]) || head.starts_with(&[0xFE, 0xFF]) {
        return Some("UTF-16 text; save it as UTF-8 or Windows-1252");
    }
    let sample = &head[..head.len().min(8192)];
    if memchr::memchr(0, sample).is_some() {
        return Some("binary data (it contains NUL bytes)");
    }
    let controls = sample
        .iter()
        .filter(|&&b| (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0C)) || b == 0x7F)
        .count();
    if controls * 20 > sample.len() {
        return Some("binary data (too many control bytes)");
    }
    None
}

pub(crate) enum Line<'a> {
    Text {
        text: &'a str,
        cp1252: bool,
    },
    /// Longer than the cap; the rest of it was skipped.
    TooLong,
    /// Contains NUL or other control bytes a text roster never has.
    Garbage,
}

/// How much a refill takes from the input at most: below 4 KiB, where memcpy turns to
/// `rep movsb` (which callgrind counts byte by byte, hiding the real costs). Lines
/// straddling two refills take the slower path, one every few dozen.
const READ_CHUNK: usize = 4000;

/// Reads lines of at most `max` bytes into a buffer of its own, reused: memory stays flat
/// whatever the file holds. Owning the buffer lets one pass over a line both find its end
/// and check it as text, and the line then be returned in place.
pub(crate) struct LineReader<R> {
    inner: R,
    max: usize,
    /// Bytes taken from `inner`; `buf[pos..]` are not returned yet.
    buf: Vec<u8>,
    pos: usize,
    decoded: String,
    pub(crate) bytes_read: u64,
    pub(crate) line_no: u64,
    /// The last line ended with a CR as the last byte of `buf`.
    after_cr: bool,
}

/// Where a line not found by the fast path ends.
enum End {
    /// Its terminator is at this offset from its start.
    At(usize),
    /// The input ends after this many bytes of it.
    Eof(usize),
    /// It was longer than the cap, and was skipped.
    TooLong,
}

impl<R: BufRead> LineReader<R> {
    pub(crate) fn new(inner: R, max: usize) -> Self {
        Self {
            inner,
            max,
            buf: Vec::new(),
            pos: 0,
            decoded: String::with_capacity(256),
            bytes_read: 0,
            line_no: 0,
            after_cr: false,
        }
    }

    /// The input's next bytes: before the first line, exactly what the inner reader's
    /// `fill_buf` gives (binary sniffing looks at that).
    pub(crate) fn peek(&mut self) -> io::Result<&[u8]> {
        if self.pos < self.buf.len() {
            return Ok(&self.buf[self.pos..]);
        }
        self.inner.fill_buf()
    }

    /// Next line (1-based number, text without terminator), `None` at end of input.
    /// Lines end with LF, CRLF, or a lone CR (old Mac spreadsheets' "CSV (Macintosh)").
    /// The line is returned in place, from the reader's buffer.
    pub(crate) fn next_line(&mut self) -> io::Result<Option<(u64, Line<'_>)>> {
        if std::mem::take(&mut self.after_cr) {
            // The LF of a CRLF split across two reads.
            if self.pos == self.buf.len() {
                self.refill()?;
            }
            if self.buf.get(self.pos) == Some(&b'\n') {
                self.pos += 1;
                self.bytes_read += 1;
            }
        }
        // Fast path: a plain line (see `plain_latin_prefix`) whole in the buffer, its end
        // found by the same pass that checks it.
        let limit = self.max.saturating_add(1);
        let avail = &self.buf[self.pos..];
        let plain = plain_latin_prefix(&avail[..avail.len().min(limit)]);
        let (len, is_plain) = if plain < limit && matches!(avail.get(plain), Some(b'\n' | b'\r')) {
            (plain, true)
        } else {
            match self.find_end(plain)? {
                End::At(len) => (len, false),
                End::Eof(0) => return Ok(None),
                End::Eof(len) => (len, false),
                End::TooLong => {
                    self.line_no += 1;
                    return Ok(Some((self.line_no, Line::TooLong)));
                }
            }
        };
        let start = self.pos;
        let used = match self.buf.get(start + len) {
            Some(_) => len + self.terminator_len(start + len),
            None => len,
        };
        self.pos += used;
        self.bytes_read += used as u64;
        self.line_no += 1;
        let bytes = &self.buf[start..start + len];
        let line = if is_plain {
            // SAFETY: `plain_latin_prefix` found these bytes, in the buffer this reader
            // owns and has not changed since, to be valid UTF-8.
            let text = unsafe { std::str::from_utf8_unchecked(bytes) };
            Line::Text {
                text: super::rules::trim_end(text),
                cp1252: false,
            }
        } else {
            classify(bytes, self.line_no, &mut self.decoded)
        };
        Ok(Some((self.line_no, line)))
    }

    /// Finds the end of the line at `pos`, reading on as needed; its first `from` bytes
    /// are known to hold no CR or LF.
    fn find_end(&mut self, mut from: usize) -> io::Result<End> {
        let limit = self.max.saturating_add(1);
        loop {
            let avail = &self.buf[self.pos..];
            let scan = &avail[..avail.len().min(limit)];
            let rest = scan.get(from..).unwrap_or_default();
            if let Some(i) = memchr::memchr2(b'\n', b'\r', rest) {
                return Ok(End::At(from + i));
            }
            if avail.len() >= limit {
                self.skip_line()?;
                return Ok(End::TooLong);
            }
            from = avail.len();
            if !self.refill()? {
                return Ok(End::Eof(self.buf.len() - self.pos));
            }
        }
    }

    /// Skips the line at `pos` and its terminator.
    fn skip_line(&mut self) -> io::Result<()> {
        loop {
            let avail = &self.buf[self.pos..];
            if let Some(i) = memchr::memchr2(b'\n', b'\r', avail) {
                let used = i + self.terminator_len(self.pos + i);
                self.pos += used;
                self.bytes_read += used as u64;
                return Ok(());
            }
            self.bytes_read += avail.len() as u64;
            self.pos = self.buf.len();
            if !self.refill()? {
                return Ok(());
            }
        }
    }

    /// Length of the terminator at `buf[at]` (a CR or LF): 2 for CRLF. A CR that is the
    /// last byte of the buffer may be followed by an LF in the next read: noted in
    /// `after_cr`.
    fn terminator_len(&mut self, at: usize) -> usize {
        if self.buf[at] == b'\n' {
            return 1;
        }
        match self.buf.get(at + 1) {
            Some(&b'\n') => 2,
            Some(_) => 1,
            None => {
                self.after_cr = true;
                1
            }
        }
    }

    /// Drops the bytes already returned and appends what the input has next; false at
    /// its end.
    fn refill(&mut self) -> io::Result<bool> {
        self.buf.drain(..self.pos);
        self.pos = 0;
        let more = fill(&mut self.inner)?;
        let n = more.len().min(READ_CHUNK);
        if n == 0 {
            return Ok(false);
        }
        self.buf.extend_from_slice(&more[..n]);
        self.inner.consume(n);
        Ok(true)
    }
}

/// `fill_buf`, retrying on `Interrupted`.
fn fill<R: BufRead>(inner: &mut R) -> io::Result<&[u8]> {
    loop {
        match inner.fill_buf() {
            // Re-borrow so the loop does not hold the borrow (NLL limitation).
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    inner.fill_buf()
}

/// One line's bytes (without terminator) to text, or why it is not text.
fn classify<'a>(mut bytes: &'a [u8], line_no: u64, decoded: &'a mut String) -> Line<'a> {
    if line_no == 1 {
        bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    }
    // Fast path: one pass for the usual line (no control bytes at all, ASCII and two-byte
    // UTF-8 only).
    if let Some(text) = plain_latin_text(bytes) {
        return Line::Text {
            text: super::rules::trim_end(text),
            cp1252: false,
        };
    }
    // Branch-free fold so it vectorises.
    let garbage = bytes.iter().fold(false, |acc, &b| {
        acc | ((b < 0x20) & (b != b'\t') & (b != 0x0C)) | (b == 0x7F)
    });
    if garbage {
        return Line::Garbage;
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Line::Text {
            text: super::rules::trim_end(text),
            cp1252: false,
        },
        Err(_) => {
            decode_cp1252(bytes, decoded);
            Line::Text {
                text: super::rules::trim_end(decoded),
                cp1252: true,
            }
        }
    }
}

/// `bytes` as text when they hold no control byte (below 0x20, or 0x7F) and only ASCII and
/// two-byte UTF-8 sequences (Latin-1 and the other Latin and Greek/Cyrillic letters: what
/// names are made of), checked in one cheap pass; `None` means "take the general path",
/// not "invalid".
fn plain_latin_text(bytes: &[u8]) -> Option<&str> {
    let plain = plain_latin_prefix(bytes) == bytes.len();
    // SAFETY: `plain_latin_prefix` found all of `bytes` valid UTF-8.
    plain.then(|| unsafe { std::str::from_utf8_unchecked(bytes) })
}

/// How many bytes `bytes` starts with that are plain text (see [`plain_latin_text`]): it
/// stops at the first control byte (a line's end, when that is a CR or LF) or byte of
/// another kind. Those bytes are valid UTF-8.
fn plain_latin_prefix(bytes: &[u8]) -> usize {
    use super::swar::{HIGHS, has_below, has_byte};
    let mut i = 0;
    while i < bytes.len() {
        if let Some(w) = bytes.get(i..i + 8) {
            let mut eight = [0u8; 8];
            eight.copy_from_slice(w);
            let w = u64::from_le_bytes(eight);
            // All ASCII, none below 0x20, none equal to 0x7F.
            let special = (w & HIGHS) | has_below(w, 0x20) | has_byte(w, 0x7F);
            if special == 0 {
                i += 8;
                continue;
            }
            // The lowest flagged byte is exact (false alarms only come above a true one):
            // the bytes below it are plain ASCII, skip them.
            i += (special.trailing_zeros() / 8) as usize;
        }
        let c = bytes[i];
        if c < 0x80 {
            if c < 0x20 || c == 0x7F {
                return i;
            }
            i += 1;
        } else if (0xC2..=0xDF).contains(&c) && bytes.get(i + 1).is_some_and(|&n| n & 0xC0 == 0x80)
        {
            i += 2;
        } else {
            return i;
        }
    }
    // Every byte is ASCII or belongs to a pair of a lead byte 0xC2..=0xDF and a
    // continuation byte 0x80..=0xBF. Such pairs are always well-formed UTF-8 (0xC0/0xC1
    // would be overlong; two-byte forms cannot encode surrogates).
    i
}

/// A column of a CSV/TSV header the converter uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Firstname,
    Lastname,
    /// A separate second-surname column ("apellido2", "segundo apellido").
    Lastname2,
    /// Whole name in one column: "García López, María José" or "María José García López".
    Fullname,
    Email,
    Department,
}

fn field_for_header(cell: &str) -> Option<Field> {
    let mut key = String::with_capacity(cell.len());
    super::rules::push_ascii_word(cell, &mut key);
    Some(match key.as_str() {
        "firstname" | "firstnames" | "forename" | "forenames" | "givenname" | "givennames"
        | "nombre" | "nombres" | "primernombre" | "first" | "prenom" | "vorname" => {
            Field::Firstname
        }
        "lastname" | "lastnames" | "surname" | "surnames" | "familyname" | "apellido"
        | "apellidos" | "apellido1" | "primerapellido" | "firstsurname" | "last" | "nom"
        | "nachname" => Field::Lastname,
        "apellido2" | "segundoapellido" | "secondsurname" | "lastname2" => Field::Lastname2,
        "fullname" | "name" | "nombrecompleto" | "nombreyapellido" | "nombreyapellidos"
        | "apellidosynombre" | "apellidosynombres" | "apellidoynombre" | "alumno" | "student" => {
            Field::Fullname
        }
        "email" | "emails" | "mail" | "correo" | "correoelectronico" | "emailaddress"
        | "direcciondecorreo" | "direccionemail" | "courriel" => Field::Email,
        "department" | "departamento" | "dept" | "depto" | "dpto" | "area" | "sector"
        | "seccion" | "division" => Field::Department,
        _ => return None,
    })
}

/// How a delimited file's columns map to fields.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub(crate) delimiter: u8,
    pub(crate) columns: Vec<Option<Field>>,
    /// Columns present but not used (unknown or repeated), for the report.
    pub(crate) ignored: Vec<String>,
}

impl Header {
    pub(crate) fn index(&self, f: Field) -> Option<usize> {
        self.columns.iter().position(|c| *c == Some(f))
    }

    /// A header is usable when it names the person: forename + surname, or a full name.
    fn is_usable(&self) -> bool {
        (self.index(Field::Firstname).is_some() && self.index(Field::Lastname).is_some())
            || self.index(Field::Fullname).is_some()
    }
}

/// Reads `line` as a header with `delimiter`; `None` unless it names the person.
pub(crate) fn parse_header(line: &str, delimiter: u8, cells: &mut Cells) -> Option<Header> {
    if cells.split(line, delimiter).is_err() {
        return None;
    }
    let mut columns = Vec::with_capacity(cells.len());
    let mut ignored = Vec::new();
    for i in 0..cells.len() {
        let cell = cells.get(i);
        let f = field_for_header(cell);
        match f {
            Some(f) if !columns.contains(&Some(f)) => columns.push(Some(f)),
            _ => {
                if !cell.is_empty() {
                    ignored.push(cell.chars().take(60).collect());
                }
                columns.push(None);
            }
        }
    }
    let h = Header {
        delimiter,
        columns,
        ignored,
    };
    h.is_usable().then_some(h)
}

/// Fields of one delimited record, unescaped into one reused buffer.
#[derive(Default)]
pub(crate) struct Cells {
    buf: String,
    ranges: Vec<Range<usize>>,
}

/// A quoted field is still open at the end of the text: the record continues on the next
/// line.
#[derive(Debug)]
pub(crate) struct Unclosed;

impl Cells {
    pub(crate) fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Field `i`, trimmed (Moodle trims every value too); "" when absent.
    pub(crate) fn get(&self, i: usize) -> &str {
        self.ranges
            .get(i)
            .map_or("", |r| super::rules::trim(&self.buf[r.clone()]))
    }

    /// Splits an RFC 4180 record (quotes doubled inside quoted fields). Lenient: a quote in
    /// the middle of an unquoted field is kept as text.
    pub(crate) fn split(&mut self, text: &str, delimiter: u8) -> Result<(), Unclosed> {
        self.buf.clear();
        self.ranges.clear();
        let bytes = text.as_bytes();
        if !bytes.contains(&b'"') {
            // Fast path: no quoting, fields are plain slices.
            self.buf.push_str(text);
            let mut start = 0;
            for i in memchr::memchr_iter(delimiter, bytes) {
                self.ranges.push(start..i);
                start = i + 1;
            }
            self.ranges.push(start..bytes.len());
            return Ok(());
        }
        let mut i = 0;
        loop {
            // Skip spaces before an opening quote: `a, "b, c"` is common in hand edits.
            let mut j = i;
            while j < bytes.len() && bytes[j] == b' ' {
                j += 1;
            }
            let start = self.buf.len();
            if j < bytes.len() && bytes[j] == b'"' {
                let mut k = j + 1;
                loop {
                    let Some(q) = memchr::memchr(b'"', &bytes[k..]) else {
                        return Err(Unclosed);
                    };
                    self.buf.push_str(&text[k..k + q]);
                    k += q + 1;
                    if bytes.get(k) == Some(&b'"') {
                        self.buf.push('"');
                        k += 1;
                    } else {
                        break;
                    }
                }
                // Anything between the closing quote and the delimiter is kept as text.
                let end = memchr::memchr(delimiter, &bytes[k..]).map_or(bytes.len(), |e| k + e);
                self.buf.push_str(&text[k..end]);
                self.ranges.push(start..self.buf.len());
                if end == bytes.len() {
                    return Ok(());
                }
                i = end + 1;
            } else {
                let end = memchr::memchr(delimiter, &bytes[i..]).map_or(bytes.len(), |e| i + e);
                self.buf.push_str(&text[i..end]);
                self.ranges.push(start..self.buf.len());
                if end == bytes.len() {
                    return Ok(());
                }
                i = end + 1;
            }
        }
    }
}

/// Where the address sits in a seed-layout line.
pub(crate) enum SeedEmail<'a> {
    /// A token with an `@` (valid or not).
    Given(&'a str),
    /// "No tiene" and friends, or the blog engine's "[email protected]".
    Missing,
    /// Neither an address nor a marker: the whole line is the name.
    Absent,
}

pub(crate) struct SeedRow<'a> {
    pub(crate) email: SeedEmail<'a>,
    pub(crate) department: &'a str,
    /// The line's only whitespace is single ASCII spaces between words, so the department
    /// (from a word's start to the end of the trimmed line) needs no collapsing.
    pub(crate) single_spaced: bool,
}

/// Splits a seed-layout line `N Forename Surname [email] Department…` into name words
/// (appended to `name_words` as byte ranges of `line`), email slot and department.
pub(crate) fn split_seed<'a>(line: &'a str, words: &mut Vec<Range<usize>>) -> SeedRow<'a> {
    words.clear();
    let base = line.as_ptr() as usize;
    let mut first = true;
    // The leading row number ("4", "4.", "4)") is not part of the name: the first word is
    // dropped as it is found, if it is one.
    #[inline(always)]
    fn push(words: &mut Vec<Range<usize>>, first: &mut bool, line: &str, r: Range<usize>) {
        if !(std::mem::take(first) && is_row_number(&line[r.clone()])) {
            words.push(r);
        }
    }
    // Fast path: when the only whitespace is the ASCII space (no tab, NBSP or other
    // Unicode space lead byte), split at the spaces found eight bytes at a time.
    let spaces = split_at_spaces(line.as_bytes(), &mut |r| push(words, &mut first, line, r));
    let single_spaced = spaces == Spaces::Single;
    if spaces == Spaces::Other {
        words.clear();
        first = true;
        for w in super::rules::words(line) {
            let s = w.as_ptr() as usize - base;
            push(words, &mut first, line, s..s + w.len());
        }
    }
    let n = words.len();
    let mut slot: Option<(usize, usize, SeedEmail<'a>)> = None;
    // The first `@` after the first word: the first word whose end is past it holds it
    // (`@` is never whitespace), and no word before that one has an `@`.
    let first_at = words
        .get(1)
        .and_then(|r| memchr::memchr(b'@', &line.as_bytes()[r.start..]).map(|p| r.start + p));
    let b = line.as_bytes();
    for i in 1..n {
        let r = words[i].clone();
        if first_at.is_some_and(|p| p < r.end) {
            slot = Some((i, i + 1, SeedEmail::Given(&line[r])));
            break;
        }
        if b[r.start] == b'['
            && b[r].eq_ignore_ascii_case(b"[email")
            && i + 1 < n
            && b[words[i + 1].clone()].eq_ignore_ascii_case(b"protected]")
        {
            slot = Some((i, i + 2, SeedEmail::Missing));
            break;
        }
    }
    if slot.is_none() {
        // A marker needs at least a forename and a surname before it.
        for i in 2..n {
            // Every marker starts with one of these: skip the rest cheaply.
            let lead = b[words[i].start].to_ascii_lowercase();
            if !matches!(lead, b'n' | b's' | b'-' | b'?')
                || !may_start_no_email_marker(&line[words[i].clone()])
            {
                continue;
            }
            if let Some(k) = longest_no_email_marker(line, &words[i..n.min(i + 3)]) {
                slot = Some((i, i + k, SeedEmail::Missing));
                break;
            }
        }
    }
    match slot {
        Some((from, to, email)) => {
            let department = if to < n { &line[words[to].start..] } else { "" };
            words.truncate(from);
            SeedRow {
                email,
                department,
                single_spaced,
            }
        }
        None => SeedRow {
            email: SeedEmail::Absent,
            department: "",
            single_spaced,
        },
    }
}

/// What [`split_at_spaces`] found.
#[derive(PartialEq, Eq)]
enum Spaces {
    /// Words separated by single spaces, none before the first.
    Single,
    /// Runs of spaces somewhere (or one before the first word).
    Runs,
    /// Maybe other whitespace: split another way.
    Other,
}

/// Calls `word` with the range of each run of bytes between ASCII spaces, in order, while
/// checking [`may_have_other_space`] on the way (when it may, the calls are to be
/// discarded).
fn split_at_spaces(b: &[u8], word: &mut impl FnMut(Range<usize>)) -> Spaces {
    use super::swar::{ONES, bytes_equal};
    let mut start = 0;
    let mut other = 0;
    let mut runs = false;
    let mut at = 0;
    let mut chunk = |x: u64, at: usize, start: &mut usize| {
        other |= other_space_word(x);
        // One bit (bit 7 of the byte) per space, lowest byte first.
        let mut m = bytes_equal(x, b' ');
        while m != 0 {
            let p = at + (m.trailing_zeros() / 8) as usize;
            if p > *start {
                word(*start..p);
            } else {
                runs = true;
            }
            *start = p + 1;
            m &= m - 1;
        }
    };
    while let Some(c) = b.get(at..at + 8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        chunk(u64::from_le_bytes(w), at, &mut start);
        at += 8;
    }
    let rest = b.len() - at;
    if rest > 0 {
        // The last bytes, padded with 'a' (neither a space nor other whitespace).
        let pad = (ONES * u64::from(b'a')) << (8 * rest);
        let x = match b.last_chunk::<8>() {
            Some(last) => u64::from_le_bytes(*last) >> (8 * (8 - rest)),
            None => b[at..]
                .iter()
                .enumerate()
                .fold(0, |w, (j, &c)| w | u64::from(c) << (8 * j)),
        };
        chunk(x | pad, at, &mut start);
    }
    if b.len() > start {
        word(start..b.len());
    }
    match (other, runs) {
        (0, false) => Spaces::Single,
        (0, true) => Spaces::Runs,
        _ => Spaces::Other,
    }
}

/// Non-zero when `x` has a byte below 0x20 or a lead byte 0xC2, 0xE2 or 0xE3 (see
/// [`may_have_other_space`]).
fn other_space_word(x: u64) -> u64 {
    use super::swar::{ONES, has_below, has_byte, has_zero};
    has_below(x, 0x20) | has_byte(x, 0xC2) | has_zero((x & (ONES * 0xFE)) ^ (ONES * 0xE2))
}

/// False only when `b` has no byte below 0x20 and no lead byte 0xC2, 0xE2 or 0xE3: then
/// the ASCII space is its only whitespace (see `rules::words`). True may be a false alarm
/// (any control byte counts), which only costs the slower exact split.
pub(crate) fn may_have_other_space(b: &[u8]) -> bool {
    super::swar::any(b, other_space_word)
}

fn is_row_number(w: &str) -> bool {
    let digits = w.trim_end_matches(['.', ')', '-', ':']);
    !digits.is_empty() && digits.len() <= 9 && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Splits whitespace name words into forename and surname words, returning how many
/// words belong to the forename. Particles ("de", "del", "la", …) are glued to the word
/// that follows, and the resulting units split as: 2 → 1+1, 3 → 1+2 (one forename, two
/// surnames, the Spanish default), 4 or more → all but the last two are the forename.
/// `None` when there is no surname.
/// `n` words; `particle(i)`: whether word `i` is one.
pub(crate) fn split_name(n: usize, particle: impl Fn(usize) -> bool) -> Option<usize> {
    // unit_starts[k] = index of the first word of unit k.
    let mut unit_starts = [0usize; 16];
    let mut units = 0;
    let mut pending = false;
    for i in 0..n {
        if !pending {
            if units == unit_starts.len() {
                return None;
            }
            unit_starts[units] = i;
            units += 1;
        }
        // A particle opens a unit that the next word closes ("de la Fuente").
        pending = i + 1 < n && particle(i);
    }
    match units {
        0 | 1 => None,
        2 | 3 => Some(unit_starts[1]),
        n => Some(unit_starts[n - 2]),
    }
}

/// Splits a full-name cell: "García López, María José" (surnames first, comma) or
/// "María José García López" (the whitespace rule of [`split_name`]).
pub(crate) fn split_fullname(cell: &str) -> Option<(&str, &str)> {
    if let Some((last, first)) = cell.split_once(',') {
        let (first, last) = (first.trim(), last.trim());
        return (!first.is_empty() && !last.is_empty()).then_some((first, last));
    }
    let mut words = [""; 16];
    let mut n = 0;
    for w in super::rules::words(cell) {
        if n == words.len() {
            return None;
        }
        words[n] = w;
        n += 1;
    }
    let k = split_name(n, |i| is_particle(words[i]))?;
    let base = cell.as_ptr() as usize;
    let first_end = words[k - 1].as_ptr() as usize - base + words[k - 1].len();
    let last_start = words[k].as_ptr() as usize - base;
    Some((cell[..first_end].trim(), &cell[last_start..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_split_rule() {
        let s = |t: &str| {
            let w: Vec<&str> = t.split_whitespace().collect();
            split_name(w.len(), |i| is_particle(w[i])).map(|k| (w[..k].join(" "), w[k..].join(" ")))
        };
        assert_eq!(s("Pedro Pedroso"), Some(("Pedro".into(), "Pedroso".into())));
        assert_eq!(
            s("Juan Pérez García"),
            Some(("Juan".into(), "Pérez García".into()))
        );
        assert_eq!(
            s("María José García López"),
            Some(("María José".into(), "García López".into()))
        );
        assert_eq!(
            s("Juan de la Fuente"),
            Some(("Juan".into(), "de la Fuente".into()))
        );
        assert_eq!(s("Cher"), None);
    }

    #[test]
    fn csv_quoting() {
        let mut c = Cells::default();
        c.split(r#"Ana,"Ruiz, ""la jefa""",x"#, b',').unwrap();
        assert_eq!(c.get(1), r#"Ruiz, "la jefa""#);
        assert_eq!(c.get(2), "x");
        assert!(c.split(r#"Ana,"open"#, b',').is_err());
    }

    #[test]
    fn split_at_spaces_agrees_with_split() {
        let samples = [
            "",
            " ",
            "a",
            "12 Juan Pérez",
            "  two  leading and  double",
            "exactly8 exactly8",
            "1234567 12345678 123456789 x",
            "ñandú ñu 12345678901234567890",
            "tab\there",
            "nbsp\u{a0}here and more text after it",
            "abcdefghijklmnop\u{3000}",
        ];
        for t in samples {
            let mut got = Vec::new();
            let spaces = split_at_spaces(t.as_bytes(), &mut |r| got.push(&t[r]));
            let want: Vec<&str> = t.split(' ').filter(|w| !w.is_empty()).collect();
            assert_eq!(got, want, "{t:?}");
            let expected = if may_have_other_space(t.as_bytes()) {
                Spaces::Other
            } else if t.starts_with(' ') || t.contains("  ") {
                Spaces::Runs
            } else {
                Spaces::Single
            };
            assert!(spaces == expected, "{t:?}");
        }
    }

    #[test]
    fn other_space_check() {
        for t in ["Juan Pérez", "", "abcdefghijklmnopq", "ünicode ñ ç ÿ"] {
            assert!(!may_have_other_space(t.as_bytes()), "{t:?}");
        }
        for t in [
            "Juan\tPérez",
            "12345678901234\u{a0}x",
            "a\u{2003}",
            "\u{3000}",
            "abcdefgh\u{c}",
            "x\u{1}",
        ] {
            assert!(may_have_other_space(t.as_bytes()), "{t:?}");
        }
    }

    #[test]
    fn latin_fast_path_agrees_with_std() {
        let samples: &[&[u8]] = &[
            b"",
            b"Juan P\xC3\xA9rez Garc\xC3\xADa u1@x.com",
            b"abcdefghijklmnop\xC3",
            b"\xC3\xA9\xC3",
            b"\xC0\x80",
            b"\xC1\xBF",
            b"\xC2\x80\xDF\xBF",
            b"\xE2\x80\x83 x",
            b"\xF1oz",
            b"Mu\xF1oz",
            b"\xC3\xC3",
            b"\xC3A",
            b"abcdefgh\tijklmnop",
            b"abcdefgh\x7fijklmnop",
            b"abcdefghijklmno\x01",
            b"a\x1f",
            b"~~~~~~~~ ~~~~~~~",
        ];
        for s in samples {
            let std = std::str::from_utf8(s).ok();
            let controls = s.iter().any(|&b| b < 0x20 || b == 0x7F);
            match plain_latin_text(s) {
                Some(t) => assert!(Some(t) == std && !controls, "{s:?}"),
                None => assert!(
                    std.is_none() || controls || s.iter().any(|&b| b >= 0xE0),
                    "{s:?}"
                ),
            }
        }
    }

    /// Lines as an independent split gives them: (text or "TOO LONG"/"GARBAGE", cp1252).
    fn lines_by_split(input: &[u8], max: usize) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        let mut rest = input;
        let mut decoded = String::new();
        while !rest.is_empty() {
            let end = rest.iter().position(|&b| b == b'\n' || b == b'\r');
            let (line, next) = match end {
                Some(i) if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') => {
                    (&rest[..i], i + 2)
                }
                Some(i) => (&rest[..i], i + 1),
                None => (rest, rest.len()),
            };
            let no = out.len() as u64 + 1;
            out.push(if line.len() > max {
                ("TOO LONG".to_owned(), false)
            } else {
                match classify(line, no, &mut decoded) {
                    Line::Text { text, cp1252 } => (text.to_owned(), cp1252),
                    Line::TooLong => unreachable!(),
                    Line::Garbage => ("GARBAGE".to_owned(), false),
                }
            });
            rest = &rest[next..];
        }
        out
    }

    #[test]
    fn lines_agree_across_refills() {
        let long = "x".repeat(300);
        let inputs: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"a".to_vec(),
            b"\n\n\r\n\r\r".to_vec(),
            b"\xEF\xBB\xBF1 Juan P\xC3\xA9rez u1@x.com Ventas\r\n2 Ana Ruiz No tiene I+D\r\n"
                .to_vec(),
            b"uno\rdos\r\ntres\ncuatro\r".to_vec(),
            b"Mu\xF1oz\nN\xC3\xBA\xC3\xB1ez \nx\x01y\n\xC3\n\xE2\x80\x83z   \n".to_vec(),
            format!("a\n{long}\nb\r\n{long}\r{long}").into_bytes(),
            format!("{}\n{}\r\nfin", "é".repeat(140), "é".repeat(120)).into_bytes(),
        ];
        for input in &inputs {
            for max in [256, 299, 300, 1000] {
                let want = lines_by_split(input, max);
                for cap in [1, 2, 3, 5, 7, 8, 9, 16, 64, 8192] {
                    let mut r = LineReader::new(io::BufReader::with_capacity(cap, &input[..]), max);
                    assert_eq!(r.peek().unwrap(), &input[..cap.min(input.len())]);
                    let mut got = Vec::new();
                    while let Some((no, line)) = r.next_line().unwrap() {
                        assert_eq!(no, got.len() as u64 + 1);
                        got.push(match line {
                            Line::Text { text, cp1252 } => (text.to_owned(), cp1252),
                            Line::TooLong => ("TOO LONG".to_owned(), false),
                            Line::Garbage => ("GARBAGE".to_owned(), false),
                        });
                    }
                    assert_eq!(got, want, "{input:?} max {max} cap {cap}");
                    assert_eq!(r.bytes_read, input.len() as u64);
                }
            }
        }
    }

    #[test]
    fn cp1252() {
        let mut s = String::new();
        decode_cp1252(b"Mu\xF1oz \x80", &mut s);
        assert_eq!(s, "Muñoz €");
        // Every byte, the five undefined ones (C1 controls) included; and `s` is replaced.
        let all: Vec<u8> = (0x20..=0xFF).collect();
        decode_cp1252(&all, &mut s);
        let high = "€\u{81}‚ƒ„…†‡ˆ‰Š‹Œ\u{8D}Ž\u{8F}\u{90}‘’“”•–—˜™š›œ\u{9D}žŸ";
        let want: String = (0x20..0x80u8)
            .map(char::from)
            .chain(high.chars())
            .chain((0xA0..=0xFFu8).map(char::from))
            .collect();
        assert_eq!(s, want);
    }
}
