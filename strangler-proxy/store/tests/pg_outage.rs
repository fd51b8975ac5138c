//! The PostgreSQL backend through a database outage: calls fail fast as retryable errors
//! while the server is down and work again once it is back, and a subscription
//! reconnects by itself and wakes its owner (changes may have been missed). Its own test
//! binary: it stops the server its tests share.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use strangler_plan::Stage;
use strangler_store::prelude::*;
use strangler_store::{PgStore, StageChange, StageWrite};

#[test]
fn the_store_and_its_subscription_ride_out_a_restart() {
    let server = pg_fixture::server();
    let url = server.fresh_database();
    let mut store = PgStore::open(&url).unwrap();
    let woken = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&woken);
    let subscription = store
        .subscribe(Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }))
        .unwrap()
        .expect("PostgreSQL pushes changes");
    pg_fixture::wait_for("listening", || subscription.is_listening());
    assert_eq!(store.generation().unwrap(), 1);

    server.stop();
    pg_fixture::wait_for("the subscription notices", || !subscription.is_listening());
    let started = Instant::now();
    let err = store.generation().unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "bounded: {:?}",
        started.elapsed()
    );
    let before = woken.load(Ordering::SeqCst);

    server.start();
    pg_fixture::wait_for("listening again", || subscription.is_listening());
    assert!(
        woken.load(Ordering::SeqCst) > before,
        "woken after the reconnect"
    );
    pg_fixture::wait_for("the store answers again", || store.generation().is_ok());
    let before = woken.load(Ordering::SeqCst);
    let write = store
        .set_stage(&StageChange {
            route: "students",
            current: Stage::Legacy,
            to: Stage::Shadow,
            actor: "ana",
            reason: None,
            forced: false,
            verdict: None,
        })
        .unwrap();
    assert!(matches!(write, StageWrite::Changed(_)), "{write:?}");
    pg_fixture::wait_for("woken by the change", || {
        woken.load(Ordering::SeqCst) > before
    });
    drop(subscription);
}
