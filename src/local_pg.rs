//! A private PostgreSQL for a machine with the server installed and no DATABASE_URL:
//! `dialout demo` works on a fresh machine, and tests get a cluster they may restart.

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum LocalPgError {
    #[error(
        "no PostgreSQL server binaries found (looked for /usr/lib/postgresql/*/bin/initdb). \
         Install one (Debian: apt-get install postgresql) or set DATABASE_URL to a running server"
    )]
    NotInstalled,
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A cluster in `dir`, listening on 127.0.0.1:`port` and on a socket in `dir`.
pub struct LocalPg {
    bindir: PathBuf,
    dir: PathBuf,
    port: u16,
}

impl LocalPg {
    /// Finds the newest installed server. `dir` is made absolute.
    pub fn new(dir: &Path, port: u16) -> Result<Self, LocalPgError> {
        let bindir = find_bindir().ok_or(LocalPgError::NotInstalled)?;
        let dir = std::path::absolute(dir)?;
        Ok(Self { bindir, dir, port })
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Creates the cluster if needed and starts it if it is not running.
    pub fn start(&self) -> Result<(), LocalPgError> {
        std::fs::create_dir_all(&self.dir)?;
        if is_root() {
            // initdb refuses root: the cluster belongs to `postgres`, which must be
            // able to reach the folder.
            run(
                "chown",
                Command::new("chown").arg("postgres:").arg(&self.dir),
            )?;
            make_traversable(&self.dir)?;
        }
        if !self.data_dir().join("PG_VERSION").exists() {
            let mut initdb = self.as_owner(&self.bindir.join("initdb"));
            initdb.arg("-D").arg(self.data_dir()).args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
            ]);
            run("initdb", &mut initdb)?;
            let conf = format!(
                "\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n\
                 max_connections = 200\nlog_min_messages = warning\n",
                self.port,
                self.dir.display()
            );
            let path = self.data_dir().join("postgresql.conf");
            let mut text = std::fs::read_to_string(&path)?;
            text.push_str(&conf);
            std::fs::write(&path, text)?;
        }
        if !self.is_running() {
            self.pg_ctl(&["-w", "-t", "60", "start"])?;
        }
        Ok(())
    }

    pub fn stop(&self) -> Result<(), LocalPgError> {
        self.pg_ctl(&["-m", "fast", "-w", "stop"])
    }

    /// A fast restart: every connection is cut, as when a server is restarted in production.
    pub fn restart(&self) -> Result<(), LocalPgError> {
        self.pg_ctl(&["-m", "fast", "-w", "-t", "60", "restart"])
    }

    pub fn is_running(&self) -> bool {
        self.as_owner(&self.bindir.join("pg_ctl"))
            .arg("-D")
            .arg(self.data_dir())
            .arg("status")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), LocalPgError> {
        let mut cmd = self.as_owner(&self.bindir.join("pg_ctl"));
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.dir.join("server.log"))
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

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    })
}

/// Lets `postgres` walk down to `dir` (a tempdir is 0700 and owned by root).
fn make_traversable(dir: &Path) -> Result<(), LocalPgError> {
    use std::os::unix::fs::PermissionsExt;
    let mut current = dir.parent();
    while let Some(p) = current {
        let meta = std::fs::metadata(p)?;
        let mode = meta.permissions().mode();
        if mode & 0o001 == 0 {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode | 0o011))?;
        }
        current = p.parent();
    }
    Ok(())
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
