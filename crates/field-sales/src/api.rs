//! `themodel.fieldsales.v1.FieldSalesService`: each handler parses its
//! request into domain values, hands the writer a unit of work, and maps the
//! outcome. Reads of one opportunity go through a batched reader.

use themodel_proto::fieldsales::v1 as pb;
use themodel_proto::fieldsales::v1::field_sales_service_server::FieldSalesService;
use themodel_quality::{Phase, PhaseMoveRefused, ReasonRefused};
use themodel_runtime::loader::Loader;
use themodel_runtime::owners::{self, Roster};
use themodel_runtime::time::{to_timestamp, to_timestamp_opt};
use themodel_runtime::validate::{self, Violations};
use themodel_runtime::wire::enums::{phase_from_proto, phase_to_proto};
use themodel_runtime::{ApiError, ApiResult, Call, Clock, Ctx, Done, Need, Writer, paging, wire};
use themodel_values::{AccountId, LeadId, OpportunityId, OwnerId, Term};
use tonic::{Request, Response, Status};

use crate::domain::{IncomingOpportunity, Opportunity, Refused, Win};
use crate::store::{self, Change, FieldSales, Key};

/// The field-sales service's handlers.
#[derive(Debug, Clone)]
pub struct Api {
    pub writer: Writer<FieldSales>,
    pub opportunities: Loader<OpportunityId, Opportunity>,
    pub clock: Clock,
    /// The account executives new opportunities are given to in turn.
    pub owners: Roster,
}

const METHOD: &str = "/themodel.fieldsales.v1.FieldSalesService/";

/// `subject` names the opportunity the refusal is about.
fn refused(r: Refused, subject: &OpportunityId) -> ApiError {
    let subject = format!("opportunities/{subject}");
    match r {
        Refused::Move(PhaseMoveRefused::ExitCriteria { .. }) => {
            ApiError::precondition("EXIT_CRITERIA", subject, r.to_string())
        }
        Refused::TermPastEnd(_) => ApiError::field("term_months", r.to_string()),
        Refused::Reason(ReasonRefused::Unknown { .. }) => ApiError::field("reason", r.to_string()),
        _ => ApiError::precondition("PHASE", subject, r.to_string()),
    }
}

pub fn opportunity_to_proto(o: &Opportunity) -> pb::Opportunity {
    let (owner_id, team) = owners::fields(o.owner.as_ref());
    pb::Opportunity {
        opportunity_id: o.opportunity_id.to_string(),
        lead_id: o.lead_id.to_string(),
        company: o.company.clone(),
        contact_name: o.contact_name.clone(),
        contact_email: o.contact_email.clone(),
        source: o.source.clone(),
        phase: phase_to_proto(o.phase) as i32,
        bant: Some(wire::bant_to_proto(&o.bant)),
        estimated_value: o.estimated_value.as_ref().map(wire::money_to_proto),
        contract_value: o.contract_value.as_ref().map(wire::money_to_proto),
        term_months: o.term.map_or(0, Term::months_i32),
        account_id: o.account_id.as_ref().map(AccountId::to_string).unwrap_or_default(),
        lost_reason: o.lost_reason.clone(),
        quality: o.quality,
        opened_at: to_timestamp_opt(Some(o.opened_at)),
        closed_at: to_timestamp_opt(o.closed_at),
        history: o
            .history
            .iter()
            .map(|c| pb::PhaseChange {
                from_phase: phase_to_proto(c.from) as i32,
                to_phase: phase_to_proto(c.to) as i32,
                occurred_at: Some(to_timestamp(c.at)),
            })
            .collect(),
        definition_version: o.definition_version,
        owner_id,
        team,
        handed_over_by: o.handed_over_by.clone(),
        erased_at: to_timestamp_opt(o.erased_at),
    }
}

fn opportunity_id(v: &mut Violations, s: &str) -> Option<OpportunityId> {
    v.parse("opportunity_id", OpportunityId::parse(s))
}

/// The opportunity a unit works on, copied to change.
fn opportunity(cx: &Ctx<'_, FieldSales>, id: &OpportunityId) -> ApiResult<Opportunity> {
    cx.state.opportunity(id)?.cloned().ok_or_else(|| ApiError::not_found("opportunity", id.as_str()))
}

impl Api {
    #[tracing::instrument(skip_all, fields(opportunity_id = %request.get_ref().opportunity_id, handover = %request.get_ref().request_id))]
    async fn erase_person(&self, request: Request<pb::ErasePersonRequest>) -> ApiResult<pb::ErasePersonResponse> {
        let call = Call::new(&request, &format!("{METHOD}ErasePerson"), &request.get_ref().request_id)?
            .about(&request.get_ref().opportunity_id);
        let r = request.get_ref();
        let mut v = Violations::new();
        let id = opportunity_id(&mut v, &r.opportunity_id);
        let lead_id = v.parse("lead_id", LeadId::parse(&r.lead_id));
        let (id, lead_id) = v.build(|| Some((id?, lead_id?)))?;
        self.writer
            .execute(call, vec![Need::Row(Key::Opportunity(id.clone()))], move |cx| {
                let Some(o) = cx.state.opportunity(&id)? else {
                    return Ok(Done::new(&pb::ErasePersonResponse { erased: false }));
                };
                if o.lead_id != lead_id {
                    return Err(ApiError::field(
                        "lead_id",
                        format!("is not the lead of opportunity {:?}", id.as_str()),
                    ));
                }
                let mut o = o.clone();
                let out = o.erase(cx.now);
                Ok(Done::new(&pb::ErasePersonResponse { erased: true })
                    .change(Change::Opportunity(Box::new(o)))
                    .effects(out)
                    .erased([id.to_string()]))
            })
            .await
    }

    #[tracing::instrument(skip_all, fields(opportunity_id = %request.get_ref().opportunity_id, handover = %request.get_ref().request_id))]
    async fn accept_opportunity(
        &self,
        request: Request<pb::AcceptOpportunityRequest>,
    ) -> ApiResult<pb::AcceptOpportunityResponse> {
        let call = Call::new(&request, &format!("{METHOD}AcceptOpportunity"), &request.get_ref().request_id)?
            .about(&request.get_ref().opportunity_id);
        let r = request.get_ref();
        let mut v = Violations::new();
        let id = opportunity_id(&mut v, &r.opportunity_id);
        let lead_id = v.parse("lead_id", LeadId::parse(&r.lead_id));
        let source = v.text("source", &r.source, 64);
        let incoming = IncomingOpportunity {
            opportunity_id: OpportunityId::from_stored(String::new()),
            lead_id: LeadId::from_stored(String::new()),
            company: v.text("company", &r.company, 200),
            contact_name: v.text("contact_name", &r.contact_name, 200),
            contact_email: v.text("contact_email", &r.contact_email, 254),
            source,
            bant: r.bant.as_ref().map(|b| wire::bant(&mut v, "bant", b)).unwrap_or_default(),
            estimated_value: wire::money(&mut v, "estimated_value", r.estimated_value.as_ref()),
            quality: r.quality,
            definition_version: r.definition_version,
            occurred_at: v.occurred_at("occurred_at", r.occurred_at.as_ref(), &self.clock),
            handed_over_by: v.text("handed_over_by", &r.handed_over_by, 64),
        };
        let incoming = v.build(|| Some(IncomingOpportunity { opportunity_id: id?, lead_id: lead_id?, ..incoming }))?;
        let handover_id = r.request_id.clone();
        let needs = vec![Need::Row(Key::Opportunity(incoming.opportunity_id.clone())), Need::Row(Key::Turn)];
        let roster = self.owners.clone();
        self.writer
            .execute(call, needs, move |cx| {
                if let Some(existing) = cx.state.opportunity(&incoming.opportunity_id)? {
                    return Err(ApiError::AlreadyExists(format!(
                        "opportunity {:?} already exists (for lead {:?})",
                        existing.opportunity_id.as_str(),
                        existing.lead_id.as_str()
                    )));
                }
                let next = owners::next_owner(cx.state.turns(), store::ROUND_ROBIN, &roster)?;
                let (owner, turn) = next.map_or((None, None), |(owner, turn)| (Some(owner), Some(turn)));
                let (o, out) = Opportunity::open(incoming.clone(), &handover_id, owner);
                let resp = pb::AcceptOpportunityResponse { opportunity: Some(opportunity_to_proto(&o)) };
                Ok(Done::new(&resp)
                    .change(Change::Opportunity(Box::new(o)))
                    .changes(turn.map(Change::Turn))
                    .effects(out))
            })
            .await
    }

    #[tracing::instrument(skip_all, fields(opportunity_id = %req.opportunity_id))]
    async fn get_opportunity(&self, req: pb::GetOpportunityRequest) -> ApiResult<pb::GetOpportunityResponse> {
        let id = OpportunityId::parse(&req.opportunity_id).map_err(|e| ApiError::field("opportunity_id", e.0))?;
        let o =
            self.opportunities.get(id.clone()).await?.ok_or_else(|| ApiError::not_found("opportunity", id.as_str()))?;
        Ok(pb::GetOpportunityResponse { opportunity: Some(opportunity_to_proto(&o)) })
    }

    #[tracing::instrument(skip_all)]
    async fn list_opportunities(&self, req: pb::ListOpportunitiesRequest) -> ApiResult<pb::ListOpportunitiesResponse> {
        let mut v = Violations::new();
        let limit = validate::page_size(&mut v, req.page_size, 50, 500);
        let phase = match req.phase {
            0 => None,
            p => {
                let phase = phase_from_proto(p);
                if phase.is_none() {
                    v.add("phase", "must be a phase such as PHASE_EVALUATION or PHASE_WON (unset: all)");
                }
                phase
            }
        };
        let owner = match req.owner_id.as_str() {
            "" => None,
            id => v.parse("owner_id", OwnerId::parse(id)),
        };
        v.finish()?;
        let after = match paging::decode(&req.page_token, 2)? {
            Some(k) => Some((paging::int(&k[0])?, k[1].clone())),
            None => None,
        };
        let mut rows =
            store::list(self.writer.db(), phase, owner.as_ref().map(OwnerId::as_str), after, limit + 1).await?;
        let next_page_token = if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            rows.last()
                .map(|o| paging::encode(&[&o.opened_at.to_string(), o.opportunity_id.as_str()]))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::ListOpportunitiesResponse {
            opportunities: rows.iter().map(opportunity_to_proto).collect(),
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all, fields(opportunity_id = %request.get_ref().opportunity_id))]
    async fn advance_phase(&self, request: Request<pb::AdvancePhaseRequest>) -> ApiResult<pb::AdvancePhaseResponse> {
        let call = Call::new(&request, &format!("{METHOD}AdvancePhase"), &request.get_ref().request_id)?
            .about(&request.get_ref().opportunity_id);
        let r = request.get_ref();
        let mut v = Violations::new();
        let id = opportunity_id(&mut v, &r.opportunity_id);
        let to = match phase_from_proto(r.to_phase) {
            Some(p) if p.is_open() => Some(p),
            Some(_) => {
                v.add("to_phase", "PHASE_WON and PHASE_LOST are reached with CloseWon and CloseLost");
                None
            }
            None => {
                v.add(
                    "to_phase",
                    "must be an open phase: PHASE_PRE_OPPORTUNITY, PHASE_ISSUE_RECOGNITION, PHASE_EVALUATION, \
                     PHASE_NEGOTIATION or PHASE_APPROVAL",
                );
                None
            }
        };
        let bant = r.bant.as_ref().map(|b| wire::bant(&mut v, "bant", b));
        let at = v.occurred_at("occurred_at", r.occurred_at.as_ref(), &self.clock);
        let (id, to): (OpportunityId, Phase) = v.build(|| Some((id?, to?)))?;
        let needs = vec![Need::Row(Key::Opportunity(id.clone()))];
        self.writer
            .execute(call, needs, move |cx| {
                let mut o = opportunity(cx, &id)?;
                let out = o.advance(to, bant.clone(), at, cx.definition).map_err(|r| refused(r, &id))?;
                let resp = pb::AdvancePhaseResponse { opportunity: Some(opportunity_to_proto(&o)) };
                Ok(Done::new(&resp).change(Change::Opportunity(Box::new(o))).effects(out))
            })
            .await
    }

    #[tracing::instrument(skip_all, fields(opportunity_id = %request.get_ref().opportunity_id))]
    async fn close_won(&self, request: Request<pb::CloseWonRequest>) -> ApiResult<pb::CloseWonResponse> {
        let call = Call::new(&request, &format!("{METHOD}CloseWon"), &request.get_ref().request_id)?
            .about(&request.get_ref().opportunity_id);
        let r = request.get_ref();
        let mut v = Violations::new();
        let id = opportunity_id(&mut v, &r.opportunity_id);
        let value = wire::required_money(&mut v, "contract_value", r.contract_value.as_ref());
        let term = v.parse("term_months", Term::parse(r.term_months));
        let account_id = v.parse("account_id", AccountId::parse_or_new(&r.account_id));
        let at = v.occurred_at("occurred_at", r.occurred_at.as_ref(), &self.clock);
        let (id, win) = v.build(|| Some((id?, Win { value: value?, term: term?, account_id: account_id?, at })))?;
        let needs = vec![Need::Row(Key::Opportunity(id.clone()))];
        self.writer
            .execute(call, needs, move |cx| {
                let mut o = opportunity(cx, &id)?;
                let out = o.close_won(&win, cx.definition).map_err(|r| refused(r, &id))?;
                let resp = pb::CloseWonResponse { opportunity: Some(opportunity_to_proto(&o)) };
                Ok(Done::new(&resp).change(Change::Opportunity(Box::new(o))).effects(out))
            })
            .await
    }

    #[tracing::instrument(skip_all, fields(opportunity_id = %request.get_ref().opportunity_id, reason = %request.get_ref().reason))]
    async fn close_lost(&self, request: Request<pb::CloseLostRequest>) -> ApiResult<pb::CloseLostResponse> {
        let call = Call::new(&request, &format!("{METHOD}CloseLost"), &request.get_ref().request_id)?
            .about(&request.get_ref().opportunity_id);
        let r = request.get_ref();
        let mut v = Violations::new();
        let id = opportunity_id(&mut v, &r.opportunity_id);
        // Matched exactly against the definition's lost_reasons by the
        // domain, which lists the accepted ones when it refuses.
        let reason = r.reason.clone();
        let note = v.text("note", &r.note, 4000);
        let at = v.occurred_at("occurred_at", r.occurred_at.as_ref(), &self.clock);
        let id = v.build(|| id)?;
        let needs = vec![Need::Row(Key::Opportunity(id.clone()))];
        self.writer
            .execute(call, needs, move |cx| {
                let mut o = opportunity(cx, &id)?;
                let out = o.close_lost(&reason, &note, at, cx.definition).map_err(|r| refused(r, &id))?;
                let resp = pb::CloseLostResponse { opportunity: Some(opportunity_to_proto(&o)) };
                Ok(Done::new(&resp).change(Change::Opportunity(Box::new(o))).effects(out))
            })
            .await
    }

    #[tracing::instrument(skip_all, fields(opportunity_id = %request.get_ref().opportunity_id, owner = %request.get_ref().owner_id))]
    async fn assign_opportunity(
        &self,
        request: Request<pb::AssignOpportunityRequest>,
    ) -> ApiResult<pb::AssignOpportunityResponse> {
        let call = Call::new(&request, &format!("{METHOD}AssignOpportunity"), &request.get_ref().request_id)?
            .about(&request.get_ref().opportunity_id);
        let r = request.get_ref();
        let mut v = Violations::new();
        let id = opportunity_id(&mut v, &r.opportunity_id);
        let owner = v.parse("owner_id", self.owners.owner(&r.owner_id));
        let at = v.occurred_at("occurred_at", r.occurred_at.as_ref(), &self.clock);
        let (id, owner) = v.build(|| Some((id?, owner?)))?;
        let needs = vec![Need::Row(Key::Opportunity(id.clone()))];
        self.writer
            .execute(call, needs, move |cx| {
                let mut o = opportunity(cx, &id)?;
                let out = o.assign(owner.clone(), at).map_err(|r| refused(r, &id))?;
                let resp = pb::AssignOpportunityResponse { opportunity: Some(opportunity_to_proto(&o)) };
                Ok(Done::new(&resp).change(Change::Opportunity(Box::new(o))).effects(out))
            })
            .await
    }
}

#[tonic::async_trait]
impl FieldSalesService for Api {
    async fn assign_opportunity(
        &self,
        request: Request<pb::AssignOpportunityRequest>,
    ) -> Result<Response<pb::AssignOpportunityResponse>, Status> {
        Ok(Response::new(Api::assign_opportunity(self, request).await?))
    }

    async fn erase_person(
        &self,
        request: Request<pb::ErasePersonRequest>,
    ) -> Result<Response<pb::ErasePersonResponse>, Status> {
        Ok(Response::new(Api::erase_person(self, request).await?))
    }

    async fn accept_opportunity(
        &self,
        request: Request<pb::AcceptOpportunityRequest>,
    ) -> Result<Response<pb::AcceptOpportunityResponse>, Status> {
        Ok(Response::new(Api::accept_opportunity(self, request).await?))
    }

    async fn get_opportunity(
        &self,
        request: Request<pb::GetOpportunityRequest>,
    ) -> Result<Response<pb::GetOpportunityResponse>, Status> {
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
    ) -> Result<Response<pb::AdvancePhaseResponse>, Status> {
        Ok(Response::new(Api::advance_phase(self, request).await?))
    }

    async fn close_won(&self, request: Request<pb::CloseWonRequest>) -> Result<Response<pb::CloseWonResponse>, Status> {
        Ok(Response::new(Api::close_won(self, request).await?))
    }

    async fn close_lost(
        &self,
        request: Request<pb::CloseLostRequest>,
    ) -> Result<Response<pb::CloseLostResponse>, Status> {
        Ok(Response::new(Api::close_lost(self, request).await?))
    }
}
