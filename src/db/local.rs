//! A Postgres server of our own, started from the binaries installed on the machine.
//!
//! `cargo run` with no `DATABASE_URL` keeps one under the data directory so donations survive a
//! restart; the test harness starts a throwaway one. The server listens on a Unix socket only,
//! in a directory only its owner can enter, so `trust` authentication admits nobody else.
//! Postgres refuses to run as root: when we are root, every Postgres program runs as the
//! `postgres` user (or `nobody`), which owns the cluster's files.

use std::ffi::OsStr;
use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io::ErrorKind;
use std::os::unix::fs::{
    DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt, chown, fchown,
};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Output, Stdio};

use anyhow::{Context, bail, ensure};
use sqlx::postgres::PgConnectOptions;

/// The role and the first database `initdb` creates.
pub const SUPERUSER: &str = "quickdonate";
/// Unix socket paths are limited to 107 bytes; leave room for `/.s.PGSQL.5432`.
const MAX_SOCKET_DIR_LEN: usize = 90;
const PORT: u16 = 5432;

/// How a cluster trades durability for speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Postgres's defaults: a committed transaction survives a crash.
    Durable,
    /// No fsync: for throwaway test clusters only.
    Throwaway,
}

/// A running local cluster.
#[derive(Debug)]
pub struct LocalPostgres {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    run_as: Option<Account>,
    /// Whether this process started the server (rather than finding it running).
    started_here: bool,
}

/// An unprivileged account to run Postgres as when we are root.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl LocalPostgres {
    /// Starts (creating it first if needed) the cluster kept under `root`, or adopts it if a
    /// previous run left it running.
    pub fn start(
        root: &Path,
        pg_bin: Option<&Path>,
        durability: Durability,
    ) -> anyhow::Result<Self> {
        let bin_dir = find_bin_dir(pg_bin)?;
        let run_as = if is_root() {
            Some(unprivileged_account()?)
        } else {
            None
        };
        std::fs::create_dir_all(root)
            .with_context(|| format!("Failed to create {}", root.display()))?;
        let root = root
            .canonicalize()
            .with_context(|| format!("Failed to resolve {}", root.display()))?;
        let data_dir = root.join("pgdata");
        let socket_dir = socket_dir_for(&root);
        let mut pg = Self {
            bin_dir,
            data_dir,
            socket_dir,
            run_as,
            started_here: false,
        };

        pg.prepare_dir(&root, 0o755)?;
        private_socket_dir(&pg.socket_dir, pg.run_as.as_ref())?;
        if !pg.data_dir.join("PG_VERSION").exists() {
            pg.init_cluster()?;
        }
        if !pg.is_running() {
            pg.start_server(&root.join("postgres.log"), durability)?;
            pg.started_here = true;
        }
        Ok(pg)
    }

    /// A streaming standby of this cluster, kept under `root` and started: a base backup taken
    /// with `pg_basebackup -R` (which writes the standby's connection to this one), then served
    /// read-only on a socket of its own, replaying what this cluster writes. What
    /// `DATABASE_READ_URL` points at; the tests start one to read finance's exports from.
    pub fn start_standby(&self, root: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(root)
            .with_context(|| format!("Failed to create {}", root.display()))?;
        let root = root
            .canonicalize()
            .with_context(|| format!("Failed to resolve {}", root.display()))?;
        let mut standby = Self {
            bin_dir: self.bin_dir.clone(),
            data_dir: root.join("pgdata"),
            socket_dir: socket_dir_for(&root),
            run_as: self.run_as.clone(),
            started_here: false,
        };
        standby.prepare_dir(&root, 0o755)?;
        private_socket_dir(&standby.socket_dir, standby.run_as.as_ref())?;
        let out = self
            .command("pg_basebackup")
            .arg("--pgdata")
            .arg(&standby.data_dir)
            .args([
                "--write-recovery-conf",
                "--wal-method=stream",
                "--checkpoint=fast",
                "--dbname",
            ])
            .arg(self.url("postgres"))
            .output()
            .context("Failed to run pg_basebackup")?;
        check("pg_basebackup", &out)?;
        standby.start_server(&root.join("postgres.log"), Durability::Throwaway)?;
        standby.started_here = true;
        Ok(standby)
    }

    /// The cluster kept under `root` if it is running now; `None` if it is not (or was never
    /// made). Creates, starts and changes nothing.
    pub fn find_running(root: &Path, pg_bin: Option<&Path>) -> anyhow::Result<Option<Self>> {
        let Ok(root) = root.canonicalize() else {
            return Ok(None);
        };
        let data_dir = root.join("pgdata");
        if !data_dir.join("PG_VERSION").exists() {
            return Ok(None);
        }
        let pg = Self {
            bin_dir: find_bin_dir(pg_bin)?,
            socket_dir: socket_dir_for(&root),
            data_dir,
            run_as: if is_root() {
                Some(unprivileged_account()?)
            } else {
                None
            },
            started_here: false,
        };
        Ok(pg.is_running().then_some(pg))
    }

    /// Connection options for `database` on this cluster, as its superuser.
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(&self.socket_dir)
            .port(PORT)
            .username(SUPERUSER)
            .database(database)
    }

    /// A URL for `database` that psql, pgbench and sqlx all understand.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@localhost:{PORT}/{database}?host={}",
            self.socket_dir.display()
        )
    }

    /// Creates `database` unless it exists.
    pub async fn ensure_database(&self, database: &str) -> anyhow::Result<()> {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect_with(&self.connect_options("postgres"))
            .await
            .context("Failed to connect to the local Postgres")?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(database)
                .fetch_one(&mut conn)
                .await?;
        if !exists {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "CREATE DATABASE \"{database}\""
            )))
            .execute(&mut conn)
            .await
            .with_context(|| format!("Failed to create database {database}"))?;
        }
        conn.close().await?;
        Ok(())
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// Whether this process started the server, and so should stop it.
    pub fn started_here(&self) -> bool {
        self.started_here
    }

    /// Stops the server, waiting for open sessions to be closed.
    pub fn stop(&self) -> anyhow::Result<()> {
        let out = self
            .command("pg_ctl")
            .args(["stop", "--wait", "--mode=fast", "--pgdata"])
            .arg(&self.data_dir)
            .output()
            .context("Failed to run pg_ctl stop")?;
        check("pg_ctl stop", &out)
    }

    /// For throwaway clusters: stops the server and deletes `root` when this process exits,
    /// however it exits. A watchdog shell waits on a pipe from us; when the kernel closes the
    /// pipe at our exit, it stops Postgres and removes the files. Keep the returned handle for
    /// as long as the cluster is needed.
    pub fn remove_when_this_process_exits(&self, root: &Path) -> anyhow::Result<ChildStdin> {
        let script = r#"read _ignored; "$0" stop --pgdata "$1" --mode=immediate >/dev/null 2>&1; rm -rf "$2""#;
        let mut cmd = Command::new("/bin/sh");
        cmd.current_dir("/")
            .arg("-c")
            .arg(script)
            .arg(self.bin_dir.join("pg_ctl"))
            .arg(&self.data_dir)
            .arg(root)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(account) = &self.run_as {
            cmd.uid(account.uid).gid(account.gid);
        }
        let mut child = cmd
            .spawn()
            .context("Failed to start the cluster's watchdog")?;
        child.stdin.take().context("the watchdog has no stdin")
    }

    fn is_running(&self) -> bool {
        self.command("pg_ctl")
            .arg("status")
            .arg("--pgdata")
            .arg(&self.data_dir)
            .output()
            .is_ok_and(|out| out.status.success())
    }

    fn init_cluster(&self) -> anyhow::Result<()> {
        tracing::info!(data_dir = %self.data_dir.display(), "creating a local Postgres cluster");
        let out = self
            .command("initdb")
            .arg("--pgdata")
            .arg(&self.data_dir)
            .args([
                "--username",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-instructions",
            ])
            .output()
            .context("Failed to run initdb")?;
        check("initdb", &out).map_err(|e| {
            e.context(format!(
                "Failed to create a Postgres cluster in {}; if Postgres cannot reach that \
                 directory, set DATA_DIR elsewhere or set DATABASE_URL",
                self.data_dir.display()
            ))
        })
    }

    fn start_server(&self, log_file: &Path, durability: Durability) -> anyhow::Result<()> {
        private_log_file(log_file, self.run_as.as_ref())?;
        let mut options = format!(
            "-c listen_addresses='' -c unix_socket_directories='{}' -p {PORT} -c max_connections=200",
            self.socket_dir.display()
        );
        if durability == Durability::Throwaway {
            options.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        let out = self
            .command("pg_ctl")
            .args(["start", "--wait", "--timeout=60", "--pgdata"])
            .arg(&self.data_dir)
            .arg("--log")
            .arg(log_file)
            .arg("-o")
            .arg(options)
            .output()
            .context("Failed to run pg_ctl start")?;
        check("pg_ctl start", &out).with_context(|| {
            format!(
                "Failed to start the local Postgres; its log is {}",
                log_file.display()
            )
        })
    }

    /// A command for one of the Postgres programs, run as the unprivileged account if we are root.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program.as_ref()));
        // The working directory may be one the unprivileged account cannot enter.
        cmd.stdin(Stdio::null()).env("LC_ALL", "C").current_dir("/");
        if let Some(account) = &self.run_as {
            cmd.uid(account.uid).gid(account.gid);
        }
        cmd
    }

    fn prepare_dir(&self, dir: &Path, mode: u32) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("Failed to create {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("Failed to set permissions on {}", dir.display()))?;
        self.chown(dir)
    }

    fn chown(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(account) = &self.run_as {
            chown(path, Some(account.uid), Some(account.gid)).with_context(|| {
                format!("Failed to give {} to {}", path.display(), account.name)
            })?;
        }
        Ok(())
    }
}

/// Makes `dir` the socket's directory: ours (or the Postgres account's) and 0700, so nobody
/// else can reach the server, whose `trust` authentication would admit them.
///
/// The directory may be in the shared temp directory, where anyone can plant a symlink at its
/// name first: nothing here follows one. An existing directory must really be a directory and
/// belong to us or to `run_as`; it is then tightened through a handle opened without following
/// symlinks, so the directory checked is the one changed.
fn private_socket_dir(dir: &Path, run_as: Option<&Account>) -> anyhow::Result<()> {
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(error) if error.kind() == ErrorKind::AlreadyExists => {}
        Err(error) => {
            return Err(error).with_context(|| format!("Failed to create {}", dir.display()));
        }
    }
    let found = std::fs::symlink_metadata(dir)
        .with_context(|| format!("Failed to look at {}", dir.display()))?;
    ensure!(
        found.file_type().is_dir(),
        "{} is not a directory (a symlink, or a file): refusing to use it for the local \
         Postgres's socket; remove it",
        dir.display()
    );
    let us = effective_uid()?;
    ensure!(
        found.uid() == us || run_as.is_some_and(|account| found.uid() == account.uid),
        "{} belongs to uid {}, not to this process (uid {us}){}: refusing to use it for the \
         local Postgres's socket; remove it",
        dir.display(),
        found.uid(),
        run_as.map_or(String::new(), |a| format!(" or {} (uid {})", a.name, a.uid)),
    );

    let handle = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
        .with_context(|| format!("Failed to open {}", dir.display()))?;
    let opened = handle.metadata()?;
    ensure!(
        (opened.dev(), opened.ino()) == (found.dev(), found.ino()),
        "{} was replaced while it was being checked: refusing to use it",
        dir.display()
    );
    handle
        .set_permissions(Permissions::from_mode(0o700))
        .with_context(|| format!("Failed to set permissions on {}", dir.display()))?;
    if let Some(account) = run_as {
        fchown(&handle, Some(account.uid), Some(account.gid))
            .with_context(|| format!("Failed to give {} to {}", dir.display(), account.name))?;
    }
    Ok(())
}

/// Opens (creating it if need be) Postgres's log, readable by its owner alone: it can hold
/// statements and the data in them. A symlink at its name is refused rather than followed.
fn private_log_file(path: &Path, run_as: Option<&Account>) -> anyhow::Result<()> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|error| {
            if error.raw_os_error() == Some(libc::ELOOP) {
                anyhow::anyhow!(
                    "{} is a symlink: refusing to write the local Postgres's log through it; \
                     remove it",
                    path.display()
                )
            } else {
                anyhow::Error::new(error).context(format!("Failed to open {}", path.display()))
            }
        })?;
    ensure!(
        file.metadata()?.is_file(),
        "{} is not a regular file: refusing to use it for the local Postgres's log",
        path.display()
    );
    // An existing log keeps its mode when opened: tighten it.
    file.set_permissions(Permissions::from_mode(0o600))
        .with_context(|| format!("Failed to set permissions on {}", path.display()))?;
    if let Some(account) = run_as {
        fchown(&file, Some(account.uid), Some(account.gid))
            .with_context(|| format!("Failed to give {} to {}", path.display(), account.name))?;
    }
    Ok(())
}

/// The socket lives beside the data when the path is short enough, else in the temp directory
/// under a name derived from the data path.
fn socket_dir_for(root: &Path) -> PathBuf {
    let beside = root.join("run");
    if beside.as_os_str().len() <= MAX_SOCKET_DIR_LEN {
        return beside;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(root.as_os_str().as_encoded_bytes());
    std::env::temp_dir().join(format!("quickdonate-{}", &hex::encode(digest)[..16]))
}

/// Where `initdb` and `pg_ctl` are: `PG_BIN`, then `PATH`, then the newest
/// `/usr/lib/postgresql/*/bin`.
pub fn find_bin_dir(configured: Option<&Path>) -> anyhow::Result<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = configured {
        if has_tools(dir) {
            return Ok(dir.to_path_buf());
        }
        bail!("PG_BIN: {} holds no initdb and pg_ctl", dir.display());
    }
    if let Some(path) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&path).find(|d| has_tools(d))
    {
        // A directory of links (as /usr/local/bin can be) may hold initdb but not pgbench or
        // psql: use the directory initdb really lives in.
        let real = dir
            .join("initdb")
            .canonicalize()
            .ok()
            .and_then(|initdb| initdb.parent().map(Path::to_path_buf))
            .filter(|real| has_tools(real));
        return Ok(real.unwrap_or(dir));
    }
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .collect();
    candidates.sort();
    match candidates.pop() {
        Some((_, dir)) => Ok(dir),
        None => bail!(
            "No Postgres binaries found (looked in PG_BIN, PATH and /usr/lib/postgresql/*/bin): \
             install Postgres or set DATABASE_URL"
        ),
    }
}

fn is_root() -> bool {
    effective_uid().is_ok_and(|uid| uid == 0)
}

/// The effective uid of this process, read without unsafe code.
fn effective_uid() -> anyhow::Result<u32> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?;
            line.split_whitespace().nth(2)?.parse::<u32>().ok()
        })
        .context("Failed to read this process's uid from /proc/self/status")
}

/// `postgres` if the machine has that account, else `nobody`.
fn unprivileged_account() -> anyhow::Result<Account> {
    let passwd = std::fs::read_to_string("/etc/passwd").context("Failed to read /etc/passwd")?;
    let lookup = |wanted: &str| {
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.len() >= 4 && fields[0] == wanted).then(|| Account {
                name: wanted.to_owned(),
                uid: fields[2].parse().unwrap_or(u32::MAX),
                gid: fields[3].parse().unwrap_or(u32::MAX),
            })
        })
    };
    lookup("postgres")
        .or_else(|| lookup("nobody"))
        .filter(|a| a.uid != u32::MAX && a.gid != u32::MAX)
        .context("Running as root, but there is no postgres or nobody account to run Postgres as")
}

fn check(what: &str, out: &Output) -> anyhow::Result<()> {
    if out.status.success() {
        return Ok(());
    }
    bail!(
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// An account to hand things to: a chown that followed a symlink would show on the target.
    fn someone_else() -> Account {
        Account {
            name: "someone-else".to_owned(),
            uid: 54321,
            gid: 54321,
        }
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    fn scratch() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn a_symlink_at_the_socket_path_is_refused_and_its_target_is_unchanged() {
        let dir = scratch();
        let target = dir.path().join("theirs");
        std::fs::create_dir(&target).unwrap();
        std::fs::set_permissions(&target, Permissions::from_mode(0o755)).unwrap();
        let owner = std::fs::metadata(&target).unwrap().uid();
        let planted = dir.path().join("run");
        symlink(&target, &planted).unwrap();

        let error = private_socket_dir(&planted, Some(&someone_else())).unwrap_err();

        assert!(
            format!("{error:#}").contains("not a directory"),
            "{error:#}"
        );
        assert_eq!(mode_of(&target), 0o755);
        assert_eq!(std::fs::metadata(&target).unwrap().uid(), owner);
        assert!(std::fs::symlink_metadata(&planted).unwrap().is_symlink());
    }

    #[test]
    fn a_fresh_socket_dir_is_0700() {
        let dir = scratch();
        let run = dir.path().join("run");
        private_socket_dir(&run, None).unwrap();
        assert!(std::fs::symlink_metadata(&run).unwrap().is_dir());
        assert_eq!(mode_of(&run), 0o700);
    }

    #[test]
    fn an_existing_socket_dir_of_ours_is_made_0700() {
        let dir = scratch();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::set_permissions(&run, Permissions::from_mode(0o755)).unwrap();
        private_socket_dir(&run, None).unwrap();
        assert_eq!(mode_of(&run), 0o700);
    }

    #[test]
    fn a_socket_dir_belonging_to_someone_else_is_refused() {
        if !is_root() {
            return; // Only root can give a directory away to set this up.
        }
        let dir = scratch();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::set_permissions(&run, Permissions::from_mode(0o777)).unwrap();
        chown(&run, Some(54321), Some(54321)).unwrap();

        let error = private_socket_dir(&run, None).unwrap_err();
        assert!(
            format!("{error:#}").contains("belongs to uid 54321"),
            "{error:#}"
        );
        assert_eq!(mode_of(&run), 0o777, "left as it was");
        // Unless it is the account Postgres runs as.
        private_socket_dir(&run, Some(&someone_else())).unwrap();
        assert_eq!(mode_of(&run), 0o700);
    }

    #[test]
    fn the_postgres_log_is_created_0600() {
        let dir = scratch();
        let log = dir.path().join("postgres.log");
        private_log_file(&log, None).unwrap();
        assert!(log.is_file());
        assert_eq!(mode_of(&log), 0o600);
    }

    #[test]
    fn an_existing_world_readable_log_becomes_0600_and_keeps_its_lines() {
        let dir = scratch();
        let log = dir.path().join("postgres.log");
        std::fs::write(&log, "an earlier run\n").unwrap();
        std::fs::set_permissions(&log, Permissions::from_mode(0o644)).unwrap();

        private_log_file(&log, None).unwrap();

        assert_eq!(mode_of(&log), 0o600);
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "an earlier run\n");
    }

    #[test]
    fn a_symlinked_log_is_refused_and_its_target_is_unchanged() {
        let dir = scratch();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "not ours\n").unwrap();
        std::fs::set_permissions(&target, Permissions::from_mode(0o644)).unwrap();
        let owner = std::fs::metadata(&target).unwrap().uid();
        let log = dir.path().join("postgres.log");
        symlink(&target, &log).unwrap();

        let error = private_log_file(&log, Some(&someone_else())).unwrap_err();

        assert!(format!("{error:#}").contains("symlink"), "{error:#}");
        assert_eq!(mode_of(&target), 0o644);
        assert_eq!(std::fs::metadata(&target).unwrap().uid(), owner);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "not ours\n");
    }
}
