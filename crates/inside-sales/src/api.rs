//! `themodel.insidesales.v1.InsideSalesService`: parse requests into domain
//! types, run the domain rules in one transaction, map errors.

use serde_json::json;
use themodel_proto::insidesales::v1 as pb;
use themodel_proto::insidesales::v1::inside_sales_service_server::InsideSalesService;
use themodel_runtime::definition::SharedDefinition;
use themodel_runtime::error::{ApiError, ApiResult};
use themodel_runtime::events::NewEvent;
use themodel_runtime::idempotency::Idempotency;
use themodel_runtime::outbox::{self, Outbox};
use themodel_runtime::time::{self, to_timestamp_opt};
use themodel_runtime::validate::{self, Violations};
use themodel_runtime::values::{BantRecord, Money};
use themodel_runtime::{Clock, Db, ids, paging};
use tonic::{Request, Response, Status};

use crate::domain::{IncomingLead, OpportunityHandover, QueueItem, RecycleHandover, Refused, Status as QueueStatus};
use crate::store;

/// The inside-sales service's handlers.
#[derive(Debug, Clone)]
pub struct Api {
    pub db: Db,
    pub definition: SharedDefinition,
    pub clock: Clock,
    pub outbox: Outbox,
}

impl From<Refused> for ApiError {
    fn from(r: Refused) -> ApiError {
        let kind = match r {
            Refused::NotOpen(_) => "STATE",
            Refused::NoBant | Refused::MissingBant(_) => "BANT",
        };
        ApiError::precondition(kind, "lead", r.to_string())
    }
}

fn status_to_proto(s: QueueStatus) -> pb::QueueStatus {
    match s {
        QueueStatus::Open => pb::QueueStatus::Open,
        QueueStatus::Converted => pb::QueueStatus::Converted,
        QueueStatus::Recycled => pb::QueueStatus::Recycled,
        QueueStatus::Disqualified => pb::QueueStatus::Disqualified,
    }
}

pub fn item_to_proto(i: &QueueItem) -> pb::QueueItem {
    pb::QueueItem {
        lead_id: i.lead_id.clone(),
        email: i.email.clone(),
        name: i.name.clone(),
        company: i.company.clone(),
        job_title: i.job_title.clone(),
        source: i.source.clone(),
        score: i.score,
        status: status_to_proto(i.status) as i32,
        handed_over_at: to_timestamp_opt(Some(i.handed_over_at)),
        follow_up_due_at: to_timestamp_opt(Some(i.follow_up_due_at)),
        first_contact_at: to_timestamp_opt(i.first_contact_at),
        bant: Some(i.bant.as_ref().map(BantRecord::to_proto).unwrap_or_default()),
        bant_recorded: i.bant.is_some(),
        activity_count: i.activity_count,
        opportunity_id: i.opportunity_id.clone(),
        recycle_reason: i.recycle_reason.clone(),
        definition_version: i.definition_version,
    }
}

const METHOD: &str = "/themodel.insidesales.v1.InsideSalesService/";

impl Api {
    async fn load(&self, tx: &mut themodel_runtime::Tx, lead_id: &str) -> ApiResult<QueueItem> {
        store::item(&mut **tx, lead_id).await?.ok_or_else(|| ApiError::not_found("lead", lead_id))
    }
}

impl Api {
    #[tracing::instrument(skip_all, fields(lead_id = %req.lead_id, handover = %req.request_id))]
    async fn accept_lead(&self, req: pb::AcceptLeadRequest) -> ApiResult<pb::QueueItem> {
        let mut v = Violations::new();
        v.request_id(&req.request_id);
        let lead = IncomingLead {
            lead_id: v.id("lead_id", &req.lead_id),
            email: validate::email(&mut v, "email", &req.email),
            name: v.optional("name", &req.name, 200),
            company: v.optional("company", &req.company, 200),
            company_size: req.company_size.max(0),
            industry: v.optional("industry", &req.industry, 100),
            job_title: v.optional("job_title", &req.job_title, 200),
            source: v.code("source", &req.source),
            score: req.score,
            definition_version: req.definition_version,
            handed_over_at: v.occurred_at("handed_over_at", req.handed_over_at.as_ref(), &self.clock),
        };
        v.finish()?;

        let key = Idempotency::new(&format!("{METHOD}AcceptLead"), &req.request_id, &req);
        let mut tx = self.db.begin().await?;
        if let Some(first) = key.replay(&mut tx).await? {
            return Ok(first);
        }
        let now = self.clock.now();
        let def = self.definition.current();
        let existing = store::item(&mut *tx, &lead.lead_id).await?;
        let item = QueueItem::accept(lead, existing, &def);
        store::save(&mut tx, &item).await?;
        let evs = [NewEvent {
            kind: "lead_accepted",
            subject_id: item.lead_id.clone(),
            occurred_at: item.handed_over_at,
            definition_version: item.definition_version,
            payload: json!({
                "lead_id": item.lead_id, "source": item.source, "score": item.score,
                "follow_up_due_at": item.follow_up_due_at,
            }),
        }];
        let resp = item_to_proto(&item);
        key.commit(tx, &resp, &evs, now).await?;
        Ok(resp)
    }

    #[tracing::instrument(skip_all)]
    async fn list_queue(&self, req: pb::ListQueueRequest) -> ApiResult<pb::ListQueueResponse> {
        let mut v = Violations::new();
        let limit = validate::page_size(&mut v, req.page_size, 50, 500);
        let status = match pb::QueueStatus::try_from(req.status) {
            Ok(pb::QueueStatus::Unspecified | pb::QueueStatus::Open) => QueueStatus::Open,
            Ok(pb::QueueStatus::Converted) => QueueStatus::Converted,
            Ok(pb::QueueStatus::Recycled) => QueueStatus::Recycled,
            Ok(pb::QueueStatus::Disqualified) => QueueStatus::Disqualified,
            Err(_) => {
                v.add("status", "unknown queue status");
                QueueStatus::Open
            }
        };
        v.finish()?;
        let after = match paging::decode(&req.page_token, 3)? {
            Some(k) => Some((paging::int(&k[0])?, paging::int(&k[1])?, k[2].clone())),
            None => None,
        };
        let mut items = store::call_list(&self.db, status, after, limit + 1).await?;
        let next_page_token = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items
                .last()
                .map(|i| paging::encode(&[&i.follow_up_due_at.to_string(), &i.score.to_string(), &i.lead_id]))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::ListQueueResponse { items: items.iter().map(item_to_proto).collect(), next_page_token })
    }

    #[tracing::instrument(skip_all, fields(lead_id = %req.lead_id))]
    async fn get_queue_item(&self, req: pb::GetQueueItemRequest) -> ApiResult<pb::QueueItem> {
        let mut v = Violations::new();
        let lead_id = v.id("lead_id", &req.lead_id);
        v.finish()?;
        let item = store::item(self.db.reader(), &lead_id).await?;
        let item = item.ok_or_else(|| ApiError::not_found("lead", &lead_id))?;
        Ok(item_to_proto(&item))
    }

    #[tracing::instrument(skip_all, fields(lead_id = %req.lead_id))]
    async fn log_activity(&self, req: pb::LogActivityRequest) -> ApiResult<pb::LogActivityResponse> {
        let mut v = Violations::new();
        v.request_id(&req.request_id);
        let lead_id = v.id("lead_id", &req.lead_id);
        let kind = match pb::ActivityKind::try_from(req.kind) {
            Ok(k) if k != pb::ActivityKind::Unspecified => k,
            _ => {
                v.add("kind", "must be CALL, EMAIL, MEETING or RESEARCH");
                pb::ActivityKind::Unspecified
            }
        };
        let outcome = match pb::ActivityOutcome::try_from(req.outcome) {
            Ok(o) if o != pb::ActivityOutcome::Unspecified => o,
            _ => {
                v.add("outcome", "is required: a structured outcome such as CONNECTED, NO_ANSWER or MEETING_BOOKED");
                pb::ActivityOutcome::Unspecified
            }
        };
        let note = v.optional("note", &req.note, 4000);
        let at = v.occurred_at("occurred_at", req.occurred_at.as_ref(), &self.clock);
        v.finish()?;

        let key = Idempotency::new(&format!("{METHOD}LogActivity"), &req.request_id, &req);
        let mut tx = self.db.begin().await?;
        if let Some(first) = key.replay(&mut tx).await? {
            return Ok(first);
        }
        let now = self.clock.now();
        let mut item = self.load(&mut tx, &lead_id).await?;
        let first_contact = item.log_activity(at);
        store::save(&mut tx, &item).await?;
        let activity_id = ids::new_id("ac");
        store::insert_activity(&mut tx, &activity_id, &lead_id, kind.as_str_name(), outcome.as_str_name(), &note, at)
            .await?;
        let evs = [NewEvent {
            kind: "activity_logged",
            subject_id: lead_id.clone(),
            occurred_at: at,
            definition_version: 0,
            payload: json!({
                "kind": kind.as_str_name(), "outcome": outcome.as_str_name(), "first_contact": first_contact,
                "sla_met": if first_contact { item.sla_met() } else { None },
            }),
        }];
        let resp = pb::LogActivityResponse {
            activity: Some(pb::Activity {
                activity_id,
                lead_id,
                kind: kind as i32,
                outcome: outcome as i32,
                note,
                occurred_at: Some(time::to_timestamp(at)),
            }),
            item: Some(item_to_proto(&item)),
        };
        key.commit(tx, &resp, &evs, now).await?;
        Ok(resp)
    }

    #[tracing::instrument(skip_all, fields(lead_id = %req.lead_id))]
    async fn record_bant(&self, req: pb::RecordBantRequest) -> ApiResult<pb::QueueItem> {
        let mut v = Violations::new();
        v.request_id(&req.request_id);
        let lead_id = v.id("lead_id", &req.lead_id);
        let bant = match &req.bant {
            Some(b) => BantRecord::parse(&mut v, "bant", b),
            None => {
                v.add("bant", "is required");
                BantRecord::default()
            }
        };
        let at = v.occurred_at("occurred_at", req.occurred_at.as_ref(), &self.clock);
        v.finish()?;

        let key = Idempotency::new(&format!("{METHOD}RecordBant"), &req.request_id, &req);
        let mut tx = self.db.begin().await?;
        if let Some(first) = key.replay(&mut tx).await? {
            return Ok(first);
        }
        let now = self.clock.now();
        let mut item = self.load(&mut tx, &lead_id).await?;
        let flags = bant.bant;
        item.record_bant(bant)?;
        store::save(&mut tx, &item).await?;
        let evs = [NewEvent {
            kind: "bant_recorded",
            subject_id: lead_id,
            occurred_at: at,
            definition_version: 0,
            payload: json!({
                "budget": flags.budget, "authority": flags.authority, "need": flags.need, "timeline": flags.timeline,
            }),
        }];
        let resp = item_to_proto(&item);
        key.commit(tx, &resp, &evs, now).await?;
        Ok(resp)
    }

    #[tracing::instrument(skip_all, fields(lead_id = %req.lead_id))]
    async fn convert_to_opportunity(
        &self,
        req: pb::ConvertToOpportunityRequest,
    ) -> ApiResult<pb::ConvertToOpportunityResponse> {
        let mut v = Violations::new();
        v.request_id(&req.request_id);
        let lead_id = v.id("lead_id", &req.lead_id);
        let opportunity_id = v.new_id("opportunity_id", &req.opportunity_id, "op");
        let estimated_value = Money::parse(&mut v, "estimated_value", req.estimated_value.as_ref(), false);
        let note = v.optional("note", &req.note, 4000);
        let at = v.occurred_at("occurred_at", req.occurred_at.as_ref(), &self.clock);
        v.finish()?;

        let key = Idempotency::new(&format!("{METHOD}ConvertToOpportunity"), &req.request_id, &req);
        let mut tx = self.db.begin().await?;
        if let Some(first) = key.replay(&mut tx).await? {
            return Ok(first);
        }
        let now = self.clock.now();
        let def = self.definition.current();
        let mut item = self.load(&mut tx, &lead_id).await?;
        let quality = item.convert(&opportunity_id, &def)?;
        if !store::insert_conversion(&mut tx, &opportunity_id, &lead_id, quality, at).await? {
            return Err(ApiError::AlreadyExists(format!("opportunity {opportunity_id:?} already exists")));
        }
        store::save(&mut tx, &item).await?;
        let handover = OpportunityHandover {
            opportunity_id: opportunity_id.clone(),
            lead_id: lead_id.clone(),
            company: item.company.clone(),
            contact_name: item.name.clone(),
            contact_email: item.email.clone(),
            source: item.source.clone(),
            bant: item.bant.clone().unwrap_or_default(),
            estimated_value,
            quality,
            definition_version: def.version,
            occurred_at: at,
        };
        let handover_id = outbox::hand_over(&mut tx, "field-sales", "accept_opportunity", &handover, now).await?;
        let evs = [NewEvent {
            kind: "opportunity_converted",
            subject_id: opportunity_id.clone(),
            occurred_at: at,
            definition_version: def.version,
            payload: json!({
                "lead_id": lead_id, "quality": quality, "source": item.source, "note": note, "handover_id": handover_id,
            }),
        }];
        let resp = pb::ConvertToOpportunityResponse {
            item: Some(item_to_proto(&item)),
            opportunity_id,
            quality,
            definition_version: def.version,
        };
        key.commit(tx, &resp, &evs, now).await?;
        self.outbox.deliver_now(vec![handover_id]).await;
        Ok(resp)
    }

    #[tracing::instrument(skip_all, fields(lead_id = %req.lead_id))]
    async fn recycle_lead(&self, req: pb::RecycleLeadRequest) -> ApiResult<pb::QueueItem> {
        let mut v = Violations::new();
        v.request_id(&req.request_id);
        let lead_id = v.id("lead_id", &req.lead_id);
        let reason = match pb::RecycleReason::try_from(req.reason) {
            Ok(pb::RecycleReason::NotContacted) => "not_contacted",
            Ok(pb::RecycleReason::Timing) => "timing",
            Ok(pb::RecycleReason::NoBudget) => "no_budget",
            Ok(pb::RecycleReason::NoNeed) => "no_need",
            _ => {
                v.add("reason", "must be NOT_CONTACTED, TIMING, NO_BUDGET or NO_NEED");
                ""
            }
        };
        if reason == "timing" {
            v.check((1..=60).contains(&req.timing_months), "timing_months", "must be 1-60 when the reason is TIMING");
        } else {
            v.check(req.timing_months == 0, "timing_months", "is only for the reason TIMING");
        }
        let note = v.optional("note", &req.note, 4000);
        let at = v.occurred_at("occurred_at", req.occurred_at.as_ref(), &self.clock);
        v.finish()?;

        let key = Idempotency::new(&format!("{METHOD}RecycleLead"), &req.request_id, &req);
        let mut tx = self.db.begin().await?;
        if let Some(first) = key.replay(&mut tx).await? {
            return Ok(first);
        }
        let now = self.clock.now();
        let mut item = self.load(&mut tx, &lead_id).await?;
        item.recycle(reason)?;
        store::save(&mut tx, &item).await?;
        let handover = RecycleHandover {
            lead_id: lead_id.clone(),
            reason: reason.to_owned(),
            timing_months: req.timing_months,
            note,
            occurred_at: at,
        };
        let handover_id = outbox::hand_over(&mut tx, "marketing", "recycle_lead", &handover, now).await?;
        let evs = [NewEvent {
            kind: "lead_recycled",
            subject_id: lead_id,
            occurred_at: at,
            definition_version: 0,
            payload: json!({ "reason": reason, "timing_months": req.timing_months, "handover_id": handover_id }),
        }];
        let resp = item_to_proto(&item);
        key.commit(tx, &resp, &evs, now).await?;
        self.outbox.deliver_now(vec![handover_id]).await;
        Ok(resp)
    }

    #[tracing::instrument(skip_all, fields(lead_id = %req.lead_id))]
    async fn disqualify_lead(&self, req: pb::DisqualifyLeadRequest) -> ApiResult<pb::QueueItem> {
        let mut v = Violations::new();
        v.request_id(&req.request_id);
        let lead_id = v.id("lead_id", &req.lead_id);
        let reason = v.code("reason", &req.reason);
        let at = v.occurred_at("occurred_at", req.occurred_at.as_ref(), &self.clock);
        v.finish()?;

        let key = Idempotency::new(&format!("{METHOD}DisqualifyLead"), &req.request_id, &req);
        let mut tx = self.db.begin().await?;
        if let Some(first) = key.replay(&mut tx).await? {
            return Ok(first);
        }
        let now = self.clock.now();
        let mut item = self.load(&mut tx, &lead_id).await?;
        item.disqualify(&reason)?;
        store::save(&mut tx, &item).await?;
        let evs = [NewEvent {
            kind: "lead_disqualified",
            subject_id: lead_id,
            occurred_at: at,
            definition_version: 0,
            payload: json!({ "reason": reason }),
        }];
        let resp = item_to_proto(&item);
        key.commit(tx, &resp, &evs, now).await?;
        Ok(resp)
    }
}

#[tonic::async_trait]
impl InsideSalesService for Api {
    async fn accept_lead(&self, request: Request<pb::AcceptLeadRequest>) -> Result<Response<pb::QueueItem>, Status> {
        Ok(Response::new(Api::accept_lead(self, request.into_inner()).await?))
    }

    async fn list_queue(
        &self,
        request: Request<pb::ListQueueRequest>,
    ) -> Result<Response<pb::ListQueueResponse>, Status> {
        Ok(Response::new(Api::list_queue(self, request.into_inner()).await?))
    }

    async fn get_queue_item(
        &self,
        request: Request<pb::GetQueueItemRequest>,
    ) -> Result<Response<pb::QueueItem>, Status> {
        Ok(Response::new(Api::get_queue_item(self, request.into_inner()).await?))
    }

    async fn log_activity(
        &self,
        request: Request<pb::LogActivityRequest>,
    ) -> Result<Response<pb::LogActivityResponse>, Status> {
        Ok(Response::new(Api::log_activity(self, request.into_inner()).await?))
    }

    async fn record_bant(&self, request: Request<pb::RecordBantRequest>) -> Result<Response<pb::QueueItem>, Status> {
        Ok(Response::new(Api::record_bant(self, request.into_inner()).await?))
    }

    async fn recycle_lead(&self, request: Request<pb::RecycleLeadRequest>) -> Result<Response<pb::QueueItem>, Status> {
        Ok(Response::new(Api::recycle_lead(self, request.into_inner()).await?))
    }

    async fn disqualify_lead(
        &self,
        request: Request<pb::DisqualifyLeadRequest>,
    ) -> Result<Response<pb::QueueItem>, Status> {
        Ok(Response::new(Api::disqualify_lead(self, request.into_inner()).await?))
    }

    async fn convert_to_opportunity(
        &self,
        request: Request<pb::ConvertToOpportunityRequest>,
    ) -> Result<Response<pb::ConvertToOpportunityResponse>, Status> {
        Ok(Response::new(Api::convert_to_opportunity(self, request.into_inner()).await?))
    }
}
