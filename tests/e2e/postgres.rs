//! The same chain on PostgreSQL, a database per service. Runs when
//! THEMODEL_TEST_POSTGRES_URL points at a server (e.g.
//! postgres://postgres@127.0.0.1:5432/postgres); `.ci/run` starts one.

use sqlx::Connection;
use themodel_e2e::{Svc, TestSuite};

use crate::chain::{assert_november_funnel, november, returning_visitors};
use crate::concurrency::concurrent_touches_on_one_lead;
use crate::durability::receiver_down_then_up;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_chain_on_postgres_gives_the_same_funnel() {
    let Ok(admin_url) = std::env::var("THEMODEL_TEST_POSTGRES_URL") else {
        eprintln!("skipped: set THEMODEL_TEST_POSTGRES_URL to run the chain on PostgreSQL");
        return;
    };
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    let run = format!("t{:08x}", rand::random::<u32>());
    let mut urls = Vec::new();
    for name in Svc::ALL {
        let db = format!("{run}_{}", name.as_str().replace('-', "_"));
        sqlx::query(&format!("CREATE DATABASE {db}")).execute(&mut admin).await.unwrap();
        let (base, _) = admin_url.rsplit_once('/').unwrap();
        urls.push((name, format!("{base}/{db}")));
    }
    let databases: Vec<String> = urls.iter().map(|(_, u)| u.rsplit('/').next().unwrap().to_owned()).collect();
    let suite_urls = urls.clone();
    let mut t = TestSuite::start_with(|o| o.database_urls = suite_urls.into_iter().collect()).await;
    november(&t).await;
    assert_november_funnel(&t.settled_funnel("2026-11-01", "2026-12-01").await);

    // kpi restarts from its stored cursors without double counting.
    t.suite.restart(Svc::Kpi).await.unwrap();
    t.wait_serving().await;
    assert_november_funnel(&t.settled_funnel("2026-11-01", "2026-12-01").await);
    t.suite.shutdown().await.unwrap();

    // Hand-overs to a stopped receiver, and concurrent writers, on fresh databases.
    for db in &databases {
        sqlx::query(&format!("DROP DATABASE {db} WITH (FORCE)")).execute(&mut admin).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {db}")).execute(&mut admin).await.unwrap();
    }
    let mut t = TestSuite::start_with(|o| o.database_urls = urls.into_iter().collect()).await;
    receiver_down_then_up(&mut t).await;
    concurrent_touches_on_one_lead(&t, 40).await;
    returning_visitors(&t).await;
    t.suite.shutdown().await.unwrap();
    for db in &databases {
        sqlx::query(&format!("DROP DATABASE {db} WITH (FORCE)")).execute(&mut admin).await.unwrap();
    }
}
