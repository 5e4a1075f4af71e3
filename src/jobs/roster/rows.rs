//! Phase A of a row: from a parsed line to a staged user, with every check that can
//! reject it. Runs on the parsing thread; [`Batch::finish_names`] (on phase B's thread)
//! and `assign` finish the staged rows.

use std::ops::Range;

use super::ConvertOptions;
use super::reader::{self, Cells, Field, Header, SeedEmail};
use super::report::{EmailProblem, Rejected, Report};
use super::rules::{self, MAX_DEPARTMENT_CHARS, MAX_NAME_CHARS};
use super::taken_names::{Hint, NameHash};

/// Where the address of a row comes from.
enum EmailIn<'a> {
    Given(&'a str),
    Missing,
}

/// The texts of a staged row, kept in its [`Batch`].
#[derive(Clone, Copy)]
pub(crate) enum Text {
    First,
    Last,
    Department,
    /// Username before uniqueness (`jperez`), from [`Batch::finish_names`].
    Base,
    /// The given address, lower-cased and valid, when `problem` is `None`; else the local
    /// part for a generated address, from [`Batch::finish_names`].
    Email,
}

/// One accepted row between the two phases.
pub(crate) struct Staged {
    pub(crate) line: u64,
    /// Where each [`Text`] is in the batch's text.
    texts: [Range<usize>; 5],
    pub(crate) problem: Option<EmailProblem>,
    /// Where the `@` of a valid given address is: the taken-name set's split into body and
    /// tail, found already by the check.
    pub(crate) email_at: usize,
    /// The username's first letter comes from the forename's first word only (the seed
    /// layout's rule), not from the first word that has one.
    first_word_letter: bool,
    /// Seed line without email slot: warn that the whole line was taken as the name.
    pub(crate) guessed_split: bool,
    /// The username base's hash, from [`Batch::finish_names`] (phase B completes it with
    /// its prefetches).
    pub(crate) user_hint: Hint,
    /// The given address's hash, or the generated one's (local part + `@domain`), from
    /// [`Batch::finish_names`].
    pub(crate) email_hint: Hint,
}

/// Rows handed from the parsing thread to the writing one. Phase A writes each row's
/// texts straight into `text` (one copy from the input line); both threads reuse the
/// buffers, the writer sends emptied batches back.
#[derive(Default)]
pub(crate) struct Batch {
    text: String,
    pub(crate) rows: Vec<Staged>,
    /// Input bytes and rows (accepted or not) read up to the end of this batch, for
    /// progress displays.
    pub(crate) bytes_read: u64,
    pub(crate) rows_in: u64,
}

impl Batch {
    #[inline]
    pub(crate) fn get(&self, row: &Staged, t: Text) -> &str {
        &self.text[row.texts[t as usize].clone()]
    }

    /// Builds the rows' username bases and generated addresses' local parts, and the
    /// hashes of the names phase B looks up. Runs on phase B's thread, first thing for
    /// each batch, as phase A is the busier of the two. `at_domain`: `@` and the domain
    /// for generated addresses.
    pub(crate) fn finish_names(
        &mut self,
        user_hash: NameHash,
        email_hash: NameHash,
        at_domain: Option<&str>,
        tmp: &mut String,
    ) {
        for i in 0..self.rows.len() {
            let row = &self.rows[i];
            let first = &self.text[row.texts[Text::First as usize].clone()];
            let last = &self.text[row.texts[Text::Last as usize].clone()];
            let forename = match row.first_word_letter {
                // The forename's words are joined by single spaces; names are short, so
                // a plain loop beats the setup of a memchr search.
                true => {
                    let end = first.bytes().position(|c| c == b' ');
                    end.and_then(|e| first.get(..e)).unwrap_or(first)
                }
                false => first,
            };
            tmp.clear();
            // Phase A joins the surname's words with single spaces, and none holds
            // whitespace.
            debug_assert!(rules::words(last).eq(rules::space_words(last)), "{last:?}");
            rules::username_base_from_words(forename, rules::space_words(last), tmp);
            let base_len = tmp.len();
            let user = user_hash.of(tmp);
            let (email, local_len) = match (&row.problem, at_domain) {
                (None, _) => {
                    let given = &self.text[row.texts[Text::Email as usize].clone()];
                    (email_hash.of(given), 0)
                }
                (Some(_), Some(at_domain)) => {
                    rules::email_local_base(first, last, tmp);
                    let local_len = tmp.len() - base_len;
                    tmp.push_str(at_domain);
                    (email_hash.of(&tmp[base_len..]), local_len)
                }
                // Phase A rejects rows needing an address when there is no domain.
                (Some(_), None) => (0, 0),
            };
            let start = self.text.len();
            self.text.push_str(&tmp[..base_len + local_len]);
            let base_end = start + base_len;
            let row = &mut self.rows[i];
            row.texts[Text::Base as usize] = start..base_end;
            if row.problem.is_some() {
                row.texts[Text::Email as usize] = base_end..self.text.len();
            }
            row.user_hint = Hint::new(user);
            row.email_hint = Hint::new(email);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.text.clear();
        self.rows.clear();
    }

    /// Where the text and rows end, before a row is parsed.
    fn mark(&self) -> (usize, usize) {
        (self.text.len(), self.rows.len())
    }

    /// Drops the text a row left after `mark` when it was rejected.
    fn forget_rejected(&mut self, (text, rows): (usize, usize)) {
        if self.rows.len() == rows {
            self.text.truncate(text);
        }
    }

    /// Appends what `f` writes to the text, and returns where it went.
    fn append(&mut self, f: impl FnOnce(&mut String)) -> Range<usize> {
        let start = self.text.len();
        f(&mut self.text);
        start..self.text.len()
    }
}

/// Phase A's state: its part of the report and reused buffers.
pub(crate) struct RowParser {
    cap: usize,
    /// Rows without a valid address are rejected unless there is a domain.
    has_domain: bool,
    /// Phase A's part of the report: rows read, rejections, layout and encoding figures.
    pub(crate) report: Report,
    pub(crate) cells: Cells,
    words: Vec<Range<usize>>,
    tmp: String,
    email_check: rules::EmailChecker,
}

/// The names of a row being parsed, already in the batch.
struct Names {
    first: Range<usize>,
    last: Range<usize>,
    department: Range<usize>,
    /// See [`Staged::first_word_letter`].
    first_word_letter: bool,
    guessed_split: bool,
}

impl RowParser {
    pub(crate) fn new(options: &ConvertOptions) -> Self {
        Self {
            cap: options.max_report_entries,
            has_domain: options.email_domain.is_some(),
            report: Report::new(options.format),
            cells: Cells::default(),
            words: Vec::new(),
            tmp: String::new(),
            email_check: rules::EmailChecker::default(),
        }
    }

    pub(crate) fn reject(&mut self, line: u64, reason: String) {
        self.report.rows_in += 1;
        self.report
            .rejected
            .record(self.cap, || Rejected { line, reason });
    }

    /// Phase A of a seed-layout line; an accepted row goes to `batch`.
    pub(crate) fn seed_row(&mut self, line_no: u64, text: &str, batch: &mut Batch) {
        let mark = batch.mark();
        self.seed_names(line_no, text, batch);
        batch.forget_rejected(mark);
    }

    fn seed_names(&mut self, line_no: u64, text: &str, batch: &mut Batch) {
        let row = reader::split_seed(text, &mut self.words);
        let n = self.words.len();
        if n > 16 {
            return self.reject(line_no, "too many words for a name".into());
        }
        let absent = matches!(row.email, SeedEmail::Absent);
        if absent && n > 4 {
            return self.reject(
                line_no,
                "no email or \"no tiene\" marker to tell the name from the department".into(),
            );
        }
        let particle = |i: usize| rules::is_particle(&text[self.words[i].clone()]);
        let Some(k) = reader::split_name(n, particle) else {
            return self.reject(
                line_no,
                "no surname (a forename and a surname are needed)".into(),
            );
        };
        let single = row.single_spaced;
        let first = batch.append(|out| join_words(text, &self.words[..k], single, out));
        let last = batch.append(|out| join_words(text, &self.words[k..], single, out));
        // A department typed as "Ventas, Norte" means the text inside the quotes.
        let dept = rules::trim(row.department);
        let unquoted = dept.strip_prefix('"').and_then(|d| d.strip_suffix('"'));
        let department = match unquoted {
            None if row.single_spaced => batch.append(|out| out.push_str(dept)),
            _ => batch.append(|out| collapse_ws(unquoted.unwrap_or(dept), out)),
        };
        let email = match row.email {
            SeedEmail::Given(e) => EmailIn::Given(e),
            SeedEmail::Missing | SeedEmail::Absent => EmailIn::Missing,
        };
        let names = Names {
            first,
            last,
            department,
            first_word_letter: true,
            guessed_split: absent,
        };
        self.person(line_no, names, email, batch);
    }

    /// Phase A of a CSV/TSV record already split into `self.cells`; an accepted row goes
    /// to `batch`.
    pub(crate) fn delimited_row(&mut self, line_no: u64, h: &Header, batch: &mut Batch) {
        let cells = std::mem::take(&mut self.cells);
        let mark = batch.mark();
        self.delimited_cells(line_no, h, &cells, batch);
        batch.forget_rejected(mark);
        self.cells = cells;
    }

    fn delimited_cells(&mut self, line_no: u64, h: &Header, cells: &Cells, batch: &mut Batch) {
        if cells.len() > h.columns.len() {
            return self.reject(
                line_no,
                format!(
                    "{} fields but the header has {} (an unquoted comma?)",
                    cells.len(),
                    h.columns.len()
                ),
            );
        }
        let get = |f: Field| h.index(f).map_or("", |i| cells.get(i));
        let (mut first, mut last) = (get(Field::Firstname), get(Field::Lastname));
        if first.is_empty() && last.is_empty() && h.index(Field::Fullname).is_some() {
            let full = get(Field::Fullname);
            let Some((f, l)) = reader::split_fullname(full) else {
                return self.reject(line_no, "full name has no surname".into());
            };
            (first, last) = (f, l);
        }
        let first = batch.append(|out| collapse_ws(first, out));
        let last2 = get(Field::Lastname2);
        let last = batch.append(|out| {
            let start = out.len();
            collapse_ws(last, out);
            if !last2.is_empty() {
                if out.len() > start {
                    out.push(' ');
                }
                // Trimmed and collapsed on its own, as the surname was.
                self.tmp.clear();
                collapse_ws(last2, &mut self.tmp);
                out.push_str(&self.tmp);
            }
        });
        let department = batch.append(|out| collapse_ws(get(Field::Department), out));
        let e = get(Field::Email);
        let email = if e.is_empty() || rules::is_no_email_marker(e) {
            EmailIn::Missing
        } else {
            EmailIn::Given(e)
        };
        let names = Names {
            first,
            last,
            department,
            first_word_letter: false,
            guessed_split: false,
        };
        self.person(line_no, names, email, batch);
    }

    /// Phase A's checks on a row's names; on success stages the row in `batch` with the
    /// hashes phase B will look up.
    fn person(&mut self, line: u64, names: Names, email_in: EmailIn<'_>, batch: &mut Batch) {
        let text = |r: &Range<usize>| &batch.text[r.clone()];
        let (first, last) = (text(&names.first), text(&names.last));
        let reason = if first.is_empty() {
            Some("no forename".to_owned())
        } else if last.is_empty() {
            Some("no surname".to_owned())
        } else {
            [
                ("forename", first, MAX_NAME_CHARS),
                ("surname", last, MAX_NAME_CHARS),
                ("department", text(&names.department), MAX_DEPARTMENT_CHARS),
            ]
            .into_iter()
            .find(|(_, v, max)| v.len() > *max && v.chars().count() > *max)
            .map(|(what, _, max)| format!("{what} longer than {max} characters"))
        };
        if let Some(reason) = reason {
            return self.reject(line, reason);
        }
        // Phase B builds the username (`Batch::finish_names`); whether it can is known
        // now.
        if !rules::surname_has_letters(last) {
            return self.reject(
                line,
                "the name has no letters usable in a username (a-z after transliteration)".into(),
            );
        }
        let (email, email_at, problem) = match email_in {
            EmailIn::Given(raw) => {
                let t = trim_email_punctuation(raw);
                let t = t
                    .strip_prefix("mailto:")
                    .or_else(|| t.strip_prefix("MAILTO:"))
                    .unwrap_or(t);
                let email = batch.append(|out| {
                    if t.is_ascii() {
                        let start = out.len();
                        out.push_str(t);
                        out[start..].make_ascii_lowercase();
                    } else {
                        out.extend(t.chars().flat_map(char::to_lowercase));
                    }
                });
                match self.email_check.valid_at(&batch.text[email.clone()]) {
                    Some(at) => (email, at, None),
                    None => {
                        // Phase B has no use for an invalid address.
                        batch.text.truncate(email.start);
                        let given = raw.chars().take(100).collect();
                        (email, 0, Some(EmailProblem::Invalid { given }))
                    }
                }
            }
            EmailIn::Missing => (0..0, 0, Some(EmailProblem::Missing)),
        };
        // Checked here so a rejected row never uses up a username.
        if problem.is_some() && !self.has_domain {
            return self.reject(
                line,
                "no valid email and no email_domain configured to generate one".into(),
            );
        }
        // A generated address's local part is built by phase B (`Batch::finish_names`).
        let email = if problem.is_none() { email } else { 0..0 };
        batch.rows.push(Staged {
            line,
            texts: [names.first, names.last, names.department, 0..0, email],
            problem,
            email_at,
            first_word_letter: names.first_word_letter,
            guessed_split: names.guessed_split,
            user_hint: Hint::default(),
            email_hint: Hint::default(),
        });
        self.report.rows_in += 1;
    }
}

/// Appends the words of `line` at `ranges`, joined with one space. `single_spaced`: the
/// line's words are known to be separated by single spaces (then so are these, which
/// follow each other in it).
fn join_words(
    line: &str,
    ranges: &[std::ops::Range<usize>],
    single_spaced: bool,
    out: &mut String,
) {
    let (Some(first), Some(last)) = (ranges.first(), ranges.last()) else {
        return;
    };
    // Usually the words are already separated by single spaces: one copy.
    let b = line.as_bytes();
    if single_spaced
        || ranges
            .windows(2)
            .all(|w| w[1].start == w[0].end + 1 && b[w[0].end] == b' ')
    {
        out.push_str(&line[first.start..last.end]);
        return;
    }
    for (i, r) in ranges.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&line[r.clone()]);
    }
}

/// Appends `text` trimmed, with runs of whitespace (tabs, newlines of multi-line CSV
/// fields) turned into one space: Moodle shows names on one line.
fn collapse_ws(text: &str, out: &mut String) {
    let t = rules::trim(text);
    // Usually there is nothing to collapse: no whitespace but single ASCII spaces.
    let b = t.as_bytes();
    if !reader::may_have_other_space(b) && !b.windows(2).any(|w| w == b"  ") {
        out.push_str(t);
        return;
    }
    for (i, w) in rules::words(t).enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(w);
    }
}

/// Trims `<>,;()` from both ends of a given address. Byte-wise: they are all ASCII, so the
/// cut points are character boundaries.
fn trim_email_punctuation(raw: &str) -> &str {
    let strip = |b: u8| matches!(b, b'<' | b'>' | b',' | b';' | b'(' | b')');
    let b = raw.as_bytes();
    let start = b.iter().position(|&c| !strip(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|&c| !strip(c)).map_or(start, |e| e + 1);
    raw.get(start..end.max(start)).unwrap_or_default()
}
