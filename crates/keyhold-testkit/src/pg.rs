//! Throwaway PostgreSQL clusters for tests and benchmarks: `initdb` in a
//! temp dir, `postgres` on a free loopback port, stopped (immediately) on
//! drop. Run as root, the server runs as the `postgres` user Debian's
//! package creates (PostgreSQL refuses to run as root).
//!
//! Debian's `postgresql` package must be installed; the README test command
//! installs it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A running PostgreSQL cluster.
pub struct PgCluster {
    _dir: tempfile::TempDir,
    pub data: PathBuf,
    pub port: u16,
    bin: PathBuf,
    run_as: Option<String>,
    log: PathBuf,
    stopped: bool,
}

/// Where the PostgreSQL server programs are.
pub fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop().expect(
        "PostgreSQL server programs not found under /usr/lib/postgresql (apt-get install postgresql)",
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Makes `p` belong to `user` (so that the server may write there).
fn chown_to(p: &Path, user: &str) {
    let ok = Command::new("chown")
        .arg("-R")
        .arg(user)
        .arg(p)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "cannot chown {} to {user}", p.display());
}

impl PgCluster {
    /// A new cluster (superuser `keyhold`, trust authentication on
    /// loopback), with `settings` as `-c name=value` server options.
    pub fn start(settings: &[(&str, &str)]) -> Self {
        let mut c = Self::unstarted(
            "keyhold-pg",
            bin_dir(),
            is_root().then(|| "postgres".to_owned()),
        );
        let data = c.data.clone();
        c.run(
            "initdb",
            &[
                "-D",
                path_str(&data),
                "-U",
                "keyhold",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        // Replicas connect with the replication protocol.
        let hba = data.join("pg_hba.conf");
        let mut text = std::fs::read_to_string(&hba).expect("pg_hba.conf");
        text.push_str("\nhost replication keyhold 127.0.0.1/32 trust\n");
        std::fs::write(&hba, text).expect("pg_hba.conf");
        c.start_server(settings);
        c
    }

    /// A cluster in a new temp dir (owned by `run_as`), not yet made.
    fn unstarted(prefix: &str, bin: PathBuf, run_as: Option<String>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("temp dir");
        if let Some(u) = &run_as {
            chown_to(dir.path(), u);
        }
        Self {
            data: dir.path().join("data"),
            log: dir.path().join("server.log"),
            _dir: dir,
            port: 0,
            bin,
            run_as,
            stopped: true,
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self
            .command(program, args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let exe = self.bin.join(program);
        match &self.run_as {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(u).arg("--").arg(exe).args(args);
                c
            }
            None => {
                let mut c = Command::new(exe);
                c.args(args);
                c
            }
        }
    }

    /// Starts the server on a new free port.
    pub fn start_server(&mut self, settings: &[(&str, &str)]) {
        self.start_on(None, settings);
    }

    /// Starts the server again after [`Self::stop`], on the same port (the
    /// URLs clients hold stay right).
    pub fn restart(&mut self, settings: &[(&str, &str)]) {
        self.start_on(Some(self.port), settings);
    }

    fn start_on(&mut self, port: Option<u16>, settings: &[(&str, &str)]) {
        let sock = self._dir.path().to_owned();
        let mut last = String::new();
        for _ in 0..5 {
            self.port = port.unwrap_or_else(free_port);
            let mut opts = format!(
                "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c max_connections=200",
                self.port,
                sock.display()
            );
            for (k, v) in settings {
                opts.push_str(&format!(" -c {k}={v}"));
            }
            let out = self
                .command(
                    "pg_ctl",
                    &[
                        "-D",
                        path_str(&self.data),
                        "-l",
                        path_str(&self.log),
                        "-o",
                        &opts,
                        "-w",
                        "-t",
                        "60",
                        "start",
                    ],
                )
                .stdin(Stdio::null())
                .output()
                .expect("pg_ctl");
            if out.status.success() {
                self.stopped = false;
                return;
            }
            last = format!(
                "{}{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        panic!("PostgreSQL did not start: {last}");
    }

    /// Turns on TLS with this server certificate and key (PEM).
    pub fn enable_tls(&self, cert_pem: &str, key_pem: &str) {
        use std::os::unix::fs::PermissionsExt;
        for (name, pem, mode) in [
            ("server.crt", cert_pem, 0o644),
            ("server.key", key_pem, 0o600),
        ] {
            let p = self.data.join(name);
            std::fs::write(&p, pem).expect("write TLS file");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
            if let Some(u) = &self.run_as {
                chown_to(&p, u);
            }
        }
        self.psql("postgres", "ALTER SYSTEM SET ssl = on");
        self.psql("postgres", "SELECT pg_reload_conf()");
        let started = Instant::now();
        while self.psql("postgres", "SHOW ssl") != "on" {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "ssl did not turn on"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `postgres://keyhold@127.0.0.1:PORT/DB`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://keyhold@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL with psql on database `db`; returns its output (unaligned,
    /// tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "keyhold", "-d", db, "-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Creates database `name` and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(name)
    }

    /// The postmaster's pid.
    pub fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// Stops the server at once (as a crash would, for the data on disk).
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        let _ = self
            .command(
                "pg_ctl",
                &["-D", path_str(&self.data), "-m", "immediate", "-w", "stop"],
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        self.stopped = true;
    }

    /// kill -9 of the postmaster and every backend at once, as a crash of
    /// the machine would (open connections die with it).
    pub fn kill9(&mut self) {
        if let Some(pid) = self.pid() {
            let mut victims = vec![pid.to_string()];
            victims.extend(children(pid).into_iter().map(|c| c.to_string()));
            let _ = Command::new("kill").arg("-9").args(&victims).status();
        }
        let started = Instant::now();
        while TcpListener::bind(("127.0.0.1", self.port)).is_err()
            && started.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stopped = true;
    }

    /// A streaming replica of this cluster (`pg_basebackup -R`), running.
    pub fn replica(&self, settings: &[(&str, &str)]) -> Self {
        let mut c = Self::unstarted("keyhold-pg-replica", self.bin.clone(), self.run_as.clone());
        let data = c.data.clone();
        c.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "keyhold",
                "-D",
                path_str(&data),
                "-R",
                "-X",
                "stream",
                "--checkpoint=fast",
                "--no-sync",
            ],
        );
        c.start_server(settings);
        c
    }

    /// Promotes a replica to primary and waits until it accepts writes.
    pub fn promote(&self) {
        self.run("pg_ctl", &["-D", path_str(&self.data), "-w", "promote"]);
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Processes whose parent is `pid`.
fn children(pid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("PPid:"))
                        .and_then(|v| v.trim().parse::<i32>().ok())
                })
                == Some(pid)
        })
        .collect()
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}
