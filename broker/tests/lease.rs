//! The leader lease and its fence, against a real PostgreSQL: one holder at
//! a time, a new epoch per leader, and a commit under an old epoch refused
//! by the database itself (decision 078).

mod common;

use std::time::Duration;

use classgrid_broker::store::{
    Store,
    lease::{self, Replica},
};
use common::TestDb;
use uuid::Uuid;

fn replica(name: &str) -> Replica {
    Replica {
        id: Uuid::new_v4(),
        name: name.into(),
        grpc_addr: "127.0.0.1:1".into(),
        http_addr: "127.0.0.1:2".into(),
    }
}

async fn store() -> (Store, TestDb) {
    let db = TestDb::new("cg_lease").await;
    let store = Store::connect(&db.url).await.unwrap();
    store.migrate().await.unwrap();
    (store, db)
}

#[tokio::test]
async fn one_replica_leads_at_a_time_and_each_leader_has_a_new_epoch() {
    let (store, _db) = store().await;
    let (a, b) = (replica("a"), replica("b"));
    let lease_len = Duration::from_secs(30);
    let ea = lease::try_acquire(&store, &a, lease_len).await.unwrap();
    assert_eq!(ea, Some(1));
    assert_eq!(
        lease::try_acquire(&store, &b, lease_len).await.unwrap(),
        None,
        "b waits while a's lease lasts"
    );
    assert!(lease::renew(&store, a.id, 1, lease_len).await.unwrap());
    assert!(!lease::renew(&store, b.id, 1, lease_len).await.unwrap());
    // a stops cleanly and hands the lease over.
    lease::give_up(&store, a.id, 1).await.unwrap();
    assert_eq!(
        lease::try_acquire(&store, &b, lease_len).await.unwrap(),
        Some(2)
    );
    assert!(
        !lease::renew(&store, a.id, 1, lease_len).await.unwrap(),
        "a deposed leader cannot renew"
    );
    let now = lease::current(&store).await.unwrap();
    assert_eq!((now.holder, now.epoch), (Some(b.id), 2));
}

/// The database was down longer than the lease: nobody could take it
/// meanwhile, so the leader keeps leading when it is back (it used to stop
/// itself after an 8 s outage, leaving the region with no broker).
#[tokio::test]
async fn a_lease_that_expired_while_nobody_took_it_is_renewed() {
    let (store, db) = store().await;
    let a = replica("a");
    let short = Duration::from_millis(100);
    assert_eq!(
        lease::try_acquire(&store, &a, short).await.unwrap(),
        Some(1)
    );
    // Time passes with no renewal: the lease is expired, and untaken.
    assert!(wait_until(&db, EXPIRED).await, "the lease expired");
    assert!(
        lease::renew(&store, a.id, 1, Duration::from_secs(30))
            .await
            .unwrap()
    );
    // And now a standby cannot take it.
    assert_eq!(
        lease::try_acquire(&store, &replica("b"), short)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn a_commit_under_an_old_epoch_is_refused_by_the_database() {
    let (store, _db) = store().await;
    let (a, b) = (replica("a"), replica("b"));
    let short = Duration::from_millis(200);
    assert_eq!(
        lease::try_acquire(&store, &a, short).await.unwrap(),
        Some(1)
    );
    // a is paused past its lease; b takes over.
    let mut taken = None;
    for _ in 0..100 {
        taken = lease::try_acquire(&store, &b, Duration::from_secs(30))
            .await
            .unwrap();
        if taken.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(taken, Some(2), "b leads once a's lease expired");
    // a wakes and tries to commit a lifecycle step under epoch 1.
    let mut tx = store.begin().await.unwrap();
    let e = lease::fence(&mut tx, 1).await.unwrap_err();
    assert!(lease::is_fenced(&e), "refused as fenced: {e}");
    drop(tx);
    // b's own transactions pass the fence.
    let mut tx = store.begin().await.unwrap();
    lease::fence(&mut tx, 2).await.unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_waits_for_the_old_leaders_transaction_in_flight() {
    let (store, db) = store().await;
    let (a, b) = (replica("a"), replica("b"));
    let short = Duration::from_millis(100);
    lease::try_acquire(&store, &a, short).await.unwrap();
    // a's transaction passed the fence and is still open.
    let mut tx = store.begin().await.unwrap();
    lease::fence(&mut tx, 1).await.unwrap();
    assert!(wait_until(&db, EXPIRED).await, "a's lease expired");
    let pool = store.clone();
    let b2 = b.clone();
    let takeover =
        tokio::spawn(async move { lease::try_acquire(&pool, &b2, Duration::from_secs(30)).await });
    // The takeover queues for the lease's lock behind a's fenced
    // transaction, and cannot finish while it is open.
    assert!(
        wait_until(&db, LOCK_WAITER).await,
        "the takeover waits for the lease's lock"
    );
    assert!(
        !takeover.is_finished(),
        "the takeover waited for a's commit"
    );
    tx.commit().await.unwrap();
    assert_eq!(takeover.await.unwrap().unwrap(), Some(2));
}

/// The lease has expired (by the database's clock).
const EXPIRED: &str = "SELECT expires_at < now() FROM broker_lease";
/// Some session waits for an advisory lock (the takeover's, on the lease).
const LOCK_WAITER: &str =
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted)";

/// Polls `query` (one boolean) until it is true, for at most 10 s.
async fn wait_until(db: &TestDb, query: &'static str) -> bool {
    // Its own connection: the broker's store runs only its own statements.
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < until {
        if sqlx::query_scalar::<_, bool>(query)
            .fetch_one(&pool)
            .await
            .unwrap()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}
