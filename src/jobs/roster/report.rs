//! What a conversion did, for the job result (JSON) and the offline command (text).

use serde::Serialize;

use super::Format;
use super::rules::Username;

/// A list that counts everything but keeps only the first `cap` items, so a roster of a
/// million duplicates cannot grow the report without bound.
#[derive(Debug, Clone, Serialize)]
pub struct Entries<T> {
    pub total: u64,
    pub items: Vec<T>,
}

impl<T> Entries<T> {
    pub(crate) fn new() -> Self {
        Self {
            total: 0,
            items: Vec::new(),
        }
    }

    /// Counts one entry; builds it only while under the cap.
    pub(crate) fn record(&mut self, cap: usize, make: impl FnOnce() -> T) {
        self.total += 1;
        if self.items.len() < cap {
            self.items.push(make());
        }
    }

    /// True when some entries were counted but not kept.
    pub fn truncated(&self) -> bool {
        self.total > self.items.len() as u64
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailProblem {
    /// No address, or a "no tiene"-style marker.
    Missing,
    /// Something was there but is not an address Moodle would accept.
    Invalid { given: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct GeneratedEmail {
    pub line: u64,
    pub username: Username,
    pub email: String,
    pub problem: EmailProblem,
}

#[derive(Debug, Clone, Serialize)]
pub struct Renamed {
    pub line: u64,
    /// The username the rule gives (already taken in this import or in Moodle).
    pub from: String,
    pub to: Username,
}

#[derive(Debug, Clone, Serialize)]
pub struct Rejected {
    pub line: u64,
    pub reason: String,
}

/// Rows that were converted but deserve a look (duplicate given addresses, guessed
/// name/department split).
#[derive(Debug, Clone, Serialize)]
pub struct Warning {
    pub line: u64,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The layout actually read (`auto` resolved).
    pub format: Format,
    /// Data rows read (blank lines and the header not counted).
    pub rows_in: u64,
    /// Users written to the CSV. `rows_in = rows_out + rejected.total`.
    pub rows_out: u64,
    /// Lines decoded as Windows-1252 because they were not valid UTF-8.
    pub windows_1252_lines: u64,
    /// Header columns that were not used.
    pub ignored_columns: Vec<String>,
    pub generated_emails: Entries<GeneratedEmail>,
    pub renamed: Entries<Renamed>,
    pub rejected: Entries<Rejected>,
    pub warnings: Entries<Warning>,
}

impl Report {
    pub(crate) fn new(format: Format) -> Self {
        Self {
            format,
            rows_in: 0,
            rows_out: 0,
            windows_1252_lines: 0,
            ignored_columns: Vec::new(),
            generated_emails: Entries::new(),
            renamed: Entries::new(),
            rejected: Entries::new(),
            warnings: Entries::new(),
        }
    }

    /// The report as JSON for the job result.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// The summary the offline command prints on stderr.
impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "roster ({:?}): {} rows read, {} users written, {} rejected, {} emails generated, {} usernames renamed",
            self.format,
            self.rows_in,
            self.rows_out,
            self.rejected.total,
            self.generated_emails.total,
            self.renamed.total
        )?;
        if self.windows_1252_lines > 0 {
            writeln!(
                f,
                "  {} lines read as Windows-1252",
                self.windows_1252_lines
            )?;
        }
        if !self.ignored_columns.is_empty() {
            writeln!(f, "  ignored columns: {}", self.ignored_columns.join(", "))?;
        }
        // A terminal summary: the first few of each; the JSON report has up to the cap.
        const SHOWN: usize = 20;
        for r in self.rejected.items.iter().take(SHOWN) {
            writeln!(f, "  line {}: rejected: {}", r.line, r.reason)?;
        }
        if self.rejected.total > SHOWN as u64 {
            writeln!(
                f,
                "  … {} more rejected rows",
                self.rejected.total - SHOWN as u64
            )?;
        }
        for w in self.warnings.items.iter().take(SHOWN) {
            writeln!(f, "  line {}: warning: {}", w.line, w.message)?;
        }
        if self.warnings.total > SHOWN as u64 {
            writeln!(
                f,
                "  … {} more warnings",
                self.warnings.total - SHOWN as u64
            )?;
        }
        Ok(())
    }
}
