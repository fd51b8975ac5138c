//! `strangler up`: the demo stack in one command. Starts every service the plan gives a
//! `run` command (as child processes, in the plan's directory, logs prefixed by name), waits
//! until each accepts connections, then serves the proxy in this process. Ctrl-C stops
//! everything; a child that exits on its own is reported.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use strangler_control::Proxy;
use strangler_plan::Plan;

use crate::shutdown_signal;

/// How long a service may take to accept connections after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a child has to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error(
        "service {service}: cannot find `{program}` (looked beside {exe} and on PATH; build it with `cargo build --release`)"
    )]
    NotFound {
        service: String,
        program: String,
        exe: String,
    },
    #[error("service {service}: cannot start {program}: {source}")]
    Spawn {
        service: String,
        program: String,
        source: std::io::Error,
    },
    #[error("service {service} exited during start ({status}); see its log lines above")]
    EarlyExit { service: String, status: String },
    #[error("service {service} did not accept connections on {addr} within {secs} s")]
    NotReady {
        service: String,
        addr: String,
        secs: u64,
    },
    #[error("no service in the plan has a `run` command")]
    Nothing,
    #[error(
        "service {service}: {addr} is already in use (is another stack running? stop it or change the plan)"
    )]
    PortBusy { service: String, addr: String },
    #[error(transparent)]
    Serve(#[from] strangler_control::ServeError),
}

/// A started service.
struct Running {
    name: String,
    child: Child,
}

/// Finds `program`: a path (relative to the plan's directory), beside this executable, or
/// on PATH.
fn resolve(program: &str, plan_dir: &Path) -> Option<PathBuf> {
    if program.contains('/') {
        let path = plan_dir.join(program);
        return path.is_file().then_some(path);
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(program)))
        .filter(|p| p.is_file());
    beside.or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
        })
    })
}

fn forward_lines<R: AsyncRead + Unpin + Send + 'static>(name: String, stream: R) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            crate::say!("[{name}] {line}");
        }
    });
}

fn describe(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(err) => format!("unknown status: {err}"),
    }
}

async fn accepts(url: &http::Uri) -> bool {
    let Some(authority) = url.authority() else {
        return false;
    };
    tokio::time::timeout(
        Duration::from_millis(500),
        tokio::net::TcpStream::connect(authority.as_str()),
    )
    .await
    .is_ok_and(|c| c.is_ok())
}

/// Runs the demo stack until Ctrl-C or SIGTERM.
pub async fn up(plan: Plan) -> Result<(), UpError> {
    let plan_dir = plan
        .file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let exe = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.display().to_string()))
        .unwrap_or_default();
    let mut running: Vec<Running> = Vec::new();
    let started = start_all(&plan, &plan_dir, &exe, &mut running).await;
    if let Err(err) = started {
        stop_all(&mut running).await;
        return Err(err);
    }
    let proxy = match Proxy::start(plan.clone()).await {
        Ok(proxy) => proxy,
        Err(err) => {
            stop_all(&mut running).await;
            return Err(err.into());
        }
    };
    print_ready(&plan, &proxy, &running);

    // Report children that exit on their own; keep the rest (and rollback) working.
    let (exited, mut exits) = mpsc::unbounded_channel::<(String, String)>();
    let mut watched = Vec::new();
    for r in running.drain(..) {
        let exited = exited.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut child = r.child;
        let name = r.name.clone();
        let handle = tokio::spawn(async move {
            tokio::select! {
                status = child.wait() => {
                    let _ = exited.send((name, describe(status)));
                    None
                }
                _ = stopped => Some(child),
            }
        });
        watched.push((r.name, stop, handle));
    }
    loop {
        tokio::select! {
            () = shutdown_signal() => break,
            Some((name, status)) = exits.recv() => {
                eprintln!("strangler: service {name} exited ({status}); the proxy keeps running, requests routed to {name} fail until it is back");
            }
        }
    }
    eprintln!("strangler: stopping the demo stack");
    proxy.stop().await;
    let mut children = Vec::new();
    for (name, stop, handle) in watched {
        let _ = stop.send(());
        if let Ok(Some(child)) = handle.await {
            children.push(Running { name, child });
        }
    }
    stop_all(&mut children).await;
    Ok(())
}

async fn start_all(
    plan: &Plan,
    plan_dir: &Path,
    exe: &str,
    running: &mut Vec<Running>,
) -> Result<(), UpError> {
    let mut any = false;
    for service in plan.services.values() {
        let Some(run) = &service.run else {
            continue;
        };
        any = true;
        // Something else answering on the service's address would pass for it.
        if let Some(url) = service.urls.first()
            && accepts(url).await
        {
            return Err(UpError::PortBusy {
                service: service.name.clone(),
                addr: url.authority().map(ToString::to_string).unwrap_or_default(),
            });
        }
        let program = resolve(&run[0], plan_dir).ok_or_else(|| UpError::NotFound {
            service: service.name.clone(),
            program: run[0].clone(),
            exe: exe.to_string(),
        })?;
        let mut child = Command::new(&program)
            .args(&run[1..])
            .current_dir(plan_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| UpError::Spawn {
                service: service.name.clone(),
                program: program.display().to_string(),
                source,
            })?;
        if let Some(out) = child.stdout.take() {
            forward_lines(service.name.clone(), out);
        }
        if let Some(err) = child.stderr.take() {
            forward_lines(service.name.clone(), err);
        }
        running.push(Running {
            name: service.name.clone(),
            child,
        });
    }
    if !any {
        return Err(UpError::Nothing);
    }
    // Wait for each started service to accept connections on its first URL.
    for service in plan.services.values().filter(|s| s.run.is_some()) {
        let Some(url) = service.urls.first() else {
            continue;
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(r) = running.iter_mut().find(|r| r.name == service.name)
                && let Ok(Some(status)) = r.child.try_wait()
            {
                return Err(UpError::EarlyExit {
                    service: service.name.clone(),
                    status: status.to_string(),
                });
            }
            if accepts(url).await {
                break;
            }
            if Instant::now() >= deadline {
                return Err(UpError::NotReady {
                    service: service.name.clone(),
                    addr: url.to_string(),
                    secs: START_TIMEOUT.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// SIGTERM to every child, then SIGKILL to those still running after the grace period.
async fn stop_all(children: &mut Vec<Running>) {
    for r in children.iter() {
        if let Some(pid) = r.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
        }
    }
    for r in children.iter_mut() {
        match tokio::time::timeout(STOP_GRACE, r.child.wait()).await {
            Ok(status) => eprintln!("strangler: {} stopped ({})", r.name, describe(status)),
            Err(_) => {
                let _ = r.child.kill().await;
                eprintln!(
                    "strangler: {} killed after {} s",
                    r.name,
                    STOP_GRACE.as_secs()
                );
            }
        }
    }
    children.clear();
}

fn print_ready(plan: &Plan, proxy: &Proxy, running: &[Running]) {
    let token_file =
        strangler_control::admin::token_file(&plan.proxy.state, &plan.proxy.last_known);
    crate::say!();
    crate::say!("strangler: the demo stack is up");
    crate::say!("  proxy  http://{}   <- send requests here", proxy.listen);
    crate::say!(
        "  admin  http://{}   (Authorization: Bearer $(cat {}))",
        proxy.admin,
        token_file.display()
    );
    crate::say!(
        "  dashboard  http://{}/   (sign in with that token)",
        proxy.admin
    );
    for service in plan.services.values() {
        let pid = running
            .iter()
            .find(|r| r.name == service.name)
            .and_then(|r| r.child.id())
            .map_or_else(|| "not started here".to_string(), |p| format!("pid {p}"));
        let url = service
            .urls
            .first()
            .map(ToString::to_string)
            .unwrap_or_default();
        let role = if service.legacy { " (legacy)" } else { "" };
        crate::say!("  {:<13} {url:<26} {pid}{role}", service.name);
    }
    let route = plan.routes.first().map_or("students", |r| r.name.as_str());
    let me = std::env::current_exe()
        .ok()
        .map(|exe| {
            std::env::current_dir()
                .ok()
                .and_then(|cwd| exe.strip_prefix(cwd).ok().map(Path::to_path_buf))
                .unwrap_or(exe)
        })
        .map_or_else(|| "strangler".to_string(), |p| p.display().to_string());
    crate::say!();
    crate::say!("try:");
    crate::say!("  curl -s http://{}/students?limit=3", proxy.listen);
    crate::say!("  {me} status");
    crate::say!("  {me} shadow {route}     (then send traffic and read `{me} report {route}`)");
    crate::say!(
        "  {me} cutover {route}    (once the report's gate is open)   then   {me} rollback {route}"
    );
    crate::say!("  {me} history");
    crate::say!("Ctrl-C stops everything.");
    crate::say!();
}
