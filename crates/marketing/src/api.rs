//! `themodel.marketing.v1.MarketingService`: parse requests into domain
//! types, run the domain rules in one transaction, map errors.

use serde_json::json;
use themodel_proto::marketing::v1 as pb;
use themodel_proto::marketing::v1::marketing_service_server::MarketingService;
use themodel_proto::prost;
use themodel_quality::{Relationship, TouchKind};
use themodel_runtime::definition::SharedDefinition;
use themodel_runtime::error::{ApiError, ApiResult};
use themodel_runtime::events::NewEvent;
use themodel_runtime::idempotency::Idempotency;
use themodel_runtime::outbox::{self, Outbox};
use themodel_runtime::time::{Micros, to_timestamp_opt};
use themodel_runtime::validate::{self, Violations};
use themodel_runtime::{Clock, Db, Tx, ids, paging};
use tonic::{Request, Response, Status};

use crate::domain::{Lead, NewLead, Status as LeadStatus};
use crate::store;

/// The marketing service's handlers.
#[derive(Debug, Clone)]
pub struct Api {
    pub db: Db,
    pub definition: SharedDefinition,
    pub clock: Clock,
    /// Delivers hand-overs right after they commit.
    pub outbox: Outbox,
}

pub fn lead_to_proto(l: &Lead) -> pb::Lead {
    pb::Lead {
        lead_id: l.lead_id.clone(),
        email: l.email.clone(),
        name: l.name.clone(),
        company: l.company.clone(),
        company_size: l.company_size,
        industry: l.industry.clone(),
        job_title: l.job_title.clone(),
        source: l.source.clone(),
        campaign: l.campaign.clone(),
        visitor_id: l.visitor_id.clone(),
        relationship: match l.relationship {
            Relationship::Prospect => pb::Relationship::Prospect,
            Relationship::Partner => pb::Relationship::Partner,
            Relationship::Competitor => pb::Relationship::Competitor,
            Relationship::Student => pb::Relationship::Student,
        } as i32,
        status: status_to_proto(l.status) as i32,
        exclusion_reason: l.exclusion_reason.clone(),
        attribute_score: l.score.attribute,
        behaviour_score: l.score.behaviour,
        score: l.score.total(),
        definition_version: l.definition_version,
        recycle_reason: l.recycle_reason.clone(),
        touch_count: l.touch_count,
        captured_at: to_timestamp_opt(Some(l.captured_at)),
        handed_over_at: to_timestamp_opt(l.handed_over_at),
    }
}

fn status_to_proto(s: LeadStatus) -> pb::LeadStatus {
    match s {
        LeadStatus::Nurturing => pb::LeadStatus::Nurturing,
        LeadStatus::HandedOver => pb::LeadStatus::HandedOver,
        LeadStatus::Excluded => pb::LeadStatus::Excluded,
        LeadStatus::Recycled => pb::LeadStatus::Recycled,
    }
}

fn touch_kind(v: &mut Violations, field: &str, kind: i32) -> TouchKind {
    let name = pb::TouchKind::try_from(kind).map(|k| k.as_str_name()).unwrap_or("");
    match TouchKind::from_name(name) {
        Some(k) => k,
        None => {
            v.add(field, "must be a touch kind such as PAGE_VIEW, CONTENT_DOWNLOAD or QUOTE_REQUEST");
            TouchKind::PageView
        }
    }
}

/// Most touches one RecordTouches call takes.
const MAX_BATCH: usize = 1000;

/// What applying touches changed.
#[derive(Default)]
struct Applied {
    leads: Vec<Lead>,
    events: Vec<NewEvent>,
    handovers: Vec<String>,
    handed_over: Vec<String>,
}

impl Api {
    /// Hands the lead to inside sales, in the caller's transaction.
    async fn hand_over(&self, tx: &mut Tx, lead: &Lead, now: Micros, manual: bool) -> ApiResult<(NewEvent, String)> {
        let handover_id = outbox::hand_over(tx, "inside-sales", "accept_lead", &lead.handover(), now).await?;
        let event = NewEvent {
            kind: "lead_promoted",
            subject_id: lead.lead_id.clone(),
            occurred_at: lead.handed_over_at.unwrap_or(now),
            definition_version: lead.definition_version,
            payload: json!({ "lead_id": lead.lead_id, "score": lead.score.total(), "source": lead.source, "manual": manual, "handover_id": handover_id }),
        };
        Ok((event, handover_id))
    }

    fn touch_event(lead: &Lead, kind: TouchKind, at: Micros) -> NewEvent {
        NewEvent {
            kind: "touch_recorded",
            subject_id: lead.lead_id.clone(),
            occurred_at: at,
            definition_version: lead.definition_version,
            payload: json!({ "kind": kind.name(), "score": lead.score.total() }),
        }
    }

    /// Applies touches in order, loading and writing each lead once, in the
    /// caller's transaction. The one place a touch changes a lead.
    async fn apply_touches(
        &self,
        tx: &mut Tx,
        touches: Vec<(String, TouchKind, String, Micros)>,
        now: Micros,
    ) -> ApiResult<Applied> {
        let def = self.definition.current();
        let mut leads: Vec<Lead> = Vec::new();
        let mut applied = Applied::default();
        for (lead_id, kind, _, at) in &touches {
            let (lead_id, kind, at) = (lead_id.clone(), *kind, *at);
            let i = match leads.iter().position(|l| l.lead_id == lead_id) {
                Some(i) => i,
                None => {
                    let lead =
                        store::lead(&mut **tx, &lead_id).await?.ok_or_else(|| ApiError::not_found("lead", &lead_id))?;
                    leads.push(lead);
                    leads.len() - 1
                }
            };
            let lead = &mut leads[i];
            let handed_over = lead.touch(kind, at, &def);
            applied.events.push(Self::touch_event(lead, kind, at));
            if handed_over {
                let (event, id) = self.hand_over(tx, lead, now, false).await?;
                applied.events.push(event);
                applied.handovers.push(id);
                applied.handed_over.push(lead_id);
            }
        }
        for lead in &leads {
            store::update_lead(tx, lead).await?;
        }
        let rows: Vec<store::NewTouch<'_>> = touches
            .iter()
            .map(|(lead_id, kind, detail, at)| store::NewTouch {
                touch_id: ids::new_id("tc"),
                lead_id,
                kind: *kind,
                detail,
                at: *at,
            })
            .collect();
        store::insert_touches(tx, &rows).await?;
        applied.leads = leads;
        Ok(applied)
    }

    /// Commits the change, then delivers its hand-over (if any) before answering.
    async fn commit(
        &self,
        tx: Tx,
        key: &Idempotency,
        response: &impl prost::Message,
        events: &[NewEvent],
        now: Micros,
        handovers: Vec<String>,
    ) -> ApiResult<()> {
        key.commit(tx, response, events, now).await?;
        if !handovers.is_empty() {
            self.outbox.deliver_now(handovers).await;
        }
        Ok(())
    }
}

impl Api {
    #[tracing::instrument(skip_all, fields(visitor_id = %req.visitor_id))]
    async fn record_visit(&self, req: pb::RecordVisitRequest) -> ApiResult<pb::RecordVisitResponse> {
        let mut v = Violations::new();
        v.request_id(&req.request_id);
        let visitor_id = v.required("visitor_id", &req.visitor_id, 128);
        let page = v.optional("page", &req.page, 2048);
        let at = v.occurred_at("occurred_at", req.occurred_at.as_ref(), &self.clock);
        v.finish()?;

        let key = Idempotency::new("/themodel.marketing.v1.MarketingService/RecordVisit", &req.request_id, &req);
        let mut tx = self.db.begin().await?;
        if let Some(first) = key.replay(&mut tx).await? {
            return Ok(first);
        }
        let now = self.clock.now();
        let mut lead = store::lead_by_visitor(&mut tx, &visitor_id).await?;
        let visit_id = ids::new_id("vs");
        store::insert_visit(
            &mut tx,
            &visit_id,
            &visitor_id,
            &page,
            req.product_page,
            at,
            lead.as_ref().map(|l| l.lead_id.as_str()),
        )
        .await?;
        let mut evs = vec![NewEvent {
            kind: "visit_recorded",
            subject_id: visitor_id.clone(),
            occurred_at: at,
            definition_version: 0,
            payload: json!({ "visitor_id": visitor_id, "page": page, "lead_id": lead.as_ref().map(|l| l.lead_id.clone()) }),
        }];
        // A visitor who is already a lead shows behaviour: a page-view touch.
        let mut handovers = Vec::new();
        if let Some(l) = lead.take() {
            let kind = if req.product_page { TouchKind::ProductPageView } else { TouchKind::PageView };
            let mut applied = self.apply_touches(&mut tx, vec![(l.lead_id, kind, page.clone(), at)], now).await?;
            evs.append(&mut applied.events);
            handovers = applied.handovers;
            lead = applied.leads.pop();
        }
        let resp = pb::RecordVisitResponse { lead: lead.as_ref().map(lead_to_proto), visit_id, visitor_id };
        self.commit(tx, &key, &resp, &evs, now, handovers).await?;
        Ok(resp)
    }

    #[tracing::instrument(skip_all, fields(lead_id = %req.lead_id, source = %req.source))]
    async fn capture_lead(&self, req: pb::CaptureLeadRequest) -> ApiResult<pb::CaptureLeadResponse> {
        let mut v = Violations::new();
        v.request_id(&req.request_id);
        let lead_id = v.new_id("lead_id", &req.lead_id, "ld");
        let email = validate::email(&mut v, "email", &req.email);
        let name = v.optional("name", &req.name, 200);
        let company = v.optional("company", &req.company, 200);
        v.check(req.company_size >= 0, "company_size", "must not be negative");
        let industry = v.optional("industry", &req.industry, 100);
        let job_title = v.optional("job_title", &req.job_title, 200);
        // Any channel code is a source; the definition's follow-up SLAs name
        // the ones with their own deadline, the rest get its default.
        let source = v.code("source", &req.source);
        let campaign = v.optional("campaign", &req.campaign, 200);
        let visitor_id = v.optional("visitor_id", &req.visitor_id, 128);
        let relationship = match pb::Relationship::try_from(req.relationship) {
            Ok(pb::Relationship::Unspecified | pb::Relationship::Prospect) => Relationship::Prospect,
            Ok(pb::Relationship::Partner) => Relationship::Partner,
            Ok(pb::Relationship::Competitor) => Relationship::Competitor,
            Ok(pb::Relationship::Student) => Relationship::Student,
            Err(_) => {
                v.add("relationship", "must be PROSPECT, PARTNER, COMPETITOR or STUDENT");
                Relationship::Prospect
            }
        };
        let at = v.occurred_at("occurred_at", req.occurred_at.as_ref(), &self.clock);
        v.finish()?;

        let key = Idempotency::new("/themodel.marketing.v1.MarketingService/CaptureLead", &req.request_id, &req);
        let mut tx = self.db.begin().await?;
        if let Some(first) = key.replay(&mut tx).await? {
            return Ok(first);
        }
        let now = self.clock.now();
        let def = self.definition.current();

        if let Some(existing) = store::lead_by_email(&mut tx, &email).await? {
            // A known address filled in a form again: one lead, one more touch.
            if !req.lead_id.is_empty() && req.lead_id != existing.lead_id {
                return Err(ApiError::AlreadyExists(format!(
                    "e-mail {email} is already lead {:?}; capture it without lead_id or with that id",
                    existing.lead_id
                )));
            }
            let touch = vec![(existing.lead_id, TouchKind::FormSubmission, source, at)];
            let mut applied = self.apply_touches(&mut tx, touch, now).await?;
            let lead = applied.leads.pop().ok_or_else(|| anyhow::anyhow!("a touch without its lead"))?;
            let resp = pb::CaptureLeadResponse { lead: Some(lead_to_proto(&lead)), already_existed: true };
            self.commit(tx, &key, &resp, &applied.events, now, applied.handovers).await?;
            return Ok(resp);
        }
        if store::lead(&mut *tx, &lead_id).await?.is_some() {
            return Err(ApiError::AlreadyExists(format!("lead {lead_id:?} already exists with another e-mail")));
        }

        let prior = if visitor_id.is_empty() {
            Default::default()
        } else {
            store::anonymous_touches(&mut tx, &visitor_id).await?
        };
        let new = NewLead {
            lead_id,
            email,
            name,
            company,
            company_size: req.company_size,
            industry,
            job_title,
            source,
            campaign,
            visitor_id: visitor_id.clone(),
            relationship,
            captured_at: at,
        };
        let (lead, handed_over) = Lead::capture(new, prior, &def);
        store::insert_lead(&mut tx, &lead).await?;
        if !visitor_id.is_empty() {
            store::claim_visits(&mut tx, &visitor_id, &lead.lead_id).await?;
        }
        let mut evs = vec![NewEvent {
            kind: "lead_captured",
            subject_id: lead.lead_id.clone(),
            occurred_at: at,
            definition_version: def.version,
            payload: json!({
                "lead_id": lead.lead_id,
                "source": lead.source,
                "campaign": lead.campaign,
                "excluded": lead.status == LeadStatus::Excluded,
                "exclusion_reason": lead.exclusion_reason,
                "attribute_score": lead.score.attribute,
                "behaviour_score": lead.score.behaviour,
                "score": lead.score.total(),
            }),
        }];
        let mut handover = None;
        if handed_over {
            let (event, id) = self.hand_over(&mut tx, &lead, now, false).await?;
            evs.push(event);
            handover = Some(id);
        }
        let resp = pb::CaptureLeadResponse { lead: Some(lead_to_proto(&lead)), already_existed: false };
        self.commit(tx, &key, &resp, &evs, now, handover.into_iter().collect()).await?;
        Ok(resp)
    }

    #[tracing::instrument(skip_all, fields(lead_id = %req.lead_id))]
    async fn record_touch(&self, req: pb::RecordTouchRequest) -> ApiResult<pb::RecordTouchResponse> {
        let mut v = Violations::new();
        v.request_id(&req.request_id);
        let lead_id = v.id("lead_id", &req.lead_id);
        let kind = touch_kind(&mut v, "kind", req.kind);
        let detail = v.optional("detail", &req.detail, 2048);
        let at = v.occurred_at("occurred_at", req.occurred_at.as_ref(), &self.clock);
        v.finish()?;

        let key = Idempotency::new("/themodel.marketing.v1.MarketingService/RecordTouch", &req.request_id, &req);
        let mut tx = self.db.begin().await?;
        if let Some(first) = key.replay(&mut tx).await? {
            return Ok(first);
        }
        let now = self.clock.now();
        let mut applied = self.apply_touches(&mut tx, vec![(lead_id, kind, detail, at)], now).await?;
        let lead = applied.leads.pop().ok_or_else(|| anyhow::anyhow!("a touch without its lead"))?;
        let resp =
            pb::RecordTouchResponse { lead: Some(lead_to_proto(&lead)), handed_over: !applied.handovers.is_empty() };
        self.commit(tx, &key, &resp, &applied.events, now, applied.handovers).await?;
        Ok(resp)
    }

    #[tracing::instrument(skip_all, fields(touches = req.touches.len()))]
    async fn record_touches(&self, req: pb::RecordTouchesRequest) -> ApiResult<pb::RecordTouchesResponse> {
        let mut v = Violations::new();
        v.request_id(&req.request_id);
        v.check(!req.touches.is_empty(), "touches", "needs at least one touch");
        v.check(req.touches.len() <= MAX_BATCH, "touches", "at most 1000 per call");
        let mut touches = Vec::with_capacity(req.touches.len());
        for (i, t) in req.touches.iter().enumerate() {
            let lead_id = v.id(&format!("touches[{i}].lead_id"), &t.lead_id);
            let kind = touch_kind(&mut v, &format!("touches[{i}].kind"), t.kind);
            let detail = v.optional(&format!("touches[{i}].detail"), &t.detail, 2048);
            let at = v.occurred_at(&format!("touches[{i}].occurred_at"), t.occurred_at.as_ref(), &self.clock);
            touches.push((lead_id, kind, detail, at));
        }
        v.finish()?;

        let key = Idempotency::new("/themodel.marketing.v1.MarketingService/RecordTouches", &req.request_id, &req);
        let mut tx = self.db.begin().await?;
        if let Some(first) = key.replay(&mut tx).await? {
            return Ok(first);
        }
        let now = self.clock.now();
        let recorded = touches.len() as i32;
        let applied = self.apply_touches(&mut tx, touches, now).await?;
        let resp = pb::RecordTouchesResponse { recorded, handed_over_lead_ids: applied.handed_over };
        self.commit(tx, &key, &resp, &applied.events, now, applied.handovers).await?;
        Ok(resp)
    }

    #[tracing::instrument(skip_all, fields(lead_id = %req.lead_id))]
    async fn hand_over_lead(&self, req: pb::HandOverLeadRequest) -> ApiResult<pb::Lead> {
        let mut v = Violations::new();
        v.request_id(&req.request_id);
        let lead_id = v.id("lead_id", &req.lead_id);
        let note = v.optional("note", &req.note, 2000);
        let at = v.occurred_at("occurred_at", req.occurred_at.as_ref(), &self.clock);
        v.finish()?;

        let key = Idempotency::new("/themodel.marketing.v1.MarketingService/HandOverLead", &req.request_id, &req);
        let mut tx = self.db.begin().await?;
        if let Some(first) = key.replay(&mut tx).await? {
            return Ok(first);
        }
        let now = self.clock.now();
        let mut lead = store::lead(&mut *tx, &lead_id).await?.ok_or_else(|| ApiError::not_found("lead", &lead_id))?;
        lead.hand_over_now(at).map_err(|r| ApiError::precondition("STATE", "lead", r.to_string()))?;
        store::update_lead(&mut tx, &lead).await?;
        let (mut event, handover_id) = self.hand_over(&mut tx, &lead, now, true).await?;
        event.payload["note"] = note.into();
        let resp = lead_to_proto(&lead);
        self.commit(tx, &key, &resp, &[event], now, vec![handover_id]).await?;
        Ok(resp)
    }

    #[tracing::instrument(skip_all, fields(lead_id = %req.lead_id))]
    async fn get_lead(&self, req: pb::GetLeadRequest) -> ApiResult<pb::Lead> {
        let mut v = Violations::new();
        let lead_id = v.id("lead_id", &req.lead_id);
        v.finish()?;
        let lead = store::lead(self.db.reader(), &lead_id).await?;
        let lead = lead.ok_or_else(|| ApiError::not_found("lead", &lead_id))?;
        Ok(lead_to_proto(&lead))
    }

    #[tracing::instrument(skip_all)]
    async fn list_leads(&self, req: pb::ListLeadsRequest) -> ApiResult<pb::ListLeadsResponse> {
        let mut v = Violations::new();
        let limit = validate::page_size(&mut v, req.page_size, 50, 500);
        let status = match pb::LeadStatus::try_from(req.status) {
            Ok(pb::LeadStatus::Unspecified) => None,
            Ok(pb::LeadStatus::Nurturing) => Some(LeadStatus::Nurturing),
            Ok(pb::LeadStatus::HandedOver) => Some(LeadStatus::HandedOver),
            Ok(pb::LeadStatus::Excluded) => Some(LeadStatus::Excluded),
            Ok(pb::LeadStatus::Recycled) => Some(LeadStatus::Recycled),
            Err(_) => {
                v.add("status", "unknown lead status");
                None
            }
        };
        v.finish()?;
        let after = match paging::decode(&req.page_token, 2)? {
            Some(k) => Some((paging::int(&k[0])?, k[1].clone())),
            None => None,
        };
        let mut leads = store::list_leads(&self.db, status, after, limit + 1).await?;
        let next_page_token = if leads.len() as i64 > limit {
            leads.truncate(limit as usize);
            leads.last().map(|l| paging::encode(&[&l.captured_at.to_string(), &l.lead_id])).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::ListLeadsResponse { leads: leads.iter().map(lead_to_proto).collect(), next_page_token })
    }

    #[tracing::instrument(skip_all, fields(lead_id = %req.lead_id, reason = %req.reason))]
    async fn recycle_lead(&self, req: pb::RecycleLeadRequest) -> ApiResult<pb::Lead> {
        let def = self.definition.current();
        let mut v = Violations::new();
        v.request_id(&req.request_id);
        let lead_id = v.id("lead_id", &req.lead_id);
        // Senders check the reason against their definition; a receiver that
        // refused one (say, during a definition change) would make the relay
        // retry a hand-over forever, so here any well-formed code is taken.
        let reason = v.code("reason", &req.reason);
        let from = v.code("from", &req.from);
        v.check(req.timing_months >= 0, "timing_months", "must not be negative");
        let at = v.occurred_at("occurred_at", req.occurred_at.as_ref(), &self.clock);
        v.finish()?;

        let key = Idempotency::new("/themodel.marketing.v1.MarketingService/RecycleLead", &req.request_id, &req);
        let mut tx = self.db.begin().await?;
        if let Some(first) = key.replay(&mut tx).await? {
            return Ok(first);
        }
        let now = self.clock.now();
        let mut lead = store::lead(&mut *tx, &lead_id).await?.ok_or_else(|| ApiError::not_found("lead", &lead_id))?;
        lead.recycle(&reason, &def);
        store::update_lead(&mut tx, &lead).await?;
        let evs = [NewEvent {
            kind: "lead_recycled",
            subject_id: lead_id.clone(),
            occurred_at: at,
            definition_version: def.version,
            payload: json!({ "reason": reason, "from": from, "timing_months": req.timing_months }),
        }];
        let resp = lead_to_proto(&lead);
        self.commit(tx, &key, &resp, &evs, now, Vec::new()).await?;
        Ok(resp)
    }
}

#[tonic::async_trait]
impl MarketingService for Api {
    async fn record_visit(
        &self,
        request: Request<pb::RecordVisitRequest>,
    ) -> Result<Response<pb::RecordVisitResponse>, Status> {
        Ok(Response::new(Api::record_visit(self, request.into_inner()).await?))
    }

    async fn capture_lead(
        &self,
        request: Request<pb::CaptureLeadRequest>,
    ) -> Result<Response<pb::CaptureLeadResponse>, Status> {
        Ok(Response::new(Api::capture_lead(self, request.into_inner()).await?))
    }

    async fn record_touch(
        &self,
        request: Request<pb::RecordTouchRequest>,
    ) -> Result<Response<pb::RecordTouchResponse>, Status> {
        Ok(Response::new(Api::record_touch(self, request.into_inner()).await?))
    }

    async fn record_touches(
        &self,
        request: Request<pb::RecordTouchesRequest>,
    ) -> Result<Response<pb::RecordTouchesResponse>, Status> {
        Ok(Response::new(Api::record_touches(self, request.into_inner()).await?))
    }

    async fn hand_over_lead(&self, request: Request<pb::HandOverLeadRequest>) -> Result<Response<pb::Lead>, Status> {
        Ok(Response::new(Api::hand_over_lead(self, request.into_inner()).await?))
    }

    async fn get_lead(&self, request: Request<pb::GetLeadRequest>) -> Result<Response<pb::Lead>, Status> {
        Ok(Response::new(Api::get_lead(self, request.into_inner()).await?))
    }

    async fn list_leads(
        &self,
        request: Request<pb::ListLeadsRequest>,
    ) -> Result<Response<pb::ListLeadsResponse>, Status> {
        Ok(Response::new(Api::list_leads(self, request.into_inner()).await?))
    }

    async fn recycle_lead(&self, request: Request<pb::RecycleLeadRequest>) -> Result<Response<pb::Lead>, Status> {
        Ok(Response::new(Api::recycle_lead(self, request.into_inner()).await?))
    }
}
