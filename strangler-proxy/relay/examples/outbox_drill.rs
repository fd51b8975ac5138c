//! The writing side of `scripts/drill --only g`: an application that commits outbox rows
//! with plain SQL (the README's table, student rows a students-service applies), and a
//! watcher of the target's feed that times how long each row took from its commit to being
//! applied there.
//!
//! ```text
//! outbox_drill backlog POSTGRES_URL ROWS
//!     creates the outbox and commits ROWS rows, one transaction each, eight connections
//! outbox_drill steady POSTGRES_URL TARGET_URL RATE SECONDS notify|poll
//!     commits RATE rows a second (one transaction each, with `NOTIFY outbox` in it or
//!     not) for SECONDS, long-polls the target's GET /_events for each row's id, and prints
//!     the commit-to-applied lag
//! ```
//!
//! Both print one JSON object on stdout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use strangler_relay::postgres::OUTBOX_DDL;
use tokio_postgres::{Client, NoTls};

/// One student's creation, as students-service applies it.
const INSERT: &str = "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, version)
    VALUES ($1, 'student', $1, 'student.created',
            jsonb_build_object('id', $1::text, 'email', $1 || '@example.edu', 'name', 'Drill',
                               'status', 'active', 'created_at', '2026-11-30T10:00:00Z',
                               'updated_at', '2026-11-30T10:00:00Z'), 1)";

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("cannot connect to PostgreSQL");
    tokio::spawn(connection);
    client
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["backlog", url, rows] => backlog(url, rows.parse().expect("ROWS")).await,
        [
            "steady",
            url,
            target,
            rate,
            seconds,
            wake @ ("notify" | "poll"),
        ] => {
            steady(
                url,
                target,
                rate.parse().expect("RATE"),
                seconds.parse().expect("SECONDS"),
                wake == "notify",
            )
            .await
        }
        _ => {
            eprintln!(
                "usage: outbox_drill backlog URL ROWS | outbox_drill steady URL TARGET RATE SECONDS notify|poll"
            );
            std::process::exit(2);
        }
    };
    println!("{out}");
}

async fn backlog(url: &str, rows: usize) -> Value {
    connect(url).await.batch_execute(OUTBOX_DDL).await.unwrap();
    let started = Instant::now();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let url = url.to_string();
            tokio::spawn(async move {
                let client = connect(&url).await;
                let insert = client.prepare(INSERT).await.unwrap();
                for n in (w..rows).step_by(8) {
                    client
                        .execute(&insert, &[&format!("backlog-{n}")])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    json!({ "rows": rows, "seconds": started.elapsed().as_secs_f64() })
}

async fn steady(url: &str, target: &str, rate: u64, seconds: u64, notify: bool) -> Value {
    let committed: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let applied: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    // Where the target's feed ends now: only what comes after is watched.
    let head = http
        .get(format!("{target}/_events?after=0&limit=1"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["head"]
        .as_i64()
        .unwrap_or(0);
    let total = rate * seconds;
    let watcher = {
        let (applied, target) = (applied.clone(), target.to_string());
        tokio::spawn(async move {
            let mut after = head;
            let mut seen = 0u64;
            while seen < total {
                let page: Value = match http
                    .get(format!(
                        "{target}/_events?after={after}&limit=1000&wait=1000"
                    ))
                    .send()
                    .await
                {
                    Ok(answer) => answer.json().await.unwrap_or(Value::Null),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let now = Instant::now();
                for event in page["events"].as_array().into_iter().flatten() {
                    if let Some(id) = event["id"].as_str() {
                        applied.lock().unwrap().insert(id.to_string(), now);
                        seen += 1;
                    }
                }
                after = page["next"].as_i64().unwrap_or(after);
            }
        })
    };
    // Open loop: four connections, each committing on its own schedule, so a slow commit
    // delays only its own row.
    let connections = 4;
    let started = Instant::now();
    let writers: Vec<_> = (0..connections)
        .map(|w| {
            let (url, committed) = (url.to_string(), committed.clone());
            tokio::spawn(async move {
                let mut client = connect(&url).await;
                let insert = client.prepare(INSERT).await.unwrap();
                let every = Duration::from_secs_f64(connections as f64 / rate as f64);
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                for n in (w..total).step_by(connections as usize) {
                    tick.tick().await;
                    let id = format!("steady-{n}-{}", u8::from(notify));
                    let tx = client.transaction().await.unwrap();
                    tx.execute(&insert, &[&id]).await.unwrap();
                    if notify {
                        tx.batch_execute("NOTIFY outbox").await.unwrap();
                    }
                    tx.commit().await.unwrap();
                    committed.lock().unwrap().insert(id, Instant::now());
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let writing = started.elapsed().as_secs_f64();
    let _ = tokio::time::timeout(Duration::from_secs(120), watcher).await;
    let committed = committed.lock().unwrap();
    let applied = applied.lock().unwrap();
    let mut lags: Vec<f64> = committed
        .iter()
        .filter_map(|(id, at)| {
            applied
                .get(id)
                .map(|seen| seen.saturating_duration_since(*at).as_secs_f64() * 1000.0)
        })
        .collect();
    lags.sort_by(f64::total_cmp);
    let quantile = |q: f64| {
        lags.get(((lags.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    };
    json!({
        "notify": notify,
        "rate": rate,
        "written": committed.len(),
        "achieved": committed.len() as f64 / writing,
        "applied": lags.len(),
        "missing": committed.len() - lags.len(),
        "p50_ms": quantile(0.50),
        "p99_ms": quantile(0.99),
        "max_ms": lags.last().copied().unwrap_or(f64::NAN),
    })
}
