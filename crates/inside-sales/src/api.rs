//! `themodel.insidesales.v1.InsideSalesService`: each handler parses its
//! request into domain values, hands the writer a unit of work, and maps the
//! outcome. Reads of one item go through a batched reader.

use themodel_proto::insidesales::v1 as pb;
use themodel_proto::insidesales::v1::inside_sales_service_server::InsideSalesService;
use themodel_quality::ReasonRefused;
use themodel_runtime::loader::Loader;
use themodel_runtime::owners::{self, Roster};
use themodel_runtime::time::{self, to_timestamp_opt};
use themodel_runtime::validate::{self, Violations};
use themodel_runtime::{ApiError, ApiResult, Call, Clock, Ctx, Done, Need, Writer, paging, wire};
use themodel_values::{Code, Email, LeadId, OpportunityId, OwnerId};
use tonic::{Request, Response, Status};

use crate::domain::{Conversion, IncomingLead, QueueItem, Refused, Status as QueueStatus};
use crate::store::{self, ActivityRow, Change, ConversionRow, InsideSales, Key};

/// The inside-sales service's handlers.
#[derive(Debug, Clone)]
pub struct Api {
    pub writer: Writer<InsideSales>,
    pub items: Loader<LeadId, QueueItem>,
    pub clock: Clock,
    /// The reps new leads are given to in turn.
    pub owners: Roster,
}

const METHOD: &str = "/themodel.insidesales.v1.InsideSalesService/";

impl From<Refused> for ApiError {
    fn from(r: Refused) -> ApiError {
        match r {
            Refused::NotOpen { lead: ref id, .. } => {
                ApiError::precondition("STATE", format!("leads/{id}"), r.to_string())
            }
            Refused::NoBant(ref id) | Refused::MissingBant { lead: ref id, .. } => {
                ApiError::precondition("BANT", format!("leads/{id}"), r.to_string())
            }
            Refused::Reason(ReasonRefused::Unknown { .. }) => ApiError::field("reason", r.to_string()),
            Refused::Reason(_) => ApiError::field("timing_months", r.to_string()),
        }
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
    let (owner_id, team) = owners::fields(i.owner.as_ref());
    pb::QueueItem {
        lead_id: i.lead_id.to_string(),
        email: i.email.to_string(),
        name: i.name.clone(),
        company: i.company.clone(),
        job_title: i.job_title.clone(),
        source: i.source.to_string(),
        score: i.score,
        status: status_to_proto(i.status) as i32,
        handed_over_at: to_timestamp_opt(Some(i.handed_over_at)),
        follow_up_due_at: to_timestamp_opt(Some(i.follow_up_due_at)),
        first_contact_at: to_timestamp_opt(i.first_contact_at),
        bant: Some(i.bant_proto()),
        bant_recorded: i.bant.is_some(),
        activity_count: i.activity_count,
        opportunity_id: i.opportunity_id.as_ref().map(OpportunityId::to_string).unwrap_or_default(),
        recycle_reason: i.recycle_reason.clone(),
        definition_version: i.definition_version,
        company_size: i.company_size,
        industry: i.industry.clone(),
        disqualify_reason: i.disqualify_reason.clone(),
        campaign: i.campaign.clone(),
        channel: i.channel.as_ref().map(Code::to_string).unwrap_or_default(),
        owner_id,
        team,
        erased_at: to_timestamp_opt(i.erased_at),
    }
}

fn lead_id(v: &mut Violations, s: &str) -> Option<LeadId> {
    v.parse("lead_id", LeadId::parse(s))
}

/// The open item a unit works on, copied to change.
fn item(cx: &Ctx<'_, InsideSales>, id: &LeadId) -> ApiResult<QueueItem> {
    cx.state.item(id)?.cloned().ok_or_else(|| ApiError::not_found("lead", id.as_str()))
}

impl Api {
    #[tracing::instrument(skip_all, fields(lead_id = %request.get_ref().lead_id, handover = %request.get_ref().request_id))]
    async fn accept_lead(&self, request: Request<pb::AcceptLeadRequest>) -> ApiResult<pb::AcceptLeadResponse> {
        let call = Call::new(&request, &format!("{METHOD}AcceptLead"), &request.get_ref().request_id)?
            .about(&request.get_ref().lead_id);
        let r = request.get_ref();
        let mut v = Violations::new();
        let id = lead_id(&mut v, &r.lead_id);
        let erased_at = r.erased_at.as_ref().map(|t| v.occurred_at("erased_at", Some(t), &self.clock));
        let email = match erased_at {
            Some(_) if r.email.is_empty() => Some(Email::erased()),
            _ => v.parse("email", Email::parse(&r.email)),
        };
        let source = v.parse("source", Code::parse(&r.source));
        let channel = v.optional_code("channel", &r.channel);
        v.check(r.company_size >= 0, "company_size", "must not be negative (0 = unknown)");
        let lead = IncomingLead {
            lead_id: LeadId::from_stored(String::new()),
            email: Email::from_stored(String::new()),
            name: v.text("name", &r.name, 200),
            company: v.text("company", &r.company, 200),
            company_size: r.company_size,
            industry: v.text("industry", &r.industry, 100),
            job_title: v.text("job_title", &r.job_title, 200),
            source: Code::from_stored(""),
            campaign: v.text("campaign", &r.campaign, 200),
            channel,
            score: r.score,
            definition_version: r.definition_version,
            handed_over_at: v.occurred_at("handed_over_at", r.handed_over_at.as_ref(), &self.clock),
            erased_at,
        };
        let lead = v.build(|| Some(IncomingLead { lead_id: id?, email: email?, source: source?, ..lead }))?;
        let handover_id = r.request_id.clone();
        let needs = vec![Need::Row(Key::Item(lead.lead_id.clone())), Need::Row(Key::Turn)];
        let roster = self.owners.clone();
        self.writer
            .execute(call, needs, move |cx| {
                let existing = cx.state.item(&lead.lead_id)?;
                if let Some(item) = existing.filter(|e| !e.takes_hand_over(lead.handed_over_at)) {
                    return Ok(Done::new(&pb::AcceptLeadResponse { item: Some(item_to_proto(item)) }));
                }
                let kept = QueueItem::returning_owner(existing, &roster);
                let (owner, turn) = owners::kept_or_next(kept, cx.state.turns(), store::ROUND_ROBIN, &roster)?;
                let (item, out) = QueueItem::accept(lead.clone(), existing, &handover_id, cx.definition, owner);
                let resp = pb::AcceptLeadResponse { item: Some(item_to_proto(&item)) };
                Ok(Done::new(&resp).change(Change::Item(Box::new(item))).changes(turn.map(Change::Turn)).effects(out))
            })
            .await
    }

    #[tracing::instrument(skip_all, fields(lead_id = %request.get_ref().lead_id, handover = %request.get_ref().request_id))]
    async fn erase_person(&self, request: Request<pb::ErasePersonRequest>) -> ApiResult<pb::ErasePersonResponse> {
        let call = Call::new(&request, &format!("{METHOD}ErasePerson"), &request.get_ref().request_id)?
            .about(&request.get_ref().lead_id);
        let mut v = Violations::new();
        let id = lead_id(&mut v, &request.get_ref().lead_id);
        let id = v.build(|| id)?;
        // Past conversions are history and do not change; the item's
        // current one is read again in the unit.
        let opportunities = store::conversions_of(self.writer.db(), &id).await?;
        self.writer
            .execute(call, vec![Need::Row(Key::Item(id.clone()))], move |cx| {
                let Some(item) = cx.state.item(&id)? else {
                    return Ok(Done::new(&pb::ErasePersonResponse { erased: false }));
                };
                let mut item = item.clone();
                let out = item.erase(cx.now, &opportunities);
                Ok(Done::new(&pb::ErasePersonResponse { erased: true })
                    .change(Change::Item(Box::new(item)))
                    .change(Change::EraseActivityNotes(id.clone()))
                    .effects(out)
                    .erased([id.to_string()]))
            })
            .await
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
                v.add(
                    "status",
                    "must be QUEUE_STATUS_OPEN, QUEUE_STATUS_CONVERTED, QUEUE_STATUS_RECYCLED or QUEUE_STATUS_DISQUALIFIED",
                );
                QueueStatus::Open
            }
        };
        let owner = match req.owner_id.as_str() {
            "" => None,
            id => v.parse("owner_id", OwnerId::parse(id)),
        };
        v.finish()?;
        let after = match paging::decode(&req.page_token, 3)? {
            Some(k) => Some((paging::int(&k[0])?, paging::int(&k[1])?, k[2].clone())),
            None => None,
        };
        let mut items =
            store::call_list(self.writer.db(), status, owner.as_ref().map(OwnerId::as_str), after, limit + 1).await?;
        let next_page_token = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items
                .last()
                .map(|i| paging::encode(&[&i.follow_up_due_at.to_string(), &i.score.to_string(), i.lead_id.as_str()]))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::ListQueueResponse { items: items.iter().map(item_to_proto).collect(), next_page_token })
    }

    #[tracing::instrument(skip_all, fields(lead_id = %req.lead_id))]
    async fn get_queue_item(&self, req: pb::GetQueueItemRequest) -> ApiResult<pb::GetQueueItemResponse> {
        let id = LeadId::parse(&req.lead_id).map_err(|e| ApiError::field("lead_id", e.0))?;
        let item = self.items.get(id.clone()).await?.ok_or_else(|| ApiError::not_found("lead", id.as_str()))?;
        Ok(pb::GetQueueItemResponse { item: Some(item_to_proto(&item)) })
    }

    #[tracing::instrument(skip_all, fields(lead_id = %request.get_ref().lead_id))]
    async fn log_activity(&self, request: Request<pb::LogActivityRequest>) -> ApiResult<pb::LogActivityResponse> {
        let call = Call::new(&request, &format!("{METHOD}LogActivity"), &request.get_ref().request_id)?
            .about(&request.get_ref().lead_id);
        let r = request.get_ref();
        let mut v = Violations::new();
        let id = lead_id(&mut v, &r.lead_id);
        let kind = match pb::ActivityKind::try_from(r.kind) {
            Ok(k) if k != pb::ActivityKind::Unspecified => Some(k),
            _ => {
                v.add(
                    "kind",
                    "must be ACTIVITY_KIND_CALL, ACTIVITY_KIND_EMAIL, ACTIVITY_KIND_MEETING or ACTIVITY_KIND_RESEARCH",
                );
                None
            }
        };
        let outcome = match pb::ActivityOutcome::try_from(r.outcome) {
            Ok(o) if o != pb::ActivityOutcome::Unspecified => Some(o),
            _ => {
                v.add(
                    "outcome",
                    "is required: a structured outcome such as ACTIVITY_OUTCOME_CONNECTED, ACTIVITY_OUTCOME_NO_ANSWER or \
                     ACTIVITY_OUTCOME_MEETING_BOOKED",
                );
                None
            }
        };
        let note = v.text("note", &r.note, 4000);
        let at = v.occurred_at("occurred_at", r.occurred_at.as_ref(), &self.clock);
        let (id, kind, outcome) = v.build(|| Some((id?, kind?, outcome?)))?;
        let activity_id = themodel_values::new_id("ac");
        let needs = vec![Need::Row(Key::Item(id.clone()))];
        self.writer
            .execute(call, needs, move |cx| {
                let mut item = item(cx, &id)?;
                let out = item.log_activity(&activity_id, kind, outcome, at);
                let resp = pb::LogActivityResponse {
                    activity: Some(pb::Activity {
                        activity_id: activity_id.clone(),
                        lead_id: id.to_string(),
                        kind: kind as i32,
                        outcome: outcome as i32,
                        note: note.clone(),
                        occurred_at: Some(time::to_timestamp(at)),
                    }),
                    item: Some(item_to_proto(&item)),
                };
                let row = ActivityRow {
                    activity_id: activity_id.clone(),
                    lead_id: id.clone(),
                    kind: kind.as_str_name(),
                    outcome: outcome.as_str_name(),
                    note: note.clone(),
                    at,
                };
                Ok(Done::new(&resp).change(Change::Item(Box::new(item))).change(Change::Activity(row)).effects(out))
            })
            .await
    }

    #[tracing::instrument(skip_all, fields(lead_id = %request.get_ref().lead_id))]
    async fn record_bant(&self, request: Request<pb::RecordBantRequest>) -> ApiResult<pb::RecordBantResponse> {
        let call = Call::new(&request, &format!("{METHOD}RecordBant"), &request.get_ref().request_id)?
            .about(&request.get_ref().lead_id);
        let r = request.get_ref();
        let mut v = Violations::new();
        let id = lead_id(&mut v, &r.lead_id);
        let bant = match &r.bant {
            Some(b) => Some(wire::bant(&mut v, "bant", b)),
            None => {
                v.add("bant", "is required");
                None
            }
        };
        let at = v.occurred_at("occurred_at", r.occurred_at.as_ref(), &self.clock);
        let (id, bant) = v.build(|| Some((id?, bant?)))?;
        let needs = vec![Need::Row(Key::Item(id.clone()))];
        self.writer
            .execute(call, needs, move |cx| {
                let mut item = item(cx, &id)?;
                let out = item.record_bant(bant.clone(), at)?;
                let resp = pb::RecordBantResponse { item: Some(item_to_proto(&item)) };
                Ok(Done::new(&resp).change(Change::Item(Box::new(item))).effects(out))
            })
            .await
    }

    #[tracing::instrument(skip_all, fields(lead_id = %request.get_ref().lead_id))]
    async fn convert_to_opportunity(
        &self,
        request: Request<pb::ConvertToOpportunityRequest>,
    ) -> ApiResult<pb::ConvertToOpportunityResponse> {
        let call = Call::new(&request, &format!("{METHOD}ConvertToOpportunity"), &request.get_ref().request_id)?
            .about(&request.get_ref().lead_id);
        let r = request.get_ref();
        let mut v = Violations::new();
        let id = lead_id(&mut v, &r.lead_id);
        let opportunity_id = v.parse("opportunity_id", OpportunityId::parse_or_new(&r.opportunity_id));
        let estimated_value = wire::money(&mut v, "estimated_value", r.estimated_value.as_ref());
        let note = v.text("note", &r.note, 4000);
        let at = v.occurred_at("occurred_at", r.occurred_at.as_ref(), &self.clock);
        let (id, conversion) =
            v.build(|| Some((id?, Conversion { opportunity_id: opportunity_id?, estimated_value, note, at })))?;
        let needs =
            vec![Need::Row(Key::Item(id.clone())), Need::Row(Key::Conversion(conversion.opportunity_id.clone()))];
        self.writer
            .execute(call, needs, move |cx| {
                let mut item = item(cx, &id)?;
                if let Some(owner) = cx.state.conversion(&conversion.opportunity_id)? {
                    return Err(ApiError::AlreadyExists(format!(
                        "opportunity {:?} already exists (for lead {:?}); choose another opportunity_id",
                        conversion.opportunity_id.as_str(),
                        owner.as_str()
                    )));
                }
                let (quality, out) = item.convert(&conversion, cx.definition)?;
                let resp = pb::ConvertToOpportunityResponse {
                    item: Some(item_to_proto(&item)),
                    opportunity_id: conversion.opportunity_id.to_string(),
                    quality,
                    definition_version: cx.definition.version,
                };
                let row = ConversionRow {
                    opportunity_id: conversion.opportunity_id.clone(),
                    lead_id: id.clone(),
                    quality,
                    at: conversion.at,
                };
                Ok(Done::new(&resp).change(Change::Item(Box::new(item))).change(Change::Conversion(row)).effects(out))
            })
            .await
    }

    #[tracing::instrument(skip_all, fields(lead_id = %request.get_ref().lead_id, reason = %request.get_ref().reason))]
    async fn recycle_lead(&self, request: Request<pb::RecycleLeadRequest>) -> ApiResult<pb::RecycleLeadResponse> {
        let call = Call::new(&request, &format!("{METHOD}RecycleLead"), &request.get_ref().request_id)?
            .about(&request.get_ref().lead_id);
        let r = request.get_ref();
        let mut v = Violations::new();
        let id = lead_id(&mut v, &r.lead_id);
        // Matched exactly against the definition's recycle_reasons by the
        // domain, which lists the accepted ones when it refuses.
        let reason = r.reason.clone();
        let note = v.text("note", &r.note, 4000);
        let at = v.occurred_at("occurred_at", r.occurred_at.as_ref(), &self.clock);
        let timing_months = r.timing_months;
        let id = v.build(|| id)?;
        let needs = vec![Need::Row(Key::Item(id.clone()))];
        self.writer
            .execute(call, needs, move |cx| {
                let mut item = item(cx, &id)?;
                let out = item.recycle(&reason, timing_months, &note, at, cx.definition)?;
                let resp = pb::RecycleLeadResponse { item: Some(item_to_proto(&item)) };
                Ok(Done::new(&resp).change(Change::Item(Box::new(item))).effects(out))
            })
            .await
    }

    #[tracing::instrument(skip_all, fields(lead_id = %request.get_ref().lead_id))]
    async fn disqualify_lead(
        &self,
        request: Request<pb::DisqualifyLeadRequest>,
    ) -> ApiResult<pb::DisqualifyLeadResponse> {
        let call = Call::new(&request, &format!("{METHOD}DisqualifyLead"), &request.get_ref().request_id)?
            .about(&request.get_ref().lead_id);
        let r = request.get_ref();
        let mut v = Violations::new();
        let id = lead_id(&mut v, &r.lead_id);
        let reason = v.parse("reason", Code::parse(&r.reason));
        let at = v.occurred_at("occurred_at", r.occurred_at.as_ref(), &self.clock);
        let (id, reason) = v.build(|| Some((id?, reason?)))?;
        let needs = vec![Need::Row(Key::Item(id.clone()))];
        self.writer
            .execute(call, needs, move |cx| {
                let mut item = item(cx, &id)?;
                let out = item.disqualify(&reason, at, cx.definition)?;
                let resp = pb::DisqualifyLeadResponse { item: Some(item_to_proto(&item)) };
                Ok(Done::new(&resp).change(Change::Item(Box::new(item))).effects(out))
            })
            .await
    }

    #[tracing::instrument(skip_all, fields(lead_id = %request.get_ref().lead_id, owner = %request.get_ref().owner_id))]
    async fn assign_lead(&self, request: Request<pb::AssignLeadRequest>) -> ApiResult<pb::AssignLeadResponse> {
        let call = Call::new(&request, &format!("{METHOD}AssignLead"), &request.get_ref().request_id)?
            .about(&request.get_ref().lead_id);
        let r = request.get_ref();
        let mut v = Violations::new();
        let id = lead_id(&mut v, &r.lead_id);
        let owner = v.parse("owner_id", self.owners.owner(&r.owner_id));
        let at = v.occurred_at("occurred_at", r.occurred_at.as_ref(), &self.clock);
        let (id, owner) = v.build(|| Some((id?, owner?)))?;
        let needs = vec![Need::Row(Key::Item(id.clone()))];
        self.writer
            .execute(call, needs, move |cx| {
                let mut item = item(cx, &id)?;
                let out = item.assign(owner.clone(), at)?;
                let resp = pb::AssignLeadResponse { item: Some(item_to_proto(&item)) };
                Ok(Done::new(&resp).change(Change::Item(Box::new(item))).effects(out))
            })
            .await
    }
}

#[tonic::async_trait]
impl InsideSalesService for Api {
    async fn assign_lead(
        &self,
        request: Request<pb::AssignLeadRequest>,
    ) -> Result<Response<pb::AssignLeadResponse>, Status> {
        Ok(Response::new(Api::assign_lead(self, request).await?))
    }

    async fn erase_person(
        &self,
        request: Request<pb::ErasePersonRequest>,
    ) -> Result<Response<pb::ErasePersonResponse>, Status> {
        Ok(Response::new(Api::erase_person(self, request).await?))
    }

    async fn accept_lead(
        &self,
        request: Request<pb::AcceptLeadRequest>,
    ) -> Result<Response<pb::AcceptLeadResponse>, Status> {
        Ok(Response::new(Api::accept_lead(self, request).await?))
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
    ) -> Result<Response<pb::GetQueueItemResponse>, Status> {
        Ok(Response::new(Api::get_queue_item(self, request.into_inner()).await?))
    }

    async fn log_activity(
        &self,
        request: Request<pb::LogActivityRequest>,
    ) -> Result<Response<pb::LogActivityResponse>, Status> {
        Ok(Response::new(Api::log_activity(self, request).await?))
    }

    async fn record_bant(
        &self,
        request: Request<pb::RecordBantRequest>,
    ) -> Result<Response<pb::RecordBantResponse>, Status> {
        Ok(Response::new(Api::record_bant(self, request).await?))
    }

    async fn convert_to_opportunity(
        &self,
        request: Request<pb::ConvertToOpportunityRequest>,
    ) -> Result<Response<pb::ConvertToOpportunityResponse>, Status> {
        Ok(Response::new(Api::convert_to_opportunity(self, request).await?))
    }

    async fn recycle_lead(
        &self,
        request: Request<pb::RecycleLeadRequest>,
    ) -> Result<Response<pb::RecycleLeadResponse>, Status> {
        Ok(Response::new(Api::recycle_lead(self, request).await?))
    }

    async fn disqualify_lead(
        &self,
        request: Request<pb::DisqualifyLeadRequest>,
    ) -> Result<Response<pb::DisqualifyLeadResponse>, Status> {
        Ok(Response::new(Api::disqualify_lead(self, request).await?))
    }
}
