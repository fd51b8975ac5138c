//! Test fixture: one throwaway PostgreSQL server per test binary, started on first use in a
//! fresh data directory on a free port, and a fresh database for each test that asks.
//!
//! The server is stopped (and its directory removed) by a small watchdog process once the
//! test process exits: a `static` never drops. Tests may stop and start it again
//! ([`PgServer::stop`], [`PgServer::start`]) to see how their code rides out an outage.
//!
//! PostgreSQL refuses to run as root: when the tests do, the data directory is handed to
//! the `postgres` user and the server's tools run through `runuser -u postgres --`.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long the server may take to start or stop.
const STARTUP: Duration = Duration::from_secs(60);

/// A running throwaway server.
#[derive(Debug)]
pub struct PgServer {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

/// Polls `condition` until it holds, or panics with `what` after 20 seconds: how a test
/// waits for what a server or a subscription does in its own time.
pub fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The test binary's server, started on first call.
pub fn server() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(PgServer::launch)
}

impl PgServer {
    /// A server of the caller's own, stopped when it is dropped: for a test that stops the
    /// database, which would fail the other tests on the shared one.
    pub fn private() -> Self {
        Self::launch()
    }

    /// A server of the caller's own that accepts TLS: a throwaway certificate authority
    /// and a server certificate for 127.0.0.1 it signed (made with the `openssl` command).
    /// Answers the authority's certificate, the root a client must trust.
    pub fn private_tls() -> (Self, PathBuf) {
        let server = Self::launch();
        server.stop();
        let script = "set -e
            printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > server.ext
            openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=pg-fixture-ca -keyout ca.key -out ca.crt 2>/dev/null
            openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr 2>/dev/null
            openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile server.ext -out server.crt 2>/dev/null
            chmod 600 server.key";
        let mut shell = if server.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--", "sh", "-c", script]);
            cmd
        } else {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", script]);
            cmd
        };
        let out = shell
            .current_dir(server.data())
            .stdin(Stdio::null())
            .output()
            .expect("cannot run sh and openssl");
        assert!(
            out.status.success(),
            "making the certificates failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        server.start();
        let root = server.data().join("ca.crt");
        (server, root)
    }

    fn launch() -> Self {
        let bin = find_bindir();
        let as_postgres = running_as_root();
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("pg-fixture-{}-{stamp}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("cannot create the data directory");
        let server = PgServer {
            bin,
            dir,
            port: free_port(),
            as_postgres,
        };
        if as_postgres {
            let status = Command::new("chown")
                .arg("postgres:postgres")
                .arg(&server.dir)
                .status()
                .expect("cannot run chown");
            assert!(
                status.success(),
                "chown postgres {} failed",
                server.dir.display()
            );
        }
        server.watchdog();
        let out = server
            .tool("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(server.data())
            .output()
            .expect("cannot run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        server.start();
        server
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db`.
    pub fn url_for(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a database no one else uses and answers its URL.
    pub fn fresh_database(&self) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let name = format!(
            "test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.url_for("postgres"))
            .arg("-c")
            .arg(format!("CREATE DATABASE {name}"))
            .stdin(Stdio::null())
            .current_dir(std::env::temp_dir())
            .output()
            .expect("cannot run psql");
        assert!(
            out.status.success(),
            "CREATE DATABASE {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url_for(&name)
    }

    /// Starts the server (again), on the same port and data directory; returns once it
    /// accepts connections.
    pub fn start(&self) {
        let mut options = format!(
            "-p {} -h 127.0.0.1 -k {} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300",
            self.port,
            self.dir.display()
        );
        if self.data().join("server.crt").exists() {
            options.push_str(" -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key");
        }
        let status = self
            .tool("pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(self.data())
            .arg("-l")
            .arg(self.log())
            .arg("-o")
            .arg(options)
            .arg("start")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("cannot run pg_ctl");
        if !status.success() || !self.wait_until(true) {
            panic!(
                "the PostgreSQL server did not start on port {}; its log ends with:\n{}",
                self.port,
                self.log_tail()
            );
        }
    }

    /// Stops the server (fast: open connections are closed) and waits until it is down.
    pub fn stop(&self) {
        let status = self
            .tool("pg_ctl")
            .args(["-w", "-t", "60", "-m", "fast", "-D"])
            .arg(self.data())
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("cannot run pg_ctl");
        assert!(status.success(), "pg_ctl stop failed:\n{}", self.log_tail());
        assert!(
            self.wait_until(false),
            "the server still listens on {}",
            self.port
        );
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Polls until the port accepts connections (`up`) or refuses them.
    fn wait_until(&self, up: bool) -> bool {
        let deadline = Instant::now() + STARTUP;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            let accepting = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                && (!up || self.ready());
            if accepting == up {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the server takes queries (not just TCP connections) now.
    fn ready(&self) -> bool {
        let isready = self.bin.join("pg_isready");
        if !isready.exists() {
            return true;
        }
        Command::new(isready)
            .args([
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// One of the server's tools, run as `postgres` when the tests run as root.
    fn tool(&self, name: &str) -> Command {
        let path = self.bin.join(name);
        let mut cmd = if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        };
        cmd.stdin(Stdio::null()).current_dir(&self.dir);
        cmd
    }

    /// A process that outlives this one just long enough to stop the server and remove its
    /// directory once this process is gone. Never waited for: it ends after this process.
    #[allow(clippy::zombie_processes)]
    fn watchdog(&self) {
        let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
        let pg_ctl = quote(&self.bin.join("pg_ctl"));
        let stop = if self.as_postgres {
            format!("runuser -u postgres -- {pg_ctl}")
        } else {
            pg_ctl
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
             {stop} -D {data} -m immediate stop >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            data = quote(&self.data()),
            dir = quote(&self.dir),
        );
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .current_dir(std::env::temp_dir())
            .spawn()
            .expect("cannot start the watchdog");
    }
}

/// Where PostgreSQL's server tools are: the newest `/usr/lib/postgresql/*/bin`, then
/// `pg_config --bindir`, then `PATH`.
fn find_bindir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && bin.join("initdb").exists() {
            return bin;
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").exists() && dir.join("pg_ctl").exists() {
                return dir;
            }
        }
    }
    panic!("no PostgreSQL server tools (initdb, pg_ctl) found: install the `postgresql` package");
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

impl Drop for PgServer {
    /// Only a [`PgServer::private`] server is ever dropped (the shared one is a static).
    fn drop(&mut self) {
        let _ = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_fresh_databases_and_survives_a_restart() {
        let server = server();
        let a = server.fresh_database();
        let b = server.fresh_database();
        assert_ne!(a, b);
        let query = |url: &str| {
            Command::new(server.bin.join("psql"))
                .args(["-X", "-tA", "-d", url, "-c", "SELECT 40 + 2"])
                .stdin(Stdio::null())
                .output()
                .unwrap()
        };
        assert_eq!(String::from_utf8_lossy(&query(&a).stdout).trim(), "42");
        server.stop();
        assert!(!query(&a).status.success());
        server.start();
        assert_eq!(String::from_utf8_lossy(&query(&b).stdout).trim(), "42");
    }
}
