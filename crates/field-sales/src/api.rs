//! `themodel.fieldsales.v1.FieldSalesService`: parse requests into domain
//! types, run the domain rules in one transaction, map errors.

use serde_json::json;
use themodel_proto::fieldsales::v1 as pb;
use themodel_proto::fieldsales::v1::field_sales_service_server::FieldSalesService;
use themodel_quality::Phase;
use themodel_runtime::definition::SharedDefinition;
use themodel_runtime::error::{ApiError, ApiResult};
use themodel_runtime::events::NewEvent;
use themodel_runtime::idempotency::Idempotency;
use themodel_runtime::outbox::{self, Outbox};
use themodel_runtime::time::{to_timestamp, to_timestamp_opt};
use themodel_runtime::validate::{self, Violations};
use themodel_runtime::values::{BantRecord, Money};
use themodel_runtime::{Clock, Db, Tx, paging};
use tonic::{Request, Response, Status};

use crate::domain::{IncomingOpportunity, Opportunity, RecycleHandover, Refused, WonDealHandover};
use crate::store;

/// The field-sales service's handlers.
#[derive(Debug, Clone)]
pub struct Api {
    pub db: Db,
    pub definition: SharedDefinition,
    pub clock: Clock,
    pub outbox: Outbox,
}

impl From<Refused> for ApiError {
    fn from(r: Refused) -> ApiError {
        match r {
            Refused::Move(themodel_quality::PhaseMoveRefused::ExitCriteria { .. }) => {
                ApiError::precondition("EXIT_CRITERIA", "opportunity", r.to_string())
            }
            _ => ApiError::precondition("PHASE", "opportunity", r.to_string()),
        }
    }
}

fn phase_to_proto(p: Phase) -> pb::Phase {
    match p {
        Phase::PreOpportunity => pb::Phase::PreOpportunity,
        Phase::IssueRecognition => pb::Phase::IssueRecognition,
        Phase::Evaluation => pb::Phase::Evaluation,
        Phase::Negotiation => pb::Phase::Negotiation,
        Phase::Approval => pb::Phase::Approval,
        Phase::Won => pb::Phase::Won,
        Phase::Lost => pb::Phase::Lost,
    }
}

/// A phase from the wire; `None` for UNSPECIFIED or an unknown number.
fn phase_from_proto(p: i32) -> Option<Phase> {
    pb::Phase::try_from(p).ok().and_then(|p| Phase::from_name(p.as_str_name()))
}

pub fn opportunity_to_proto(o: &Opportunity) -> pb::Opportunity {
    pb::Opportunity {
        opportunity_id: o.opportunity_id.clone(),
        lead_id: o.lead_id.clone(),
        company: o.company.clone(),
        contact_name: o.contact_name.clone(),
        contact_email: o.contact_email.clone(),
        source: o.source.clone(),
        phase: phase_to_proto(o.phase) as i32,
        bant: Some(o.bant.to_proto()),
        estimated_value: o.estimated_value.as_ref().map(Money::to_proto),
        contract_value: o.contract_value.as_ref().map(Money::to_proto),
        term_months: o.term_months,
        account_id: o.account_id.clone(),
        lost_reason: o.lost_reason.clone(),
        quality: o.quality,
        opened_at: to_timestamp_opt(Some(o.opened_at)),
        closed_at: to_timestamp_opt(o.closed_at),
        history: o
            .history
            .iter()
            .map(|c| pb::PhaseChange {
                from: phase_to_proto(c.from) as i32,
                to: phase_to_proto(c.to) as i32,
                occurred_at: Some(to_timestamp(c.at)),
            })
            .collect(),
        definition_version: o.definition_version,
    }
}

const METHOD: &str = "/themodel.fieldsales.v1.FieldSalesService/";

impl Api {
    async fn load(&self, tx: &mut Tx, id: &str) -> ApiResult<Opportunity> {
        store::opportunity(&mut **tx, id).await?.ok_or_else(|| ApiError::not_found("opportunity", id))
    }

    #[tracing::instrument(skip_all, fields(opportunity_id = %req.opportunity_id, handover = %req.request_id))]
    async fn accept_opportunity(&self, req: pb::AcceptOpportunityRequest) -> ApiResult<pb::Opportunity> {
        let mut v = Violations::new();
        v.request_id(&req.request_id);
        let incoming = IncomingOpportunity {
            opportunity_id: v.id("opportunity_id", &req.opportunity_id),
            lead_id: v.id("lead_id", &req.lead_id),
            company: v.optional("company", &req.company, 200),
            contact_name: v.optional("contact_name", &req.contact_name, 200),
            contact_email: v.optional("contact_email", &req.contact_email, 254),
            source: v.optional("source", &req.source, 64),
            bant: req.bant.as_ref().map(|b| BantRecord::parse(&mut v, "bant", b)).unwrap_or_default(),
            estimated_value: Money::parse(&mut v, "estimated_value", req.estimated_value.as_ref(), false),
            quality: req.quality,
            definition_version: req.definition_version,
            occurred_at: v.occurred_at("occurred_at", req.occurred_at.as_ref(), &self.clock),
        };
        v.finish()?;

        let key = Idempotency::new(&format!("{METHOD}AcceptOpportunity"), &req.request_id, &req);
        let mut tx = self.db.begin().await?;
        if let Some(first) = key.replay(&mut tx).await? {
            return Ok(first);
        }
        let now = self.clock.now();
        if let Some(existing) = store::opportunity(&mut *tx, &incoming.opportunity_id).await? {
            return Err(ApiError::AlreadyExists(format!(
                "opportunity {:?} already exists (for lead {:?})",
                existing.opportunity_id, existing.lead_id
            )));
        }
        let o = Opportunity::open(incoming);
        store::save(&mut tx, &o).await?;
        let evs = [NewEvent {
            kind: "opportunity_opened",
            subject_id: o.opportunity_id.clone(),
            occurred_at: o.opened_at,
            definition_version: o.definition_version,
            payload: json!({ "lead_id": o.lead_id, "quality": o.quality, "source": o.source }),
        }];
        let resp = opportunity_to_proto(&o);
        key.commit(tx, &resp, &evs, now).await?;
        Ok(resp)
    }

    #[tracing::instrument(skip_all, fields(opportunity_id = %req.opportunity_id))]
    async fn get_opportunity(&self, req: pb::GetOpportunityRequest) -> ApiResult<pb::Opportunity> {
        let mut v = Violations::new();
        let id = v.id("opportunity_id", &req.opportunity_id);
        v.finish()?;
        let o =
            store::opportunity(self.db.reader(), &id).await?.ok_or_else(|| ApiError::not_found("opportunity", &id))?;
        Ok(opportunity_to_proto(&o))
    }

    #[tracing::instrument(skip_all)]
    async fn list_opportunities(&self, req: pb::ListOpportunitiesRequest) -> ApiResult<pb::ListOpportunitiesResponse> {
        let mut v = Violations::new();
        let limit = validate::page_size(&mut v, req.page_size, 50, 500);
        let phase = match req.phase {
            0 => None,
            p => {
                let phase = phase_from_proto(p);
                v.check(phase.is_some(), "phase", "unknown phase");
                phase
            }
        };
        v.finish()?;
        let after = match paging::decode(&req.page_token, 2)? {
            Some(k) => Some((paging::int(&k[0])?, k[1].clone())),
            None => None,
        };
        let mut rows = store::list(&self.db, phase, after, limit + 1).await?;
        let next_page_token = if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            rows.last().map(|o| paging::encode(&[&o.opened_at.to_string(), &o.opportunity_id])).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::ListOpportunitiesResponse {
            opportunities: rows.iter().map(opportunity_to_proto).collect(),
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all, fields(opportunity_id = %req.opportunity_id, to = req.to_phase))]
    async fn advance_phase(&self, req: pb::AdvancePhaseRequest) -> ApiResult<pb::Opportunity> {
        let mut v = Violations::new();
        v.request_id(&req.request_id);
        let id = v.id("opportunity_id", &req.opportunity_id);
        let to = phase_from_proto(req.to_phase);
        match to {
            None => v.add(
                "to_phase",
                "must be a phase: PRE_OPPORTUNITY, ISSUE_RECOGNITION, EVALUATION, NEGOTIATION or APPROVAL",
            ),
            Some(p) if !p.is_open() => v.add("to_phase", "WON and LOST are reached with CloseWon and CloseLost"),
            Some(_) => {}
        }
        let bant = req.bant.as_ref().map(|b| BantRecord::parse(&mut v, "bant", b));
        let at = v.occurred_at("occurred_at", req.occurred_at.as_ref(), &self.clock);
        v.finish()?;
        let to = to.unwrap_or(Phase::PreOpportunity);

        let key = Idempotency::new(&format!("{METHOD}AdvancePhase"), &req.request_id, &req);
        let mut tx = self.db.begin().await?;
        if let Some(first) = key.replay(&mut tx).await? {
            return Ok(first);
        }
        let now = self.clock.now();
        let def = self.definition.current();
        let mut o = self.load(&mut tx, &id).await?;
        let from = o.advance(to, bant, at, &def)?;
        store::save(&mut tx, &o).await?;
        let evs = [NewEvent {
            kind: "phase_changed",
            subject_id: id,
            occurred_at: at,
            definition_version: def.version,
            payload: json!({ "from": from.name(), "to": to.name() }),
        }];
        let resp = opportunity_to_proto(&o);
        key.commit(tx, &resp, &evs, now).await?;
        Ok(resp)
    }

    #[tracing::instrument(skip_all, fields(opportunity_id = %req.opportunity_id))]
    async fn close_won(&self, req: pb::CloseWonRequest) -> ApiResult<pb::Opportunity> {
        let mut v = Violations::new();
        v.request_id(&req.request_id);
        let id = v.id("opportunity_id", &req.opportunity_id);
        let value = Money::parse(&mut v, "contract_value", req.contract_value.as_ref(), true);
        v.check((1..=120).contains(&req.term_months), "term_months", "must be 1-120");
        let account_id = v.new_id("account_id", &req.account_id, "acct");
        let at = v.occurred_at("occurred_at", req.occurred_at.as_ref(), &self.clock);
        v.finish()?;
        let value = value.unwrap_or_default();

        let key = Idempotency::new(&format!("{METHOD}CloseWon"), &req.request_id, &req);
        let mut tx = self.db.begin().await?;
        if let Some(first) = key.replay(&mut tx).await? {
            return Ok(first);
        }
        let now = self.clock.now();
        let def = self.definition.current();
        let mut o = self.load(&mut tx, &id).await?;
        o.close_won(value.clone(), req.term_months, &account_id, at, &def)?;
        store::save(&mut tx, &o).await?;
        let handover = WonDealHandover {
            account_id: account_id.clone(),
            opportunity_id: id.clone(),
            lead_id: o.lead_id.clone(),
            company: o.company.clone(),
            contact_name: o.contact_name.clone(),
            contact_email: o.contact_email.clone(),
            contract_value: value.clone(),
            term_months: req.term_months,
            occurred_at: at,
        };
        let handover_id = outbox::hand_over(&mut tx, "customer-success", "accept_won_deal", &handover, now).await?;
        let evs = [NewEvent {
            kind: "opportunity_won",
            subject_id: id,
            occurred_at: at,
            definition_version: def.version,
            payload: json!({
                "lead_id": o.lead_id, "account_id": account_id, "currency_code": value.currency_code,
                "units": value.units, "nanos": value.nanos, "term_months": req.term_months,
                "quality": o.quality, "handover_id": handover_id,
            }),
        }];
        let resp = opportunity_to_proto(&o);
        key.commit(tx, &resp, &evs, now).await?;
        self.outbox.deliver_now(vec![handover_id]).await;
        Ok(resp)
    }

    #[tracing::instrument(skip_all, fields(opportunity_id = %req.opportunity_id, reason = %req.reason))]
    async fn close_lost(&self, req: pb::CloseLostRequest) -> ApiResult<pb::Opportunity> {
        let mut v = Violations::new();
        v.request_id(&req.request_id);
        let id = v.id("opportunity_id", &req.opportunity_id);
        let reason = v.code("reason", &req.reason);
        let note = v.optional("note", &req.note, 4000);
        let at = v.occurred_at("occurred_at", req.occurred_at.as_ref(), &self.clock);
        v.finish()?;

        let key = Idempotency::new(&format!("{METHOD}CloseLost"), &req.request_id, &req);
        let mut tx = self.db.begin().await?;
        if let Some(first) = key.replay(&mut tx).await? {
            return Ok(first);
        }
        let now = self.clock.now();
        let def = self.definition.current();
        let mut o = self.load(&mut tx, &id).await?;
        let track = o.close_lost(&reason, at, &def)?;
        store::save(&mut tx, &o).await?;
        let handover = RecycleHandover { lead_id: o.lead_id.clone(), reason: track.clone(), note, occurred_at: at };
        let handover_id = outbox::hand_over(&mut tx, "marketing", "recycle_lead", &handover, now).await?;
        let evs = [NewEvent {
            kind: "opportunity_lost",
            subject_id: id,
            occurred_at: at,
            definition_version: def.version,
            payload: json!({
                "lead_id": o.lead_id, "reason": reason, "recycle_track": track, "quality": o.quality,
                "handover_id": handover_id,
            }),
        }];
        let resp = opportunity_to_proto(&o);
        key.commit(tx, &resp, &evs, now).await?;
        self.outbox.deliver_now(vec![handover_id]).await;
        Ok(resp)
    }
}

#[tonic::async_trait]
impl FieldSalesService for Api {
    async fn accept_opportunity(
        &self,
        request: Request<pb::AcceptOpportunityRequest>,
    ) -> Result<Response<pb::Opportunity>, Status> {
        Ok(Response::new(Api::accept_opportunity(self, request.into_inner()).await?))
    }

    async fn get_opportunity(
        &self,
        request: Request<pb::GetOpportunityRequest>,
    ) -> Result<Response<pb::Opportunity>, Status> {
        Ok(Response::new(Api::get_opportunity(self, request.into_inner()).await?))
    }

    async fn list_opportunities(
        &self,
        request: Request<pb::ListOpportunitiesRequest>,
    ) -> Result<Response<pb::ListOpportunitiesResponse>, Status> {
        Ok(Response::new(Api::list_opportunities(self, request.into_inner()).await?))
    }

    async fn advance_phase(
        &self,
        request: Request<pb::AdvancePhaseRequest>,
    ) -> Result<Response<pb::Opportunity>, Status> {
        Ok(Response::new(Api::advance_phase(self, request.into_inner()).await?))
    }

    async fn close_won(&self, request: Request<pb::CloseWonRequest>) -> Result<Response<pb::Opportunity>, Status> {
        Ok(Response::new(Api::close_won(self, request.into_inner()).await?))
    }

    async fn close_lost(&self, request: Request<pb::CloseLostRequest>) -> Result<Response<pb::Opportunity>, Status> {
        Ok(Response::new(Api::close_lost(self, request.into_inner()).await?))
    }
}
