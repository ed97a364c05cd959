//! The same scenarios on PostgreSQL, a database per service. Runs when
//! THEMODEL_TEST_POSTGRES_URL points at a server (e.g.
//! postgres://postgres@127.0.0.1:5432/postgres); `.ci/run` starts one.

use sqlx::Connection;
use themodel::SuiteOptions;
use themodel_e2e::{Svc, TestSuite};

use crate::chain::{assert_november_funnel, november, returning_visitors};
use crate::concurrency::concurrent_touches_on_one_lead;
use crate::dead_letters::{dead_letter_lifecycle, overflow_is_refused};
use crate::durability::receiver_down_then_up;
use crate::ingest::streamed_equals_replayed;
use crate::views::{assert_autumn_splits, assert_autumn_views, autumn};

/// Five databases on one server, created afresh for each round.
struct Databases {
    admin: sqlx::PgConnection,
    urls: Vec<(Svc, String)>,
}

impl Databases {
    async fn new(admin_url: &str) -> Databases {
        let admin = sqlx::PgConnection::connect(admin_url).await.unwrap();
        let run = format!("t{:08x}", rand::random::<u32>());
        let (base, _) = admin_url.rsplit_once('/').unwrap();
        let urls = Svc::ALL
            .into_iter()
            .map(|name| (name, format!("{base}/{run}_{}", name.as_str().replace('-', "_"))))
            .collect();
        Databases { admin, urls }
    }

    fn names(&self) -> Vec<String> {
        let path = |u: &str| u.split('?').next().unwrap().rsplit('/').next().unwrap().to_owned();
        self.urls.iter().map(|(_, u)| path(u)).collect()
    }

    async fn drop_all(&mut self) {
        for db in self.names() {
            sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&mut self.admin).await.unwrap();
        }
    }

    /// A suite on empty databases.
    async fn suite(&mut self, configure: impl FnOnce(&mut SuiteOptions)) -> TestSuite {
        self.drop_all().await;
        for db in self.names() {
            sqlx::query(&format!("CREATE DATABASE {db}")).execute(&mut self.admin).await.unwrap();
        }
        let urls = self.urls.clone();
        TestSuite::start_with(|o| {
            o.database_urls = urls.into_iter().collect();
            configure(o);
        })
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_scenarios_on_postgres_give_the_same_results() {
    let Ok(admin_url) = std::env::var("THEMODEL_TEST_POSTGRES_URL") else {
        eprintln!("skipped: set THEMODEL_TEST_POSTGRES_URL to run the scenarios on PostgreSQL");
        return;
    };
    let mut dbs = Databases::new(&admin_url).await;

    let mut t = dbs.suite(|_| {}).await;
    november(&t).await;
    assert_november_funnel(&t.settled_funnel("2026-11-01", "2026-12-01").await);
    // kpi restarts from its stored cursors without double counting.
    t.suite.restart(Svc::Kpi).await.unwrap();
    t.wait_serving().await;
    assert_november_funnel(&t.settled_funnel("2026-11-01", "2026-12-01").await);
    t.suite.shutdown().await.unwrap();

    // The cohort view and the splits.
    let t = dbs.suite(|_| {}).await;
    autumn(&t).await;
    assert_autumn_views(&t).await;
    assert_autumn_splits(&t).await;
    crate::targets::targets_after_autumn(&t).await;
    t.suite.shutdown().await.unwrap();

    // Retention.
    let t = dbs.suite(|_| {}).await;
    crate::retention::accounts(&t).await;
    crate::retention::assert_retention(&t).await;
    t.suite.shutdown().await.unwrap();

    // Recycling.
    let t = dbs.suite(|_| {}).await;
    crate::recycling::history(&t).await;
    crate::recycling::assert_recycling(&t).await;
    t.suite.shutdown().await.unwrap();

    // Velocity, and a lead found never-buy later.
    let t = dbs.suite(|_| {}).await;
    crate::velocity::history(&t).await;
    crate::velocity::assert_velocity(&t).await;
    t.suite.shutdown().await.unwrap();
    let t = dbs.suite(|_| {}).await;
    crate::never_buy::late_never_buy(&t).await;
    t.suite.shutdown().await.unwrap();
    let t = dbs.suite(|_| {}).await;
    crate::calibration::cohort(&t).await;
    crate::calibration::assert_calibration(&t).await;
    t.suite.shutdown().await.unwrap();

    // Periods in other time zones.
    let t = dbs.suite(|_| {}).await;
    crate::zones::history(&t).await;
    crate::zones::assert_every_zone(&t).await;
    t.suite.shutdown().await.unwrap();

    // Owners and the KPIs per rep.
    let t = dbs.suite(crate::owners::roster).await;
    crate::owners::reps_and_their_kpis(&t).await;
    t.suite.shutdown().await.unwrap();
    let t = dbs.suite(crate::owners::managers).await;
    crate::owners::managers_and_their_books(&t).await;
    t.suite.shutdown().await.unwrap();

    // Hand-overs to a stopped receiver, and concurrent writers.
    let mut t = dbs.suite(|_| {}).await;
    receiver_down_then_up(&mut t).await;
    concurrent_touches_on_one_lead(&t, 40).await;
    returning_visitors(&t).await;
    t.suite.shutdown().await.unwrap();

    // Dead letters, and amounts that would overflow.
    let t = dbs.suite(|o| o.dead_letter_after = 2).await;
    dead_letter_lifecycle(&t).await;
    t.suite.shutdown().await.unwrap();
    let t = dbs.suite(|o| o.dead_letter_after = 2).await;
    overflow_is_refused(&t).await;
    t.suite.shutdown().await.unwrap();

    // Erasing a person, and the audit log.
    let t = dbs.suite(|o| o.identities = vec![("rex".to_owned(), crate::privacy::revops())]).await;
    crate::privacy::erasure(&t, &dbs.urls).await;
    t.suite.shutdown().await.unwrap();

    // The stream on PostgreSQL equals the one-by-one replay on SQLite.
    let t = dbs.suite(|_| {}).await;
    let replayed = TestSuite::start().await;
    streamed_equals_replayed(&t, &replayed).await;
    t.suite.shutdown().await.unwrap();

    dbs.drop_all().await;
}

/// The services reach PostgreSQL over TLS with `sslmode=verify-full`: every
/// connection they hold is encrypted, and a server whose certificate does
/// not chain to the given CA, or does not name the host dialled, is
/// refused. Runs when THEMODEL_TEST_POSTGRES_CA names the CA of the test
/// server's certificate (issued for `localhost`; `.ci/postgres.sh` makes
/// one).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_services_reach_postgres_over_verified_tls() {
    let (Ok(admin_url), Ok(ca)) =
        (std::env::var("THEMODEL_TEST_POSTGRES_URL"), std::env::var("THEMODEL_TEST_POSTGRES_CA"))
    else {
        eprintln!("skipped: set THEMODEL_TEST_POSTGRES_URL and THEMODEL_TEST_POSTGRES_CA to run PostgreSQL over TLS");
        return;
    };
    // The test server's certificate names localhost, not 127.0.0.1: the
    // same server dialled by each address is one verified and one refused.
    if !admin_url.contains("@127.0.0.1:") {
        eprintln!("skipped: the TLS test dials the server as 127.0.0.1 and as localhost; give its URL with 127.0.0.1");
        return;
    }
    let by_name = admin_url.replace("@127.0.0.1:", "@localhost:");
    let verified = |url: &str, ca: &str| format!("{url}?sslmode=verify-full&sslrootcert={ca}");

    // verify-full against the right CA and the certificate's name: encrypted.
    let mut conn = sqlx::PgConnection::connect(&verified(&by_name, &ca)).await.unwrap();
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(ssl, "verify-full connects with TLS");
    // A name the certificate does not carry, or a CA that did not sign it.
    let err =
        sqlx::PgConnection::connect(&verified(&admin_url, &ca)).await.expect_err("127.0.0.1 is not in the certificate");
    assert!(format!("{err:?}").contains("NotValidForName"), "{err:?}");
    let other = tempfile::tempdir().unwrap();
    let other_ca = themodel_e2e::certs::TestCa::new(other.path(), "other");
    let err = sqlx::PgConnection::connect(&verified(&by_name, other_ca.cert.to_str().unwrap()))
        .await
        .expect_err("a CA that did not sign the server's certificate");
    assert!(format!("{err:?}").contains("UnknownIssuer"), "{err:?}");

    // The whole chain with every service on verify-full.
    let mut dbs = Databases::new(&by_name).await;
    dbs.urls = dbs.urls.iter().map(|(svc, url)| (*svc, verified(url, &ca))).collect();
    let t = dbs.suite(|_| {}).await;
    november(&t).await;
    assert_november_funnel(&t.settled_funnel("2026-11-01", "2026-12-01").await);
    let names = dbs.names();
    let (encrypted, plain): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
         FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = ANY($1)",
    )
    .bind(&names)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(encrypted >= 5, "each service holds encrypted connections: {encrypted}");
    assert_eq!(plain, 0, "no service connection is in plaintext");
    t.suite.shutdown().await.unwrap();
    dbs.drop_all().await;
}
