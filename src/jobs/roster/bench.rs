//! Benchmark of the offline path: figures printed, never asserted.
//! Run with `cargo run --release --example roster_bench`.

use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{ConvertOptions, EmailDomain, convert_file};

const FORENAMES: &[&str] = &[
    "Juan",
    "María",
    "José",
    "Ana",
    "Pedro",
    "Lucía",
    "Carlos",
    "Sofía",
    "Íñigo",
    "Marta",
    "Luis",
    "Elena",
    "Jorge",
    "Paula",
    "Andrés",
    "Carmen",
    "Raúl",
    "Laura",
    "Óscar",
    "Nuria",
    "María José",
    "Juan Carlos",
    "Ana Belén",
    "José Luis",
];
const SURNAMES: &[&str] = &[
    "García",
    "Pérez",
    "González",
    "Rodríguez",
    "Fernández",
    "López",
    "Martínez",
    "Sánchez",
    "Gómez",
    "Martín",
    "Jiménez",
    "Ruiz",
    "Hernández",
    "Díaz",
    "Moreno",
    "Muñoz",
    "Álvarez",
    "Romero",
    "Alonso",
    "Gutiérrez",
    "Navarro",
    "Torres",
    "Domínguez",
    "Vázquez",
    "Ramos",
    "Gil",
    "Ramírez",
    "Serrano",
    "Blanco",
    "Molina",
    "Morales",
    "Suárez",
    "Ortega",
    "Delgado",
    "Castro",
    "Ortiz",
    "Rubio",
    "Marín",
    "Sanz",
    "Núñez",
    "Iglesias",
    "Medina",
    "Garrido",
    "Cortés",
    "Castillo",
    "Santos",
    "Lozano",
    "Guerrero",
    "Cano",
    "Prieto",
    "O'Brien",
    "Smith",
];
const DEPARTMENTS: &[&str] = &[
    "Cobranzas",
    "Ventas",
    "Recursos Humanos",
    "Sistemas",
    "Legales",
];

/// Figures of one run.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub rows: u64,
    pub input_bytes: u64,
    pub seconds: f64,
    pub rows_per_second: f64,
    /// CPU time of the conversion, both of its threads (10 ms resolution): on a shared
    /// machine wall time also counts the time other processes had the cores.
    pub cpu_seconds: Option<f64>,
    pub peak_rss_kib: Option<u64>,
    pub rows_out: u64,
    pub renamed: u64,
    pub generated_emails: u64,
    pub rejected: u64,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "roster bench: {} rows ({:.1} MiB) in {:.3} s = {:.0} rows/s",
            self.rows,
            self.input_bytes as f64 / 1048576.0,
            self.seconds,
            self.rows_per_second
        )?;
        if let Some(cpu) = self.cpu_seconds {
            writeln!(
                f,
                "  CPU time {:.2} s (both threads) = {:.0} rows per CPU-second",
                cpu,
                self.rows as f64 / cpu
            )?;
        }
        match self.peak_rss_kib {
            Some(k) => writeln!(f, "  peak memory (VmHWM): {:.1} MiB", k as f64 / 1024.0)?,
            None => writeln!(f, "  peak memory: unknown (no /proc/self/status)")?,
        }
        write!(
            f,
            "  {} users written, {} renamed, {} emails generated, {} rejected",
            self.rows_out, self.renamed, self.generated_emails, self.rejected
        )
    }
}

/// Peak resident set size of this process, from Linux's /proc/self/status.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time this process has used (all threads, finished ones too: the conversion runs
/// on two), from Linux's /proc/self/stat: user + system time in clock ticks, which
/// /proc always counts at USER_HZ = 100 a second.
fn process_cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) in parentheses; utime and
    // stime are fields 14 and 15 of the whole line.
    let mut rest = s.get(s.rfind(')')? + 1..)?.split_whitespace().skip(11);
    let utime: u64 = rest.next()?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// Writes a seed-layout roster of `rows` rows: accents, compound names, many duplicate
/// usernames, a third without an address, one in 1000 unreadable.
///
/// # Errors
/// I/O errors writing `path`.
pub fn generate_roster(path: &Path, rows: u64) -> io::Result<u64> {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut bytes = 0u64;
    let mut line = String::with_capacity(128);
    for i in 1..=rows {
        let r = next();
        let f = FORENAMES[(r % FORENAMES.len() as u64) as usize];
        let s1 = SURNAMES[((r >> 8) % SURNAMES.len() as u64) as usize];
        let s2 = SURNAMES[((r >> 16) % SURNAMES.len() as u64) as usize];
        let d = DEPARTMENTS[((r >> 24) % DEPARTMENTS.len() as u64) as usize];
        line.clear();
        use fmt::Write as _;
        let _ = match (r >> 32) % 1000 {
            0 => write!(line, "{i} {f}"),
            1..=333 => write!(line, "{i} {f} {s1} {s2} No tiene {d}"),
            _ => write!(line, "{i} {f} {s1} {s2} u{i}@mail.example.com {d}"),
        };
        line.push('\n');
        w.write_all(line.as_bytes())?;
        bytes += line.len() as u64;
    }
    w.flush()?;
    Ok(bytes)
}

/// Generates a roster of `rows` rows in the temp directory, converts it with the offline
/// path (output to a temp file), and returns the figures.
///
/// # Errors
/// I/O errors, or a conversion error (which would be a bug).
pub fn run(rows: u64) -> Result<BenchReport, Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir();
    let input: PathBuf = dir.join(format!("roster-bench-{}.txt", std::process::id()));
    let output: PathBuf = dir.join(format!("roster-bench-{}.csv", std::process::id()));
    let input_bytes = generate_roster(&input, rows)?;
    let options = ConvertOptions {
        email_domain: Some(EmailDomain::parse("alumnos.example.edu")?),
        existing_usernames: vec!["jgarcia".into(), "admin".into()],
        ..ConvertOptions::default()
    };
    let out = File::create(&output)?;
    let cpu_before = process_cpu_seconds();
    let started = Instant::now();
    let report = convert_file(&input, out, &options, true);
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = cpu_before.zip(process_cpu_seconds()).map(|(a, b)| b - a);
    let peak = peak_rss_kib();
    let _ = std::fs::remove_file(&input);
    let _ = std::fs::remove_file(&output);
    let report = report?;
    Ok(BenchReport {
        rows,
        input_bytes,
        seconds,
        rows_per_second: rows as f64 / seconds,
        cpu_seconds,
        peak_rss_kib: peak,
        rows_out: report.rows_out,
        renamed: report.renamed.total,
        generated_emails: report.generated_emails.total,
        rejected: report.rejected.total,
    })
}
