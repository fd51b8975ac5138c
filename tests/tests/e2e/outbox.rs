//! A "foreign monolith": a PostgreSQL database whose rows and outbox rows are written by
//! plain SQL transactions (nothing of this project on the writing side), carried to the real
//! students-service by `strangler sync` processes that are SIGKILLed mid-stream; the
//! reverse, the service's writes landing in the database's inbox table exactly once; and
//! what a link to an unreachable server or a bad table reports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use e2e::{Service, eventually};
use serde_json::{Value, json};
use strangler_relay::postgres::{INBOX_DDL, OUTBOX_DDL};
use tokio_postgres::{Client, NoTls};

use crate::program::{Program, cli};

/// The monolith's schema: its students (with the version it bumps under the row lock) and
/// its outbox, as the README lays it out (a `uuid` id, Debezium-style `type`s that the
/// relay prefixes with the aggregate type, no `origin` column).
const MONOLITH_SCHEMA: &str = "
    CREATE TABLE students (
        id text PRIMARY KEY,
        email text NOT NULL UNIQUE,
        name text NOT NULL,
        status text NOT NULL,
        created_at text NOT NULL,
        updated_at text NOT NULL,
        version bigint NOT NULL
    );
    CREATE TABLE outbox (
        seq bigint GENERATED ALWAYS AS IDENTITY,
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        aggregatetype text NOT NULL,
        aggregateid text NOT NULL,
        type text NOT NULL,
        payload jsonb NOT NULL,
        version bigint NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        txid xid8 NOT NULL DEFAULT pg_current_xact_id()
    );
    CREATE INDEX outbox_txid ON outbox (txid, seq);
";

/// A new student and its outbox row, in one statement.
const CREATE: &str = "
    WITH s AS (
        INSERT INTO students (id, email, name, status, created_at, updated_at, version)
        VALUES ($1, $1 || '@example.edu', $2, 'active',
                to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), 1)
        RETURNING *
    )
    INSERT INTO outbox (aggregatetype, aggregateid, type, payload, version)
    SELECT 'student', id, 'created', to_jsonb(s) - 'version', version FROM s";

/// A change to a student (its version bumped under the row lock) and its outbox row.
const RENAME: &str = "
    WITH s AS (
        UPDATE students SET name = $2, version = version + 1,
            updated_at = to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
        WHERE id = $1
        RETURNING *
    )
    INSERT INTO outbox (aggregatetype, aggregateid, type, payload, version)
    SELECT 'student', id, 'updated', to_jsonb(s) - 'version', version FROM s";

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// A plan in `dir` whose only services are a stand-in monolith and students-service, its
/// store a SQLite file beside it, and `links` its `[[sync]]` blocks.
fn plan(dir: &Path, students: &Service, links: &str) -> PathBuf {
    let path = dir.join("plan.toml");
    std::fs::write(
        &path,
        format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nstate = \"strangler.db\"\n\n\
             [services.legacy]\nurls = [\"http://127.0.0.1:1\"]\nlegacy = true\n\n\
             [services.students]\nurls = [\"{}\"]\n\n{links}",
            students.url
        ),
    )
    .unwrap();
    path
}

/// Every event in a participant's feed (what it applied, under the original ids).
async fn feed(service: &Service) -> Vec<Value> {
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page = service
            .client
            .get(&format!("/_events?after={after}&limit=1000"))
            .await
            .expect(200);
        let batch = page["events"].as_array().cloned().unwrap_or_default();
        if batch.is_empty() {
            return events;
        }
        after = page["next"].as_i64().unwrap();
        events.extend(batch);
    }
}

/// The link's row of `sync status --json`.
fn link_status(plan: &Path, link: &str) -> Value {
    let (code, out, err) = cli(plan, &["sync", "status"]);
    assert_eq!(code, 0, "{err}");
    out.as_array()
        .and_then(|links| links.iter().find(|l| l["link"] == link).cloned())
        .unwrap_or(Value::Null)
}

/// The monolith's students as the service shows them: `id → {email, name, status, ...}`.
async fn monolith_students(pg: &Client) -> BTreeMap<String, Value> {
    pg.query(
        "SELECT id, (to_jsonb(s) - 'version')::text FROM students s ORDER BY id",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| {
        let state: String = r.get(1);
        (r.get(0), serde_json::from_str(&state).unwrap())
    })
    .collect()
}

async fn service_students(service: &Service) -> BTreeMap<String, Value> {
    let conn = service.sql();
    let mut stmt = conn
        .prepare("SELECT id, email, name, status, created_at, updated_at FROM students")
        .unwrap();
    stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            json!({
                "id": r.get::<_, String>(0)?, "email": r.get::<_, String>(1)?,
                "name": r.get::<_, String>(2)?, "status": r.get::<_, String>(3)?,
                "created_at": r.get::<_, String>(4)?, "updated_at": r.get::<_, String>(5)?,
            }),
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// A foreign monolith: a fresh PostgreSQL database with the monolith's schema and `n`
/// students (`{key}{i}`, named `{name} {i}`) written by plain SQL, the real students-service,
/// and a plan whose link carries the outbox to it (with verify's snapshot query).
struct ForeignMonolith {
    url: String,
    pg: Client,
    students: Service,
    dir: tempfile::TempDir,
    plan: PathBuf,
}

async fn foreign_monolith(key: &str, name: &str, n: usize) -> ForeignMonolith {
    let url = pg_fixture::server().fresh_database();
    let pg = connect(&url).await;
    pg.batch_execute(MONOLITH_SCHEMA).await.unwrap();
    for i in 0..n {
        pg.execute(CREATE, &[&format!("{key}{i}"), &format!("{name} {i}")])
            .await
            .unwrap();
    }
    let students = Service::data(&students_service::SERVICE).await;
    let dir = tempfile::tempdir().unwrap();
    let plan = plan(
        dir.path(),
        &students,
        &format!(
            "[[sync]]\nfrom = {{ postgres = \"{url}\", table = \"outbox\", origin = \"legacy\", snapshot = {{ student = \"{}\" }} }}\nto = \"students\"\ntypes = [\"student.*\"]\n",
            STUDENT_SNAPSHOT.replace('"', "\\\"")
        ),
    );
    ForeignMonolith {
        url,
        pg,
        students,
        dir,
        plan,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_foreign_monoliths_outbox_reaches_the_service_through_ten_relay_kills() {
    let ForeignMonolith {
        url,
        pg,
        students,
        dir,
        plan,
    } = foreign_monolith("seed", "Seed", 20).await;
    let log = dir.path().join("relay.log");

    // Writers: plain SQL transactions that create and rename students, each held open for
    // a while, so that they overlap and commit out of order.
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (url, stop, committed) = (url.clone(), stop.clone(), committed.clone());
            tokio::spawn(async move {
                let mut client = connect(&url).await;
                let mut n = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    let tx = client.transaction().await.unwrap();
                    if n.is_multiple_of(3) {
                        tx.execute(CREATE, &[&format!("w{w}-{n}"), &format!("Writer {w} #{n}")])
                            .await
                            .unwrap();
                    } else {
                        let target = format!("seed{}", (w * 7 + n) % 20);
                        tx.execute(RENAME, &[&target, &format!("Renamed by {w} #{n}")])
                            .await
                            .unwrap();
                    }
                    tokio::time::sleep(Duration::from_millis(((w * 13 + n * 7) % 25) as u64)).await;
                    tx.commit().await.unwrap();
                    committed.fetch_add(1, Ordering::SeqCst);
                    n += 1;
                    // About 25 transactions a second per writer: a stream the relay
                    // keeps up with, on two cores shared with everything else.
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
            })
        })
        .collect();

    // One transaction takes a low id and a low seq, and commits only after 20 later ones.
    let mut held_client = connect(&url).await;
    let held = held_client.transaction().await.unwrap();
    held.execute(RENAME, &[&"seed0", &"Renamed by the long transaction"])
        .await
        .unwrap();
    let before = committed.load(Ordering::SeqCst);
    eventually(
        Duration::from_secs(30),
        "20 transactions committed after the held one began",
        || async { (committed.load(Ordering::SeqCst) >= before + 20).then_some(()) },
    )
    .await;
    held.commit().await.unwrap();

    // The relay, SIGKILLed ten times, each time after it delivered something since it
    // started (a restarted relay waits for the killed one's lease to expire first).
    for kill in 0..10 {
        let delivered = students.count("outbox");
        let mut relay = Program::start(&plan, &["sync"], &log);
        eventually(
            Duration::from_secs(30),
            &format!("relay {kill} delivering"),
            || async { (students.count("outbox") > delivered).then_some(()) },
        )
        .await;
        assert!(relay.running(), "{}", relay.log());
        relay.kill();
    }
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }

    let mut relay = Program::start(&plan, &["sync"], &log);
    let expected = monolith_students(&pg).await;
    eventually(
        Duration::from_secs(60),
        "the service to hold the monolith's students",
        || async { (service_students(&students).await == expected).then_some(()) },
    )
    .await;
    let status = eventually(Duration::from_secs(30), "the link to catch up", || async {
        let s = link_status(&plan, "legacy->students");
        (s["lag_events"] == 0 && s["checkpoint"].as_i64() > Some(0)).then_some(s)
    })
    .await;
    assert!(relay.running(), "{}", relay.log());
    relay.kill();

    // Every outbox row reached the service: applied (and re-recorded under its id), or
    // acknowledged as stale behind a higher version of its student that was applied.
    let applied = feed(&students).await;
    let ids: Vec<&str> = applied.iter().filter_map(|e| e["id"].as_str()).collect();
    let distinct: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), distinct.len(), "an event was applied twice");
    assert!(applied.iter().all(|e| e["origin"] == "legacy"));
    let mut newest: BTreeMap<&str, i64> = BTreeMap::new();
    for e in &applied {
        let v = newest.entry(e["key"].as_str().unwrap()).or_default();
        *v = (*v).max(e["version"].as_i64().unwrap());
    }
    let rows = pg
        .query("SELECT id::text, aggregateid, version FROM outbox", &[])
        .await
        .unwrap();
    let lost: Vec<String> = rows
        .iter()
        .filter(|r| {
            let (id, key, version): (String, String, i64) = (r.get(0), r.get(1), r.get(2));
            !distinct.contains(id.as_str())
                && newest
                    .get(key.as_str())
                    .is_none_or(|newest| *newest <= version)
        })
        .map(|r| r.get(0))
        .collect();
    assert!(lost.is_empty(), "{} events lost: {lost:?}", lost.len());
    assert_eq!(status["rejected"], 0, "{status}");
    assert_eq!(status["last_error"], Value::Null, "{status}");
    assert!(
        rows.len() > 100,
        "a stream, not a trickle: {} events",
        rows.len()
    );
    assert!(!relay.log().contains("panicked"), "{}", relay.log());
    // And verify, reading both sides entity by entity, says the same.
    let (code, report, err) = cli(&plan, &["verify", "legacy->students"]);
    assert_eq!(
        (code, &report["passed"]),
        (0, &json!(true)),
        "{report}{err}"
    );
    assert_eq!(student_counts(&report)[1..], [0, 0, 0], "{report}");
    eprintln!(
        "{} outbox events through 10 relay kills: {} applied, {} acknowledged as stale, {} redelivered as duplicates",
        rows.len(),
        applied.len(),
        rows.len() - applied.len(),
        status["duplicates"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_services_writes_land_in_an_inbox_table_once() {
    let url = pg_fixture::server().fresh_database();
    let pg = connect(&url).await;
    pg.batch_execute(INBOX_DDL).await.unwrap();
    let students = Service::data(&students_service::SERVICE).await;
    // An event the service applied from the monolith: never sent back to it.
    let echo = json!({ "events": [{
        "id": "from-legacy-1", "origin": "legacy", "type": "student.created", "key": "L1",
        "version": 1, "at": "2026-11-30T10:00:00.000Z",
        "data": { "id": "L1", "email": "l1@example.edu", "name": "From Legacy", "status": "active",
                  "created_at": "2026-11-30T10:00:00Z", "updated_at": "2026-11-30T10:00:00Z" }
    }]});
    students.client.post("/_events", echo).await.expect(200);
    let dir = tempfile::tempdir().unwrap();
    let plan = plan(
        dir.path(),
        &students,
        &format!(
            "[[sync]]\nfrom = \"students\"\nto = {{ postgres = \"{url}\", table = \"inbox\", name = \"legacy\" }}\n"
        ),
    );
    let log = dir.path().join("relay.log");
    let write = |from: usize, to: usize| {
        let client = students.client.clone();
        async move {
            for i in from..to {
                let id = client.new_student(&format!("inbox{i}@example.edu")).await;
                client
                    .patch(
                        &format!("/students/{id}"),
                        json!({ "name": format!("Renamed {i}") }),
                    )
                    .await
                    .expect(200);
            }
        }
    };
    write(0, 30).await;
    let inbox_count = || async {
        pg.query_one("SELECT count(*) FROM inbox", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };

    let mut relay = Program::start(&plan, &["sync"], &log);
    eventually(Duration::from_secs(30), "rows in the inbox", || async {
        (inbox_count().await > 0).then_some(())
    })
    .await;
    relay.kill();
    // A crash between the insert's commit and the checkpoint: the checkpoint stays behind
    // what the inbox already holds, and those events come again.
    let store = rusqlite::Connection::open(dir.path().join("strangler.db")).unwrap();
    store
        .execute(
            "UPDATE sync_links SET checkpoint = MAX(0, checkpoint - 10)",
            [],
        )
        .unwrap();
    drop(store);
    write(30, 45).await;

    let mut relay = Program::start(&plan, &["sync"], &log);
    let own: Vec<Value> = feed(&students)
        .await
        .into_iter()
        .filter(|e| e["origin"] == "students")
        .collect();
    assert_eq!(own.len(), 90);
    eventually(
        Duration::from_secs(30),
        "every event in the inbox",
        || async { (inbox_count().await == 90).then_some(()) },
    )
    .await;
    let status = eventually(Duration::from_secs(30), "the link to catch up", || async {
        let s = link_status(&plan, "students->legacy");
        (s["lag_events"] == 0 && s["checkpoint"].as_i64() > Some(0)).then_some(s)
    })
    .await;
    assert!(relay.running(), "{}", relay.log());
    relay.kill();

    let inbox: Vec<(String, String, i64, String)> = pg
        .query(
            "SELECT id, type, version, payload->>'name' FROM inbox ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let mut expected: Vec<(String, String, i64, String)> = own
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap().to_string(),
                e["type"].as_str().unwrap().to_string(),
                e["version"].as_i64().unwrap(),
                e["data"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    expected.sort();
    assert_eq!(
        inbox, expected,
        "each of the service's events once, as it was"
    );
    assert!(
        status["duplicates"].as_i64().unwrap() >= 1,
        "the replayed events were acknowledged as duplicates: {status}"
    );
    assert!(
        status["skipped"].as_i64().unwrap() >= 1,
        "the monolith's own event is not sent back: {status}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn links_to_an_unreachable_server_or_a_bad_table_say_so_and_recover_when_they_can() {
    let down = pg_fixture::PgServer::private();
    let down_url = down.fresh_database();
    // The documented outbox, with one row whose ids name its database.
    let outbox = format!(
        "{OUTBOX_DDL}
         INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, version)
         VALUES ('ev-' || current_database(), 'student', 'k-' || current_database(), 'student.created',
                 jsonb_build_object('id', 'k-' || current_database(), 'email', current_database() || '@example.edu',
                                    'name', 'N', 'status', 'active', 'created_at', '2026-11-30T10:00:00Z',
                                    'updated_at', '2026-11-30T10:00:00Z'), 1);"
    );
    connect(&down_url)
        .await
        .batch_execute(&outbox)
        .await
        .unwrap();
    down.stop();
    let missing_url = pg_fixture::server().fresh_database();
    let wrong_url = pg_fixture::server().fresh_database();
    connect(&wrong_url)
        .await
        .batch_execute(&outbox.replace("version       bigint", "version       text"))
        .await
        .unwrap();

    let students = Service::data(&students_service::SERVICE).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = |url: &str| url.replace("postgres@", "postgres:hunter2@");
    let links = [("down", &down_url), ("missing", &missing_url), ("wrong", &wrong_url)]
        .iter()
        .map(|(origin, url)| {
            format!(
                "[[sync]]\nfrom = {{ postgres = \"{}\", table = \"outbox\", origin = \"{origin}\" }}\nto = \"students\"\n",
                secret(url)
            )
        })
        .collect::<String>();
    let plan = plan(dir.path(), &students, &links);
    let mut relay = Program::start(&plan, &["sync"], &dir.path().join("relay.log"));

    // Each link's error, in `sync status`: what is wrong, where, without the password.
    let mut errors = Vec::new();
    for (link, words) in [
        ("down->students", "error connecting to server"),
        ("missing->students", "table outbox does not exist"),
        (
            "wrong->students",
            "column `version` is text, not bigint or integer",
        ),
    ] {
        let error = eventually(
            Duration::from_secs(30),
            &format!("{link}'s error"),
            || async {
                link_status(&plan, link)["last_error"]
                    .as_str()
                    .map(str::to_string)
            },
        )
        .await;
        assert!(error.contains(words), "{link}: {error}");
        errors.push(error);
    }
    for error in &errors {
        assert!(
            error.contains("at postgres://postgres:***@127.0.0.1:"),
            "{error}"
        );
        assert!(!error.contains("hunter2"), "{error}");
    }
    // A wrong layout stops its link for good; the others are retried.
    eventually(
        Duration::from_secs(30),
        "the wrong link stopped",
        || async { relay.log().contains("sync link stopped").then_some(()) },
    )
    .await;
    let log = relay.log();
    assert!(
        log.lines()
            .any(|l| l.contains("sync link failing") && l.contains("down->students")),
        "{log}"
    );
    assert!(
        !log.contains("hunter2") && !log.contains("panicked"),
        "{log}"
    );
    assert!(relay.running(), "{log}");

    // The server comes back and the table is created: both links deliver.
    down.start();
    connect(&missing_url)
        .await
        .batch_execute(&outbox)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(60),
        "both recovered links delivering",
        || async {
            let ids: BTreeSet<String> = feed(&students)
                .await
                .iter()
                .filter_map(|e| e["id"].as_str().map(str::to_string))
                .collect();
            let down_db = down_url.rsplit('/').next().unwrap();
            let missing_db = missing_url.rsplit('/').next().unwrap();
            (ids.contains(&format!("ev-{down_db}")) && ids.contains(&format!("ev-{missing_db}")))
                .then_some(())
        },
    )
    .await;
    for link in ["down->students", "missing->students"] {
        let status = eventually(Duration::from_secs(30), "the error cleared", || async {
            let s = link_status(&plan, link);
            s["last_error"].is_null().then_some(s)
        })
        .await;
        assert_eq!(status["applied"], 1, "{status}");
    }
    assert_eq!(link_status(&plan, "wrong->students")["applied"], 0);
    assert!(relay.running(), "{}", relay.log());
}

/// How verify reads the foreign monolith's students: key byte order in the comparison as in
/// the ordering (`COLLATE "C"`), the state without the version column.
const STUDENT_SNAPSHOT: &str = r#"SELECT id AS key, version, to_jsonb(s) - 'version' AS state FROM students s WHERE id COLLATE "C" > $1 ORDER BY id COLLATE "C" LIMIT $2"#;

/// The first walk's first kind of a `verify --json` report.
fn student_counts(report: &Value) -> [i64; 4] {
    let kind = &report["walks"][0]["kinds"][0];
    ["compared", "missing", "extra", "differing"].map(|c| kind[c].as_i64().unwrap_or(-1))
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_compares_a_foreign_monoliths_rows_and_repairs_what_a_postgres_side_allows() {
    let ForeignMonolith {
        url,
        pg,
        students,
        dir,
        plan,
    } = foreign_monolith("pg", "Student", 8).await;
    let relay = Program::start(&plan, &["sync"], &dir.path().join("relay.log"));
    let expected = monolith_students(&pg).await;
    eventually(
        Duration::from_secs(30),
        "the service to hold them",
        || async { (service_students(&students).await == expected).then_some(()) },
    )
    .await;
    let (code, report, err) = cli(&plan, &["verify", "legacy->students"]);
    assert_eq!(
        (code, &report["passed"]),
        (0, &json!(true)),
        "{report}{err}"
    );
    assert_eq!(student_counts(&report), [8, 0, 0, 0]);

    // Behind the outbox's back, in plain SQL: a name changed (same version), a name changed
    // with its version bumped, a row deleted, a row inserted.
    pg.batch_execute(
        "UPDATE students SET name = 'Changed Behind' WHERE id = 'pg3';
         UPDATE students SET name = 'Ahead', version = version + 1 WHERE id = 'pg4';
         DELETE FROM students WHERE id = 'pg5';
         INSERT INTO students (id, email, name, status, created_at, updated_at, version)
         VALUES ('pg8', 'pg8@example.edu', 'No Outbox', 'active',
                 '2026-11-30T10:00:00Z', '2026-11-30T10:00:00Z', 1);",
    )
    .await
    .unwrap();
    let (code, report, err) = cli(&plan, &["verify", "legacy->students"]);
    assert_eq!(code, 1, "{report}{err}");
    // pg0..pg8 less pg5 on the monolith, pg0..pg7 on the service: 9 keys.
    assert_eq!(student_counts(&report), [9, 1, 1, 2], "{report}");

    // The monolith's outbox side takes no events: its state is copied where its version
    // leads (pg4, pg8); a tie (pg3) and a row only the service has (pg5) are reported.
    let (code, report, err) = cli(&plan, &["verify", "legacy->students", "--repair"]);
    assert_eq!(code, 1, "{report}{err}");
    let kind = &report["walks"][0]["kinds"][0];
    assert_eq!(
        (&kind["repaired"], &kind["not_repaired"]),
        (&json!(2), &json!(2)),
        "{kind}"
    );
    let note = |key: &str| {
        kind["repairs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["key"] == key)
            .unwrap_or_else(|| panic!("no note for {key}: {kind}"))["what"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        note("pg4").contains("copied to students (legacy takes no events)"),
        "{}",
        note("pg4")
    );
    assert!(
        note("pg3").contains("takes no events and its version 1 does not lead"),
        "{}",
        note("pg3")
    );
    assert!(note("pg5").contains("delete event"), "{}", note("pg5"));
    // --prefer target would move the service's versions alone: refused.
    let (_, report, err) = cli(
        &plan,
        &[
            "verify",
            "legacy->students",
            "--repair",
            "--prefer",
            "target",
        ],
    );
    let kind = &report["walks"][0]["kinds"][0];
    assert_eq!(
        (&kind["repaired"], &kind["not_repaired"]),
        (&json!(0), &json!(2)),
        "{kind}{err}"
    );
    assert!(
        kind["repairs"][0]["what"]
            .as_str()
            .unwrap()
            .contains("legacy takes no events"),
        "{kind}"
    );

    // The tie fixed the way the application changes rows (a new version and outbox row).
    pg.execute(RENAME, &[&"pg3", &"Renamed Properly"])
        .await
        .unwrap();
    let report = eventually(
        Duration::from_secs(30),
        "only the extra row left",
        || async {
            let (_, report, _) = cli(&plan, &["verify", "legacy->students"]);
            (student_counts(&report)[1..] == [0, 1, 0]).then_some(report)
        },
    )
    .await;
    assert_eq!(report["passed"], false);
    drop(relay);

    // A PostgreSQL end without snapshot queries cannot be read: said, exit 2.
    let bare_dir = tempfile::tempdir().unwrap();
    let bare = self::plan(
        bare_dir.path(),
        &students,
        &format!(
            "[[sync]]\nfrom = {{ postgres = \"{url}\", table = \"outbox\", origin = \"legacy\" }}\nto = \"students\"\n"
        ),
    );
    let (code, report, err) = cli(&bare, &["verify", "legacy->students"]);
    assert_eq!(code, 2, "{report}{err}");
    assert!(
        format!("{report}{err}").contains("its PostgreSQL end `legacy` has no snapshot queries"),
        "{report}{err}"
    );
}
