//! The dry run of a quality-definition draft over marketing's leads: the
//! `themodel.kpi.v1.DefinitionPreviewService` contract kpi owns and asks
//! marketing for, since the leads (and their e-mail domains) are here.

use themodel_proto::kpi::v1 as pb;
use themodel_proto::kpi::v1::definition_preview_service_server::DefinitionPreviewService;
use themodel_quality::LeadClass;
use themodel_runtime::definition::required;
use themodel_runtime::validate::Violations;
use themodel_runtime::{ApiError, Db};
use tonic::{Request, Response, Status};

use crate::store::{self, ClassTally};

/// The gRPC service name.
pub const SERVICE: &str = "themodel.kpi.v1.DefinitionPreviewService";

/// Tries definitions on the leads marketing holds.
#[derive(Debug, Clone)]
pub struct Preview {
    pub db: Db,
}

fn class(c: LeadClass) -> pb::LeadClass {
    match c {
        LeadClass::Nurturing => pb::LeadClass::Nurturing,
        LeadClass::Promising => pb::LeadClass::Promising,
        LeadClass::NeverBuy => pb::LeadClass::NeverBuy,
    }
}

/// The contract's preview of a tally.
pub fn to_proto(baseline_version: i64, tally: &ClassTally) -> pb::DefinitionPreview {
    let (mut baseline, mut draft) = (pb::ClassCounts::default(), pb::ClassCounts::default());
    let mut preview = pb::DefinitionPreview { baseline_version, ..Default::default() };
    for (&(from, to), &leads) in tally {
        preview.leads += leads;
        add(&mut baseline, from, leads);
        add(&mut draft, to, leads);
        if from != to {
            preview.changed += leads;
            preview.changes.push(pb::LeadClassChange {
                from_class: class(from) as i32,
                to_class: class(to) as i32,
                leads,
            });
        }
    }
    pb::DefinitionPreview { baseline: Some(baseline), draft: Some(draft), ..preview }
}

fn add(counts: &mut pb::ClassCounts, c: LeadClass, leads: i64) {
    match c {
        LeadClass::Nurturing => counts.nurturing += leads,
        LeadClass::Promising => counts.promising += leads,
        LeadClass::NeverBuy => counts.never_buy += leads,
    }
}

#[tonic::async_trait]
impl DefinitionPreviewService for Preview {
    #[tracing::instrument(skip_all)]
    async fn preview_definition(
        &self,
        request: Request<pb::PreviewDefinitionRequest>,
    ) -> Result<Response<pb::PreviewDefinitionResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let baseline = required(&mut v, "baseline", req.baseline.as_ref());
        let draft = required(&mut v, "draft", req.draft.as_ref());
        let (baseline, draft) = v.build(|| Some((baseline?, draft?)))?;
        let tally = store::tally_classes(&self.db, &baseline, &draft).await.map_err(ApiError::from)?;
        let version = req.baseline.map_or(0, |b| b.version);
        Ok(Response::new(pb::PreviewDefinitionResponse { preview: Some(to_proto(version, &tally)) }))
    }
}
