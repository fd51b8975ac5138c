//! The `strangler` program as a process, for tests that kill it or read what it prints:
//! one command run to its end with `--json`, or a long-running one (`serve`, `sync`) that
//! logs to a file and can be SIGKILLed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// The token the fleet's replicas and their CLI share.
pub const TOKEN: &str = "fleet-test-token-0123456789abcdef";

/// Runs `strangler --plan PLAN ARGS --json`; answers its exit code, its JSON output and its
/// standard error.
pub fn cli(plan: &Path, args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_e2e-strangler"))
        .arg("--plan")
        .arg(plan)
        .args(args)
        .arg("--json")
        .env("STRANGLER_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let json = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    (
        out.status.code().unwrap_or(-1),
        json,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// A long-running `strangler` command whose log (standard error, `RUST_LOG=info`) goes to a
/// file; SIGKILLed when dropped.
pub struct Program {
    child: Option<Child>,
    log: PathBuf,
}

impl Program {
    /// Starts `strangler --plan PLAN ARGS`, appending its log to `log`.
    pub fn start(plan: &Path, args: &[&str], log: &Path) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_e2e-strangler"))
            .arg("--plan")
            .arg(plan)
            .args(args)
            .env("STRANGLER_ADMIN_TOKEN", TOKEN)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Self {
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    /// Whether it is still running (it has not exited, panicking or not).
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// SIGKILL: no lease released, nothing flushed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Everything it logged so far (and what earlier processes logged to the same file).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        self.kill();
    }
}
