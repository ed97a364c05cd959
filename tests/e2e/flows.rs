//! The steps of the revenue chain, as a client performs them.

use themodel_e2e::{TestSuite, eventually, ts};
use themodel_proto::common::v1::{Bant, Money};
use themodel_proto::customersuccess::v1 as cs;
use themodel_proto::fieldsales::v1 as fs;
use themodel_proto::insidesales::v1 as is;
use themodel_proto::marketing::v1 as mk;

pub fn rid(parts: &[&str]) -> String {
    parts.join("-")
}

pub async fn visit(t: &TestSuite, visitor: &str, at: &str) {
    t.marketing
        .clone()
        .record_visit(mk::RecordVisitRequest {
            request_id: rid(&["visit", visitor, at]),
            visitor_id: visitor.into(),
            page: "/product".into(),
            product_page: true,
            occurred_at: ts(at),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// A good-fit lead (CTO of a 500-person software company).
pub fn lead(id: &str, at: &str) -> mk::CaptureLeadRequest {
    mk::CaptureLeadRequest {
        request_id: rid(&["capture", id]),
        lead_id: id.into(),
        email: format!("{id}@corp.example"),
        name: id.into(),
        company: format!("{id} Inc"),
        company_size: 500,
        industry: "software".into(),
        job_title: "CTO".into(),
        source: "web_form".into(),
        campaign: "autumn".into(),
        visitor_id: String::new(),
        relationship: mk::Relationship::Prospect as i32,
        occurred_at: ts(at),
        channel: String::new(),
    }
}

pub async fn capture(t: &TestSuite, req: mk::CaptureLeadRequest) -> mk::Lead {
    t.marketing.clone().capture_lead(req).await.unwrap().into_inner().lead.unwrap()
}

/// A quote request: enough intent for a good-fit lead to be handed over.
pub async fn quote_request(t: &TestSuite, lead_id: &str, at: &str) -> mk::RecordTouchResponse {
    t.marketing
        .clone()
        .record_touch(mk::RecordTouchRequest {
            request_id: rid(&["quote", lead_id, at]),
            lead_id: lead_id.into(),
            kind: mk::TouchKind::QuoteRequest as i32,
            detail: "/quote".into(),
            occurred_at: ts(at),
        })
        .await
        .unwrap()
        .into_inner()
}

pub async fn in_queue(t: &TestSuite, lead_id: &str) -> is::QueueItem {
    eventually(&format!("{lead_id} in the inside-sales queue"), || {
        let mut c = t.inside_sales.clone();
        async move {
            let item =
                c.get_queue_item(is::GetQueueItemRequest { lead_id: lead_id.into() }).await.ok()?.into_inner().item?;
            (item.status == is::QueueStatus::Open as i32).then_some(item)
        }
    })
    .await
}

pub fn bant_all() -> Bant {
    Bant { budget: true, authority: true, need: true, timeline: true, ..Default::default() }
}

pub async fn qualify(t: &TestSuite, lead_id: &str, bant: Bant, at: &str) {
    let mut c = t.inside_sales.clone();
    c.log_activity(is::LogActivityRequest {
        request_id: rid(&["call", lead_id]),
        lead_id: lead_id.into(),
        kind: is::ActivityKind::Call as i32,
        outcome: is::ActivityOutcome::Connected as i32,
        note: "qualified on the phone".into(),
        occurred_at: ts(at),
    })
    .await
    .unwrap();
    c.record_bant(is::RecordBantRequest {
        request_id: rid(&["bant", lead_id]),
        lead_id: lead_id.into(),
        bant: Some(bant),
        occurred_at: ts(at),
    })
    .await
    .unwrap();
}

pub async fn convert(t: &TestSuite, lead_id: &str, opportunity_id: &str, at: &str) -> is::ConvertToOpportunityResponse {
    t.inside_sales
        .clone()
        .convert_to_opportunity(is::ConvertToOpportunityRequest {
            request_id: rid(&["convert", lead_id]),
            lead_id: lead_id.into(),
            opportunity_id: opportunity_id.into(),
            estimated_value: Some(yen(1_000_000)),
            note: String::new(),
            occurred_at: ts(at),
        })
        .await
        .unwrap()
        .into_inner()
}

pub async fn opportunity(t: &TestSuite, id: &str) -> fs::Opportunity {
    eventually(&format!("opportunity {id} in field sales"), || {
        let mut c = t.field_sales.clone();
        async move {
            c.get_opportunity(fs::GetOpportunityRequest { opportunity_id: id.into() })
                .await
                .ok()?
                .into_inner()
                .opportunity
        }
    })
    .await
}

pub async fn advance(t: &TestSuite, id: &str, to: fs::Phase, at: &str) -> Result<fs::Opportunity, tonic::Status> {
    t.field_sales
        .clone()
        .advance_phase(fs::AdvancePhaseRequest {
            request_id: rid(&["advance", id, to.as_str_name()]),
            opportunity_id: id.into(),
            to_phase: to as i32,
            bant: None,
            occurred_at: ts(at),
        })
        .await
        .map(|r| r.into_inner().opportunity.unwrap())
}

pub async fn walk_to_approval(t: &TestSuite, id: &str, at: &str) {
    for to in [fs::Phase::IssueRecognition, fs::Phase::Evaluation, fs::Phase::Negotiation, fs::Phase::Approval] {
        advance(t, id, to, at).await.unwrap();
    }
}

pub fn yen(units: i64) -> Money {
    Money { currency_code: "JPY".into(), units, nanos: 0 }
}

pub async fn close_won(t: &TestSuite, id: &str, account_id: &str, at: &str) -> fs::Opportunity {
    t.field_sales
        .clone()
        .close_won(fs::CloseWonRequest {
            request_id: rid(&["won", id]),
            opportunity_id: id.into(),
            contract_value: Some(yen(1_200_000)),
            term_months: 12,
            account_id: account_id.into(),
            occurred_at: ts(at),
        })
        .await
        .unwrap()
        .into_inner()
        .opportunity
        .unwrap()
}

pub async fn close_lost(t: &TestSuite, id: &str, reason: &str, at: &str) -> fs::Opportunity {
    t.field_sales
        .clone()
        .close_lost(fs::CloseLostRequest {
            request_id: rid(&["lost", id]),
            opportunity_id: id.into(),
            reason: reason.into(),
            note: String::new(),
            occurred_at: ts(at),
        })
        .await
        .unwrap()
        .into_inner()
        .opportunity
        .unwrap()
}

pub async fn account(t: &TestSuite, id: &str) -> cs::Account {
    eventually(&format!("account {id} in customer success"), || {
        let mut c = t.customer_success.clone();
        async move { c.get_account(cs::GetAccountRequest { account_id: id.into() }).await.ok()?.into_inner().account }
    })
    .await
}

pub async fn lead_status(t: &TestSuite, lead_id: &str, status: mk::LeadStatus) -> mk::Lead {
    eventually(&format!("{lead_id} is {}", status.as_str_name()), || {
        let mut c = t.marketing.clone();
        async move {
            let l = c.get_lead(mk::GetLeadRequest { lead_id: lead_id.into() }).await.ok()?.into_inner().lead?;
            (l.status == status as i32).then_some(l)
        }
    })
    .await
}

/// Runs a lead from capture to a won deal; returns nothing, asserts each step.
pub async fn win(t: &TestSuite, id: &str, day: &str) {
    capture(t, lead(id, &format!("{day}T09:00:00Z"))).await;
    assert!(quote_request(t, id, &format!("{day}T09:30:00Z")).await.handed_over);
    in_queue(t, id).await;
    qualify(t, id, bant_all(), &format!("{day}T10:00:00Z")).await;
    let opp = format!("opp-{id}");
    convert(t, id, &opp, &format!("{day}T10:30:00Z")).await;
    opportunity(t, &opp).await;
    walk_to_approval(t, &opp, &format!("{day}T11:00:00Z")).await;
    close_won(t, &opp, &format!("acct-{id}"), &format!("{day}T12:00:00Z")).await;
    account(t, &format!("acct-{id}")).await;
}
