//! `roster_import`: a tutor's roster into the CSV Moodle's "Upload users" page takes
//! (issue 5).
//!
//! Pure and streaming: [`convert`] reads line by line and writes rows as it goes; only the
//! set of taken usernames and addresses (8-byte hashes) grows with the roster. It runs in
//! two phases, on two threads when there are two cores (see `pipeline`): parsing and
//! checking rows, then unique names and CSV. The job wrapper parses its payload with
//! [`RosterPayload::parse`] and calls [`RosterPayload::convert`]; the offline command
//! calls [`convert_file`].
//!
//! Rules the issue left open, decided here:
//! - Seed layout: the email slot (a word with `@`, a "no tiene"-style marker, or the blog's
//!   "[email protected]") separates the name from the department. Name words split as
//!   2 → 1+1, 3 → 1+2, 4+ → (n−2)+2, with particles ("de la") glued to the next word.
//!   Without any email slot the whole line is the name (≤ 4 words) and a warning is
//!   reported.
//! - Generated addresses are forename + last name, letters and digits only
//!   ("unboludo@domain", as the seed's script did), made unique like usernames
//!   (`juanperez2@…`) because Moodle refuses a second account with the same address by
//!   default (`allowaccountssameemail` off). A *given* address used twice is kept and
//!   warned about.
//! - Line numbers are physical lines of the input (header and blank lines counted), as a
//!   text editor shows them.
//! - Encoding is decided per line (UTF-8, else Windows-1252), see `reader`.
//! - No `password` column unless [`ConvertOptions::initial_password`] is configured; the
//!   job payload cannot set one.
//! - Report lists keep the first [`ConvertOptions::max_report_entries`] items and count
//!   the rest, so the report is bounded too.

mod assign;
mod job;
mod pipeline;
mod reader;
mod report;
mod rows;
mod rules;
mod swar;
mod taken_names;
mod writer;

pub mod bench;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use reader::LineReader;
pub use report::{EmailProblem, Entries, GeneratedEmail, Rejected, Renamed, Report, Warning};
pub use rules::{
    EmailDomain, InitialPassword, InvalidEmailDomain, InvalidPassword, InvalidUsername, Username,
};

pub use job::RosterImport;

/// Layout of the roster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// CSV/TSV when the first line is a header naming the person, else the seed layout.
    #[default]
    Auto,
    /// `N Forename Surname [email] Department…`, whitespace separated, no header.
    Seed,
    /// Comma- or semicolon-separated (Spanish Excel writes `;`) with a header row.
    Csv,
    /// Tab-separated with a header row.
    Tsv,
}

/// Default cap on one line (or one multi-line quoted CSV record).
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024;
/// Default cap on each list in the report.
pub const DEFAULT_MAX_REPORT_ENTRIES: usize = 1000;
/// Cap on an inline roster in a job payload.
pub const MAX_INLINE_ROSTER_BYTES: usize = 32 * 1024 * 1024;
/// Cap on `existing_usernames` in a job payload.
pub const MAX_EXISTING_USERNAMES: usize = 1_000_000;

#[derive(Debug, Clone)]
pub struct ConvertOptions {
    pub format: Format,
    /// Where generated addresses go. Without it, rows lacking a valid address are rejected.
    pub email_domain: Option<EmailDomain>,
    /// Adds a `password` column. Configuration only, never per job: a shared plaintext
    /// password should not sit in the jobs table. Default `None`, so Moodle's "Create
    /// password if needed and send via email" applies.
    pub initial_password: Option<InitialPassword>,
    /// Usernames already in Moodle; new ones get a suffix instead (compared lower-cased).
    pub existing_usernames: Vec<String>,
    pub max_line_bytes: usize,
    pub max_report_entries: usize,
    /// When set, a payload `path` must be relative and stay inside this directory.
    pub roster_dir: Option<PathBuf>,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        Self {
            format: Format::Auto,
            email_domain: None,
            initial_password: None,
            existing_usernames: Vec::new(),
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            max_report_entries: DEFAULT_MAX_REPORT_ENTRIES,
            roster_dir: None,
        }
    }
}

/// Failures where nothing usable came out. Rejected rows are not errors: they are in the
/// [`Report`].
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("cannot open roster {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("roster path {0} is outside the roster directory")]
    PathOutsideRosterDir(PathBuf),
    #[error("cannot read roster: {0}")]
    Read(#[source] io::Error),
    #[error("cannot write CSV: {0}")]
    Write(#[source] io::Error),
    #[error("not a text roster: {0}")]
    Binary(&'static str),
    #[error("roster is empty")]
    Empty,
    #[error("roster has a header but no rows")]
    HeaderOnly,
    #[error("{0}")]
    Header(String),
    #[error("no usable rows: all {} rows were rejected", .0.rows_in)]
    NothingUsable(Box<Report>),
}

/// Where the payload's roster is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RosterSource {
    Inline(String),
    Path(PathBuf),
}

/// A `roster_import` job's payload, parsed.
#[derive(Debug, Clone)]
pub struct RosterPayload {
    pub source: RosterSource,
    pub format: Format,
    pub email_domain: Option<EmailDomain>,
    pub existing_usernames: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RosterPayloadError {
    #[error("roster_import payload is not valid: {0}")]
    Shape(String),
    #[error(
        "roster_import payload needs exactly one of \"roster\" (inline text) or \"path\"; it has {0}"
    )]
    Source(&'static str),
    #[error("inline roster is {0} bytes; the limit is {MAX_INLINE_ROSTER_BYTES}")]
    TooLarge(usize),
    #[error("\"existing_usernames\" has {0} entries; the limit is {MAX_EXISTING_USERNAMES}")]
    TooManyUsernames(usize),
    #[error("\"email_domain\": {0}")]
    EmailDomain(#[from] InvalidEmailDomain),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPayload {
    roster: Option<String>,
    path: Option<PathBuf>,
    #[serde(default)]
    format: Format,
    email_domain: Option<String>,
    #[serde(default)]
    existing_usernames: Vec<String>,
}

impl RosterPayload {
    /// # Errors
    /// Unknown fields, wrong types, both or neither of `roster`/`path`, an empty path, an
    /// oversized roster, or an invalid `email_domain`.
    pub fn parse(value: &serde_json::Value) -> Result<Self, RosterPayloadError> {
        let raw =
            RawPayload::deserialize(value).map_err(|e| RosterPayloadError::Shape(e.to_string()))?;
        let source = match (raw.roster, raw.path) {
            (Some(_), Some(_)) => return Err(RosterPayloadError::Source("both")),
            (None, None) => return Err(RosterPayloadError::Source("neither")),
            (Some(r), None) if r.len() > MAX_INLINE_ROSTER_BYTES => {
                return Err(RosterPayloadError::TooLarge(r.len()));
            }
            (Some(r), None) => RosterSource::Inline(r),
            (None, Some(p)) if p.as_os_str().is_empty() => {
                return Err(RosterPayloadError::Source("an empty \"path\""));
            }
            (None, Some(p)) => RosterSource::Path(p),
        };
        if raw.existing_usernames.len() > MAX_EXISTING_USERNAMES {
            return Err(RosterPayloadError::TooManyUsernames(
                raw.existing_usernames.len(),
            ));
        }
        let email_domain = raw
            .email_domain
            .as_deref()
            .map(EmailDomain::parse)
            .transpose()?;
        Ok(Self {
            source,
            format: raw.format,
            email_domain,
            existing_usernames: raw.existing_usernames,
        })
    }

    /// `defaults` (from configuration) overridden by what the job says.
    pub fn options(&self, defaults: &ConvertOptions) -> ConvertOptions {
        let mut o = defaults.clone();
        if self.format != Format::Auto {
            o.format = self.format;
        }
        if let Some(d) = &self.email_domain {
            o.email_domain = Some(d.clone());
        }
        o.existing_usernames
            .extend(self.existing_usernames.iter().cloned());
        o
    }

    /// Converts the payload's roster into `out`.
    ///
    /// # Errors
    /// As [`convert`], plus opening the file and [`ConvertError::PathOutsideRosterDir`].
    pub fn convert<W: Write>(
        &self,
        out: W,
        defaults: &ConvertOptions,
    ) -> Result<Report, ConvertError> {
        let options = self.options(defaults);
        match &self.source {
            RosterSource::Inline(text) => convert(text.as_bytes(), out, &options, |_| {}),
            RosterSource::Path(p) => {
                let (path, real_root) = resolve_path(p, options.roster_dir.as_deref())?;
                let file = File::open(&path).map_err(|source| ConvertError::Open {
                    path: path.clone(),
                    source,
                })?;
                if let Some(root) = &real_root
                    && opened_path(&file).is_some_and(|opened| !opened.starts_with(root))
                {
                    // A folder on the way became a symlink between the check and the open.
                    return Err(ConvertError::PathOutsideRosterDir(p.clone()));
                }
                convert(
                    BufReader::with_capacity(256 * 1024, file),
                    out,
                    &options,
                    |_| {},
                )
            }
        }
    }
}

/// Where `p` really is, and the real roster folder: with a folder, `p` must be relative,
/// and both are resolved (symlinks followed) before the check, so a symlink inside the
/// folder cannot lead out of it.
fn resolve_path(p: &Path, root: Option<&Path>) -> Result<(PathBuf, Option<PathBuf>), ConvertError> {
    let Some(root) = root else {
        return Ok((p.to_owned(), None));
    };
    if !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(ConvertError::PathOutsideRosterDir(p.to_owned()));
    }
    let real = |path: PathBuf| {
        path.canonicalize()
            .map_err(|source| ConvertError::Open { path, source })
    };
    let real_root = real(root.to_owned())?;
    let target = real(root.join(p))?;
    if target.starts_with(&real_root) {
        Ok((target, Some(real_root)))
    } else {
        Err(ConvertError::PathOutsideRosterDir(p.to_owned()))
    }
}

/// The real path of an open file (Linux's /proc), to check what was opened rather than
/// what was looked at before.
fn opened_path(file: &File) -> Option<PathBuf> {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()
}

/// How far a conversion got, for progress displays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub bytes_read: u64,
    pub rows_read: u64,
}

/// Converts a roster into a Moodle upload-users CSV, streaming.
///
/// `input` is read on a second thread when there are two cores (hence `Send`); `output`
/// and `progress` stay on the calling thread. `progress` is called about every 256 KiB of
/// input (or 1024 rows) and once at the end.
///
/// # Errors
/// Only when nothing usable came out: unreadable input, a binary file, an empty or
/// header-only roster, a header that names no person, every row rejected, or a write
/// error. Nothing is written to `output` in the first cases (the CSV header is only
/// flushed with rows).
pub fn convert<R: BufRead + Send, W: Write>(
    input: R,
    output: W,
    options: &ConvertOptions,
    progress: impl FnMut(Progress),
) -> Result<Report, ConvertError> {
    let mut lines = LineReader::new(input, options.max_line_bytes.max(256));
    let head = lines.peek().map_err(ConvertError::Read)?;
    if let Some(what) = reader::sniff_binary(head) {
        return Err(ConvertError::Binary(what));
    }
    pipeline::run(lines, output, options, progress)
}

/// Converts the roster file at `path` into `out` for `dialout roster convert`. With
/// `show_progress`, files over 8 MiB get a progress line on stderr (at most 4 updates a
/// second) and the summary is printed on stderr at the end.
///
/// # Errors
/// As [`convert`], plus [`ConvertError::Open`].
pub fn convert_file<W: Write>(
    path: &Path,
    out: W,
    options: &ConvertOptions,
    show_progress: bool,
) -> Result<Report, ConvertError> {
    let open_err = |source| ConvertError::Open {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(open_err)?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let input = BufReader::with_capacity(256 * 1024, file);
    let started = Instant::now();
    let mut last_shown: Option<Instant> = None;
    let live = show_progress && total >= 8 * 1024 * 1024;
    let result = convert(
        input,
        io::BufWriter::with_capacity(256 * 1024, out),
        options,
        |p| {
            if !live {
                return;
            }
            let now = Instant::now();
            let done = p.bytes_read >= total;
            if !done && last_shown.is_some_and(|t| now - t < Duration::from_millis(250)) {
                return;
            }
            last_shown = Some(now);
            let secs = started.elapsed().as_secs_f64().max(1e-3);
            let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
            eprint!(
                "\rroster: {:.1}/{:.1} MiB ({:.0}%), {} rows, {:.0} rows/s   ",
                mib(p.bytes_read),
                mib(total),
                100.0 * p.bytes_read as f64 / total.max(1) as f64,
                p.rows_read,
                p.rows_read as f64 / secs
            );
        },
    );
    if live {
        eprintln!();
    }
    if show_progress {
        match &result {
            Ok(report) => eprint!("{report}"),
            Err(ConvertError::NothingUsable(report)) => eprint!("{report}"),
            Err(_) => {}
        }
    }
    result
}
