//! Attribute calibration: lifts per attribute value on a cohort worked out
//! by hand, and a proposed definition that publishes as the next version.

use themodel_e2e::TestSuite;
use themodel_proto::kpi::v1 as kpi;
use themodel_proto::marketing::v1 as mk;
use tonic::Code;

use crate::flows::*;

/// Four software leads, two of them converted; four mining leads, none.
pub async fn cohort(t: &TestSuite) {
    for i in 0..4 {
        let id = format!("sw{i}");
        capture(t, lead(&id, "2026-10-01T09:00:00Z")).await;
        capture(
            t,
            mk::CaptureLeadRequest { industry: "Mining".into(), ..lead(&format!("mn{i}"), "2026-10-01T09:00:00Z") },
        )
        .await;
        if i < 2 {
            assert!(quote_request(t, &id, "2026-10-01T09:30:00Z").await.handed_over);
            in_queue(t, &id).await;
            qualify(t, &id, bant_all(), "2026-10-01T10:00:00Z").await;
            convert(t, &id, &format!("opp-{id}"), "2026-10-02T10:00:00Z").await;
        }
    }
}

fn row<'a>(
    c: &'a kpi::GetAttributeCalibrationResponse,
    dim: kpi::Dimension,
    value: &str,
) -> &'a kpi::AttributeCalibration {
    c.attributes.iter().find(|a| a.dimension == dim as i32 && a.value == value).unwrap()
}

pub async fn assert_calibration(t: &TestSuite) {
    let req = kpi::GetAttributeCalibrationRequest {
        start_date: "2026-10-01".into(),
        period_unit: kpi::PeriodUnit::Month as i32,
        min_sample: 4,
        ..Default::default()
    };
    let c = t.kpi.clone().get_attribute_calibration(req.clone()).await.unwrap().into_inner();
    let base = c.baseline.unwrap();
    assert_eq!((base.leads, base.opportunities, base.opportunity_rate), (8, 2, Some(0.25)));
    // Software converts twice as often as the average lead: 15 points become 30.
    let software = row(&c, kpi::Dimension::Industry, "software");
    assert_eq!(software.rates.as_ref().map(|r| (r.leads, r.opportunities)), Some((4, 2)));
    assert_eq!((software.opportunity_lift, software.points, software.proposed_points), (Some(2.0), Some(15), Some(30)));
    assert_eq!(software.win_lift, None, "nothing closed yet");
    // Mining is not listed (it scores as "other", 4 points) and never converts.
    let mining = row(&c, kpi::Dimension::Industry, "mining");
    assert_eq!((mining.opportunity_lift, mining.points, mining.proposed_points), (Some(0.0), Some(4), Some(0)));
    // Every lead has the same size band, title class and source: lift 1.
    for dim in [kpi::Dimension::CompanySizeBand, kpi::Dimension::JobTitleClass] {
        let only: Vec<_> = c.attributes.iter().filter(|a| a.dimension == dim as i32).collect();
        assert_eq!(only.len(), 1, "{dim:?}");
        assert_eq!(only[0].opportunity_lift, Some(1.0));
        assert_eq!(only[0].proposed_points, only[0].points, "{dim:?} keeps its points");
    }
    let source = row(&c, kpi::Dimension::Source, "web_form");
    assert_eq!((source.opportunity_lift, source.points, source.proposed_points), (Some(1.0), None, None));

    // The draft publishes as the next version.
    let draft = c.proposed_definition.clone().unwrap();
    let published = t
        .kpi
        .clone()
        .publish_quality_definition(kpi::PublishQualityDefinitionRequest {
            request_id: "calibrated".into(),
            definition: Some(draft),
        })
        .await
        .unwrap()
        .into_inner()
        .definition
        .unwrap();
    let points = published.attribute.unwrap().industry_points;
    assert_eq!((points.get("software"), points.get("mining")), (Some(&30), Some(&0)));

    // With the default sample of 30, nothing here is enough to move.
    let c = t
        .kpi
        .clone()
        .get_attribute_calibration(kpi::GetAttributeCalibrationRequest { min_sample: 0, ..req.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.min_sample, 30);
    assert!(c.attributes.iter().all(|a| a.proposed_points.is_none()));

    let bad = kpi::GetAttributeCalibrationRequest { min_sample: -1, definition_version: -2, ..req.clone() };
    let err = t.kpi.clone().get_attribute_calibration(bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let missing = kpi::GetAttributeCalibrationRequest { definition_version: 99, ..req };
    assert_eq!(t.kpi.clone().get_attribute_calibration(missing).await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attribute_lifts_and_a_draft_that_follows_them() {
    let t = TestSuite::start().await;
    cohort(&t).await;
    assert_calibration(&t).await;
}
