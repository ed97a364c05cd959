//! `themodel.marketing.v1.MarketingService`: each handler parses its request
//! into domain values, hands the writer a unit of work (the rows it needs and
//! the domain step), and maps the outcome. Reads go through a batched reader.

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use themodel_proto::marketing::v1 as pb;
use themodel_proto::marketing::v1::marketing_service_server::MarketingService;
use themodel_quality::Relationship;
use themodel_runtime::auth;
use themodel_runtime::loader::Loader;
use themodel_runtime::time::to_timestamp_opt;
use themodel_runtime::validate::{self, Violations};
use themodel_runtime::wire::enums::{touch_kind_from_proto, touch_kind_names};
use themodel_runtime::wire::{department_from_proto, department_to_proto};
use themodel_runtime::{ApiError, ApiResult, Call, Clock, Ctx, Done, Need, Writer, paging};
use themodel_values::{Code, Department, Email, LeadId, VisitorId};
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::domain::{Lead, NewLead, Out, Refused, Status as LeadStatus, Touch, Visit, Visitor};
use crate::store::{self, Change, Key, Marketing, TouchRow, VisitRow};

/// The marketing service's handlers.
#[derive(Debug, Clone)]
pub struct Api {
    pub writer: Writer<Marketing>,
    pub leads: Loader<LeadId, Lead>,
    pub clock: Clock,
}

const METHOD: &str = "/themodel.marketing.v1.MarketingService/";

impl From<Refused> for ApiError {
    fn from(r: Refused) -> ApiError {
        let subject = match &r {
            Refused::Excluded(id, _) | Refused::AlreadyHandedOver(id) | Refused::HeldByInsideSales(id) => {
                format!("leads/{id}")
            }
            Refused::Reason(_) => return ApiError::field("reason", r.to_string()),
        };
        ApiError::precondition("STATE", subject, r.to_string())
    }
}

pub fn lead_to_proto(l: &Lead) -> pb::Lead {
    pb::Lead {
        lead_id: l.lead_id.to_string(),
        email: l.email.to_string(),
        name: l.name.clone(),
        company: l.company.clone(),
        company_size: l.company_size,
        industry: l.industry.clone(),
        job_title: l.job_title.clone(),
        source: l.source.to_string(),
        campaign: l.campaign.clone(),
        channel: l.channel.as_ref().map(Code::to_string).unwrap_or_default(),
        visitor_id: l.visitor_id.as_ref().map(VisitorId::to_string).unwrap_or_default(),
        relationship: match l.relationship {
            Relationship::Prospect => pb::Relationship::Prospect,
            Relationship::Partner => pb::Relationship::Partner,
            Relationship::Competitor => pb::Relationship::Competitor,
            Relationship::Student => pb::Relationship::Student,
        } as i32,
        status: l.status.to_proto() as i32,
        exclusion_reason: l.exclusion_reason.clone(),
        attribute_score: l.score.attribute,
        behaviour_score: l.score.behaviour,
        score: l.score.total(),
        definition_version: l.definition_version,
        recycle_reason: l.recycle_reason.clone(),
        recycled_by: l.recycled_by.map_or(0, |d| department_to_proto(d) as i32),
        touch_count: l.touch_count,
        captured_at: to_timestamp_opt(Some(l.captured_at)),
        handed_over_at: to_timestamp_opt(l.handed_over_at),
        recycled_at: to_timestamp_opt(l.recycled_at),
        erased_at: to_timestamp_opt(l.erased_at),
        note: l.note.clone(),
    }
}

// ---- Parsing at the edge ----

fn parse_touch(v: &mut Violations, field: &str, t: &pb::TouchInput, clock: &Clock) -> Option<Touch> {
    let lead_id = v.parse(&format!("{field}lead_id"), LeadId::parse(&t.lead_id));
    let kind = touch_kind_from_proto(t.kind);
    if kind.is_none() {
        v.add(&format!("{field}kind"), format!("must be one of {}", touch_kind_names()));
    }
    let detail = v.text(&format!("{field}detail"), &t.detail, 2048);
    let at = v.occurred_at(&format!("{field}occurred_at"), t.occurred_at.as_ref(), clock);
    Some(Touch { lead_id: lead_id?, kind: kind?, detail, at })
}

#[allow(clippy::too_many_arguments)]
fn parse_visit(
    v: &mut Violations,
    field: &str,
    visitor_id: &str,
    page: &str,
    product_page: bool,
    channel: &str,
    campaign: &str,
    occurred_at: Option<&prost_types::Timestamp>,
    clock: &Clock,
) -> Option<Visit> {
    let visitor_id = v.parse(&format!("{field}visitor_id"), VisitorId::parse(visitor_id));
    let page = v.text(&format!("{field}page"), page, 2048);
    let channel = v.optional_code(&format!("{field}channel"), channel);
    let campaign = v.text(&format!("{field}campaign"), campaign, 200);
    let at = v.occurred_at(&format!("{field}occurred_at"), occurred_at, clock);
    Some(Visit { visitor_id: visitor_id?, page, product_page, channel, campaign, at })
}

fn parse_capture(req: &pb::CaptureLeadRequest, clock: &Clock) -> ApiResult<NewLead> {
    let mut v = Violations::new();
    let lead_id = v.parse("lead_id", LeadId::parse_or_new(&req.lead_id));
    let email = v.parse("email", Email::parse(&req.email));
    let name = v.text("name", &req.name, 200);
    let company = v.text("company", &req.company, 200);
    v.check(req.company_size >= 0, "company_size", "must not be negative (0 = unknown)");
    let industry = v.text("industry", &req.industry, 100);
    let job_title = v.text("job_title", &req.job_title, 200);
    // Any channel code is a source; the definition's follow-up SLAs name
    // the ones with their own deadline, the rest get its default.
    let source = v.parse("source", Code::parse(&req.source));
    let campaign = v.text("campaign", &req.campaign, 200);
    let channel = v.optional_code("channel", &req.channel);
    let visitor_id = if req.visitor_id.trim().is_empty() {
        Some(None)
    } else {
        v.parse("visitor_id", VisitorId::parse(&req.visitor_id)).map(Some)
    };
    let relationship = match pb::Relationship::try_from(req.relationship) {
        Ok(pb::Relationship::Unspecified | pb::Relationship::Prospect) => Some(Relationship::Prospect),
        Ok(pb::Relationship::Partner) => Some(Relationship::Partner),
        Ok(pb::Relationship::Competitor) => Some(Relationship::Competitor),
        Ok(pb::Relationship::Student) => Some(Relationship::Student),
        Err(_) => {
            v.add(
                "relationship",
                "must be RELATIONSHIP_PROSPECT, RELATIONSHIP_PARTNER, RELATIONSHIP_COMPETITOR or RELATIONSHIP_STUDENT",
            );
            None
        }
    };
    let captured_at = v.occurred_at("occurred_at", req.occurred_at.as_ref(), clock);
    v.build(|| {
        Some(NewLead {
            lead_id: lead_id?,
            email: email?,
            name,
            company,
            company_size: req.company_size,
            industry,
            job_title,
            source: source?,
            campaign,
            channel,
            visitor_id: visitor_id?,
            relationship: relationship?,
            captured_at,
        })
    })
}

// ---- The units' steps ----

/// A unit's working copies: rows read from the batch on first use, changed
/// here, and handed back as changes at the end. Lets one unit touch the same
/// lead or visitor several times (a batch of touches, an ingest message).
struct Session<'c, 'a> {
    cx: &'c Ctx<'a, Marketing>,
    leads: HashMap<LeadId, Lead>,
    visitors: HashMap<VisitorId, Visitor>,
    rows: Vec<Change>,
    out: Out,
    promoted: Vec<String>,
}

impl<'c, 'a> Session<'c, 'a> {
    fn new(cx: &'c Ctx<'a, Marketing>) -> Self {
        Session {
            cx,
            leads: HashMap::new(),
            visitors: HashMap::new(),
            rows: Vec::new(),
            out: Out::default(),
            promoted: Vec::new(),
        }
    }

    fn lead(&mut self, id: &LeadId) -> ApiResult<Option<&mut Lead>> {
        if !self.leads.contains_key(id) {
            match self.cx.state.lead(id)? {
                Some(l) => {
                    self.leads.insert(id.clone(), l.clone());
                }
                None => return Ok(None),
            }
        }
        Ok(self.leads.get_mut(id))
    }

    fn visitor(&mut self, id: &VisitorId) -> ApiResult<&mut Visitor> {
        if !self.visitors.contains_key(id) {
            let v = self.cx.state.visitor(id)?;
            self.visitors.insert(id.clone(), v);
        }
        self.visitors.get_mut(id).ok_or_else(|| ApiError::Internal(anyhow::anyhow!("visitor vanished")))
    }

    fn collect(&mut self, out: Out, lead: &LeadId) {
        if !out.handovers.is_empty() {
            self.promoted.push(lead.to_string());
        }
        self.out.append(out);
    }

    /// A touch on a known lead; `Ok(None)` when the lead does not exist.
    fn touch(&mut self, t: &Touch, event_id: Option<&str>) -> ApiResult<Option<bool>> {
        let def = self.cx.definition;
        let Some(lead) = self.lead(&t.lead_id)? else { return Ok(None) };
        let out = lead.touch(t, event_id.unwrap_or_default(), def);
        let handed = !out.handovers.is_empty();
        self.collect(out, &t.lead_id);
        self.rows.push(Change::Touch(TouchRow {
            lead_id: t.lead_id.clone(),
            kind: t.kind,
            detail: t.detail.clone(),
            at: t.at,
            event_id: event_id.map(str::to_owned),
        }));
        Ok(Some(handed))
    }

    /// A visit; a visitor who is a lead also touches it. Returns the lead
    /// (if any) and whether it was handed over.
    fn visit(&mut self, visit: &Visit, event_id: Option<&str>) -> ApiResult<(Option<LeadId>, bool)> {
        let visitor = self.visitor(&visit.visitor_id)?;
        let lead_id = visitor.lead.as_ref().map(|(l, _)| l.clone());
        if lead_id.is_none() {
            visitor.visit_anonymously(visit.product_page);
        }
        let visit_id = themodel_values::new_id("vs");
        self.out.push_event(visit.recorded(&visit_id, lead_id.as_ref(), event_id.unwrap_or_default()));
        self.rows.push(Change::Visit(VisitRow {
            visit_id,
            visitor_id: visit.visitor_id.clone(),
            page: visit.page.clone(),
            product_page: visit.product_page,
            channel: visit.channel.clone(),
            campaign: visit.campaign.clone(),
            at: visit.at,
            lead_id: lead_id.clone(),
            event_id: event_id.map(str::to_owned),
        }));
        let mut handed = false;
        if let Some(id) = &lead_id {
            handed = self.touch(&visit.as_touch(id.clone()), None)?.unwrap_or(false);
        }
        Ok((lead_id, handed))
    }

    /// The unit: the session's rows, its effects, and the leads it was
    /// about (for the audit log).
    fn done<R: prost::Message>(mut self, response: &R) -> Done<Marketing> {
        let mut about: Vec<String> = self.leads.keys().map(|id| id.as_str().to_owned()).collect();
        about.sort_unstable();
        self.rows.extend(self.leads.into_values().map(|l| Change::Lead(Box::new(l))));
        self.rows.extend(self.visitors.into_values().map(Change::Visitor));
        about.into_iter().fold(Done::new(response).changes(self.rows).effects(self.out), Done::about)
    }
}

fn no_lead(id: &LeadId) -> ApiError {
    ApiError::not_found("lead", id.as_str())
}

fn capture(cx: &Ctx<'_, Marketing>, new: &NewLead) -> ApiResult<Done<Marketing>> {
    let mut s = Session::new(cx);
    if let Some(existing) = cx.state.lead_by_email(&new.email)? {
        // A known address filled in a form again: one lead, one more touch.
        let id = existing.lead_id.clone();
        let touch = Touch {
            lead_id: id.clone(),
            kind: themodel_quality::TouchKind::FormSubmission,
            detail: new.source.to_string(),
            at: new.captured_at,
        };
        let handed = s.touch(&touch, None)?.ok_or_else(|| no_lead(&id))?;
        let lead = s.lead(&id)?.map(|l| lead_to_proto(l));
        let resp = pb::CaptureLeadResponse { lead, already_existed: true, handed_over: handed };
        return Ok(s.done(&resp));
    }
    if cx.state.lead(&new.lead_id)?.is_some() {
        return Err(ApiError::AlreadyExists(format!(
            "lead {:?} already exists with another e-mail address; capture without lead_id or with a new one",
            new.lead_id.as_str()
        )));
    }
    let prior = match &new.visitor_id {
        Some(v) => s.visitor(v)?.identify(&new.lead_id, new.captured_at),
        None => Default::default(),
    };
    let (lead, out) = Lead::capture(new.clone(), prior, cx.definition);
    let handed = !out.handovers.is_empty();
    s.collect(out, &lead.lead_id);
    let resp =
        pb::CaptureLeadResponse { lead: Some(lead_to_proto(&lead)), already_existed: false, handed_over: handed };
    s.leads.insert(lead.lead_id.clone(), lead);
    Ok(s.done(&resp))
}

/// What one ingested item is, once parsed.
#[derive(Debug, Clone)]
enum Item {
    Touch(Touch),
    Visit(Visit),
}

/// An ingested item: its position in the stream, its pipeline event id.
#[derive(Debug, Clone)]
struct Ingested {
    index: i64,
    event_id: Option<String>,
    item: Item,
}

/// An ingest message on its way through the writer: the stream position it
/// acknowledges up to, what parsing refused, and the unit's outcome.
struct InFlight {
    through: i64,
    rejected: Vec<pb::IngestRejection>,
    outcome: tokio::task::JoinHandle<ApiResult<pb::IngestBehaviourResponse>>,
}

/// Applies ingested items in order; items refused here are reported by index.
fn ingest(cx: &Ctx<'_, Marketing>, items: &[Ingested]) -> ApiResult<Done<Marketing>> {
    let mut s = Session::new(cx);
    let mut resp = pb::IngestBehaviourResponse::default();
    // Event ids recorded by this unit so far (earlier units' are in `cx.state`).
    let (mut touches, mut visits) = (HashSet::new(), HashSet::new());
    for Ingested { index, event_id, item } in items {
        let id = event_id.as_deref();
        let duplicate = match (item, id) {
            (Item::Touch(_), Some(e)) => cx.state.touch_seen(e)? || !touches.insert(e),
            (Item::Visit(_), Some(e)) => cx.state.visit_seen(e)? || !visits.insert(e),
            (_, None) => false,
        };
        if duplicate {
            resp.duplicates += 1;
            continue;
        }
        match item {
            Item::Touch(t) => match s.touch(t, id)? {
                Some(_) => resp.recorded += 1,
                None => resp.rejected.push(pb::IngestRejection {
                    index: *index,
                    event_id: id.unwrap_or_default().to_owned(),
                    code: "NOT_FOUND".to_owned(),
                    field: "touch.lead_id".to_owned(),
                    description: format!("lead {:?} not found", t.lead_id.as_str()),
                }),
            },
            Item::Visit(v) => {
                s.visit(v, id)?;
                resp.recorded += 1;
            }
        }
    }
    resp.handed_over_lead_ids = s.promoted.clone();
    Ok(s.done(&resp))
}

/// Most items one ingest message may carry.
const MAX_INGEST_ITEMS: usize = 5000;
/// Ingest messages a stream may have in the writer at once.
const INGEST_IN_FLIGHT: usize = 4;

impl Api {
    #[tracing::instrument(skip_all, fields(visitor_id = %request.get_ref().visitor_id))]
    async fn record_visit(&self, request: Request<pb::RecordVisitRequest>) -> ApiResult<pb::RecordVisitResponse> {
        let call = Call::new(&request, &format!("{METHOD}RecordVisit"), &request.get_ref().request_id)?
            .about(&request.get_ref().visitor_id);
        let r = request.get_ref();
        let mut v = Violations::new();
        let visit = parse_visit(
            &mut v,
            "",
            &r.visitor_id,
            &r.page,
            r.product_page,
            &r.channel,
            &r.campaign,
            r.occurred_at.as_ref(),
            &self.clock,
        );
        let visit = v.build(|| visit)?;
        let needs = vec![Need::Row(Key::Visitor(visit.visitor_id.clone()))];
        self.writer
            .execute(call, needs, move |cx| {
                let mut s = Session::new(cx);
                let (lead_id, handed_over) = s.visit(&visit, None)?;
                let lead = match &lead_id {
                    Some(id) => s.lead(id)?.map(|l| lead_to_proto(l)),
                    None => None,
                };
                let visit_id = s
                    .rows
                    .iter()
                    .find_map(|r| match r {
                        Change::Visit(v) => Some(v.visit_id.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                let resp =
                    pb::RecordVisitResponse { lead, visit_id, visitor_id: visit.visitor_id.to_string(), handed_over };
                Ok(s.done(&resp))
            })
            .await
    }

    #[tracing::instrument(skip_all, fields(lead_id = %request.get_ref().lead_id, source = %request.get_ref().source))]
    async fn capture_lead(&self, request: Request<pb::CaptureLeadRequest>) -> ApiResult<pb::CaptureLeadResponse> {
        let call = Call::new(&request, &format!("{METHOD}CaptureLead"), &request.get_ref().request_id)?;
        let new = parse_capture(request.get_ref(), &self.clock)?;
        let mut needs = vec![Need::Row(Key::Email(new.email.key())), Need::Row(Key::Lead(new.lead_id.clone()))];
        if let Some(v) = &new.visitor_id {
            needs.push(Need::Row(Key::Visitor(v.clone())));
        }
        self.writer.execute(call, needs, move |cx| capture(cx, &new)).await
    }

    #[tracing::instrument(skip_all, fields(lead_id = %request.get_ref().lead_id))]
    async fn record_touch(&self, request: Request<pb::RecordTouchRequest>) -> ApiResult<pb::RecordTouchResponse> {
        let call = Call::new(&request, &format!("{METHOD}RecordTouch"), &request.get_ref().request_id)?;
        let r = request.get_ref();
        let mut v = Violations::new();
        let input = pb::TouchInput {
            lead_id: r.lead_id.clone(),
            kind: r.kind,
            detail: r.detail.clone(),
            occurred_at: r.occurred_at,
        };
        let touch = parse_touch(&mut v, "", &input, &self.clock);
        let touch = v.build(|| touch)?;
        let needs = vec![Need::Row(Key::Lead(touch.lead_id.clone()))];
        self.writer
            .execute(call, needs, move |cx| {
                let mut s = Session::new(cx);
                let handed_over = s.touch(&touch, None)?.ok_or_else(|| no_lead(&touch.lead_id))?;
                let lead = s.lead(&touch.lead_id)?.map(|l| lead_to_proto(l));
                Ok(s.done(&pb::RecordTouchResponse { lead, handed_over }))
            })
            .await
    }

    #[tracing::instrument(skip_all, fields(touches = request.get_ref().touches.len()))]
    async fn record_touches(&self, request: Request<pb::RecordTouchesRequest>) -> ApiResult<pb::RecordTouchesResponse> {
        let call = Call::new(&request, &format!("{METHOD}RecordTouches"), &request.get_ref().request_id)?;
        let r = request.get_ref();
        let mut v = Violations::new();
        v.check(!r.touches.is_empty(), "touches", "needs at least one touch");
        v.check(r.touches.len() <= 1000, "touches", "at most 1000 per call");
        let touches: Vec<Option<Touch>> = if r.touches.len() <= 1000 {
            r.touches
                .iter()
                .enumerate()
                .map(|(i, t)| parse_touch(&mut v, &format!("touches[{i}]."), t, &self.clock))
                .collect()
        } else {
            Vec::new()
        };
        let touches: Vec<Touch> = v.build(|| touches.into_iter().collect())?;
        let needs = touches.iter().map(|t| Need::Row(Key::Lead(t.lead_id.clone()))).collect();
        self.writer
            .execute(call, needs, move |cx| {
                let mut s = Session::new(cx);
                for t in &touches {
                    s.touch(t, None)?.ok_or_else(|| no_lead(&t.lead_id))?;
                }
                let resp = pb::RecordTouchesResponse {
                    recorded: i32::try_from(touches.len()).unwrap_or(i32::MAX),
                    handed_over_lead_ids: s.promoted.clone(),
                };
                Ok(s.done(&resp))
            })
            .await
    }

    #[tracing::instrument(skip_all, fields(lead_id = %request.get_ref().lead_id))]
    async fn hand_over_lead(&self, request: Request<pb::HandOverLeadRequest>) -> ApiResult<pb::HandOverLeadResponse> {
        let call = Call::new(&request, &format!("{METHOD}HandOverLead"), &request.get_ref().request_id)?;
        let r = request.get_ref();
        let mut v = Violations::new();
        let lead_id = v.parse("lead_id", LeadId::parse(&r.lead_id));
        let note = v.text("note", &r.note, 2000);
        let at = v.occurred_at("occurred_at", r.occurred_at.as_ref(), &self.clock);
        let lead_id = v.build(|| lead_id)?;
        let needs = vec![Need::Row(Key::Lead(lead_id.clone()))];
        self.writer
            .execute(call, needs, move |cx| {
                let mut s = Session::new(cx);
                let def = cx.definition;
                let lead = s.lead(&lead_id)?.ok_or_else(|| no_lead(&lead_id))?;
                let out = lead.hand_over_now(at, &note, def)?;
                let resp = pb::HandOverLeadResponse { lead: Some(lead_to_proto(lead)) };
                s.collect(out, &lead_id);
                Ok(s.done(&resp))
            })
            .await
    }

    #[tracing::instrument(skip_all, fields(lead_id = %req.lead_id))]
    async fn get_lead(&self, req: pb::GetLeadRequest) -> ApiResult<pb::GetLeadResponse> {
        let id = LeadId::parse(&req.lead_id).map_err(|e| ApiError::field("lead_id", e.0))?;
        let lead = self.leads.get(id.clone()).await?.ok_or_else(|| no_lead(&id))?;
        Ok(pb::GetLeadResponse { lead: Some(lead_to_proto(&lead)) })
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
                v.add(
                    "status",
                    "must be LEAD_STATUS_NURTURING, LEAD_STATUS_HANDED_OVER, LEAD_STATUS_EXCLUDED or LEAD_STATUS_RECYCLED (unset: all)",
                );
                None
            }
        };
        v.finish()?;
        let after = match paging::decode(&req.page_token, 2)? {
            Some(k) => Some((paging::int(&k[0])?, k[1].clone())),
            None => None,
        };
        let mut leads = store::list_leads(self.writer.db(), status, after, limit + 1).await?;
        let next_page_token = if leads.len() as i64 > limit {
            leads.truncate(limit as usize);
            leads.last().map(|l| paging::encode(&[&l.captured_at.to_string(), l.lead_id.as_str()])).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::ListLeadsResponse { leads: leads.iter().map(lead_to_proto).collect(), next_page_token })
    }

    #[tracing::instrument(skip_all, fields(lead_id = %request.get_ref().lead_id, reason = %request.get_ref().reason))]
    async fn recycle_lead(&self, request: Request<pb::RecycleLeadRequest>) -> ApiResult<pb::RecycleLeadResponse> {
        let call = Call::new(&request, &format!("{METHOD}RecycleLead"), &request.get_ref().request_id)?;
        let r = request.get_ref();
        let mut v = Violations::new();
        let lead_id = v.parse("lead_id", LeadId::parse(&r.lead_id));
        // The sender checked the reason against the definition it applied; a
        // receiver that refused a well-formed one (during a definition
        // change, say) would only turn the hand-over into a dead letter.
        let reason = v.parse("reason", Code::parse(&r.reason));
        let sender = sender(&mut v, r.sender, &[Department::InsideSales, Department::FieldSales]);
        v.check((0..=60).contains(&r.timing_months), "timing_months", "must be 0-60");
        let note = v.text("note", &r.note, 4000);
        let at = v.occurred_at("occurred_at", r.occurred_at.as_ref(), &self.clock);
        let timing_months = r.timing_months;
        let (lead_id, reason, sender) = v.build(|| Some((lead_id?, reason?, sender?)))?;
        check_sender(&request, sender)?;
        let needs = vec![Need::Row(Key::Lead(lead_id.clone()))];
        self.writer
            .execute(call, needs, move |cx| {
                let mut s = Session::new(cx);
                let def = cx.definition;
                let lead = s.lead(&lead_id)?.ok_or_else(|| no_lead(&lead_id))?;
                let out = lead.recycle(&reason, sender, timing_months, &note, at, def);
                let resp = pb::RecycleLeadResponse { lead: Some(lead_to_proto(lead)) };
                s.collect(out, &lead_id);
                Ok(s.done(&resp))
            })
            .await
    }

    #[tracing::instrument(skip_all, fields(lead_id = %request.get_ref().lead_id, reason = %request.get_ref().reason))]
    async fn exclude_lead(&self, request: Request<pb::ExcludeLeadRequest>) -> ApiResult<pb::ExcludeLeadResponse> {
        let call = Call::new(&request, &format!("{METHOD}ExcludeLead"), &request.get_ref().request_id)?;
        let r = request.get_ref();
        let mut v = Violations::new();
        let lead_id = v.parse("lead_id", LeadId::parse(&r.lead_id));
        let reason = v.parse("reason", Code::parse(&r.reason));
        let sender = sender(&mut v, r.sender, &[Department::Marketing, Department::InsideSales]);
        let note = v.text("note", &r.note, 4000);
        let at = v.occurred_at("occurred_at", r.occurred_at.as_ref(), &self.clock);
        let (lead_id, reason, sender) = v.build(|| Some((lead_id?, reason?, sender?)))?;
        check_sender(&request, sender)?;
        let needs = vec![Need::Row(Key::Lead(lead_id.clone()))];
        self.writer
            .execute(call, needs, move |cx| {
                let mut s = Session::new(cx);
                let lead = s.lead(&lead_id)?.ok_or_else(|| no_lead(&lead_id))?;
                let out = lead.exclude(&reason, sender, &note, at, cx.definition)?;
                let resp = pb::ExcludeLeadResponse { lead: Some(lead_to_proto(lead)) };
                s.collect(out, &lead_id);
                Ok(s.done(&resp))
            })
            .await
    }

    #[tracing::instrument(skip_all, fields(lead_id = %request.get_ref().lead_id))]
    async fn erase_person(&self, request: Request<pb::ErasePersonRequest>) -> ApiResult<pb::ErasePersonResponse> {
        let call = Call::new(&request, &format!("{METHOD}ErasePerson"), &request.get_ref().request_id)?;
        let r = request.get_ref();
        let mut v = Violations::new();
        /// Whom the request names: a lead, or the key of an address.
        enum Person {
            Lead(LeadId),
            Address(String),
        }
        let by = match (r.lead_id.is_empty(), r.email.is_empty()) {
            (false, true) => v.parse("lead_id", LeadId::parse(&r.lead_id)).map(Person::Lead),
            (true, false) => v.parse("email", Email::parse(&r.email)).map(|e| Person::Address(e.key())),
            (true, true) => {
                v.add("lead_id", "give the lead_id or the email of the person to erase");
                None
            }
            (false, false) => {
                v.add("email", "give either lead_id or email, not both");
                None
            }
        };
        let by = v.build(|| by)?;
        let need = match &by {
            Person::Lead(id) => Key::Lead(id.clone()),
            Person::Address(key) => Key::Email(key.clone()),
        };
        self.writer
            .execute(call, vec![Need::Row(need)], move |cx| {
                let id = match &by {
                    Person::Lead(id) => id.clone(),
                    Person::Address(key) => cx
                        .state
                        .lead_by_email_key(key)?
                        .map(|l| l.lead_id.clone())
                        .ok_or_else(|| ApiError::not_found("lead with e-mail address", "(the given address)"))?,
                };
                let mut s = Session::new(cx);
                let lead = s.lead(&id)?.ok_or_else(|| no_lead(&id))?;
                let out = lead.erase(cx.now);
                let resp = pb::ErasePersonResponse { lead: Some(lead_to_proto(lead)) };
                // Not a promotion: the hand-over it makes is the erasure's.
                s.out.append(out);
                Ok(s.done(&resp).erased([id.to_string()]))
            })
            .await
    }

    /// Parses one ingest message: its valid items, and rejections for the rest.
    fn parse_ingest(&self, msg: &pb::IngestBehaviourRequest, first: i64) -> (Vec<Ingested>, Vec<pb::IngestRejection>) {
        let mut items = Vec::with_capacity(msg.items.len());
        let mut rejected = Vec::new();
        for (i, item) in msg.items.iter().enumerate() {
            let index = first + i as i64;
            let mut v = Violations::new();
            let event_id = v.text("event_id", &item.event_id, 128);
            let parsed = match &item.behaviour {
                Some(pb::behaviour_item::Behaviour::Touch(t)) => {
                    parse_touch(&mut v, "touch.", t, &self.clock).map(Item::Touch)
                }
                Some(pb::behaviour_item::Behaviour::Visit(x)) => parse_visit(
                    &mut v,
                    "visit.",
                    &x.visitor_id,
                    &x.page,
                    x.product_page,
                    &x.channel,
                    &x.campaign,
                    x.occurred_at.as_ref(),
                    &self.clock,
                )
                .map(Item::Visit),
                None => {
                    v.add("behaviour", "is required: a touch or a visit");
                    None
                }
            };
            match v.build(|| parsed) {
                Ok(item) => items.push(Ingested { index, event_id: (!event_id.is_empty()).then_some(event_id), item }),
                Err(ApiError::InvalidArgument(violations)) => {
                    for f in violations {
                        rejected.push(pb::IngestRejection {
                            index,
                            event_id: item.event_id.clone(),
                            code: "INVALID_ARGUMENT".to_owned(),
                            field: f.field,
                            description: f.description,
                        });
                    }
                }
                Err(e) => rejected.push(pb::IngestRejection {
                    index,
                    event_id: item.event_id.clone(),
                    code: "INTERNAL".to_owned(),
                    field: String::new(),
                    description: e.to_string(),
                }),
            }
        }
        (items, rejected)
    }

    /// Applies one ingest message through the writer, waiting (within a
    /// bound) when the writer is at capacity: a stream is backpressured,
    /// not refused.
    async fn ingest_message(&self, call: Call, items: Vec<Ingested>) -> ApiResult<pb::IngestBehaviourResponse> {
        if items.is_empty() {
            return Ok(pb::IngestBehaviourResponse::default());
        }
        let mut needs = Vec::new();
        for Ingested { event_id, item, .. } in &items {
            match item {
                Item::Touch(t) => {
                    needs.push(Need::Row(Key::Lead(t.lead_id.clone())));
                    if let Some(e) = event_id {
                        needs.push(Need::Row(Key::TouchEvent(e.clone())));
                    }
                }
                Item::Visit(v) => {
                    needs.push(Need::Row(Key::Visitor(v.visitor_id.clone())));
                    if let Some(e) = event_id {
                        needs.push(Need::Row(Key::VisitEvent(e.clone())));
                    }
                }
            }
        }
        let items = Arc::new(items);
        let mut waited = Duration::ZERO;
        loop {
            let batch = items.clone();
            match self.writer.execute(call.clone(), needs.clone(), move |cx| ingest(cx, &batch)).await {
                Err(ApiError::ResourceExhausted { retry_after, .. }) if waited < Duration::from_secs(30) => {
                    tokio::time::sleep(retry_after).await;
                    waited += retry_after;
                }
                other => return other,
            }
        }
    }
}

type IngestStream = Pin<Box<dyn Stream<Item = Result<pb::IngestBehaviourResponse, Status>> + Send>>;

#[tonic::async_trait]
impl MarketingService for Api {
    async fn record_visit(
        &self,
        request: Request<pb::RecordVisitRequest>,
    ) -> Result<Response<pb::RecordVisitResponse>, Status> {
        Ok(Response::new(Api::record_visit(self, request).await?))
    }

    async fn capture_lead(
        &self,
        request: Request<pb::CaptureLeadRequest>,
    ) -> Result<Response<pb::CaptureLeadResponse>, Status> {
        Ok(Response::new(Api::capture_lead(self, request).await?))
    }

    async fn record_touch(
        &self,
        request: Request<pb::RecordTouchRequest>,
    ) -> Result<Response<pb::RecordTouchResponse>, Status> {
        Ok(Response::new(Api::record_touch(self, request).await?))
    }

    async fn record_touches(
        &self,
        request: Request<pb::RecordTouchesRequest>,
    ) -> Result<Response<pb::RecordTouchesResponse>, Status> {
        Ok(Response::new(Api::record_touches(self, request).await?))
    }

    type IngestBehaviourStream = IngestStream;

    async fn ingest_behaviour(
        &self,
        request: Request<Streaming<pb::IngestBehaviourRequest>>,
    ) -> Result<Response<Self::IngestBehaviourStream>, Status> {
        let call = Call::streaming(&request, &format!("{METHOD}IngestBehaviour"));
        let mut inbound = request.into_inner();
        let (acks, rx) = mpsc::channel::<Result<pb::IngestBehaviourResponse, Status>>(INGEST_IN_FLIGHT);
        let api = self.clone();
        tokio::spawn(async move {
            let mut received: i64 = 0;
            let mut pending: VecDeque<InFlight> = VecDeque::new();
            let mut open = true;
            while open || !pending.is_empty() {
                let full = pending.len() >= INGEST_IN_FLIGHT;
                let oldest = async {
                    match pending.front_mut() {
                        Some(f) => (&mut f.outcome).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    // The answer stream is gone (the caller left, or the
                    // service is shutting down): stop reading.
                    _ = acks.closed() => return,
                    msg = inbound.message(), if open && !full => match msg {
                        Ok(Some(msg)) => {
                            if msg.items.len() > MAX_INGEST_ITEMS {
                                let too_many = ApiError::field("items", format!("at most {MAX_INGEST_ITEMS} per message"));
                                let _ = acks.send(Err(too_many.into())).await;
                                return;
                            }
                            let (items, rejected) = api.parse_ingest(&msg, received);
                            received += msg.items.len() as i64;
                            let worker = api.clone();
                            let call = call.clone();
                            let outcome = tokio::spawn(async move { worker.ingest_message(call, items).await });
                            pending.push_back(InFlight { through: received, rejected, outcome });
                        }
                        Ok(None) => open = false,
                        Err(status) => {
                            let _ = acks.send(Err(ingest_transport_error(status))).await;
                            return;
                        }
                    },
                    outcome = oldest => {
                        let Some(InFlight { through, mut rejected, .. }) = pending.pop_front() else { continue };
                        let ack = match outcome {
                            Ok(Ok(mut ack)) => {
                                rejected.append(&mut ack.rejected);
                                rejected.sort_by_key(|r| r.index);
                                ack.rejected = rejected;
                                ack.acknowledged = through;
                                Ok(ack)
                            }
                            Ok(Err(e)) => Err(Status::from(e)),
                            Err(e) => Err(Status::from(ApiError::Internal(anyhow::anyhow!("ingest task failed: {e}")))),
                        };
                        let failed = ack.is_err();
                        if acks.send(ack).await.is_err() || failed {
                            return;
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn hand_over_lead(
        &self,
        request: Request<pb::HandOverLeadRequest>,
    ) -> Result<Response<pb::HandOverLeadResponse>, Status> {
        Ok(Response::new(Api::hand_over_lead(self, request).await?))
    }

    async fn get_lead(&self, request: Request<pb::GetLeadRequest>) -> Result<Response<pb::GetLeadResponse>, Status> {
        Ok(Response::new(Api::get_lead(self, request.into_inner()).await?))
    }

    async fn list_leads(
        &self,
        request: Request<pb::ListLeadsRequest>,
    ) -> Result<Response<pb::ListLeadsResponse>, Status> {
        Ok(Response::new(Api::list_leads(self, request.into_inner()).await?))
    }

    async fn recycle_lead(
        &self,
        request: Request<pb::RecycleLeadRequest>,
    ) -> Result<Response<pb::RecycleLeadResponse>, Status> {
        Ok(Response::new(Api::recycle_lead(self, request).await?))
    }

    async fn exclude_lead(
        &self,
        request: Request<pb::ExcludeLeadRequest>,
    ) -> Result<Response<pb::ExcludeLeadResponse>, Status> {
        Ok(Response::new(Api::exclude_lead(self, request).await?))
    }

    async fn erase_person(
        &self,
        request: Request<pb::ErasePersonRequest>,
    ) -> Result<Response<pb::ErasePersonResponse>, Status> {
        Ok(Response::new(Api::erase_person(self, request).await?))
    }
}

/// The request's `sender`, if it is one of `accepted`; otherwise a field
/// violation listing them.
fn sender(v: &mut Violations, wire: i32, accepted: &[Department]) -> Option<Department> {
    let found = department_from_proto(wire).filter(|d| accepted.contains(d));
    if found.is_none() {
        let names: Vec<&str> = accepted.iter().map(|d| department_to_proto(*d).as_str_name()).collect();
        v.add("sender", format!("must be {}", names.join(" or ")));
    }
    found
}

/// Refuses a caller that speaks for a department it is not: a hand-over's
/// `sender` must be the service that calls (docs/security.md).
fn check_sender<T>(request: &Request<T>, sender: Department) -> ApiResult<()> {
    if auth::may_send_as(auth::caller(request).map(AsRef::as_ref), sender, Department::Marketing) {
        Ok(())
    } else {
        Err(ApiError::PermissionDenied(format!("this caller may not send as {}", sender.code())))
    }
}

/// A broken inbound stream, as the ingest stream reports it: an oversized
/// message is RESOURCE_EXHAUSTED (as for unary calls), the rest as tonic gave it.
fn ingest_transport_error(status: Status) -> Status {
    if status.code() == tonic::Code::OutOfRange && status.message().contains("message length too large") {
        Status::resource_exhausted(status.message())
    } else {
        status
    }
}
