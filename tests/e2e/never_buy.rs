//! A lead found to be never-buy after its capture: disqualified by inside
//! sales or reclassified by marketing, it ends excluded in marketing, is
//! never handed over again, and the KPIs count it among the excluded leads.

use std::time::Duration;

use prost::{Message, Name};
use themodel_e2e::{Svc, TestSuite, ts};
use themodel_proto::common::v1::Department;
use themodel_proto::common::v1::ListEventsRequest;
use themodel_proto::common::v1::event_stream_service_client::EventStreamServiceClient;
use themodel_proto::insidesales::v1 as is;
use themodel_proto::kpi::v1 as kpi;
use themodel_proto::marketing::v1 as mk;
use tonic::Code;
use tonic_types::StatusExt;

use crate::flows::*;

fn violation(s: &tonic::Status) -> (String, String) {
    let v = s.get_error_details().bad_request().expect("bad request details").field_violations[0].clone();
    (v.field, v.description)
}

async fn disqualify(t: &TestSuite, lead_id: &str, reason: &str, at: &str) -> Result<is::QueueItem, tonic::Status> {
    let req = is::DisqualifyLeadRequest {
        request_id: rid(&["disqualify", lead_id, reason]),
        lead_id: lead_id.into(),
        reason: reason.into(),
        occurred_at: ts(at),
    };
    Ok(t.inside_sales.clone().disqualify_lead(req).await?.into_inner().item.expect("item"))
}

fn exclusion(request_id: &str, lead_id: &str, reason: &str, at: &str) -> mk::ExcludeLeadRequest {
    mk::ExcludeLeadRequest {
        request_id: request_id.into(),
        lead_id: lead_id.into(),
        reason: reason.into(),
        sender: Department::Marketing as i32,
        note: "found out on the phone".into(),
        occurred_at: ts(at),
    }
}

async fn exclude(t: &TestSuite, req: mk::ExcludeLeadRequest) -> Result<mk::Lead, tonic::Status> {
    Ok(t.marketing.clone().exclude_lead(req).await?.into_inner().lead.expect("lead"))
}

/// The LeadExcluded events in marketing's stream, in order.
async fn marketing_exclusions(t: &TestSuite) -> Vec<mk::LeadExcluded> {
    let mut stream = EventStreamServiceClient::new(t.channel(Svc::Marketing));
    let req = ListEventsRequest { after_seq: 0, page_size: 5000, wait: None };
    let page = stream.list_events(req).await.unwrap().into_inner();
    page.events
        .into_iter()
        .filter_map(|e| e.event)
        .filter(|any| any.type_url == mk::MarketingEvent::type_url())
        .filter_map(|any| mk::MarketingEvent::decode(any.value.as_slice()).ok()?.event)
        .filter_map(|e| match e {
            mk::marketing_event::Event::LeadExcluded(x) => Some(x),
            _ => None,
        })
        .collect()
}

async fn funnel(t: &TestSuite, view: kpi::View, as_of: &str) -> kpi::Funnel {
    let req = kpi::GetFunnelRequest {
        start_date: "2026-10-01".into(),
        end_date: "2026-11-01".into(),
        view: view as i32,
        as_of_date: as_of.into(),
        ..Default::default()
    };
    t.suite.settled_funnel_response(req, Duration::from_secs(20)).await.unwrap().funnel.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lead_found_never_buy_later_ends_excluded_and_is_counted() {
    let t = TestSuite::start().await;
    late_never_buy(&t).await;
}

pub async fn late_never_buy(t: &TestSuite) {
    // n1: handed over, then disqualified by inside sales as a student.
    capture(t, lead("n1", "2026-10-01T09:00:00Z")).await;
    assert!(quote_request(t, "n1", "2026-10-01T09:30:00Z").await.handed_over);
    in_queue(t, "n1").await;
    let err = disqualify(t, "n1", "rude", "2026-10-10T10:00:00Z").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let (field, description) = violation(&err);
    assert_eq!(field, "reason");
    assert!(description.contains("accepted: partner, competitor, student, no_fit"), "{description}");
    let item = disqualify(t, "n1", "student", "2026-10-10T10:00:00Z").await.unwrap();
    assert_eq!(item.status, is::QueueStatus::Disqualified as i32);
    let n1 = lead_status(t, "n1", mk::LeadStatus::Excluded).await;
    assert_eq!(n1.exclusion_reason, "student");
    // Never handed over again: not by behaviour, not by judgement, and
    // inside sales does not take it back.
    assert!(!quote_request(t, "n1", "2026-10-20T09:00:00Z").await.handed_over);
    let again = mk::HandOverLeadRequest {
        request_id: "n1-again".into(),
        lead_id: "n1".into(),
        note: String::new(),
        occurred_at: ts("2026-10-21T09:00:00Z"),
    };
    assert_eq!(t.marketing.clone().hand_over_lead(again).await.unwrap_err().code(), Code::FailedPrecondition);
    let err = disqualify(t, "n1", "no_fit", "2026-10-22T10:00:00Z").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "a disqualified lead is no longer in the queue");

    // n2: nurturing, reclassified by marketing as a competitor on Nov 3.
    capture(t, lead("n2", "2026-10-02T09:00:00Z")).await;
    let err = exclude(t, exclusion("n2-x", "n2", "rude", "2026-11-03T09:00:00Z")).await.unwrap_err();
    assert_eq!(violation(&err).0, "reason");
    assert!(violation(&err).1.contains("accepted: partner, competitor, student, no_fit"));
    let bad_sender = mk::ExcludeLeadRequest {
        sender: Department::FieldSales as i32,
        ..exclusion("n2-y", "n2", "competitor", "2026-11-03T09:00:00Z")
    };
    assert_eq!(violation(&exclude(t, bad_sender).await.unwrap_err()).0, "sender");
    let n2 = exclude(t, exclusion("n2-x", "n2", "competitor", "2026-11-03T09:00:00Z")).await.unwrap();
    assert_eq!((n2.status, n2.exclusion_reason.as_str()), (mk::LeadStatus::Excluded as i32, "competitor"));
    let repeat = exclude(t, exclusion("n2-x", "n2", "competitor", "2026-11-03T09:00:00Z")).await.unwrap();
    assert_eq!(repeat, n2, "a repeated request answers as the first did");
    let excluded = marketing_exclusions(t).await;
    assert_eq!(excluded.len(), 2, "one event per lead excluded after capture: {excluded:?}");
    assert_eq!((excluded[1].lead_id.as_str(), excluded[1].reason.as_str()), ("n2", "competitor"));
    assert_eq!(n2.note, "found out on the phone", "the note stays on the lead, not in the event");
    assert_eq!(excluded[1].previous_status, mk::LeadStatus::Nurturing as i32);
    assert_eq!(excluded[0].sender, Department::InsideSales as i32);
    let later = exclude(t, exclusion("n2-z", "n2", "partner", "2026-11-04T09:00:00Z")).await.unwrap();
    assert_eq!(later.exclusion_reason, "competitor", "an excluded lead stays as it is");
    assert!(!quote_request(t, "n2", "2026-11-05T09:00:00Z").await.handed_over);

    let empty = exclude(t, mk::ExcludeLeadRequest::default()).await.unwrap_err();
    let fields: Vec<_> =
        empty.get_error_details().bad_request().unwrap().field_violations.iter().map(|v| v.field.clone()).collect();
    assert_eq!(fields, ["lead_id", "reason", "sender"]);
    let nobody = exclude(t, exclusion("nobody-x", "nobody", "student", "2026-11-03T09:00:00Z")).await.unwrap_err();
    assert_eq!(nobody.code(), Code::NotFound);

    // n3: with inside sales; marketing cannot reclassify it under their feet.
    capture(t, lead("n3", "2026-10-03T09:00:00Z")).await;
    assert!(quote_request(t, "n3", "2026-10-03T09:30:00Z").await.handed_over);
    let err = exclude(t, exclusion("n3-x", "n3", "partner", "2026-10-04T09:00:00Z")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("DisqualifyLead"), "{}", err.message());

    // n4: a student at capture.
    let student =
        mk::CaptureLeadRequest { relationship: mk::Relationship::Student as i32, ..lead("n4", "2026-10-04T09:00:00Z") };
    capture(t, student).await;

    // Flow: of October's four leads three are excluded, whenever that was
    // found. Cohort: counted from the day each was excluded.
    let flow = funnel(t, kpi::View::Flow, "").await;
    assert_eq!((flow.leads, flow.excluded_leads, flow.valid_leads), (4, 3, 1));
    assert_eq!(flow.promising_leads, 2, "n1 and n3 were handed over before");
    let end_of_october = funnel(t, kpi::View::Cohort, "2026-10-31").await;
    assert_eq!((end_of_october.leads, end_of_october.excluded_leads), (4, 2), "n1 and n4 by then");
    let now = funnel(t, kpi::View::Cohort, "").await;
    assert_eq!((now.leads, now.excluded_leads, now.valid_leads), (4, 3, 1));

    // The journeys show when and why.
    let journey = |id: &str| {
        let mut k = t.kpi.clone();
        let req = kpi::GetJourneyRequest { lead_id: id.into(), ..Default::default() };
        async move { k.get_journey(req).await.unwrap().into_inner() }
    };
    let steps = |j: &kpi::GetJourneyResponse| -> Vec<(i32, i64, String)> {
        j.steps.iter().map(|s| (s.kind, s.occurred_at.as_ref().map_or(0, |t| t.seconds), s.reason.clone())).collect()
    };
    let at = |s: &str| ts(s).unwrap().seconds;
    use kpi::JourneyStepKind as K;
    let n1 = journey("n1").await;
    assert!(n1.excluded);
    assert_eq!(
        steps(&n1),
        [
            (K::Captured as i32, at("2026-10-01T09:00:00Z"), String::new()),
            (K::Promoted as i32, at("2026-10-01T09:30:00Z"), String::new()),
            (K::Excluded as i32, at("2026-10-10T10:00:00Z"), "student".into()),
        ]
    );
    let n4 = journey("n4").await;
    assert_eq!(
        steps(&n4),
        [
            (K::Captured as i32, at("2026-10-04T09:00:00Z"), String::new()),
            (K::Excluded as i32, at("2026-10-04T09:00:00Z"), "student".into()),
        ]
    );
    assert!(!journey("n3").await.excluded);
}
