//! A proxy fleet on PostgreSQL: three `strangler serve` processes that share nothing but a
//! real database server (each in its own working directory, on its own loopback address),
//! flipped under load, riding out a database outage, and handing leases over when the
//! replica holding them is killed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use e2e::{EchoUpstream, Monolith, Service, demo_routes_and_sync, eventually, free_port};
use strangler_plan::StoreLocation;

use crate::program::{TOKEN, cli};

/// One replica: its own directory (plan copy, last-known table, log), address and process.
struct Replica {
    dir: PathBuf,
    listen: String,
    admin: String,
    child: Option<Child>,
}

impl Replica {
    /// Writes the replica's plan in a directory of its own and starts it.
    fn start(root: &Path, n: usize, plan_tail: &str, db: &str) -> Self {
        let ip = format!("127.0.0.{}", n + 1);
        let dir = root.join(format!("replica-{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        let listen = format!("{ip}:{}", free_port(&ip));
        let admin = format!("{ip}:{}", free_port(&ip));
        let plan = format!(
            "[gate]\nmin_comparisons = 0\nmax_mismatch_rate = 1.0\n\n[proxy]\nlisten = \"{listen}\"\nadmin_listen = \"{admin}\"\nstate = \"{db}\"\n\n{plan_tail}"
        );
        std::fs::write(dir.join("plan.toml"), plan).unwrap();
        let mut replica = Self {
            dir,
            listen,
            admin,
            child: None,
        };
        replica.spawn();
        replica
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("proxy.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_e2e-strangler"))
            .args(["--plan", "plan.toml", "serve"])
            .current_dir(&self.dir)
            .env("STRANGLER_ADMIN_TOKEN", TOKEN)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL: no lease released, no deregistration.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("proxy.log")).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    /// Polls `check` until it holds, or fails naming `what` and showing the replica's log.
    async fn until<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !check().await {
            assert!(
                Instant::now() < deadline,
                "replica {}: never {what}; its log:\n{}",
                self.listen,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the data plane answers.
    async fn ready(&self, client: &reqwest::Client) {
        self.until("listened", || async {
            client.get(self.url("/health")).send().await.is_ok()
        })
        .await;
    }

    /// `strangler_store_up` from its `/metrics`.
    async fn store_up(&self, client: &reqwest::Client) -> Option<u64> {
        let up = e2e::metric(client, &self.admin, TOKEN, "strangler_store_up").await?;
        Some(up as u64)
    }

    /// Waits until its `/metrics` says `strangler_store_up VALUE`.
    async fn store_up_is(&self, client: &reqwest::Client, value: u64) {
        self.until(&format!("strangler_store_up {value}"), || async {
            self.store_up(client).await == Some(value)
        })
        .await;
    }

    /// Which side answered a request for the route.
    async fn served_by(&self, client: &reqwest::Client) -> String {
        let answer = client.get(self.url("/students/1")).send().await.unwrap();
        assert_eq!(answer.status(), 200, "{} answered", self.listen);
        answer
            .headers()
            .get("x-strangler-served-by")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Requests spread over every replica until told to stop; counts answers and failures.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(urls: Vec<String>, workers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let tasks = (0..workers)
            .map(|w| {
                let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
                let (urls, client) = (urls.clone(), client.clone());
                tokio::spawn(async move {
                    let mut i = w;
                    while !stop.load(Ordering::Relaxed) {
                        let url = &urls[i % urls.len()];
                        i += 1;
                        let ok = matches!(client.get(url).send().await, Ok(r) if r.status() == 200);
                        sent.fetch_add(1, Ordering::Relaxed);
                        if !ok {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            sent,
            failed,
            tasks,
        }
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Waits until `n` requests were sent in all (within a minute).
    async fn reach(&self, n: u64) {
        eventually(
            Duration::from_secs(60),
            &format!("{n} requests sent"),
            || async { (self.sent() >= n).then_some(()) },
        )
        .await;
    }

    async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        (
            self.sent.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn two_sided_tail(legacy: &EchoUpstream, new: &EchoUpstream) -> String {
    format!(
        "[analysis]\ninterval = \"60m\"\n[services.legacy]\nurls = [\"{}\"]\nlegacy = true\n[services.new]\nurls = [\"{}\"]\n\n[[routes]]\nname = \"students\"\npaths = [\"/students/{{id}}\"]\nservice = \"new\"\n",
        legacy.url(),
        new.url()
    )
}

/// Waits until the store lists `n` live proxies.
async fn live_proxies(db: &str, n: usize) {
    let location = StoreLocation::Postgres(db.to_string());
    eventually(
        Duration::from_secs(30),
        &format!("{n} live proxies in the store"),
        || {
            let location = location.clone();
            async move {
                let store = strangler_store::open(&location).ok()?;
                let live = store
                    .proxies()
                    .ok()?
                    .into_iter()
                    .filter(|p| p.is_live(strangler_store::now_ms()))
                    .count();
                (live == n).then_some(())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_confirm_fifty_flips_under_load_without_a_failed_request() {
    let db = pg_fixture::server().fresh_database();
    let (legacy, new) = (
        EchoUpstream::start("legacy").await,
        EchoUpstream::start("new").await,
    );
    let root = tempfile::tempdir().unwrap();
    let tail = two_sided_tail(&legacy, &new);
    let replicas: Vec<Replica> = (0..3)
        .map(|n| Replica::start(root.path(), n, &tail, &db))
        .collect();
    let client = client();
    for r in &replicas {
        r.ready(&client).await;
    }
    live_proxies(&db, 3).await;
    let plan = replicas[0].dir.join("plan.toml");

    let urls: Vec<String> = replicas.iter().map(|r| r.url("/students/7")).collect();
    let load = Load::start(urls, 6);
    let mut elapsed = Vec::new();
    for flip in 0..50 {
        let forward = if flip % 2 == 0 {
            vec!["cutover", "students", "--force"]
        } else {
            vec!["canary", "students", "50", "--force"]
        };
        let (code, out, err) = cli(&plan, &forward);
        assert_eq!(code, 0, "flip {flip} forward: {out} {err}");
        let (code, out, err) = cli(&plan, &["rollback", "students"]);
        assert_eq!(code, 0, "flip {flip} rollback not confirmed: {out} {err}");
        assert_eq!(
            out["applied_by"].as_array().map(Vec::len),
            Some(3),
            "every replica confirms the rollback: {out}"
        );
        elapsed.push(out["elapsed_ms"].as_f64().unwrap_or(f64::NAN));
        // Confirmed means served: each replica answers from legacy now.
        for r in &replicas {
            assert_eq!(
                r.served_by(&client).await,
                "legacy",
                "{} after flip {flip}",
                r.listen
            );
        }
    }
    // At least 5,000 requests across the three, whatever the flips took.
    load.reach(5_000).await;
    let (sent, failed) = load.finish().await;
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed during 50 flips"
    );
    assert!(legacy.hits() > 0 && new.hits() > 0, "both sides served");
    elapsed.sort_by(f64::total_cmp);
    eprintln!(
        "50 rollbacks over 3 replicas under {sent} requests: median {:.1} ms, max {:.1} ms",
        elapsed[elapsed.len() / 2],
        elapsed[elapsed.len() - 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_fleet_rides_out_a_database_outage_and_catches_up() {
    // Its own server: stopping the shared one would fail the other tests.
    let pg = pg_fixture::PgServer::private();
    let db = pg.fresh_database();
    let (legacy, new) = (
        EchoUpstream::start("legacy").await,
        EchoUpstream::start("new").await,
    );
    let root = tempfile::tempdir().unwrap();
    let tail = two_sided_tail(&legacy, &new);
    let mut replicas: Vec<Replica> = (0..3)
        .map(|n| Replica::start(root.path(), n, &tail, &db))
        .collect();
    let client = client();
    for r in &replicas {
        r.ready(&client).await;
    }
    live_proxies(&db, 3).await;
    let plan = replicas[0].dir.join("plan.toml");
    let (code, out, err) = cli(&plan, &["cutover", "students", "--force"]);
    assert_eq!(code, 0, "{out} {err}");

    // Load on the two replicas that stay up throughout; the third is restarted below.
    let urls: Vec<String> = replicas[..2].iter().map(|r| r.url("/students/7")).collect();
    let load = Load::start(urls, 4);
    pg.stop();
    for r in &replicas {
        r.store_up_is(&client, 0).await;
    }
    // The CLI names the database it cannot reach, in one line.
    let out = Command::new(env!("CARGO_BIN_EXE_e2e-strangler"))
        .arg("--plan")
        .arg(&plan)
        .arg("status")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.trim().lines().count() == 1 && err.contains("cannot reach the state store postgres://"),
        "{err}"
    );
    // A replica restarted while the database is down serves its last-known table.
    replicas[2].kill();
    replicas[2].spawn();
    replicas[2].ready(&client).await;
    assert_eq!(replicas[2].served_by(&client).await, "new");
    let restarted_load = Load::start(vec![replicas[2].url("/students/7")], 2);
    let sent_while_down = load.sent();
    load.reach(sent_while_down + 1_000).await;
    pg.start();
    for r in &replicas {
        r.store_up_is(&client, 1).await;
    }
    live_proxies(&db, 3).await;
    let (code, out, err) = cli(&plan, &["rollback", "students"]);
    assert_eq!(code, 0, "rollback after the outage: {out} {err}");
    assert_eq!(out["applied_by"].as_array().map(Vec::len), Some(3), "{out}");
    for r in &replicas {
        assert_eq!(r.served_by(&client).await, "legacy");
    }
    let (sent, failed) = load.finish().await;
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed around the outage"
    );
    let (sent, failed) = restarted_load.finish().await;
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests to the replica restarted during the outage failed"
    );
}

/// The owner of a lease row, as a pid (owners are `PID-xxxxxxxx`).
async fn lease_pid(pg: &tokio_postgres::Client, sql: &str) -> Option<u32> {
    let row = pg.query_opt(sql, &[]).await.ok()??;
    let owner: Option<String> = row.get(0);
    owner?.split('-').next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_lease_holders_hand_over_and_no_event_is_lost() {
    let db = pg_fixture::server().fresh_database();
    let (pg, connection) = tokio_postgres::connect(&db, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let monolith = Monolith::start().await;
    let students = Service::data(&students_service::SERVICE).await;
    let finance = Service::data(&finance_service::SERVICE).await;
    let gamification = Service::data(&gamification_service::SERVICE).await;
    let enrollment = Service::enrollment(&students.url, &finance.url, &gamification.url).await;
    let mut tail = String::new();
    for (name, url) in [
        ("legacy", &monolith.url),
        ("students", &students.url),
        ("finance", &finance.url),
        ("gamification", &gamification.url),
        ("enrollment", &enrollment.url),
    ] {
        tail.push_str(&format!("[services.{name}]\nurls = [\"{url}\"]\n"));
        if name == "legacy" {
            tail.push_str("legacy = true\n");
        }
    }
    tail.push_str(&demo_routes_and_sync());
    let root = tempfile::tempdir().unwrap();
    let mut replicas: Vec<Replica> = (0..3)
        .map(|n| Replica::start(root.path(), n, &tail, &db))
        .collect();
    let client = client();
    for r in &replicas {
        r.ready(&client).await;
    }
    live_proxies(&db, 3).await;

    let link = "SELECT owner FROM sync_links WHERE link = 'legacy->students' AND lease_until_ms > (extract(epoch from now()) * 1000)::bigint";
    let controller = "SELECT owner FROM leases WHERE name = 'analysis-controller' AND until_ms > (extract(epoch from now()) * 1000)::bigint";
    let mut written = 0;
    for (what, sql) in [("sync link", link), ("analysis controller", controller)] {
        let holder = eventually(
            Duration::from_secs(20),
            &format!("a {what} lease holder"),
            || async { lease_pid(&pg, sql).await },
        )
        .await;
        // Writes keep coming while the holder dies.
        for _ in 0..10 {
            monolith
                .client
                .new_student(&format!("s{written}@example.edu"))
                .await;
            written += 1;
        }
        let victim = replicas
            .iter_mut()
            .find(|r| r.pid() == holder)
            .expect("the holder is one of the replicas");
        victim.kill();
        for _ in 0..10 {
            monolith
                .client
                .new_student(&format!("s{written}@example.edu"))
                .await;
            written += 1;
        }
        let started = Instant::now();
        let next = eventually(
            Duration::from_secs(20),
            &format!("another {what} lease holder"),
            || async { lease_pid(&pg, sql).await.filter(|pid| *pid != holder) },
        )
        .await;
        assert!(
            replicas.iter().any(|r| r.pid() == next),
            "{next} is a live replica"
        );
        eprintln!("{what} lease taken over in {:?}", started.elapsed());
        // Bring the killed replica back, so the fleet stays at three.
        let dead = replicas.iter_mut().find(|r| r.child.is_none()).unwrap();
        dead.spawn();
        dead.ready(&client).await;
    }
    // Every student the monolith has reaches the students service exactly once.
    let expected = monolith.count("students");
    assert!(expected >= written as i64);
    eventually(Duration::from_secs(30), "every student synced", || async {
        (students.count("students") == expected).then_some(())
    })
    .await;
    let rejected: i64 = pg
        .query_one(
            "SELECT rejected FROM sync_links WHERE link = 'legacy->students'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rejected, 0, "no event refused");
    // Applied once each: the service re-records every event it applies under its id, so
    // an event applied twice would show as a repeated id in its outbox.
    let (total, distinct): (i64, i64) = students
        .sql()
        .query_row("SELECT COUNT(*), COUNT(DISTINCT id) FROM outbox", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(total, distinct, "an event was applied twice");
    assert!(total >= expected, "{total} events for {expected} students");
}
