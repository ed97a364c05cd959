//! The shared definition: served by kpi, versioned, followed by every service.

use themodel_e2e::{TestSuite, eventually};
use themodel_proto::kpi::v1 as kpi;
use tonic::Code;
use tonic_types::StatusExt;

use crate::flows::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_published_definition_is_used_and_recorded_by_version() {
    let t = TestSuite::start().await;
    let mut k = t.kpi.clone();
    let v1 = k
        .get_quality_definition(kpi::GetQualityDefinitionRequest { version: 0 })
        .await
        .unwrap()
        .into_inner()
        .definition
        .unwrap();
    assert_eq!(v1.version, 1);
    assert_eq!(v1.promising_threshold, 65);
    assert!(v1.attribute.as_ref().unwrap().max > v1.behaviour.as_ref().unwrap().max);

    // Behaviour may not outweigh attribute fit.
    let mut bad = v1.clone();
    bad.behaviour.as_mut().unwrap().max = 100;
    let err = k
        .publish_quality_definition(kpi::PublishQualityDefinitionRequest {
            request_id: "bad".into(),
            definition: Some(bad),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // A blank school suffix would end every address: every lead excluded.
    let mut bad = v1.clone();
    bad.exclusion.as_mut().unwrap().student_domain_suffixes.push(String::new());
    let err = k
        .publish_quality_definition(kpi::PublishQualityDefinitionRequest {
            request_id: "blank-suffix".into(),
            definition: Some(bad),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let violations = err.get_error_details().bad_request().unwrap().field_violations.clone();
    assert_eq!(violations[0].field, "definition.exclusion.student_domain_suffixes", "{violations:?}");

    // v2: a good fit alone is promising.
    let mut v2 = v1.clone();
    v2.promising_threshold = 50;
    let published = k
        .publish_quality_definition(kpi::PublishQualityDefinitionRequest {
            request_id: "v2".into(),
            definition: Some(v2),
        })
        .await
        .unwrap()
        .into_inner()
        .definition
        .unwrap();
    assert_eq!(published.version, 2);
    let old = k
        .get_quality_definition(kpi::GetQualityDefinitionRequest { version: 1 })
        .await
        .unwrap()
        .into_inner()
        .definition
        .unwrap();
    assert_eq!(old.promising_threshold, 65, "old versions stay readable");

    // Every version is listed, newest first, page by page.
    let page = |token: String| {
        let mut k = k.clone();
        async move {
            k.list_quality_definitions(kpi::ListQualityDefinitionsRequest { page_size: 1, page_token: token })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let first = page(String::new()).await;
    assert_eq!(first.definitions.iter().map(|d| d.version).collect::<Vec<_>>(), [2]);
    let second = page(first.next_page_token).await;
    assert_eq!(second.definitions, std::slice::from_ref(&old));
    assert!(second.next_page_token.is_empty());
    let err = k
        .list_quality_definitions(kpi::ListQualityDefinitionsRequest { page_size: 0, page_token: "bogus".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Marketing follows kpi: its next decision uses and records version 2.
    let lead = eventually("marketing applies version 2", || {
        let t = &t;
        async move {
            let id = format!("fit-{}", rand::random::<u32>());
            let l = capture(t, lead(&id, "2026-11-02T09:00:00Z")).await;
            (l.definition_version == 2).then_some(l)
        }
    })
    .await;
    assert_eq!(lead.score, 55);
    assert!(lead.handed_over_at.is_some(), "promising under v2 without any behaviour");
    let queued = in_queue(&t, &lead.lead_id).await;
    assert_eq!(queued.definition_version, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_draft_is_dry_run_on_the_current_leads_without_publishing() {
    let t = TestSuite::start().await;
    // fit: a CTO of a 500-person software company, 55 of 65 points, no
    // intent yet. keen: the same fit and a quote request, so promising.
    // rival: fit, but its domain is about to be named a competitor's.
    // kid: a student, never-buy whatever the definition.
    capture(&t, lead("fit", "2026-11-02T09:00:00Z")).await;
    capture(&t, lead("keen", "2026-11-02T09:00:00Z")).await;
    quote_request(&t, "keen", "2026-11-03T09:00:00Z").await;
    let mut rival = lead("rival", "2026-11-02T09:00:00Z");
    rival.email = "sam@rival.example".into();
    capture(&t, rival).await;
    let mut kid = lead("kid", "2026-11-02T09:00:00Z");
    kid.relationship = themodel_proto::marketing::v1::Relationship::Student as i32;
    capture(&t, kid).await;

    let mut k = t.kpi.clone();
    let current = k.get_quality_definition(kpi::GetQualityDefinitionRequest::default()).await.unwrap().into_inner();
    let current = current.definition.unwrap();
    let mut draft = current.clone();
    draft.promising_threshold = 50;
    draft.exclusion.as_mut().unwrap().competitor_domains.push("rival.example".into());
    let preview = k
        .preview_quality_definition(kpi::PreviewQualityDefinitionRequest { definition: Some(draft) })
        .await
        .unwrap()
        .into_inner()
        .preview
        .unwrap();
    let counts = |n, p, x| Some(kpi::ClassCounts { nurturing: n, promising: p, never_buy: x });
    let change = |from: kpi::LeadClass, to: kpi::LeadClass| kpi::LeadClassChange {
        from_class: from as i32,
        to_class: to as i32,
        leads: 1,
    };
    use kpi::LeadClass::{NeverBuy, Nurturing, Promising};
    assert_eq!(
        preview,
        kpi::DefinitionPreview {
            baseline_version: current.version,
            leads: 4,
            changed: 2,
            // fit reaches the lower threshold; rival becomes a competitor.
            changes: vec![change(Nurturing, Promising), change(Nurturing, NeverBuy)],
            baseline: counts(2, 1, 1),
            draft: counts(0, 2, 2),
        }
    );

    // An erased person is no lead to class: rival's change goes with them.
    let erase = themodel_proto::marketing::v1::ErasePersonRequest {
        request_id: "erase-rival".into(),
        lead_id: "rival".into(),
        ..Default::default()
    };
    t.marketing.clone().erase_person(erase).await.unwrap();
    let mut draft = current.clone();
    draft.promising_threshold = 50;
    draft.exclusion.as_mut().unwrap().competitor_domains.push("rival.example".into());
    let again = k.preview_quality_definition(kpi::PreviewQualityDefinitionRequest { definition: Some(draft) }).await;
    let again = again.unwrap().into_inner().preview.unwrap();
    assert_eq!((again.leads, again.changed, again.changes), (3, 1, vec![change(Nurturing, Promising)]));

    // A draft that could not be published is refused the same way, naming
    // the field; nothing is ever published by a dry run.
    let mut bad = current.clone();
    bad.promising_threshold = 0;
    let err =
        k.preview_quality_definition(kpi::PreviewQualityDefinitionRequest { definition: Some(bad) }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields: Vec<String> =
        err.get_details_bad_request().unwrap().field_violations.into_iter().map(|v| v.field).collect();
    assert_eq!(fields, ["definition.promising_threshold"]);
    let err = k.preview_quality_definition(kpi::PreviewQualityDefinitionRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let after = k.get_quality_definition(kpi::GetQualityDefinitionRequest::default()).await.unwrap().into_inner();
    assert_eq!(after.definition.unwrap().version, current.version);
}
