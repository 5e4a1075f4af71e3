//! The conversion's two phases and how they are run: phase A (read, split lines, parse
//! and check rows: `rows`) fills batches that phase B (usernames and hashes:
//! `Batch::finish_names`; unique names, report, CSV: `assign`) finishes in order. The
//! split keeps the two about equally busy. With two cores, phase A runs on its own thread and the
//! batches cross a bounded channel, so memory stays flat; otherwise both phases take
//! turns on the calling thread. Output and report are the same either way.

use std::io::{self, BufRead, Write};
use std::sync::mpsc;
use std::thread;

use super::assign::Assigner;
use super::reader::{self, Cells, Header, Line, LineReader};
use super::rows::{Batch, RowParser};
use super::taken_names::TakenNames;
use super::{ConvertError, ConvertOptions, Format, Progress, Report};

/// A batch is handed over at this many rows…
const BATCH_ROWS: usize = 1024;
/// …or once this much input went into it (progress is reported per batch).
const BATCH_INPUT_BYTES: u64 = 256 * 1024;
/// Full batches waiting for phase B: with the one being filled and the one being
/// finished, at most this + 2 batches exist.
const BATCHES_IN_FLIGHT: usize = 4;

/// The layout found: `None` before the first data line, `Some(None)` the seed layout,
/// `Some(Some(header))` CSV/TSV.
type Layout = Option<Option<Header>>;

/// Runs both phases over `lines` (already checked not to be binary); see `convert`.
pub(super) fn run<R: BufRead + Send, W: Write>(
    lines: LineReader<R>,
    output: W,
    options: &ConvertOptions,
    progress: impl FnMut(Progress),
) -> Result<Report, ConvertError> {
    let two_cores = thread::available_parallelism().is_ok_and(|n| n.get() > 1);
    run_on(lines, output, options, progress, two_cores)
}

/// [`run`], with phase A on a thread of its own when `threaded` (and a thread is to be
/// had).
fn run_on<R: BufRead + Send, W: Write>(
    mut lines: LineReader<R>,
    output: W,
    options: &ConvertOptions,
    mut progress: impl FnMut(Progress),
    threaded: bool,
) -> Result<Report, ConvertError> {
    let mut usernames = TakenNames::for_usernames();
    usernames.insert("guest");
    let mut lower = String::new();
    for u in &options.existing_usernames {
        lower.clear();
        lower.extend(u.trim().chars().flat_map(char::to_lowercase));
        usernames.insert(&lower);
    }
    let emails = TakenNames::for_emails();
    let mut parser = RowParser::new(options);
    let mut assigner = Assigner::new(options, usernames, emails, output);
    assigner.header().map_err(ConvertError::Write)?;

    let mut next_progress = 0;
    let mut finish_batch = |batch: &mut Batch| -> io::Result<()> {
        assigner.batch(batch)?;
        if batch.bytes_read >= next_progress {
            next_progress = batch.bytes_read + BATCH_INPUT_BYTES;
            progress(Progress {
                bytes_read: batch.bytes_read,
                rows_read: batch.rows_in,
            });
        }
        batch.clear();
        Ok(())
    };
    let threaded = threaded
        .then(|| {
            thread::scope(|s| {
                let (full_tx, full_rx) = mpsc::sync_channel::<Batch>(BATCHES_IN_FLIGHT);
                let (empty_tx, empty_rx) = mpsc::channel::<Batch>();
                let (lines, parser) = (&mut lines, &mut parser);
                let phase_a = thread::Builder::new()
                    .name("roster-parse".into())
                    .spawn_scoped(s, move || {
                        parse(lines, options, parser, &mut |batch| {
                            let fresh = empty_rx.try_recv().unwrap_or_default();
                            full_tx.send(std::mem::replace(batch, fresh)).is_ok()
                        })
                    })
                    .ok()?;
                let mut written = Ok(());
                for mut batch in full_rx.iter() {
                    written = finish_batch(&mut batch);
                    if written.is_err() {
                        break;
                    }
                    // Phase A may have finished already: then nobody needs it back.
                    let _ = empty_tx.send(batch);
                }
                // Phase A stops at its next hand-over once the receiver is gone.
                drop(full_rx);
                let layout = phase_a
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                Some((layout, written))
            })
        })
        .flatten();
    // One core, or no thread to be had: the same work on this thread.
    let (layout, written) = threaded.unwrap_or_else(|| {
        let mut written = Ok(());
        let layout = parse(&mut lines, options, &mut parser, &mut |batch| {
            written = finish_batch(batch);
            written.is_ok()
        });
        (layout, written)
    });
    written.map_err(ConvertError::Write)?;
    let layout = layout?;
    progress(Progress {
        bytes_read: lines.bytes_read,
        rows_read: parser.report.rows_in,
    });
    let mut report = parser.report;
    match layout {
        None if report.rows_in == 0 => return Err(ConvertError::Empty),
        Some(Some(_)) if report.rows_in == 0 => return Err(ConvertError::HeaderOnly),
        _ => {}
    }
    assigner.move_report(&mut report);
    if report.rows_out == 0 {
        return Err(ConvertError::NothingUsable(Box::new(report)));
    }
    assigner.finish_csv().map_err(ConvertError::Write)?;
    Ok(report)
}

/// Phase A over the whole input: lines to staged rows, handed over in batches to
/// `deliver`, which leaves an empty batch in place and returns false when phase B has
/// stopped (a write error).
fn parse<R: BufRead>(
    lines: &mut LineReader<R>,
    options: &ConvertOptions,
    c: &mut RowParser,
    deliver: &mut dyn FnMut(&mut Batch) -> bool,
) -> Result<Layout, ConvertError> {
    let mut batch = Batch::default();
    let mut layout: Layout = None;
    let mut pending = String::new(); // an open quoted CSV record
    let mut pending_line = 0u64;
    let mut batch_from = 0u64; // bytes read when the batch was started

    while let Some((line_no, line)) = lines.next_line().map_err(ConvertError::Read)? {
        let (text, cp1252) = match line {
            Line::Text { text, cp1252 } => (text, cp1252),
            bad => {
                if !pending.is_empty() {
                    pending.clear();
                    c.reject(pending_line, "quoted field not closed".into());
                }
                let why = match bad {
                    Line::TooLong => format!("line longer than {} bytes", options.max_line_bytes),
                    _ => "line contains control characters (binary data?)".into(),
                };
                c.reject(line_no, why);
                continue;
            }
        };
        if cp1252 {
            c.report.windows_1252_lines += 1;
        }
        if super::rules::is_blank(text) && pending.is_empty() {
            continue;
        }
        let header = match &layout {
            Some(h) => h,
            None => {
                let detected = detect(text, options.format, &mut c.cells)?;
                if let Some(h) = &detected {
                    c.report.format = if h.delimiter == b'\t' {
                        Format::Tsv
                    } else {
                        Format::Csv
                    };
                    c.report.ignored_columns.clone_from(&h.ignored);
                } else {
                    c.report.format = Format::Seed;
                }
                let is_header = detected.is_some();
                layout = Some(detected);
                if is_header {
                    continue;
                }
                match &layout {
                    Some(h) => h,
                    None => continue,
                }
            }
        };
        match header {
            None => c.seed_row(line_no, text, &mut batch),
            Some(h) => {
                let (record, start) = if pending.is_empty() {
                    (text, line_no)
                } else {
                    pending.push('\n');
                    pending.push_str(text);
                    (pending.as_str(), pending_line)
                };
                match c.cells.split(record, h.delimiter) {
                    Ok(()) => {
                        c.delimited_row(start, h, &mut batch);
                        pending.clear();
                    }
                    Err(reader::Unclosed) if record.len() < options.max_line_bytes => {
                        if pending.is_empty() {
                            pending.push_str(text);
                            pending_line = line_no;
                        }
                    }
                    Err(reader::Unclosed) => {
                        pending.clear();
                        c.reject(
                            start,
                            format!(
                                "quoted field not closed within {} bytes",
                                options.max_line_bytes
                            ),
                        );
                    }
                }
            }
        }
        if batch.rows.len() >= BATCH_ROWS || lines.bytes_read - batch_from >= BATCH_INPUT_BYTES {
            batch.bytes_read = lines.bytes_read;
            batch.rows_in = c.report.rows_in;
            if !deliver(&mut batch) {
                return Ok(layout);
            }
            batch_from = lines.bytes_read;
        }
    }
    if !pending.is_empty() {
        c.reject(
            pending_line,
            "quoted field not closed at end of file".into(),
        );
    }
    batch.bytes_read = lines.bytes_read;
    batch.rows_in = c.report.rows_in;
    deliver(&mut batch);
    Ok(layout)
}

/// Decides the layout from the first non-blank line: `Some(header)` for CSV/TSV (the line
/// is the header), `None` for the seed layout (the line is data).
fn detect(line: &str, format: Format, cells: &mut Cells) -> Result<Option<Header>, ConvertError> {
    let candidates: &[u8] = match format {
        Format::Seed => return Ok(None),
        Format::Tsv => b"\t",
        Format::Csv => b",;",
        Format::Auto => b"\t;,",
    };
    for &d in candidates {
        if let Some(h) = reader::parse_header(line, d, cells) {
            return Ok(Some(h));
        }
    }
    // In auto mode, a first line that has separators but no digit or '@' is a header we
    // do not understand, not a person: say so instead of rejecting every row.
    let looks_like_header = line.contains([',', ';', '\t'])
        && !line.contains('@')
        && !line.bytes().any(|b| b.is_ascii_digit());
    if format != Format::Auto || looks_like_header {
        let shown: String = line.chars().take(200).collect();
        return Err(ConvertError::Header(format!(
            "the header {shown:?} has no firstname and lastname (or nombre and apellido(s), or full name) columns"
        )));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::roster::EmailDomain;

    /// Both ways of running give the same CSV and report, over several batches.
    #[test]
    fn threaded_and_sequential_agree() {
        let mut roster = String::new();
        for i in 0..3 * BATCH_ROWS + 7 {
            match i % 7 {
                0 => roster.push_str(&format!("{i} Ana García No tiene Ventas\n")),
                1 => roster.push_str(&format!("{i} Ana\n")),
                2 => roster.push_str(&format!("{i} Ana García u{}@x.com Ventas\n", i % 50)),
                _ => roster.push_str(&format!("{i} José Pérez López jp{i}@x.com Sistemas\n")),
            }
        }
        let options = ConvertOptions {
            email_domain: Some(EmailDomain::parse("x.edu").expect("domain")),
            max_report_entries: 5000,
            ..ConvertOptions::default()
        };
        let convert = |threaded| {
            let mut out = Vec::new();
            let mut calls = 0;
            let lines = LineReader::new(roster.as_bytes(), options.max_line_bytes);
            let report =
                run_on(lines, &mut out, &options, |_| calls += 1, threaded).expect("converts");
            assert!(calls >= 2, "progress per batch and at the end");
            (out, report.to_json())
        };
        let (threaded, sequential) = (convert(true), convert(false));
        assert_eq!(threaded.1["rows_in"], 3 * BATCH_ROWS as u64 + 7);
        assert!(threaded == sequential);
    }
}
