//! The broker's database sessions, against a real PostgreSQL.

mod common;

use classgrid_broker::store::Store;
use common::TestDb;

/// What a session of `store` says for `jit`.
async fn jit(store: &Store) -> String {
    let mut tx = store.begin().await.unwrap();
    sqlx::query_scalar("SHOW jit")
        .fetch_one(&mut *tx)
        .await
        .unwrap()
}

/// The broker's sessions run without PostgreSQL's JIT (decision 118),
/// unless the URL's `options` set it.
#[tokio::test]
async fn sessions_run_without_jit_unless_the_url_sets_it() {
    // A database whose name says jit is still run without it.
    let db = TestDb::new("cg_jit").await;
    let store = Store::connect(&db.url).await.unwrap();
    assert_eq!(jit(&store).await, "off");
    let sep = if db.url.contains('?') { '&' } else { '?' };
    let asked = Store::connect(&format!("{}{sep}options=-c%20jit%3Don", db.url))
        .await
        .unwrap();
    assert_eq!(jit(&asked).await, "on");
}
