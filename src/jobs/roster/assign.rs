//! Phase B of a row: unique username and address, the report lists that depend on them,
//! and the CSV row. Runs on the calling thread, which owns the output.

use std::io::{self, Write};

use super::ConvertOptions;
use super::report::{Entries, GeneratedEmail, Renamed, Report, Warning};
use super::rows::{Batch, Staged, Text};
use super::rules::Username;
use super::taken_names::TakenNames;
use super::writer::{MoodleCsv, Row};

/// How many rows ahead of the one being finished the taken-name slots are prefetched: the
/// first prefetch ([`TakenNames::prefetch_claim`]) at twice this distance, the second
/// ([`TakenNames::prefetch_next`], which reads what the first loaded) at this distance. The
/// registries are bigger than the caches, so this hides the memory round trip of each
/// look-up behind the work on the rows in between.
const AHEAD: usize = 8;

/// Phase B's state: the registries, its part of the report, and the CSV writer.
pub(crate) struct Assigner<W: Write> {
    cap: usize,
    at_domain: Option<String>,
    usernames: TakenNames,
    emails: TakenNames,
    csv: MoodleCsv<W>,
    rows_out: u64,
    generated_emails: Entries<GeneratedEmail>,
    renamed: Entries<Renamed>,
    warnings: Entries<Warning>,
    email_out: String,
    tmp: String,
}

impl<W: Write> Assigner<W> {
    /// `usernames` and `emails`: the registries whose hash functions phase A uses.
    pub(crate) fn new(
        options: &ConvertOptions,
        usernames: TakenNames,
        emails: TakenNames,
        out: W,
    ) -> Self {
        Self {
            cap: options.max_report_entries,
            at_domain: options
                .email_domain
                .as_ref()
                .map(|d| format!("@{}", d.as_str())),
            usernames,
            emails,
            csv: MoodleCsv::new(out, options.initial_password.as_ref().map(|p| p.expose())),
            rows_out: 0,
            generated_emails: Entries::new(),
            renamed: Entries::new(),
            warnings: Entries::new(),
            email_out: String::new(),
            tmp: String::new(),
        }
    }

    /// Finishes every row of `batch`, in order.
    pub(crate) fn batch(&mut self, batch: &mut Batch) -> io::Result<()> {
        batch.finish_names(
            self.usernames.hasher(),
            self.emails.hasher(),
            self.at_domain.as_deref(),
            &mut self.tmp,
        );
        let n = batch.rows.len();
        // Without explicit numbered names, renaming looks nothing up: no second prefetch.
        // (Should one come in the batch, only a prefetch is lost.)
        let next = self.usernames.may_have_numbered("")
            || (self.at_domain.as_deref()).is_some_and(|d| self.emails.may_have_numbered(d));
        for i in 0..(2 * AHEAD).min(n) {
            self.prefetch(batch, i);
        }
        for i in 0..AHEAD.min(n) {
            if next {
                self.prefetch_next(batch, i);
            }
        }
        for i in 0..n {
            if i + 2 * AHEAD < n {
                self.prefetch(batch, i + 2 * AHEAD);
            }
            if next && i + AHEAD < n {
                self.prefetch_next(batch, i + AHEAD);
            }
            self.finish(batch, i)?;
        }
        Ok(())
    }

    /// First prefetch of row `i`: the slots of its names and their counters.
    fn prefetch(&self, batch: &Batch, i: usize) {
        let row = &batch.rows[i];
        self.usernames
            .prefetch_claim(batch.get(row, Text::Base), &row.user_hint);
        let email = batch.get(row, Text::Email);
        match (&row.problem, &self.at_domain) {
            (None, _) => self
                .emails
                .prefetch_insert(email, row.email_at, &row.email_hint),
            (Some(_), Some(_)) => self.emails.prefetch_claim(email, &row.email_hint),
            (Some(_), None) => {}
        }
    }

    /// Second prefetch of row `i`: reads the counters the first one loaded and starts
    /// loading the slot of the renamed name the row will most likely get.
    fn prefetch_next(&mut self, batch: &mut Batch, i: usize) {
        let row = &batch.rows[i];
        let (mut user_hint, mut email_hint) = (row.user_hint, row.email_hint);
        self.usernames
            .prefetch_next(batch.get(row, Text::Base), "", &mut user_hint);
        let local = batch.get(row, Text::Email);
        if let (Some(_), Some(at_domain)) = (&row.problem, &self.at_domain)
            && !local.is_empty()
        {
            self.emails.prefetch_next(local, at_domain, &mut email_hint);
        }
        let row = &mut batch.rows[i];
        (row.user_hint, row.email_hint) = (user_hint, email_hint);
    }

    /// Phase B of row `i`.
    fn finish(&mut self, batch: &mut Batch, i: usize) -> io::Result<()> {
        let problem = batch.rows[i].problem.take();
        let row: &Staged = &batch.rows[i];
        let (line, guessed_split) = (row.line, row.guessed_split);
        let (user_hint, email_hint, email_at) = (row.user_hint, row.email_hint, row.email_at);
        let text = |t| batch.get(row, t);
        let (base, email) = (text(Text::Base), text(Text::Email));
        if problem.is_none() && !self.emails.insert_hinted(email, email_at, &email_hint) {
            self.warnings.record(self.cap, || Warning {
                line,
                message: format!(
                    "{email} is used by an earlier row too; Moodle refuses a second account with the same email unless allowaccountssameemail is on"
                ),
            });
        }
        // Borrowed from the taken-name set until the row is written: no copy.
        let (name, renamed) = self.usernames.claim_hinted(base, "", Some(&user_hint));
        if renamed {
            self.renamed.record(self.cap, || Renamed {
                line,
                from: base.to_owned(),
                to: Username::from_generated(name),
            });
        }
        self.email_out.clear();
        let generated = match (problem, &self.at_domain) {
            (Some(problem), Some(at_domain)) => {
                let (addr, _) = if email.is_empty() {
                    // The hash was for another name.
                    self.emails.claim_hinted(name, at_domain, None)
                } else {
                    self.emails
                        .claim_hinted(email, at_domain, Some(&email_hint))
                };
                self.email_out.push_str(addr);
                let e = &self.email_out;
                self.generated_emails.record(self.cap, || GeneratedEmail {
                    line,
                    username: Username::from_generated(name),
                    email: e.clone(),
                    problem,
                });
                true
            }
            // Phase A rejects rows needing an address when there is no domain.
            _ => false,
        };
        if guessed_split {
            self.warnings.record(self.cap, || Warning {
                line,
                message:
                    "no email and no \"no tiene\" marker: the whole line was taken as the name"
                        .into(),
            });
        }
        self.rows_out += 1;
        self.csv.row(&Row {
            username: name,
            firstname: text(Text::First),
            lastname: text(Text::Last),
            email: if generated { &self.email_out } else { email },
            department: text(Text::Department),
        })
    }

    /// Moves phase B's part of the report (rows written, generated addresses, renamed
    /// usernames, warnings) into `report`.
    pub(crate) fn move_report(&mut self, report: &mut Report) {
        report.rows_out = self.rows_out;
        report.generated_emails = std::mem::replace(&mut self.generated_emails, Entries::new());
        report.renamed = std::mem::replace(&mut self.renamed, Entries::new());
        report.warnings = std::mem::replace(&mut self.warnings, Entries::new());
    }

    pub(crate) fn header(&mut self) -> io::Result<()> {
        self.csv.header()
    }

    pub(crate) fn finish_csv(self) -> io::Result<()> {
        self.csv.finish()
    }
}
