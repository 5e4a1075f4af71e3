//! Rows: from a parsed line to a Moodle user, applying the rules of issue 5.

use std::io::{self, Write};

use super::ConvertOptions;
use super::reader::{self, Cells, Field, Header, SeedEmail};
use super::report::{EmailProblem, GeneratedEmail, Rejected, Renamed, Report, Warning};
use super::rules::{self, Hint, MAX_DEPARTMENT_CHARS, MAX_NAME_CHARS, Registry, Username};
use super::writer::{MoodleCsv, Row};

/// Where the address of a row comes from.
enum EmailIn<'a> {
    Given(&'a str),
    Missing,
}

/// One accepted row between the two phases (see [`Converter`]).
#[derive(Default)]
struct Staged {
    line: u64,
    first: String,
    last: String,
    department: String,
    /// Username before uniqueness (`jperez`).
    base: String,
    /// The given address, lower-cased and valid, when `problem` is `None`.
    email: String,
    /// Local part for a generated address, when `problem` is `Some`.
    local: String,
    problem: Option<EmailProblem>,
    /// Seed line without email slot: warn that the whole line was taken as the name.
    guessed_split: bool,
    /// Hashes phase A computed for phase B's username and address look-ups.
    user_hint: Hint,
    email_hint: Option<Hint>,
}

/// Per-conversion state. Every buffer is reused from row to row; the staged rows are boxed
/// so moving them along swaps pointers, not their buffers.
///
/// Rows go through three steps, one row apart: phase A parses row N and checks everything
/// that can reject it, hashes the names it will claim and asks the CPU to prefetch their
/// registry slots; after phase A of row N + 1, the middle step reads row N's counters
/// (now cached) and prefetches the slot of the renamed name it will most likely get;
/// phase B, run after phase A of row N + 2, claims the username and address of row N and
/// writes it. The registries are bigger than the caches, so this hides the memory round
/// trips of each lookup behind the parsing of the next rows. Output order is input order,
/// and the report's lists keep input order too (rejections all come from phase A, the
/// other lists all from phase B).
pub(crate) struct Converter {
    cap: usize,
    at_domain: Option<String>,
    usernames: Registry,
    emails: Registry,
    pub(crate) report: Report,
    pub(crate) cells: Cells,
    words: Vec<std::ops::Range<usize>>,
    /// Phase A's row.
    cur: Box<Staged>,
    /// The row between the two phases: its counters are read and its second prefetch
    /// issued while the row before it is finished.
    mid: Box<Staged>,
    mid_ready: bool,
    /// The row waiting for phase B.
    prev: Box<Staged>,
    prev_ready: bool,
    /// Phase A accepted `cur`.
    accepted: bool,
    tmp: String,
    email_check: rules::EmailChecker,
    username: String,
    email_out: String,
}

impl Converter {
    pub(crate) fn new(options: &ConvertOptions) -> Self {
        let mut usernames = Registry::for_usernames();
        usernames.insert("guest");
        let mut lower = String::new();
        for u in &options.existing_usernames {
            lower.clear();
            lower.extend(u.trim().chars().flat_map(char::to_lowercase));
            usernames.insert(&lower);
        }
        Self {
            cap: options.max_report_entries,
            at_domain: options
                .email_domain
                .as_ref()
                .map(|d| format!("@{}", d.as_str())),
            usernames,
            emails: Registry::for_emails(),
            report: Report::new(options.format),
            cells: Cells::default(),
            words: Vec::new(),
            cur: Box::default(),
            mid: Box::default(),
            mid_ready: false,
            prev: Box::default(),
            prev_ready: false,
            accepted: false,
            tmp: String::new(),
            email_check: rules::EmailChecker::default(),
            username: String::new(),
            email_out: String::new(),
        }
    }

    pub(crate) fn reject(&mut self, line: u64, reason: String) {
        self.report.rows_in += 1;
        self.report
            .rejected
            .record(self.cap, || Rejected { line, reason });
    }

    /// After phase A of a line: stage the accepted row, move the staged ones along, and
    /// finish the oldest.
    pub(crate) fn advance<W: Write>(&mut self, csv: &mut MoodleCsv<'_, W>) -> io::Result<()> {
        if std::mem::take(&mut self.accepted) {
            self.finish_oldest(csv)?;
            if std::mem::take(&mut self.mid_ready) {
                self.look_ahead_mid();
                std::mem::swap(&mut self.mid, &mut self.prev);
                self.prev_ready = true;
            }
            std::mem::swap(&mut self.cur, &mut self.mid);
            self.mid_ready = true;
        }
        Ok(())
    }

    /// Phase B of every staged row, in order.
    pub(crate) fn finish_staged<W: Write>(&mut self, csv: &mut MoodleCsv<'_, W>) -> io::Result<()> {
        self.finish_oldest(csv)?;
        if std::mem::take(&mut self.mid_ready) {
            self.look_ahead_mid();
            std::mem::swap(&mut self.mid, &mut self.prev);
            self.prev_ready = true;
            self.finish_oldest(csv)?;
        }
        Ok(())
    }

    /// The middle row's second prefetch: reads the counters whose slots phase A started
    /// loading.
    fn look_ahead_mid(&mut self) {
        let row = &mut self.mid;
        self.usernames
            .prefetch_next(&row.base, "", &mut row.user_hint);
        if let (Some(_), Some(at_domain), Some(hint)) =
            (&row.problem, &self.at_domain, &mut row.email_hint)
            && !row.local.is_empty()
        {
            self.emails.prefetch_next(&row.local, at_domain, hint);
        }
    }

    /// Phase B of the oldest staged row, if any.
    fn finish_oldest<W: Write>(&mut self, csv: &mut MoodleCsv<'_, W>) -> io::Result<()> {
        if !std::mem::take(&mut self.prev_ready) {
            return Ok(());
        }
        let row = &mut self.prev;
        let line = row.line;
        let email_hint = row.email_hint.take();
        if row.problem.is_none()
            && !match &email_hint {
                Some(hint) => self.emails.insert_hinted(&row.email, hint),
                None => self.emails.insert(&row.email),
            }
        {
            let e = row.email.clone();
            self.report.warnings.record(self.cap, || Warning {
                line,
                message: format!(
                    "{e} is used by an earlier row too; Moodle refuses a second account with the same email unless allowaccountssameemail is on"
                ),
            });
        }
        let (name, renamed) = self
            .usernames
            .claim_hinted(&row.base, "", Some(&row.user_hint));
        self.username.clear();
        self.username.push_str(name);
        if renamed {
            let (from, to) = (&row.base, &self.username);
            self.report.renamed.record(self.cap, || Renamed {
                line,
                from: from.clone(),
                to: Username::from_generated(to),
            });
        }
        self.email_out.clear();
        match (row.problem.take(), &self.at_domain) {
            (Some(problem), Some(at_domain)) => {
                let hint = if row.local.is_empty() {
                    // The prefetch was for another name.
                    row.local.push_str(&self.username);
                    None
                } else {
                    email_hint.as_ref()
                };
                let (addr, _) = self.emails.claim_hinted(&row.local, at_domain, hint);
                self.email_out.push_str(addr);
                let (u, e) = (&self.username, &self.email_out);
                self.report
                    .generated_emails
                    .record(self.cap, || GeneratedEmail {
                        line,
                        username: Username::from_generated(u),
                        email: e.clone(),
                        problem,
                    });
            }
            // Phase A rejects rows needing an address when there is no domain.
            _ => self.email_out.push_str(&row.email),
        }
        if row.guessed_split {
            self.report.warnings.record(self.cap, || Warning {
                line,
                message:
                    "no email and no \"no tiene\" marker: the whole line was taken as the name"
                        .into(),
            });
        }
        self.report.rows_out += 1;
        csv.row(&Row {
            username: &self.username,
            firstname: &row.first,
            lastname: &row.last,
            email: &self.email_out,
            department: &row.department,
        })
    }

    pub(crate) fn seed_row(&mut self, line_no: u64, text: &str) {
        let row = reader::split_seed(text, &mut self.words);
        let mut words = [""; 16];
        if self.words.len() > words.len() {
            return self.reject(line_no, "too many words for a name".into());
        }
        let n = self.words.len();
        for (w, r) in words.iter_mut().zip(&self.words) {
            *w = &text[r.clone()];
        }
        let words = &words[..n];
        let absent = matches!(row.email, SeedEmail::Absent);
        if absent && n > 4 {
            return self.reject(
                line_no,
                "no email or \"no tiene\" marker to tell the name from the department".into(),
            );
        }
        let Some(k) = reader::split_name(words) else {
            return self.reject(
                line_no,
                "no surname (a forename and a surname are needed)".into(),
            );
        };
        let cur = &mut self.cur;
        join_words(text, &self.words[..k], &mut cur.first);
        join_words(text, &self.words[k..], &mut cur.last);
        rules::username_base_from_words(words[0], words[k..].iter().copied(), &mut cur.base);
        // A department typed as "Ventas, Norte" means the text inside the quotes.
        let dept = row.department.trim();
        let dept = dept
            .strip_prefix('"')
            .and_then(|d| d.strip_suffix('"'))
            .unwrap_or(dept);
        collapse_ws(dept, &mut cur.department);
        cur.guessed_split = absent;
        let email = match row.email {
            SeedEmail::Given(e) => EmailIn::Given(e),
            SeedEmail::Missing | SeedEmail::Absent => EmailIn::Missing,
        };
        self.person(line_no, email, true);
    }

    pub(crate) fn delimited_row(&mut self, line_no: u64, h: &Header) {
        let cells = std::mem::take(&mut self.cells);
        self.delimited_cells(line_no, h, &cells);
        self.cells = cells;
    }

    fn delimited_cells(&mut self, line_no: u64, h: &Header, cells: &Cells) {
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
        let (first, last) = (get(Field::Firstname), get(Field::Lastname));
        if first.is_empty() && last.is_empty() && h.index(Field::Fullname).is_some() {
            let full = get(Field::Fullname);
            let Some((f, l)) = reader::split_fullname(full) else {
                return self.reject(line_no, "full name has no surname".into());
            };
            collapse_ws(f, &mut self.cur.first);
            collapse_ws(l, &mut self.cur.last);
        } else {
            collapse_ws(first, &mut self.cur.first);
            collapse_ws(last, &mut self.cur.last);
        }
        let last2 = get(Field::Lastname2);
        if !last2.is_empty() {
            if !self.cur.last.is_empty() {
                self.cur.last.push(' ');
            }
            collapse_ws(last2, &mut self.tmp);
            self.cur.last.push_str(&self.tmp);
        }
        collapse_ws(get(Field::Department), &mut self.cur.department);
        self.cur.guessed_split = false;
        let e = get(Field::Email);
        let email = if e.is_empty() || rules::is_no_email_marker(e) {
            EmailIn::Missing
        } else {
            EmailIn::Given(e)
        };
        self.person(line_no, email, false);
    }

    /// Phase A's checks on the names in `self.cur`; on success marks the row accepted and
    /// prefetches what phase B will look up. `base_ready`: the seed path already built the
    /// username base from its words.
    fn person(&mut self, line: u64, email_in: EmailIn<'_>, base_ready: bool) {
        let cur = &mut self.cur;
        let reason = if cur.first.is_empty() {
            Some("no forename".to_owned())
        } else if cur.last.is_empty() {
            Some("no surname".to_owned())
        } else {
            [
                ("forename", &cur.first, MAX_NAME_CHARS),
                ("surname", &cur.last, MAX_NAME_CHARS),
                ("department", &cur.department, MAX_DEPARTMENT_CHARS),
            ]
            .into_iter()
            .find(|(_, v, max)| v.len() > *max && v.chars().count() > *max)
            .map(|(what, _, max)| format!("{what} longer than {max} characters"))
        };
        if let Some(reason) = reason {
            return self.reject(line, reason);
        }
        if !base_ready {
            rules::username_base(&cur.first, &cur.last, &mut cur.base);
        }
        if cur.base.is_empty() {
            return self.reject(
                line,
                "the name has no letters usable in a username (a-z after transliteration)".into(),
            );
        }
        cur.problem = match email_in {
            EmailIn::Given(raw) => {
                let t = trim_email_punctuation(raw);
                let t = t
                    .strip_prefix("mailto:")
                    .or_else(|| t.strip_prefix("MAILTO:"))
                    .unwrap_or(t);
                cur.email.clear();
                if t.is_ascii() {
                    cur.email.push_str(t);
                    cur.email.make_ascii_lowercase();
                } else {
                    cur.email.extend(t.chars().flat_map(char::to_lowercase));
                }
                if self.email_check.is_valid(&cur.email) {
                    None
                } else {
                    Some(EmailProblem::Invalid {
                        given: raw.chars().take(100).collect(),
                    })
                }
            }
            EmailIn::Missing => Some(EmailProblem::Missing),
        };
        // Checked here so a rejected row never uses up a username.
        if cur.problem.is_some() && self.at_domain.is_none() {
            return self.reject(
                line,
                "no valid email and no email_domain configured to generate one".into(),
            );
        }
        cur.line = line;
        cur.user_hint = self.usernames.prefetch_claim(&cur.base, "");
        cur.email_hint = match (&cur.problem, &self.at_domain) {
            (None, _) => Some(self.emails.prefetch_insert(&cur.email)),
            (Some(_), Some(at_domain)) => {
                rules::email_local_base(&cur.first, &cur.last, &mut cur.local);
                Some(self.emails.prefetch_claim(&cur.local, at_domain))
            }
            (Some(_), None) => None,
        };
        self.report.rows_in += 1;
        self.accepted = true;
    }
}

/// Joins the words of `line` at `ranges` with one space.
fn join_words(line: &str, ranges: &[std::ops::Range<usize>], out: &mut String) {
    out.clear();
    let (Some(first), Some(last)) = (ranges.first(), ranges.last()) else {
        return;
    };
    // Usually the words are already separated by single spaces: one copy.
    let b = line.as_bytes();
    if ranges
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

/// Trims and turns runs of whitespace (tabs, newlines of multi-line CSV fields) into one
/// space: Moodle shows names on one line.
fn collapse_ws(text: &str, out: &mut String) {
    out.clear();
    let t = text.trim();
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
