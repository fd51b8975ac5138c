//! The PostgreSQL ends of a link against a real server: the outbox source reads every
//! committed row exactly once even when transactions commit out of order (where a plain
//! `seq > checkpoint` poll loses rows), the inbox sink inserts each event once, and a
//! table that is missing or laid out wrong is a clear error, retried only when that may
//! help.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use strangler_feed::Event;
use strangler_plan::{LinkSource, LinkTarget, SyncLink};
use strangler_relay::postgres::{INBOX_DDL, OUTBOX_DDL, PgInboxSink, PgOutboxSource};
use strangler_relay::{EventSink, EventSource, Pushed, RelayError};
use tokio_postgres::{Client, NoTls};

/// The `[[sync]]` link a plan with `from` and `to` declares.
fn link(from: &str, to: &str) -> SyncLink {
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:1\"\nstate = \"s.db\"\n\
         [services.legacy]\nurls = [\"http://127.0.0.1:7000\"]\nlegacy = true\n\
         [services.students]\nurls = [\"http://127.0.0.1:7101\"]\n\
         [[sync]]\nfrom = {from}\nto = {to}\n"
    );
    let plan = strangler_plan::parse(std::path::Path::new("plan.toml"), &text).unwrap();
    plan.sync.into_iter().next().unwrap()
}

fn outbox_source(url: &str, table: &str) -> PgOutboxSource {
    let link = link(
        &format!("{{ postgres = \"{url}\", table = \"{table}\", origin = \"legacy\" }}"),
        "\"students\"",
    );
    let LinkSource::Outbox(outbox) = &link.from else {
        panic!("{link:?}")
    };
    PgOutboxSource::new(outbox).unwrap()
}

fn inbox_sink(url: &str, table: &str) -> PgInboxSink {
    let link = link(
        "\"students\"",
        &format!("{{ postgres = \"{url}\", table = \"{table}\", name = \"legacy\" }}"),
    );
    let LinkTarget::Inbox(inbox) = &link.to else {
        panic!("{link:?}")
    };
    PgInboxSink::new(inbox).unwrap()
}

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// A database with the documented outbox table.
async fn outbox_database() -> (String, Client) {
    let url = pg_fixture::server().fresh_database();
    let client = connect(&url).await;
    client.batch_execute(OUTBOX_DDL).await.unwrap();
    (url, client)
}

/// Inserts one outbox row for student `key` in `tx`'s transaction; answers its id.
async fn write_row(tx: &tokio_postgres::Transaction<'_>, key: &str, version: i64) -> String {
    let id = uuid::Uuid::now_v7().to_string();
    tx.execute(
        "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, version)
         VALUES ($1, 'student', $2, 'student.updated', jsonb_build_object('id', $2::text), $3)",
        &[&id, &key, &version],
    )
    .await
    .unwrap();
    id
}

/// One read from `source` after `checkpoint` (moved on), checking what a page promises.
async fn drain(source: &PgOutboxSource, checkpoint: &mut i64, limit: u32) -> Vec<Event> {
    let page = source
        .read(*checkpoint, limit, Duration::from_millis(50))
        .await
        .unwrap();
    assert!(page.next >= *checkpoint, "the checkpoint never moves back");
    assert!(page.head >= page.next, "{} < {}", page.head, page.next);
    *checkpoint = page.next;
    page.events
}

/// Reads until a page holds events (other tests' transactions on the shared server hold
/// the horizon back for a while: transaction ids are server-wide).
async fn next_events(source: &PgOutboxSource, checkpoint: &mut i64, limit: u32) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = drain(source, checkpoint, limit).await;
        if !events.is_empty() {
            return events;
        }
        assert!(Instant::now() < deadline, "no events within 30 s");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transactions_committing_out_of_order_lose_no_row() {
    let (url, _setup) = outbox_database().await;
    let source = outbox_source(&url, "outbox");

    // One transaction takes a low `seq` and commits last, after later rows committed and
    // were seen by a plain `seq > checkpoint` poller.
    let mut held_client = connect(&url).await;
    let held = held_client.transaction().await.unwrap();
    let held_id = write_row(&held, "held", 1).await;

    let committed = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let rolled_back = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let writing = Arc::new(AtomicBool::new(true));
    // Concurrent writers whose transactions overlap and commit in any order; every fifth
    // rolls back, and its rows must never be read.
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let (url, committed, rolled_back) =
                (url.clone(), committed.clone(), rolled_back.clone());
            tokio::spawn(async move {
                let mut client = connect(&url).await;
                for n in 0..40 {
                    let tx = client.transaction().await.unwrap();
                    let mut ids = Vec::new();
                    for r in 0..(1 + (w + n) % 3) {
                        ids.push(write_row(&tx, &format!("s{w}-{n}-{r}"), 1).await);
                    }
                    // Hold the transaction a little, differently per writer, so that
                    // later transactions commit first.
                    tokio::time::sleep(Duration::from_millis(((w * 7 + n * 3) % 11) as u64)).await;
                    if n % 5 == 4 {
                        tx.rollback().await.unwrap();
                        rolled_back.lock().unwrap().extend(ids);
                    } else {
                        tx.commit().await.unwrap();
                        committed.lock().unwrap().extend(ids);
                    }
                }
            })
        })
        .collect();

    // The plain poller, for comparison.
    let naive_seen = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let naive = {
        let (url, seen, writing) = (url.clone(), naive_seen.clone(), writing.clone());
        tokio::spawn(async move {
            let client = connect(&url).await;
            let mut checkpoint = 0i64;
            loop {
                let still_writing = writing.load(Ordering::SeqCst);
                let rows = client
                    .query(
                        "SELECT seq, id FROM outbox WHERE seq > $1 ORDER BY seq",
                        &[&checkpoint],
                    )
                    .await
                    .unwrap();
                for row in rows {
                    checkpoint = row.get(0);
                    seen.lock().unwrap().insert(row.get::<_, String>(1));
                }
                if !still_writing {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    // Later transactions commit and the plain poller reads their rows, moving past the
    // held row's `seq`...
    let deadline = Instant::now() + Duration::from_secs(30);
    while naive_seen.lock().unwrap().len() < 10 {
        assert!(Instant::now() < deadline, "the poller never read 10 rows");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // ...but the source reads none of them while the held transaction is open: they are
    // above its horizon.
    let mut checkpoint = 0;
    let mut delivered: Vec<Event> = drain(&source, &mut checkpoint, 7).await;
    assert!(
        delivered.is_empty(),
        "nothing written after the held transaction began is read while it is open: {}",
        delivered.len()
    );
    held.commit().await.unwrap();
    committed.lock().unwrap().insert(held_id.clone());
    // The source reads on while the writers go on.
    while !writers.iter().all(|w| w.is_finished()) {
        delivered.extend(drain(&source, &mut checkpoint, 7).await);
    }
    for writer in writers {
        writer.await.unwrap();
    }
    writing.store(false, Ordering::SeqCst);
    naive.await.unwrap();
    let expected = committed.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let before = delivered.len();
        delivered.extend(drain(&source, &mut checkpoint, 7).await);
        if delivered.len() >= expected.len() && delivered.len() == before {
            break;
        }
        assert!(Instant::now() < deadline, "the source never caught up");
    }

    let ids: Vec<&String> = delivered.iter().map(|e| &e.id).collect();
    let distinct: BTreeSet<String> = ids.iter().map(|s| s.to_string()).collect();
    assert_eq!(ids.len(), distinct.len(), "a row was read twice");
    let lost: Vec<&String> = expected.difference(&distinct).collect();
    assert!(
        lost.is_empty(),
        "{} committed rows lost: {lost:?}",
        lost.len()
    );
    let phantom: Vec<&String> = distinct.difference(&expected).collect();
    assert!(phantom.is_empty(), "rolled back rows read: {phantom:?}");
    assert!(!rolled_back.lock().unwrap().is_empty());
    assert!(
        delivered
            .iter()
            .all(|e| e.origin == "legacy" && e.event_type == "student.updated")
    );
    // The comparison poller lost the held row: the scenario is one where order matters.
    let naive_seen = naive_seen.lock().unwrap();
    assert!(
        !naive_seen.contains(&held_id),
        "the plain poller should have skipped the row committed out of order"
    );
    eprintln!(
        "{} rows committed by overlapping transactions: the source read {}, a plain seq poll {}",
        expected.len(),
        distinct.len(),
        naive_seen.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_transaction_is_read_in_pages_and_resumed_mid_way() {
    let (url, mut setup) = outbox_database().await;
    let tx = setup.transaction().await.unwrap();
    let mut ids = Vec::new();
    for v in 1..=11 {
        ids.push(write_row(&tx, "k", v).await);
    }
    tx.commit().await.unwrap();

    let first = outbox_source(&url, "outbox");
    let mut checkpoint = 0;
    let mut read = next_events(&first, &mut checkpoint, 4).await;
    assert_eq!(read.len(), 4);
    drop(first);
    // A relay restarted on the stored checkpoint goes on inside the same transaction.
    let second = outbox_source(&url, "outbox");
    while read.len() < 11 {
        let page = next_events(&second, &mut checkpoint, 4).await;
        assert!(page.len() <= 4);
        read.extend(page);
    }
    assert!(drain(&second, &mut checkpoint, 4).await.is_empty());
    let read_ids: Vec<String> = read.iter().map(|e| e.id.clone()).collect();
    assert_eq!(read_ids, ids, "every row once, in the order written");
    let versions: Vec<i64> = read.iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=11).collect::<Vec<i64>>());
    assert_eq!(read[0].data, json!({ "id": "k" }));
    assert!(
        read[0].at.ends_with('Z') && read[0].at.len() == 24,
        "{}",
        read[0].at
    );
    // Caught up: the head is the checkpoint.
    let page = second.read(checkpoint, 4, Duration::ZERO).await.unwrap();
    assert_eq!(page.head, page.next);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_notification_wakes_a_waiting_read() {
    let (url, mut setup) = outbox_database().await;
    let source = Arc::new(outbox_source(&url, "outbox"));
    // Let the source listen, then wait long for a row.
    let page = source.read(0, 10, Duration::ZERO).await.unwrap();
    let checkpoint = page.next;
    let reader = {
        let source = source.clone();
        tokio::spawn(async move { source.read(checkpoint, 10, Duration::from_secs(30)).await })
    };
    let tx = setup.transaction().await.unwrap();
    let id = write_row(&tx, "woken", 1).await;
    tx.batch_execute("NOTIFY outbox").await.unwrap();
    tx.commit().await.unwrap();
    let page = tokio::time::timeout(Duration::from_secs(25), reader)
        .await
        .expect("the read returns once the row is there")
        .unwrap()
        .unwrap();
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.events[0].id, id);
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_naming_their_origin_and_debezium_types_are_read_as_events() {
    let (url, setup) = outbox_database().await;
    setup
        .batch_execute(
            "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, version, origin)
             VALUES ('e1', 'student', 's1', 'created', '{\"id\":\"s1\"}', 1, NULL),
                    ('e2', 'student', 's1', 'student.updated', '{\"id\":\"s1\"}', 2, 'students')",
        )
        .await
        .unwrap();
    let source = outbox_source(&url, "outbox");
    let events = next_events(&source, &mut 0, 10).await;
    let got: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| (e.id.as_str(), e.origin.as_str(), e.event_type.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("e1", "legacy", "student.created"),
            ("e2", "students", "student.updated")
        ]
    );
}

/// Runs `sql` on a fresh database and answers the error reading its `outbox` gives.
async fn outbox_error(sql: &str) -> RelayError {
    let url = pg_fixture::server().fresh_database();
    connect(&url).await.batch_execute(sql).await.unwrap();
    outbox_source(&url, "outbox")
        .read(0, 10, Duration::ZERO)
        .await
        .unwrap_err()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_or_wrong_table_is_named_and_retried_only_when_that_may_help() {
    // Not created yet: worth retrying (the application's migration may not have run).
    let err = outbox_error("SELECT 1").await;
    assert!(err.is_transient(), "{err}");
    assert!(
        err.to_string().contains("table outbox does not exist"),
        "{err}"
    );

    let wrong: BTreeMap<&str, (String, &str)> = BTreeMap::from([
        (
            "a text version",
            (
                OUTBOX_DDL.replace("version       bigint", "version       text"),
                "column `version` is text, not bigint or integer",
            ),
        ),
        (
            "no txid",
            (
                OUTBOX_DDL
                    .replace(
                        "txid          xid8 NOT NULL DEFAULT pg_current_xact_id()",
                        "other int",
                    )
                    .replace("(txid, seq)", "(seq)"),
                "no column `txid` (xid8)",
            ),
        ),
        (
            "a txid the application fills",
            (
                OUTBOX_DDL.replace("DEFAULT pg_current_xact_id()", ""),
                "must default to pg_current_xact_id()",
            ),
        ),
        (
            "a nullable seq",
            (
                OUTBOX_DDL.replace(
                    "seq           bigint GENERATED ALWAYS AS IDENTITY",
                    "seq bigint",
                ),
                "column `seq` must be NOT NULL",
            ),
        ),
    ]);
    for (case, (ddl, words)) in wrong {
        assert_ne!(ddl, OUTBOX_DDL, "{case}: the DDL was changed");
        let err = outbox_error(&ddl).await;
        assert!(!err.is_transient(), "{case}: {err}");
        assert!(err.to_string().contains(words), "{case}: {err}");
        assert!(
            err.to_string().contains("outbox outbox at postgres://"),
            "{case}: {err}"
        );
    }

    // Nobody listening: worth retrying, and the message says what was tried.
    let dead = format!(
        "postgres://app:secret@127.0.0.1:{}/shop",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    );
    let err = outbox_source(&dead, "outbox")
        .read(0, 10, Duration::ZERO)
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    let text = err.to_string();
    assert!(text.contains("postgres://app:***@127.0.0.1"), "{text}");
    assert!(!text.contains("secret"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_created_before_its_table_reads_once_it_exists() {
    let url = pg_fixture::server().fresh_database();
    let source = outbox_source(&url, "app.outbox");
    assert!(
        source
            .read(0, 10, Duration::ZERO)
            .await
            .unwrap_err()
            .is_transient()
    );
    let setup = connect(&url).await;
    setup
        .batch_execute(&format!(
            "CREATE SCHEMA app; SET search_path = app; {OUTBOX_DDL}
             INSERT INTO app.outbox (id, aggregatetype, aggregateid, type, payload, version)
             VALUES ('e1', 'student', 's1', 'student.created', '{{}}', 1)"
        ))
        .await
        .unwrap();
    assert_eq!(next_events(&source, &mut 0, 10).await.len(), 1);
}

fn event(id: &str, version: i64) -> Event {
    Event {
        id: id.into(),
        seq: 0,
        origin: "students".into(),
        event_type: "student.updated".into(),
        key: "s1".into(),
        version,
        at: "2026-11-30T10:00:00.123Z".into(),
        data: json!({ "id": "s1", "name": format!("v{version}") }),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_inbox_takes_each_event_once() {
    let url = pg_fixture::server().fresh_database();
    let client = connect(&url).await;
    client.batch_execute(INBOX_DDL).await.unwrap();
    let sink = inbox_sink(&url, "inbox");
    let batch = vec![event("e1", 1), event("e2", 2)];
    let Pushed::Applied(first) = sink.push(&batch).await.unwrap() else {
        panic!("applied")
    };
    assert_eq!((first.received, first.applied, first.duplicates), (2, 2, 0));
    // Delivered again (a relay that stopped before its checkpoint), with one new event.
    let again = vec![event("e1", 1), event("e2", 2), event("e3", 3)];
    let Pushed::Applied(second) = sink.push(&again).await.unwrap() else {
        panic!("applied")
    };
    assert_eq!(
        (second.received, second.applied, second.duplicates),
        (3, 1, 2)
    );
    let rows: Vec<String> = client
        .query(
            "SELECT concat_ws(' ', id, origin, aggregatetype, aggregateid, type, version,
                              payload->>'name', to_char(created_at AT TIME ZONE 'UTC', 'HH24:MI:SS.MS'))
             FROM inbox ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        rows,
        [
            "e1 students student s1 student.updated 1 v1 10:00:00.123",
            "e2 students student s1 student.updated 2 v2 10:00:00.123",
            "e3 students student s1 student.updated 3 v3 10:00:00.123",
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_inbox_without_a_unique_id_is_refused_for_good() {
    let url = pg_fixture::server().fresh_database();
    connect(&url)
        .await
        .batch_execute(&INBOX_DDL.replace("PRIMARY KEY", "NOT NULL"))
        .await
        .unwrap();
    let err = inbox_sink(&url, "inbox")
        .push(&[event("e1", 1)])
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(
        err.to_string().contains("primary key or unique index"),
        "{err}"
    );
}
