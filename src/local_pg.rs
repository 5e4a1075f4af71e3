//! The private PostgreSQL: one implementation for `dialout demo`/`worker` without a
//! database URL, for `dialout pg start|stop|env` and for `scripts/pg` (tests, CI), which
//! wraps that command.
//!
//! Only its owner can use it: no TCP listener at all (`listen_addresses = ''`), a Unix
//! socket in a 0700 folder, and SCRAM password authentication with a random password kept
//! in a 0600 file in that folder. Folders differ, so clusters never collide; the port only
//! names the socket file. As root the cluster runs as `postgres` (initdb refuses root) in
//! a 0700 folder of its own under /tmp named after the folder asked for, so no other
//! folder's permissions are touched. One set of settings, tuned for a disposable cluster
//! (a demo's or a test suite's), never for production.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Names the socket file (`.s.PGSQL.5432`); nothing listens on a TCP port.
pub const SOCKET_PORT: u16 = 5432;

/// Settings appended to postgresql.conf at initdb (later lines win).
const SETTINGS: &str = "\
listen_addresses = ''
unix_socket_permissions = 0700
max_connections = 300
shared_buffers = 256MB
fsync = on
synchronous_commit = on
log_min_messages = warning
";

/// pg_hba.conf: the socket only, a password always.
const HBA: &str = "\
# dialout's private PostgreSQL: Unix socket only, SCRAM password only.
local all all scram-sha-256
local replication all scram-sha-256
";

/// Longest Unix socket path PostgreSQL accepts (sizeof sun_path, less the NUL).
const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, thiserror::Error)]
pub enum LocalPgError {
    #[error(
        "no PostgreSQL server binaries found (looked for /usr/lib/postgresql/*/bin/initdb). \
         Install one (Debian: apt-get install postgresql) or set DATABASE_URL to a running server"
    )]
    NotInstalled,
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("private PostgreSQL in {dir}: {problem}")]
    Folder { dir: PathBuf, problem: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A cluster in its own folder, reached only through the Unix socket in that folder.
pub struct LocalPg {
    bindir: PathBuf,
    /// The folder asked for, absolute.
    requested: PathBuf,
    /// Where the cluster lives: `requested`, or as root a folder under /tmp.
    dir: PathBuf,
}

impl LocalPg {
    /// Finds the newest installed server. `dir` is made absolute; as root the cluster
    /// lives in `/tmp/dialout-pg-<hash of dir>` instead, where `postgres` can reach it.
    pub fn new(dir: &Path) -> Result<Self, LocalPgError> {
        let bindir = find_bindir().ok_or(LocalPgError::NotInstalled)?;
        let requested = std::path::absolute(dir)?;
        let dir = if is_root() {
            use md5::{Digest, Md5};
            let hash = Md5::digest(requested.as_os_str().as_encoded_bytes());
            let hex: String = hash.iter().take(6).map(|b| format!("{b:02x}")).collect();
            PathBuf::from(format!("/tmp/dialout-pg-{hex}"))
        } else {
            requested.clone()
        };
        Ok(Self {
            bindir,
            requested,
            dir,
        })
    }

    /// The folder asked for (what `dialout pg --dir` takes).
    pub fn requested_dir(&self) -> &Path {
        &self.requested
    }

    /// The cluster's folder: data, socket, password file, server log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn password_file(&self) -> PathBuf {
        self.dir.join("password")
    }

    /// The URL, password included (log it only through `config::redact_url`). Fails
    /// before the first start, when there is no password yet.
    pub fn url(&self) -> Result<String, LocalPgError> {
        let password = std::fs::read_to_string(self.password_file()).map_err(|e| {
            self.folder_problem(format!(
                "cannot read its password file ({e}); `dialout pg start` creates it"
            ))
        })?;
        Ok(socket_url(password.trim(), &self.dir))
    }

    /// Creates the cluster if needed and starts it if it is not running.
    pub fn start(&self) -> Result<(), LocalPgError> {
        let socket = self.dir.join(format!(".s.PGSQL.{SOCKET_PORT}"));
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(self.folder_problem(format!(
                "the socket path {} is longer than the {MAX_SOCKET_PATH} bytes a Unix socket \
                 allows; choose a shorter database.local_dir",
                socket.display()
            )));
        }
        self.prepare_folder()?;
        let has_data = self.data_dir().join("PG_VERSION").exists();
        if has_data && !self.password_file().exists() {
            return Err(self.folder_problem(format!(
                "this cluster was made by an older dialout and trusts every local TCP \
                 connection; stop it ({} -D {} -m fast stop) and delete the folder (its \
                 data goes with it)",
                self.bindir.join("pg_ctl").display(),
                self.data_dir().display()
            )));
        }
        if !has_data {
            self.init()?;
        }
        if !self.is_running() {
            if let Err(e) = self.pg_ctl(&["-w", "-t", "60", "start"]) {
                return Err(LocalPgError::Command {
                    what: "starting the private PostgreSQL".into(),
                    detail: format!(
                        "{e}; the end of {}:\n{}",
                        self.log().display(),
                        self.log_tail(20)
                    ),
                });
            }
        }
        Ok(())
    }

    /// Stops the server if it runs (a fast shutdown: sessions are cut).
    pub fn stop(&self) -> Result<(), LocalPgError> {
        if !self.is_running() {
            return Ok(());
        }
        self.pg_ctl(&["-m", "fast", "-w", "-t", "60", "stop"])
    }

    /// A fast restart: every connection is cut, as when a server is restarted in production.
    pub fn restart(&self) -> Result<(), LocalPgError> {
        self.pg_ctl(&["-m", "fast", "-w", "-t", "60", "restart"])
    }

    /// Stops the server and deletes its folder, data and all.
    pub fn remove(&self) -> Result<(), LocalPgError> {
        self.stop()?;
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    pub fn is_running(&self) -> bool {
        self.data_dir().join("PG_VERSION").exists()
            && self
                .as_owner(&self.bindir.join("pg_ctl"))
                .arg("-D")
                .arg(self.data_dir())
                .arg("status")
                .output()
                .is_ok_and(|o| o.status.success())
    }

    /// The one line that says what runs and how to stop it.
    pub fn announcement(&self) -> String {
        format!(
            "a private PostgreSQL runs in {} (Unix socket only, password in {}); it keeps \
             running after this command; stop it with: dialout pg stop --dir {}",
            self.dir.display(),
            self.password_file().display(),
            shell_word(&self.requested.to_string_lossy())
        )
    }

    /// The folder exists, is a real folder, belongs to the cluster's owner and is 0700.
    fn prepare_folder(&self) -> Result<(), LocalPgError> {
        if let Some(parent) = self.dir.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match DirBuilder::new().mode(0o700).create(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e.into()),
            _ => {}
        }
        let meta = std::fs::symlink_metadata(&self.dir)?;
        if !meta.is_dir() {
            return Err(self.folder_problem("it is not a folder (a symlink?)".into()));
        }
        match self.owner_ids()? {
            // Made by root just now (or by an interrupted start): hand it over. Only root
            // makes root's folders, and /tmp's sticky bit keeps others from swapping it.
            Some((uid, gid)) if meta.uid() == 0 => {
                std::os::unix::fs::chown(&self.dir, Some(uid), Some(gid))?
            }
            Some((uid, _)) if meta.uid() == uid => {}
            None if meta.uid() == current_uid() => {}
            _ => {
                return Err(self.folder_problem(format!(
                    "the folder belongs to uid {}, not to the cluster's owner; remove it",
                    meta.uid()
                )));
            }
        }
        if meta.permissions().mode() & 0o777 != 0o700 {
            std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }

    /// initdb with a fresh random password, then the settings and pg_hba.conf.
    fn init(&self) -> Result<(), LocalPgError> {
        use rand::Rng;
        let password: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(32)
            .map(char::from)
            .collect();
        let path = self.password_file();
        let _ = std::fs::remove_file(&path);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        file.write_all(password.as_bytes())?;
        file.write_all(b"\n")?;
        drop(file);
        if let Some((uid, gid)) = self.owner_ids()? {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
        }
        let mut initdb = self.as_owner(&self.bindir.join("initdb"));
        initdb
            .arg("-D")
            .arg(self.data_dir())
            .args(["-U", "postgres", "-A", "scram-sha-256", "-E", "UTF8"])
            .arg("--no-locale")
            .arg(format!("--pwfile={}", path.display()));
        run("initdb", &mut initdb)?;
        let conf = format!(
            "\n# dialout's private PostgreSQL\n{SETTINGS}port = {SOCKET_PORT}\n\
             unix_socket_directories = '{}'\n",
            self.dir.display().to_string().replace('\'', "''")
        );
        let conf_path = self.data_dir().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path)?;
        text.push_str(&conf);
        std::fs::write(&conf_path, text)?;
        std::fs::write(self.data_dir().join("pg_hba.conf"), HBA)?;
        Ok(())
    }

    /// As root: the `postgres` user's ids (the cluster's owner). Otherwise `None`: the
    /// cluster belongs to whoever runs this.
    fn owner_ids(&self) -> Result<Option<(u32, u32)>, LocalPgError> {
        if !is_root() {
            return Ok(None);
        }
        let id = |flag: &str| -> Result<u32, LocalPgError> {
            let out = Command::new("id").args([flag, "postgres"]).output()?;
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .map_err(|_| LocalPgError::Command {
                    what: format!("id {flag} postgres"),
                    detail: "no user `postgres` (the server package creates it)".into(),
                })
        };
        Ok(Some((id("-u")?, id("-g")?)))
    }

    fn folder_problem(&self, problem: String) -> LocalPgError {
        LocalPgError::Folder {
            dir: self.dir.clone(),
            problem,
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), LocalPgError> {
        let mut cmd = self.as_owner(&self.bindir.join("pg_ctl"));
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log())
            .args(args);
        run("pg_ctl", &mut cmd)
    }

    fn as_owner(&self, program: &Path) -> Command {
        if is_root() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        }
    }
}

/// Characters left as they are in the socket folder of a URL's query.
const PATH_SAFE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'.')
    .remove(b'-')
    .remove(b'_');

/// A URL for the socket in `dir` that sqlx and libpq (psql) both read.
fn socket_url(password: &str, dir: &Path) -> String {
    format!(
        "postgres://postgres:{}@localhost/postgres?host={}&port={SOCKET_PORT}",
        utf8_percent_encode(password, NON_ALPHANUMERIC),
        utf8_percent_encode(&dir.to_string_lossy(), PATH_SAFE)
    )
}

/// `export DATABASE_URL='…'` for a POSIX shell's eval.
pub fn export_line(url: &str) -> String {
    format!("export DATABASE_URL={}", quoted(url))
}

/// `s` as one word for a POSIX shell, quoted only when it needs to be (a path to paste).
fn shell_word(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:=,@%".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_owned()
    } else {
        quoted(s)
    }
}

fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What `dialout pg` does.
#[derive(Debug, Clone, Copy, clap::Subcommand)]
pub enum PgCommand {
    /// Create the cluster if needed, start it if it is not running, and print
    /// `export DATABASE_URL=...` (eval it).
    Start,
    /// Stop the cluster (nothing happens if it is not running).
    Stop,
    /// Print `export DATABASE_URL=...` for the cluster (started or not).
    Env,
}

/// Runs `dialout pg …` for the cluster in `dir` (std::process work, off the runtime).
pub async fn command(what: PgCommand, dir: PathBuf) -> Result<(), LocalPgError> {
    let out = tokio::task::spawn_blocking(move || -> Result<Option<String>, LocalPgError> {
        let pg = LocalPg::new(&dir)?;
        match what {
            PgCommand::Start => {
                pg.start()?;
                eprintln!("dialout: {}", pg.announcement());
                Ok(Some(export_line(&pg.url()?)))
            }
            PgCommand::Env => Ok(Some(export_line(&pg.url()?))),
            PgCommand::Stop => {
                let was = pg.is_running();
                pg.stop()?;
                eprintln!(
                    "dialout: the private PostgreSQL in {} {}",
                    pg.dir().display(),
                    if was { "is stopped" } else { "was not running" }
                );
                Ok(None)
            }
        }
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))??;
    if let Some(line) = out {
        println!("{line}");
    }
    Ok(())
}

fn is_root() -> bool {
    current_uid() == 0
}

fn current_uid() -> u32 {
    std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid())
}

fn find_bindir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn run(what: &str, cmd: &mut Command) -> Result<(), LocalPgError> {
    let out = cmd.output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LocalPgError::Command {
            what: what.to_owned(),
            detail: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_names_the_socket_folder_and_survives_odd_characters() {
        let url = socket_url("pw", Path::new("/tmp/a b&c+d"));
        assert_eq!(
            url,
            "postgres://postgres:pw@localhost/postgres?host=/tmp/a%20b%26c%2Bd&port=5432"
        );
        let options: sqlx::postgres::PgConnectOptions = url.parse().expect("sqlx reads it");
        assert_eq!(
            options.get_socket().map(|p| p.as_path()),
            Some(Path::new("/tmp/a b&c+d"))
        );
        assert_eq!(
            crate::config::redact_url(&url),
            "postgres://postgres:***@localhost/postgres?host=/tmp/a%20b%26c%2Bd&port=5432"
        );
    }

    #[test]
    fn the_export_line_and_the_stop_command_quote_for_the_shell() {
        assert_eq!(export_line("a'b&c"), r"export DATABASE_URL='a'\''b&c'");
        assert_eq!(shell_word("/srv/demo/.dialout/pg"), "/srv/demo/.dialout/pg");
        assert_eq!(shell_word("/home/a/My Demo/pg"), "'/home/a/My Demo/pg'");
    }
}
