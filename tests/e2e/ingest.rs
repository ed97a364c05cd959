//! Streaming ingest: a tracking pipeline delivers at least once, so repeated
//! event ids are ignored; what the stream records equals the same behaviour
//! sent one request at a time, and scores are current at every acknowledgement.

use std::collections::{BTreeSet, HashMap};

use themodel_e2e::{TestSuite, ts};
use themodel_proto::marketing::v1 as mk;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;

use crate::flows::*;

/// A small deterministic generator (splitmix64), so a failure replays.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

const LEADS: usize = 12;
const ITEMS: usize = 700;

fn lead_id(i: usize) -> String {
    format!("ing-{i}")
}

/// Leads of mixed fit; the even ones browse under a visitor id.
fn leads() -> Vec<mk::CaptureLeadRequest> {
    (0..LEADS)
        .map(|i| {
            let mut req = lead(&lead_id(i), "2026-11-02T09:00:00Z");
            if i % 3 == 1 {
                req.job_title = "Intern".into();
                req.company_size = 5;
                req.industry = "retail".into();
            }
            if i.is_multiple_of(2) {
                req.visitor_id = format!("vis-{i}");
            }
            req
        })
        .collect()
}

/// The behaviour, in order: touches on leads and visits by known and
/// anonymous visitors, a minute apart. Quote requests are rare so that
/// scores climb through several thresholds before a hand-over.
fn behaviour() -> Vec<mk::BehaviourItem> {
    let mut dice = Dice(6);
    let start = ts("2026-11-03T00:00:00Z").unwrap().seconds;
    (0..ITEMS)
        .map(|n| {
            let occurred_at = Some(prost_types::Timestamp { seconds: start + 60 * n as i64, nanos: 0 });
            let behaviour = if dice.below(4) == 0 {
                let who = dice.below(LEADS as u64 + 4) as usize;
                mk::behaviour_item::Behaviour::Visit(mk::VisitInput {
                    visitor_id: format!("vis-{who}"),
                    page: "/pricing".into(),
                    product_page: dice.below(2) == 0,
                    channel: "ads".into(),
                    campaign: "autumn".into(),
                    occurred_at,
                })
            } else {
                let kind = if dice.below(40) == 0 { 12 } else { 1 + dice.below(11) as i32 };
                mk::behaviour_item::Behaviour::Touch(mk::TouchInput {
                    lead_id: lead_id(dice.below(LEADS as u64) as usize),
                    kind,
                    detail: format!("item {n}"),
                    occurred_at,
                })
            };
            mk::BehaviourItem { event_id: format!("ev-{n}"), behaviour: Some(behaviour) }
        })
        .collect()
}

/// The lead an item counts for, if any.
fn counted_for(item: &mk::BehaviourItem) -> Option<String> {
    match item.behaviour.as_ref().unwrap() {
        mk::behaviour_item::Behaviour::Touch(t) => Some(t.lead_id.clone()),
        mk::behaviour_item::Behaviour::Visit(v) => {
            let i: usize = v.visitor_id.strip_prefix("vis-").unwrap().parse().unwrap();
            (i < LEADS && i.is_multiple_of(2)).then(|| lead_id(i))
        }
    }
}

async fn get(t: &TestSuite, id: &str) -> mk::Lead {
    t.marketing.clone().get_lead(mk::GetLeadRequest { lead_id: id.into() }).await.unwrap().into_inner().lead.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repeated_event_ids_are_ignored_and_the_stream_equals_a_one_by_one_replay() {
    streamed_equals_replayed(&TestSuite::start().await, &TestSuite::start().await).await;
}

/// The scenario: `streamed` takes the behaviour on the stream, `replayed`
/// one request at a time; both fresh.
pub async fn streamed_equals_replayed(streamed: &TestSuite, replayed: &TestSuite) {
    for req in leads() {
        capture(streamed, req.clone()).await;
        capture(replayed, req).await;
    }
    let items = behaviour();

    // Messages of uneven size; each also repeats items already sent (in an
    // earlier message, or earlier in the same one), as a pipeline that
    // redelivers after a lost acknowledgement would.
    let mut dice = Dice(11);
    let mut messages = Vec::new();
    let mut sent = 0;
    let mut repeats = 0;
    while sent < items.len() {
        let take = (1 + dice.below(30) as usize).min(items.len() - sent);
        let mut batch: Vec<mk::BehaviourItem> = items[sent..sent + take].to_vec();
        for _ in 0..dice.below(8) {
            batch.push(items[dice.below((sent + take) as u64) as usize].clone());
            repeats += 1;
        }
        sent += take;
        messages.push((sent, batch));
    }

    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut acks = streamed.marketing.clone().ingest_behaviour(ReceiverStream::new(rx)).await.unwrap().into_inner();
    let mut counts: HashMap<String, i32> = HashMap::new();
    let (mut acknowledged, mut recorded, mut duplicates) = (0i64, 0, 0);
    let mut handed_over = BTreeSet::new();
    for (upto, batch) in messages {
        let len = batch.len() as i64;
        tx.send(mk::IngestBehaviourRequest { items: batch }).await.unwrap();
        let ack = acks.message().await.unwrap().expect("an acknowledgement per message");
        acknowledged += len;
        assert_eq!(ack.acknowledged, acknowledged);
        assert!(ack.rejected.is_empty(), "{:?}", ack.rejected);
        recorded += ack.recorded;
        duplicates += ack.duplicates;
        handed_over.extend(ack.handed_over_lead_ids);

        // Scores are current when the acknowledgement arrives: every lead's
        // touch count equals the distinct items so far that count for it.
        counts.clear();
        for item in &items[..upto] {
            if let Some(id) = counted_for(item) {
                *counts.entry(id).or_default() += 1;
            }
        }
        for (id, n) in &counts {
            assert_eq!(get(streamed, id).await.touch_count, *n, "{id} after {upto} items");
        }
    }
    drop(tx);
    assert!(acks.message().await.unwrap().is_none(), "the server ends the stream after the client does");
    assert_eq!(recorded as usize, ITEMS);
    assert_eq!(duplicates, repeats);
    assert!(repeats > 50, "the scenario repeats enough items to mean something ({repeats})");

    // The same behaviour, one request per item, on a second suite.
    for (n, item) in items.iter().enumerate() {
        match item.behaviour.clone().unwrap() {
            mk::behaviour_item::Behaviour::Touch(t) => {
                replayed
                    .marketing
                    .clone()
                    .record_touch(mk::RecordTouchRequest {
                        request_id: format!("replay-{n}"),
                        lead_id: t.lead_id,
                        kind: t.kind,
                        detail: t.detail,
                        occurred_at: t.occurred_at,
                    })
                    .await
                    .unwrap();
            }
            mk::behaviour_item::Behaviour::Visit(v) => {
                replayed
                    .marketing
                    .clone()
                    .record_visit(mk::RecordVisitRequest {
                        request_id: format!("replay-{n}"),
                        visitor_id: v.visitor_id,
                        page: v.page,
                        product_page: v.product_page,
                        occurred_at: v.occurred_at,
                        channel: v.channel,
                        campaign: v.campaign,
                    })
                    .await
                    .unwrap();
            }
        }
    }

    let mut replay_handed_over = BTreeSet::new();
    for i in 0..LEADS {
        let (a, b) = (get(streamed, &lead_id(i)).await, get(replayed, &lead_id(i)).await);
        assert_eq!(
            (a.status, a.attribute_score, a.behaviour_score, a.score, a.touch_count, a.handed_over_at),
            (b.status, b.attribute_score, b.behaviour_score, b.score, b.touch_count, b.handed_over_at),
            "lead {i}"
        );
        if b.handed_over_at.is_some() {
            replay_handed_over.insert(b.lead_id);
        }
    }
    assert_eq!(handed_over, replay_handed_over);
    assert!(!handed_over.is_empty() && handed_over.len() < LEADS, "some leads, not all, became promising");

    let (a, b) = (
        streamed.settled_funnel("2026-11-01", "2026-12-01").await,
        replayed.settled_funnel("2026-11-01", "2026-12-01").await,
    );
    assert_eq!((a.visitors, a.leads, a.opportunities), (b.visitors, b.leads, b.opportunities));
    assert!(a.visitors > LEADS as i64 / 2);
}
