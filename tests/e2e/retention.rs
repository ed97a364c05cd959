//! Retention (docs/domain.md, "Retention") on five accounts whose numbers
//! are worked out by hand below.

use themodel_e2e::{TestSuite, eventually, ts};
use themodel_proto::common::v1::Money;
use themodel_proto::customersuccess::v1 as cs;
use themodel_proto::kpi::v1 as kpi;
use tonic::Code;
use tonic_types::StatusExt;

use crate::flows::*;
use crate::views::to_approval;

/// Opened in October at 1.2M yen a year each:
/// a (web_form, Oct 5), renewed Nov 10 at 1.5M (expansion 0.3M);
/// b (web_form, Oct 6), churned Nov 12 (churned 1.2M);
/// c (trade_show, Oct 7), renewed Nov 14 at 0.9M (contraction 0.3M);
/// d (trade_show, Oct 8), expanded Nov 16 by lead d2's 1.2M deal.
/// Opened in November: e (web_form, Nov 3), new business.
pub async fn accounts(t: &TestSuite) {
    for (id, source, day) in
        [("a", "web_form", "05"), ("b", "web_form", "06"), ("c", "trade_show", "07"), ("d", "trade_show", "08")]
    {
        to_approval(t, id, source, "2026-10-01", "2026-10-02").await;
        close_won(t, &format!("opp-{id}"), &format!("acct-{id}"), &format!("2026-10-{day}T12:00:00Z")).await;
        account(t, &format!("acct-{id}")).await;
    }
    to_approval(t, "e", "web_form", "2026-11-01", "2026-11-02").await;
    close_won(t, "opp-e", "acct-e", "2026-11-03T12:00:00Z").await;
    account(t, "acct-e").await;
    to_approval(t, "d2", "web_form", "2026-11-10", "2026-11-11").await;
    close_won(t, "opp-d2", "acct-d", "2026-11-16T12:00:00Z").await;
    eventually("acct-d expanded", || {
        let mut c = t.customer_success.clone();
        async move {
            let a = c.get_account(cs::GetAccountRequest { account_id: "acct-d".into() }).await.ok()?.into_inner();
            a.account.filter(|a| a.expansions == 1)
        }
    })
    .await;

    let mut c = t.customer_success.clone();
    for (account, units, at) in
        [("acct-a", 1_500_000, "2026-11-10T10:00:00Z"), ("acct-c", 900_000, "2026-11-14T10:00:00Z")]
    {
        c.record_renewal(cs::RecordRenewalRequest {
            request_id: rid(&["renew", account]),
            account_id: account.into(),
            term_months: 0,
            contract_value: Some(yen(units)),
            occurred_at: ts(at),
        })
        .await
        .unwrap();
    }
    c.record_churn(cs::RecordChurnRequest {
        request_id: "churn-b".into(),
        account_id: "acct-b".into(),
        reason: "price".into(),
        note: String::new(),
        occurred_at: ts("2026-11-12T10:00:00Z"),
    })
    .await
    .unwrap();
}

async fn retention(t: &TestSuite, start: &str, end: &str, split: kpi::Dimension) -> kpi::GetRetentionResponse {
    let req = kpi::GetRetentionRequest {
        start_date: start.into(),
        end_date: end.into(),
        split_by: split as i32,
        ..Default::default()
    };
    t.kpi.clone().get_retention(req).await.unwrap().into_inner()
}

/// Whole yen and nanos of a Money (unset: None).
fn amount(m: &Option<Money>) -> Option<(i64, i32)> {
    m.as_ref().map(|m| (m.units, m.nanos))
}

fn yen_row(r: &kpi::Retention) -> &kpi::RecurringRevenue {
    assert_eq!(r.revenue.len(), 1, "one currency: {r:?}");
    assert_eq!(r.revenue[0].currency_code, "JPY");
    &r.revenue[0]
}

/// (start, churned, contraction, expansion, end) in whole yen.
fn arr(r: &kpi::RecurringRevenue) -> [i64; 5] {
    [&r.start_arr, &r.churned, &r.contraction, &r.expansion, &r.end_arr].map(|m| amount(m).unwrap().0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revenue_retention_logo_churn_and_lifetime_value() {
    let mut t = TestSuite::start().await;
    accounts(&t).await;
    assert_retention(&t).await;

    // Rebuilt from the streams (kpi forgets every count and reads each
    // stream again from its start), the numbers are the same.
    t.suite.rebuild_kpi().await.unwrap();
    t.wait_serving().await;
    assert_retention(&t).await;
}

pub async fn assert_retention(t: &TestSuite) {
    let nov = retention(t, "2026-11-01", "2026-12-01", kpi::Dimension::Source).await;
    let total = nov.retention.as_ref().unwrap();
    assert_eq!((total.start_date.as_str(), total.end_date.as_str()), ("2026-11-01", "2026-12-01"));
    // a, b, c and d were customers on Nov 1; b churned; e is new.
    assert_eq!((total.accounts_at_start, total.churned_accounts, total.accounts_at_end), (4, 1, 4));
    assert_eq!(total.logo_churn_rate, Some(0.25));
    let jpy = yen_row(total);
    assert_eq!(jpy.accounts_at_start, 4);
    assert_eq!(arr(jpy), [4_800_000, 1_200_000, 300_000, 1_500_000, 6_000_000]);
    // (4.8 - 1.2 - 0.3) / 4.8 and (4.8 - 1.2 - 0.3 + 1.5) / 4.8.
    assert_eq!(jpy.gross_revenue_retention, Some(0.6875));
    assert_eq!(jpy.net_revenue_retention, Some(1.0));
    assert_eq!(jpy.revenue_churn_rate, Some(0.3125));
    // 1.2M a year for 30 of 365 days; over 0.3125 lost per period.
    assert_eq!(amount(&jpy.average_revenue_per_account), Some((98_630, 136_986_301)));
    assert_eq!(amount(&jpy.lifetime_value), Some((315_616, 438_356_164)));

    // By the source of the lead that opened each account: d's expansion
    // came from a web_form lead but is d's, a trade-show account's.
    assert_eq!(nov.split_by, kpi::Dimension::Source as i32);
    let values: Vec<&str> = nov.splits.iter().map(|s| s.value.as_str()).collect();
    assert_eq!(values, ["trade_show", "web_form"]);
    let trade = nov.splits[0].retention.as_ref().unwrap();
    assert_eq!((trade.accounts_at_start, trade.churned_accounts, trade.accounts_at_end), (2, 0, 2));
    let trade = yen_row(trade);
    assert_eq!(arr(trade), [2_400_000, 0, 300_000, 1_200_000, 3_300_000]);
    assert_eq!((trade.gross_revenue_retention, trade.net_revenue_retention), (Some(0.875), Some(1.375)));
    assert_eq!(amount(&trade.lifetime_value), Some((789_041, 95_890_411)));
    let web = nov.splits[1].retention.as_ref().unwrap();
    assert_eq!((web.accounts_at_start, web.churned_accounts, web.accounts_at_end), (2, 1, 2));
    assert_eq!(web.logo_churn_rate, Some(0.5));
    let web = yen_row(web);
    assert_eq!(arr(web), [2_400_000, 1_200_000, 0, 300_000, 2_700_000]);
    assert_eq!((web.gross_revenue_retention, web.net_revenue_retention), (Some(0.5), Some(0.625)));
    assert_eq!(amount(&web.lifetime_value), Some((197_260, 273_972_603)));

    // October: nobody was a customer on Oct 1, so there is no cohort and
    // no rate, only what the month ended with.
    let oct = retention(t, "2026-10-01", "2026-11-01", kpi::Dimension::Unspecified).await;
    let oct = oct.retention.unwrap();
    assert_eq!((oct.accounts_at_start, oct.churned_accounts, oct.accounts_at_end), (0, 0, 4));
    assert_eq!(oct.logo_churn_rate, None);
    let jpy = yen_row(&oct);
    assert_eq!(arr(jpy), [0, 0, 0, 0, 4_800_000]);
    assert_eq!((jpy.gross_revenue_retention, jpy.net_revenue_retention, jpy.revenue_churn_rate), (None, None, None));
    assert_eq!((jpy.average_revenue_per_account.as_ref(), jpy.lifetime_value.as_ref()), (None, None));

    // December: nothing happened; everything kept, no finite lifetime.
    let dec = retention(t, "2026-12-01", "2027-01-01", kpi::Dimension::Unspecified).await;
    let jpy = yen_row(dec.retention.as_ref().unwrap()).clone();
    assert_eq!(arr(&jpy), [6_000_000, 0, 0, 0, 6_000_000]);
    assert_eq!((jpy.gross_revenue_retention, jpy.net_revenue_retention), (Some(1.0), Some(1.0)));
    assert_eq!(jpy.lifetime_value, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_renewal_in_another_currency_and_a_bad_request_are_refused() {
    let t = TestSuite::start().await;
    win(&t, "solo", "2026-10-05").await;
    let err = t
        .customer_success
        .clone()
        .record_renewal(cs::RecordRenewalRequest {
            request_id: "renew-usd".into(),
            account_id: "acct-solo".into(),
            term_months: 12,
            contract_value: Some(Money { currency_code: "USD".into(), units: 10_000, nanos: 0 }),
            occurred_at: ts("2026-11-01T10:00:00Z"),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("JPY"), "{}", err.message());
    assert_eq!(account(&t, "acct-solo").await.contract_value, Some(yen(1_200_000)), "nothing changed");

    let mut k = t.kpi.clone();
    let err = k
        .get_retention(kpi::GetRetentionRequest {
            start_date: "2026-11-01".into(),
            end_date: "2026-10-01".into(),
            split_by: 99,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let v = err.get_error_details().bad_request().map(|b| b.field_violations.clone()).unwrap_or_default();
    assert_eq!(v.iter().map(|v| v.field.as_str()).collect::<Vec<_>>(), ["end_date", "split_by"]);
    assert!(v[1].description.contains("DIMENSION_SOURCE"), "{v:?}");
}
