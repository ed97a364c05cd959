//! `themodel.kpi.v1.KpiService`: the funnel, and the shared quality definitions.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use themodel_proto::common::v1 as common;
use themodel_proto::kpi::v1 as pb;
use themodel_proto::kpi::v1::definition_preview_service_client::DefinitionPreviewServiceClient;
use themodel_proto::kpi::v1::kpi_service_server::KpiService;
use themodel_quality::Phase;
use themodel_runtime::call;
use themodel_runtime::consistency::{self, Token};
use themodel_runtime::definition::{self, to_proto};
use themodel_runtime::paging;
use themodel_runtime::telemetry::PeerChannel;
use themodel_runtime::time::{Micros, to_timestamp};
use themodel_runtime::validate::{Violations, page_size};
use themodel_runtime::wire::{money, required_money};
use themodel_runtime::{ApiError, ApiResult, Call, Clock, Done, Effects, Need, Writer};
use themodel_values::LeadId;
use themodel_values::Money;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use crate::calibration;
use crate::consumer::{self, Consumer};
use crate::domain;
use crate::domain::Rate;
use crate::journey::{Dimension, StepKind};
use crate::period;
use crate::planning::{self, Factor, Plan, PlanRates, RateSource};
use crate::retention;
use crate::span::Span;
use crate::store::{self, Key, Writes};
use crate::targets::{self, Progress, Target};
use crate::velocity::{self, Stage};

/// The kpi service's handlers.
#[derive(Debug, Clone)]
pub struct Api {
    pub writer: Writer<Writes>,
    /// The time zone days are read in when a request names none.
    pub time_zone: Zone,
    /// What "today" is, for attainment.
    pub clock: Clock,
    /// The month (1–12) fiscal quarters and years start in, unless a request
    /// says otherwise.
    pub fiscal_year_start_month: u32,
    /// The stream consumers, whose progress reads wait on and report.
    pub consumers: Arc<[Arc<Consumer>]>,
    /// Marketing, which dry-runs definition drafts on its leads.
    pub marketing: DefinitionPreviewServiceClient<PeerChannel>,
}

/// How long marketing may take to class its leads for a dry run.
const PREVIEW_TIMEOUT: Duration = Duration::from_secs(60);

/// A time zone a request's days are read in.
#[derive(Debug, Clone)]
pub struct Zone {
    tz: chrono_tz::Tz,
}

impl Zone {
    /// An IANA time zone, such as "UTC" or "Asia/Kolkata".
    pub fn parse(name: &str) -> Option<Zone> {
        domain::parse_time_zone(name).map(|tz| Zone { tz })
    }

    /// Its IANA name.
    pub fn name(&self) -> String {
        self.tz.name().to_owned()
    }

    /// The first moment of `day` (days since 1970-01-01) in the zone;
    /// before or after every moment for a day past the calendar's range.
    fn start_of(&self, day: i64) -> Micros {
        domain::day_start(day, self.tz).unwrap_or(if day < 0 { Micros::MIN } else { Micros::MAX })
    }

    /// The moments of days `[start, end)` in the zone.
    fn span(&self, (start, end): (i64, i64)) -> Span {
        Span { start: self.start_of(start), end: self.start_of(end) }
    }

    /// The day (days since 1970-01-01) the moment `at` falls on in the zone.
    fn day(&self, at: Micros) -> i64 {
        domain::business_day(at, self.tz)
    }
}

/// A request's period, checked: days `[start, end)` in `zone`.
#[derive(Debug, Clone)]
struct Period {
    days: (i64, i64),
    zone: Zone,
}

impl Period {
    /// Its moments.
    fn span(&self) -> Span {
        self.zone.span(self.days)
    }

    /// The moment a cohort's "as of" day ends (`None`: no such day).
    fn until(&self, as_of: Option<i64>) -> Option<Micros> {
        as_of.map(|d| self.zone.start_of(d.saturating_add(1)))
    }
}

/// A funnel request, checked.
#[derive(Debug)]
struct FunnelQuery {
    period: Period,
    view: pb::View,
    basis: store::Basis,
    split: Option<Dimension>,
}

impl FunnelQuery {
    fn parse(req: &pb::GetFunnelRequest, api: &Api) -> ApiResult<FunnelQuery> {
        let mut v = Violations::new();
        let period = req.period_fields().parse(&mut v, api);
        let as_of = day(&mut v, ("as_of_date", &req.as_of_date), false);
        let view = match pb::View::try_from(req.view) {
            Ok(pb::View::Unspecified | pb::View::Flow) => Some(pb::View::Flow),
            Ok(pb::View::Cohort) => Some(pb::View::Cohort),
            Err(_) => {
                v.add("view", "must be VIEW_FLOW (the default) or VIEW_COHORT");
                None
            }
        };
        if view == Some(pb::View::Flow) && !req.as_of_date.is_empty() {
            v.add("as_of_date", "applies to VIEW_COHORT only (the flow view counts the period's events)");
        }
        let split = split_by(&mut v, req.split_by);
        v.build(|| {
            let view = view?;
            let period = period?;
            let basis = match view {
                pb::View::Cohort => store::Basis::Cohort { until: period.until(as_of) },
                _ => store::Basis::Flow,
            };
            Some(FunnelQuery { period, view, basis, split: split? })
        })
    }
}

/// A request's `split_by`: `Some(None)` when unset (no split), `None` when
/// it is not a dimension (a violation is added).
fn split_by(v: &mut Violations, wire: i32) -> Option<Option<Dimension>> {
    let split = match pb::Dimension::try_from(wire) {
        Ok(pb::Dimension::Unspecified) => Some(None),
        Ok(d) => lookup(&DIMENSIONS, d).map(Some),
        Err(_) => None,
    };
    if split.is_none() {
        v.add("split_by", format!("{} (or unset: no split)", one_of(&DIMENSIONS, pb::Dimension::as_str_name)));
    }
    split
}

/// A request's period: `[start_date, end_date)`, or the period of `unit`
/// around `start_date`, in `time_zone`.
struct PeriodFields<'a> {
    start_date: &'a str,
    end_date: &'a str,
    unit: i32,
    fiscal_year_start_month: i32,
    time_zone: &'a str,
}

/// A request that names its period by `start_date`, `end_date`,
/// `period_unit`, `fiscal_year_start_month` and `time_zone`.
trait PeriodRequest {
    fn period_fields(&self) -> PeriodFields<'_>;
}

macro_rules! period_requests {
    ($($request:ty),* $(,)?) => {$(
        impl PeriodRequest for $request {
            fn period_fields(&self) -> PeriodFields<'_> {
                PeriodFields {
                    start_date: &self.start_date,
                    end_date: &self.end_date,
                    unit: self.period_unit,
                    fiscal_year_start_month: self.fiscal_year_start_month,
                    time_zone: &self.time_zone,
                }
            }
        }
    )*};
}

period_requests!(
    pb::GetFunnelRequest,
    pb::PlanFromRevenueRequest,
    pb::GetBottleneckRequest,
    pb::SetTargetsRequest,
    pb::GetAttainmentRequest,
    pb::GetRetentionRequest,
    pb::GetRecyclingRequest,
    pb::GetVelocityRequest,
    pb::GetAttributeCalibrationRequest,
);

/// A target set's period is its days, whatever the zone they are read in.
impl PeriodRequest for pb::ListTargetsRequest {
    fn period_fields(&self) -> PeriodFields<'_> {
        PeriodFields {
            start_date: &self.start_date,
            end_date: &self.end_date,
            unit: self.period_unit,
            fiscal_year_start_month: self.fiscal_year_start_month,
            time_zone: "",
        }
    }
}

/// The units a period can be named by, as the contract names them.
const PERIOD_UNITS: [(pb::PeriodUnit, period::Unit); 5] = [
    (pb::PeriodUnit::Day, period::Unit::Day),
    (pb::PeriodUnit::Week, period::Unit::Week),
    (pb::PeriodUnit::Month, period::Unit::Month),
    (pb::PeriodUnit::Quarter, period::Unit::Quarter),
    (pb::PeriodUnit::Year, period::Unit::Year),
];

impl PeriodFields<'_> {
    /// The period, its time zone the request's or else `api`'s.
    fn parse(&self, v: &mut Violations, api: &Api) -> Option<Period> {
        let zone = api.zone(v, self.time_zone);
        let days = self.days(v, api.fiscal_year_start_month);
        Some(Period { days: days?, zone: zone? })
    }

    /// The period's days; `default_fiscal` is the deployment's fiscal-year
    /// start month.
    fn days(&self, v: &mut Violations, default_fiscal: u32) -> Option<(i64, i64)> {
        let fiscal = match self.fiscal_year_start_month {
            0 => Some(default_fiscal),
            m @ 1..=12 => Some(m as u32),
            _ => {
                v.add("fiscal_year_start_month", format!("must be 1-12 (0: the deployment's, {default_fiscal})"));
                None
            }
        };
        let unit = match pb::PeriodUnit::try_from(self.unit) {
            Ok(pb::PeriodUnit::Unspecified) => None,
            Ok(u) => lookup(&PERIOD_UNITS, u),
            Err(_) => {
                let units = one_of(&PERIOD_UNITS, pb::PeriodUnit::as_str_name);
                v.add("period_unit", format!("{units} (or unset: [start_date, end_date))"));
                return None;
            }
        };
        let Some(unit) = unit else {
            return period(v, ("start_date", self.start_date), ("end_date", self.end_date));
        };
        if !self.end_date.is_empty() {
            v.add("end_date", "must be empty when period_unit is set (the period ends with its unit)");
        }
        let on = day(v, ("start_date", self.start_date), true)?;
        let bounds = period::around(on, unit, fiscal?);
        if bounds.is_none() {
            v.add("start_date", "is outside the calendar's range");
        }
        bounds
    }
}

/// A required period `[start, end)` of business days.
fn period(v: &mut Violations, start: (&str, &str), end: (&str, &str)) -> Option<(i64, i64)> {
    let s = day(v, start, true);
    let e = day(v, end, true);
    let (s, e) = (s?, e?);
    if e <= s {
        v.add(end.0, format!("must be after {} (the period is [{}, {}))", start.0, start.0, end.0));
        return None;
    }
    Some((s, e))
}

/// A window given by two optional dates, both or neither; neither is the
/// [`DEFAULT_WINDOW_DAYS`] days before `period`. In `period`'s time zone.
fn window(v: &mut Violations, start: (&str, &str), end: (&str, &str), period: Option<&Period>) -> Option<Period> {
    let zone = period.map(|p| p.zone.clone());
    if start.1.is_empty() && end.1.is_empty() {
        let (s, _) = period?.days;
        return Some(Period { days: (s - DEFAULT_WINDOW_DAYS, s), zone: zone? });
    }
    if start.1.is_empty() || end.1.is_empty() {
        let missing = if start.1.is_empty() { start.0 } else { end.0 };
        v.add(
            missing,
            format!(
                "give both {} and {}, or neither (the {DEFAULT_WINDOW_DAYS} days before start_date)",
                start.0, end.0
            ),
        );
        return None;
    }
    let days = self::period(v, start, end);
    Some(Period { days: days?, zone: zone? })
}

/// Days in a window when none is given.
const DEFAULT_WINDOW_DAYS: i64 = 90;

/// A `YYYY-MM-DD` field: business days since 1970-01-01.
fn day(v: &mut Violations, (field, value): (&str, &str), required: bool) -> Option<i64> {
    if value.is_empty() {
        if required {
            v.add(field, "is required (YYYY-MM-DD)");
        }
        return None;
    }
    let d = domain::parse_day(value);
    if d.is_none() {
        v.add(field, "must be a date YYYY-MM-DD");
    }
    d
}

fn days(p: &Period) -> i64 {
    p.days.1 - p.days.0
}

/// The version a page of versions (newest first) starts below, from the
/// previous page's token.
fn before_version(page_token: &str) -> ApiResult<Option<i64>> {
    match paging::decode(page_token, 1)? {
        Some(k) => Ok(Some(paging::int(&k[0])?)),
        None => Ok(None),
    }
}

/// A page of versions read with one row more than `limit`: the page, and
/// the token of the next one (empty when there is none).
fn version_page<T>(mut rows: Vec<T>, limit: i64, version: impl Fn(&T) -> i64) -> (Vec<T>, String) {
    if rows.len() as i64 <= limit {
        return (rows, String::new());
    }
    rows.truncate(limit as usize);
    let token = rows.last().map(|r| paging::encode(&[&version(r).to_string()])).unwrap_or_default();
    (rows, token)
}

/// The dimensions a funnel can be split by, as the contract names them.
const DIMENSIONS: [(pb::Dimension, Dimension); 11] = [
    (pb::Dimension::Source, Dimension::Source),
    (pb::Dimension::Campaign, Dimension::Campaign),
    (pb::Dimension::Channel, Dimension::Channel),
    (pb::Dimension::Industry, Dimension::Industry),
    (pb::Dimension::CompanySizeBand, Dimension::CompanySizeBand),
    (pb::Dimension::JobTitleClass, Dimension::JobTitleClass),
    (pb::Dimension::DefinitionVersion, Dimension::DefinitionVersion),
    (pb::Dimension::InsideSalesRep, Dimension::InsideSalesRep),
    (pb::Dimension::InsideSalesTeam, Dimension::InsideSalesTeam),
    (pb::Dimension::AccountExecutive, Dimension::AccountExecutive),
    (pb::Dimension::CustomerSuccessManager, Dimension::CustomerSuccessManager),
];

/// Revenue per currency as the contract gives it.
fn revenue_to_proto(by_currency: &BTreeMap<String, domain::Revenue>) -> Vec<pb::Revenue> {
    by_currency
        .iter()
        .map(|(currency, r)| {
            let money = |nanos: i128| Some(domain::money(currency, nanos));
            pb::Revenue {
                currency_code: currency.clone(),
                won: money(r.won),
                new_business: money(r.new_business),
                expansion: money(r.expansion),
                churned: money(r.churned),
            }
        })
        .collect()
}

/// The stages targets are set on, as the contract names them.
const TARGET_STAGES: [(pb::Stage, targets::Stage); 6] = [
    (pb::Stage::Visitors, targets::Stage::Visitors),
    (pb::Stage::Leads, targets::Stage::Leads),
    (pb::Stage::PromisingLeads, targets::Stage::Promising),
    (pb::Stage::Opportunities, targets::Stage::Opportunities),
    (pb::Stage::Wins, targets::Stage::Wins),
    (pb::Stage::Retained, targets::Stage::Retained),
];

/// The departments a capacity is set for, and the stage each receives from
/// the one above (docs/domain.md, "Starvation").
const CAPACITY_DEPARTMENTS: [(common::Department, targets::Stage); 3] = [
    (common::Department::InsideSales, targets::Stage::Promising),
    (common::Department::FieldSales, targets::Stage::Opportunities),
    (common::Department::CustomerSuccess, targets::Stage::Wins),
];

fn pb_department(wire: i32) -> Option<common::Department> {
    common::Department::try_from(wire).ok()
}

/// Checks a target set's capacities: a receiving department at most once,
/// owners 1-100,000, items per owner 1-10^9.
fn capacities(v: &mut Violations, list: &[pb::Capacity]) {
    let mut seen = Vec::new();
    if list.len() > CAPACITY_DEPARTMENTS.len() {
        v.add("capacities", format!("at most {} (one per department)", CAPACITY_DEPARTMENTS.len()));
        return;
    }
    for (i, c) in list.iter().enumerate() {
        let field = |f: &str| format!("capacities[{i}].{f}");
        match pb_department(c.department).filter(|d| lookup(&CAPACITY_DEPARTMENTS, *d).is_some()) {
            Some(d) if seen.contains(&d) => v.add(&field("department"), "is given twice (one capacity each)"),
            Some(d) => seen.push(d),
            None => v.add(&field("department"), one_of(&CAPACITY_DEPARTMENTS, common::Department::as_str_name)),
        }
        v.check((1..=100_000).contains(&c.owners), &field("owners"), "must be 1-100000");
        v.check((1..=1_000_000_000).contains(&c.items_per_owner), &field("items_per_owner"), "must be 1-1000000000");
    }
}

fn target_stage(wire: i32) -> Option<targets::Stage> {
    lookup(&TARGET_STAGES, pb::Stage::try_from(wire).ok()?)
}

fn stage_to_proto(stage: targets::Stage) -> pb::Stage {
    wire_of(&TARGET_STAGES, stage).unwrap_or(pb::Stage::Unspecified)
}

fn step_kind(kind: StepKind) -> pb::JourneyStepKind {
    match kind {
        StepKind::Captured => pb::JourneyStepKind::Captured,
        StepKind::Promoted => pb::JourneyStepKind::Promoted,
        StepKind::Recycled => pb::JourneyStepKind::Recycled,
        StepKind::Excluded => pb::JourneyStepKind::Excluded,
        StepKind::Converted => pb::JourneyStepKind::Converted,
        StepKind::Won => pb::JourneyStepKind::Won,
        StepKind::Lost => pb::JourneyStepKind::Lost,
        StepKind::AccountOpened => pb::JourneyStepKind::AccountOpened,
        StepKind::AccountExpanded => pb::JourneyStepKind::AccountExpanded,
        StepKind::Renewed => pb::JourneyStepKind::Renewed,
        StepKind::Churned => pb::JourneyStepKind::Churned,
    }
}

/// Leads a value needs before calibration proposes new points for it.
const DEFAULT_MIN_SAMPLE: i64 = 30;

fn attribute_rates(c: &domain::Counts) -> pb::AttributeRates {
    let r = c.rates();
    pb::AttributeRates {
        leads: c.leads,
        opportunities: c.opportunities,
        opportunity_rate: r.opportunity,
        wins: c.wins,
        losses: c.losses,
        win_rate: r.win,
        retained: c.retained,
        churned: c.churned,
        renewal_rate: r.renewal,
    }
}

/// The stages as the contract names them.
const VELOCITY_STAGES: [(pb::VelocityStage, Stage); 8] = [
    (pb::VelocityStage::Nurture, Stage::Nurture),
    (pb::VelocityStage::InsideSales, Stage::InsideSales),
    (pb::VelocityStage::FieldSales, Stage::FieldSales),
    (pb::VelocityStage::PreOpportunity, Stage::Phase(Phase::PreOpportunity)),
    (pb::VelocityStage::IssueRecognition, Stage::Phase(Phase::IssueRecognition)),
    (pb::VelocityStage::Evaluation, Stage::Phase(Phase::Evaluation)),
    (pb::VelocityStage::Negotiation, Stage::Phase(Phase::Negotiation)),
    (pb::VelocityStage::Approval, Stage::Phase(Phase::Approval)),
];

fn velocity_to_proto(mut v: velocity::Velocity) -> pb::Velocity {
    let duration = |d: Option<Duration>| d.and_then(|d| prost_types::Duration::try_from(d).ok());
    let stages = VELOCITY_STAGES
        .iter()
        .map(|(wire, stage)| {
            let mut figures = v.stages.remove(stage).unwrap_or_default();
            let (median_time, p90_time, _) = figures.exits.summary();
            let (median_age, p90_age, oldest_age) = figures.open.summary();
            pb::StageVelocity {
                stage: *wire as i32,
                exits: figures.exits.count(),
                median_time: duration(median_time),
                p90_time: duration(p90_time),
                open: figures.open.count(),
                median_age: duration(median_age),
                p90_age: duration(p90_age),
                oldest_age: duration(oldest_age),
            }
        })
        .collect();
    let f = &mut v.follow_up;
    let (median, p90, _) = f.first_contacts.summary();
    let contacts = f.first_contacts.count();
    pb::Velocity {
        stages,
        follow_up: Some(pb::FollowUp {
            first_contacts: contacts,
            within_sla: f.within_sla,
            sla_attainment: domain::ratio(f.within_sla, contacts),
            median_time_to_first_contact: duration(median),
            p90_time_to_first_contact: duration(p90),
            awaiting_first_contact: f.awaiting,
            overdue: f.overdue,
        }),
    }
}

/// The wins a revenue target needs at an average deal size, ⌈revenue /
/// deal⌉ ([`planning::wins_for`]). The deal must be above 0 and, when the
/// revenue (`revenue.0` its field) is given, in its currency; a number of
/// wins past i64 is refused on the revenue's field.
fn wins_for_revenue(v: &mut Violations, (field, revenue): (&str, Option<&Money>), deal: &Money) -> Option<i64> {
    let positive = deal.total_nanos() > 0;
    v.check(positive, "average_deal_size", "must be above 0");
    let revenue = revenue?;
    if deal.currency() != revenue.currency() {
        v.add("average_deal_size.currency_code", format!("must be {field}'s currency, {}", revenue.currency()));
        return None;
    }
    if !positive || revenue.total_nanos() <= 0 {
        return None;
    }
    let wins = planning::wins_for(revenue.total_nanos(), deal.total_nanos());
    if wins.is_none() {
        v.add(field, "needs more wins than can be counted (over 2^63) at this deal size");
    }
    wins
}

/// The domain value a contract value maps to in `table`.
fn lookup<W: PartialEq + Copy, D: Copy>(table: &[(W, D)], wire: W) -> Option<D> {
    table.iter().find(|(w, _)| *w == wire).map(|(_, d)| *d)
}

/// The contract value domain value `d` maps to in `table`.
fn wire_of<W: Copy, D: PartialEq>(table: &[(W, D)], d: D) -> Option<W> {
    table.iter().find(|(_, x)| *x == d).map(|(w, _)| *w)
}

/// "must be one of A, B, C": the contract names of `table`'s values.
fn one_of<W, D>(table: &[(W, D)], name: fn(&W) -> &'static str) -> String {
    let names: Vec<&str> = table.iter().map(|(w, _)| name(w)).collect();
    format!("must be one of {}", names.join(", "))
}

/// The longest a read waits for the events its consistency tokens name,
/// when the caller set no deadline.
const TOKEN_WAIT: Duration = Duration::from_secs(10);

/// The longest a read without tokens waits for pages kpi already holds.
const SETTLE_WAIT: Duration = Duration::from_secs(1);

impl Api {
    /// What a read waits for before it counts; it never calls a service.
    ///
    /// With consistency tokens (`themodel-consistency-token: marketing:42`,
    /// the header every service answers with): until kpi has counted each
    /// named stream that far, bounded by the caller's deadline (10 s without
    /// one), else UNAVAILABLE saying how far it is. Without tokens: until the pages kpi has
    /// already received are counted (at most a second).
    async fn fresh(&self, metadata: &MetadataMap) -> ApiResult<()> {
        let tokens = Token::all_in(metadata).map_err(|e| ApiError::field(consistency::HEADER, e))?;
        let answer_by = call::answer_by(metadata).map(tokio::time::Instant::from_std);
        let now = tokio::time::Instant::now();
        if tokens.is_empty() {
            let until = answer_by.map_or(now + SETTLE_WAIT, |d| d.min(now + SETTLE_WAIT));
            for c in self.consumers.iter() {
                c.wait_for(until, consumer::Progress::settled).await;
            }
            return Ok(());
        }
        let mut v = Violations::new();
        let mut wanted = Vec::new();
        for token in tokens.iter().filter(|t| t.stream != "kpi") {
            match self.consumers.iter().find(|c| c.source.name() == token.stream) {
                Some(c) => wanted.push((c, token.seq)),
                None => {
                    let known: Vec<&str> = self.consumers.iter().map(|c| c.source.name()).chain(["kpi"]).collect();
                    v.add(
                        consistency::HEADER,
                        format!("unknown stream {:?} in {token}: one of {}", token.stream, known.join(", ")),
                    );
                }
            }
        }
        v.finish()?;
        let until = answer_by.unwrap_or(now + TOKEN_WAIT);
        for (c, seq) in wanted {
            if !c.wait_for(until, |p| p.applied_seq >= seq).await {
                let p = c.progress();
                let why = p.error.map(|e| format!(" (it cannot read the stream: {e})")).unwrap_or_default();
                return Err(ApiError::Unavailable(format!(
                    "kpi has counted {} up to seq {}{why}, and the consistency token asks for {seq}; retry",
                    c.source.name(),
                    p.applied_seq
                )));
            }
        }
        Ok(())
    }

    /// A request's `time_zone`: empty is the deployment's.
    fn zone(&self, v: &mut Violations, name: &str) -> Option<Zone> {
        if name.is_empty() {
            return Some(self.time_zone.clone());
        }
        let zone = Zone::parse(name);
        if zone.is_none() {
            let why = "is not a time zone: give an IANA name such as UTC, America/New_York or Asia/Kolkata \
                       (empty: the deployment's)";
            v.add("time_zone", why);
        }
        zone
    }

    /// The flow totals of a period.
    async fn flow_totals(&self, period: &Period) -> ApiResult<domain::Counts> {
        let mut all = store::counts(self.writer.db(), store::Basis::Flow, None, period.span()).await?;
        Ok(all.remove("").unwrap_or_default())
    }

    /// A request's period and `split_by`, checked together.
    fn period_and_split(&self, req: &impl PeriodRequest, split: i32) -> ApiResult<(Period, Option<Dimension>)> {
        let mut v = Violations::new();
        let period = req.period_fields().parse(&mut v, self);
        let split = split_by(&mut v, split);
        v.build(|| Some((period?, split?)))
    }

    /// The revenue per currency of a period, in the view `basis` names.
    async fn total_revenue(
        &self,
        basis: store::Basis,
        period: &Period,
    ) -> ApiResult<BTreeMap<String, domain::Revenue>> {
        let mut all = store::revenue(self.writer.db(), basis, None, period.span()).await?;
        Ok(all.remove("").unwrap_or_default())
    }

    #[tracing::instrument(skip_all, fields(start = %req.start_date, end = %req.end_date))]
    async fn plan_from_revenue(&self, req: pb::PlanFromRevenueRequest) -> ApiResult<pb::PlanFromRevenueResponse> {
        let mut v = Violations::new();
        let target = required_money(&mut v, "revenue_target", req.revenue_target.as_ref());
        let deal = required_money(&mut v, "average_deal_size", req.average_deal_size.as_ref());
        if let Some(t) = &target {
            v.check(t.total_nanos() > 0, "revenue_target", "must be above 0");
        }
        let wins = deal.as_ref().and_then(|d| wins_for_revenue(&mut v, ("revenue_target", target.as_ref()), d));
        let period = req.period_fields().parse(&mut v, self);
        let window = window(
            &mut v,
            ("trailing_start_date", &req.trailing_start_date),
            ("trailing_end_date", &req.trailing_end_date),
            period.as_ref(),
        );
        let mut given = |field: &str, rate: Option<f64>, at_most_one: bool| {
            let r = rate?;
            let ok = r.is_finite() && r > 0.0 && (!at_most_one || r <= 1.0);
            v.check(ok, field, if at_most_one { "must be above 0 and at most 1" } else { "must be above 0" });
            ok.then(|| (Rate::given(r), RateSource::Given))
        };
        let given_win = given("win_rate", req.win_rate, true);
        let given_opportunity = given("opportunity_rate", req.opportunity_rate, false);
        let given_acquisition = given("acquisition_rate", req.acquisition_rate, false);
        let (period, window, wins) = v.build(|| Some((period?, window?, wins?)))?;
        let t = self.flow_totals(&window).await?;
        let counted = t.exact_rates();
        let trailing = |r: Option<Rate>| r.map(|r| (r, RateSource::Trailing));
        let rates = PlanRates {
            win: given_win.or(trailing(counted.win)),
            opportunity: given_opportunity.or(trailing(counted.opportunity)),
            acquisition: given_acquisition.or(trailing(counted.acquisition)),
        };
        let scale = days(&period) as f64 / days(&window) as f64;
        let stages = planning::plan(wins, rates);
        let paces = [
            (pb::Stage::Wins, t.wins),
            (pb::Stage::Opportunities, t.opportunities),
            (pb::Stage::Leads, t.leads),
            (pb::Stage::Visitors, t.visitors),
        ];
        Ok(pb::PlanFromRevenueResponse {
            stages: stages
                .into_iter()
                .zip(paces)
                .map(|(s, (stage, count))| {
                    let run_rate = count as f64 * scale;
                    pb::PlanStage {
                        stage: stage as i32,
                        needed: s.needed,
                        rate: s.rate.map(|(r, _)| r.value()),
                        rate_source: match s.rate {
                            Some((_, RateSource::Given)) => pb::RateSource::Given,
                            Some((_, RateSource::Trailing)) => pb::RateSource::Trailing,
                            None => pb::RateSource::Unspecified,
                        } as i32,
                        run_rate,
                        gap: s.needed.map(|n| n as f64 - run_rate),
                        unknown_reason: s.unknown.unwrap_or_default(),
                    }
                })
                .collect(),
            trailing_start_date: domain::format_day(window.days.0),
            trailing_end_date: domain::format_day(window.days.1),
            time_zone: period.zone.name(),
            start_date: domain::format_day(period.days.0),
            end_date: domain::format_day(period.days.1),
        })
    }

    #[tracing::instrument(skip_all, fields(start = %req.start_date, end = %req.end_date))]
    async fn get_bottleneck(&self, req: pb::GetBottleneckRequest) -> ApiResult<pb::GetBottleneckResponse> {
        let mut v = Violations::new();
        let period = req.period_fields().parse(&mut v, self);
        let baseline = window(
            &mut v,
            ("baseline_start_date", &req.baseline_start_date),
            ("baseline_end_date", &req.baseline_end_date),
            period.as_ref(),
        );
        let (period, baseline) = v.build(|| Some((period?, baseline?)))?;

        // Against the period's targets when no baseline is asked for and
        // the targets hold the chain (leads, opportunities, wins).
        let explicit = !req.baseline_start_date.is_empty() || !req.baseline_end_date.is_empty();
        let current =
            if explicit { None } else { store::target_sets(self.writer.db(), period.days, None, 1).await?.pop() };
        let target_plan = current.as_ref().and_then(|set| {
            let count = |stage| set.targets.iter().find(|t| target_stage(t.stage) == Some(stage)).map(|t| t.count);
            let plan = Plan::targets(
                count(targets::Stage::Visitors),
                count(targets::Stage::Leads)?,
                count(targets::Stage::Opportunities)?,
                count(targets::Stage::Wins)?,
            );
            Some((set.version, plan))
        });
        let actual = self.flow_totals(&period).await?;
        let (plan, basis, targets_version, baseline) = match target_plan {
            Some((version, plan)) => (plan, pb::PlanBasis::Targets, version, None),
            None => {
                let base = self.flow_totals(&baseline).await?;
                let plan = Plan::baseline(&base, days(&period) as f64 / days(&baseline) as f64);
                (plan, pb::PlanBasis::Baseline, 0, Some(baseline.days))
            }
        };
        let b = planning::bottleneck(&actual, &plan);
        let factor = |f: Factor| match f {
            Factor::Visitors => pb::Factor::Visitors,
            Factor::Leads => pb::Factor::Leads,
            Factor::AcquisitionRate => pb::Factor::AcquisitionRate,
            Factor::OpportunityRate => pb::Factor::OpportunityRate,
            Factor::WinRate => pb::Factor::WinRate,
        };
        Ok(pb::GetBottleneckResponse {
            factors: b
                .factors
                .iter()
                .map(|f| pb::FactorCheck {
                    factor: factor(f.factor) as i32,
                    actual: f.actual,
                    plan: f.plan,
                    ratio: f.ratio,
                })
                .collect(),
            bottleneck: b.bottleneck.map_or(pb::Factor::Unspecified, factor) as i32,
            problem: match b.bottleneck {
                None => pb::Problem::Unspecified,
                Some(f) if f.is_volume() => pb::Problem::Volume,
                Some(_) => pb::Problem::Rate,
            } as i32,
            actual_wins: b.actual_wins,
            planned_wins: b.planned_wins,
            baseline_start_date: baseline.map(|b| domain::format_day(b.0)).unwrap_or_default(),
            baseline_end_date: baseline.map(|b| domain::format_day(b.1)).unwrap_or_default(),
            time_zone: period.zone.name(),
            start_date: domain::format_day(period.days.0),
            end_date: domain::format_day(period.days.1),
            basis: basis as i32,
            targets_version,
        })
    }

    #[tracing::instrument(skip_all, fields(start = %req.start_date, end = %req.end_date, view = req.view))]
    async fn get_funnel(&self, req: pb::GetFunnelRequest) -> ApiResult<pb::GetFunnelResponse> {
        let q = FunnelQuery::parse(&req, self)?;
        let span = q.period.span();
        let db = self.writer.db();
        // The cursors before the counts: a page applied between the two
        // reads then shows in the counts but not yet in `applied_seq`, so
        // what a response says it applied, its counts always include. Read
        // the other way round, a caller waiting for its events could be
        // told they were applied and get counts from before them.
        let cursors = store::cursors(db).await?;
        let totals = store::counts(db, q.basis, None, span).await?.remove("").unwrap_or_default();
        let splits = match q.split {
            None => Default::default(),
            Some(dim) => store::counts(db, q.basis, Some(dim), span).await?,
        };
        let revenue = self.total_revenue(q.basis, &q.period).await?;
        let split_revenue = match q.split {
            None => Default::default(),
            Some(dim) => store::revenue(db, q.basis, Some(dim), span).await?,
        };
        let time_zone = q.period.zone.name();
        let funnel = |c: &domain::Counts, revenue: Option<&BTreeMap<String, domain::Revenue>>| {
            let r = c.rates();
            pb::Funnel {
                view: q.view as i32,
                start_date: domain::format_day(q.period.days.0),
                end_date: domain::format_day(q.period.days.1),
                time_zone: time_zone.clone(),
                visitors: c.visitors,
                leads: c.leads,
                excluded_leads: c.excluded_leads,
                valid_leads: c.valid_leads(),
                promising_leads: c.promising_leads,
                opportunities: c.opportunities,
                quality_opportunities: c.quality_opportunities,
                wins: c.wins,
                losses: c.losses,
                retained: c.retained,
                churned: c.churned,
                acquisition_rate: r.acquisition,
                promising_rate: r.promising,
                opportunity_rate: r.opportunity,
                quality_rate: r.quality,
                recycled: c.recycled,
                re_entries: c.re_entries,
                recycled_opportunities: c.recycled_opportunities,
                recycled_wins: c.recycled_wins,
                win_rate: r.win,
                renewal_rate: r.renewal,
                churn_rate: r.churn,
                as_of_date: req.as_of_date.clone(),
                sources: Vec::new(),
                revenue: revenue.map(revenue_to_proto).unwrap_or_default(),
            }
        };
        let mut total = funnel(&totals, Some(&revenue));
        total.sources = self
            .consumers
            .iter()
            .map(|consumer| {
                let name = consumer.source.name();
                let c = cursors.get(name).cloned().unwrap_or_default();
                let progress = consumer.progress();
                let head_seq = progress.head_seq.max(c.applied_seq);
                pb::SourcePosition {
                    service: name.to_owned(),
                    applied_seq: c.applied_seq,
                    stream_id: c.stream_id,
                    head_seq,
                    lag_events: head_seq - c.applied_seq,
                    lag: Some(prost_types::Duration::try_from(progress.lag()).unwrap_or_default()),
                    error: progress.error.unwrap_or_default(),
                }
            })
            .collect();
        Ok(pb::GetFunnelResponse {
            funnel: Some(total),
            split_by: req.split_by,
            splits: splits
                .iter()
                .map(|(value, c)| pb::FunnelSplit {
                    value: value.clone(),
                    funnel: Some(funnel(c, split_revenue.get(value))),
                })
                .collect(),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn set_targets(&self, request: Request<pb::SetTargetsRequest>) -> ApiResult<pb::SetTargetsResponse> {
        let call = Call::new(&request, "/themodel.kpi.v1.KpiService/SetTargets", &request.get_ref().request_id)?;
        let req = request.get_ref();
        let mut v = Violations::new();
        let period = req.period_fields().parse(&mut v, self);
        let mut given = BTreeMap::new();
        if req.targets.len() > TARGET_STAGES.len() {
            v.add("targets", format!("at most {} (one per stage)", TARGET_STAGES.len()));
        }
        for (i, t) in req.targets.iter().enumerate().take(TARGET_STAGES.len()) {
            let Some(stage) = target_stage(t.stage) else {
                v.add(&format!("targets[{i}].stage"), one_of(&TARGET_STAGES, pb::Stage::as_str_name));
                continue;
            };
            v.check(t.count > 0, &format!("targets[{i}].count"), "must be above 0");
            if given.insert(stage, t.count).is_some() {
                v.add(&format!("targets[{i}].stage"), "is given twice (one target per stage)");
            }
        }
        let revenue = money(&mut v, "revenue", req.revenue.as_ref());
        if let Some(r) = &revenue {
            v.check(r.total_nanos() > 0, "revenue", "must be above 0");
        }
        if req.targets.is_empty() && req.revenue.is_none() {
            v.add("targets", "give at least one target, or a revenue target");
        }
        let deal = money(&mut v, "average_deal_size", req.average_deal_size.as_ref());
        let wins_from_revenue = req.derive_upstream && revenue.is_some() && !given.contains_key(&targets::Stage::Wins);
        let wins = match &deal {
            Some(_) if !wins_from_revenue => {
                let why = "is used only to derive the wins target from revenue (derive_upstream, no wins target given)";
                v.add("average_deal_size", why);
                None
            }
            Some(d) => wins_for_revenue(&mut v, ("revenue", revenue.as_ref()), d),
            None => {
                if wins_from_revenue {
                    v.add("average_deal_size", "is required to derive the wins target from revenue");
                }
                None
            }
        };
        let window = if req.derive_upstream {
            window(
                &mut v,
                ("trailing_start_date", &req.trailing_start_date),
                ("trailing_end_date", &req.trailing_end_date),
                period.as_ref(),
            )
        } else {
            for (field, value) in
                [("trailing_start_date", &req.trailing_start_date), ("trailing_end_date", &req.trailing_end_date)]
            {
                v.check(value.is_empty(), field, "applies only with derive_upstream");
            }
            None
        };
        let set_by = v.text("set_by", &req.set_by, 200);
        let note = v.text("note", &req.note, 2000);
        capacities(&mut v, &req.capacities);
        let period = v.build(|| period)?.days;

        let mut set = pb::TargetSet {
            start_date: domain::format_day(period.0),
            end_date: domain::format_day(period.1),
            set_by,
            note,
            revenue: req.revenue.clone(),
            average_deal_size: req.average_deal_size.clone(),
            capacities: req.capacities.clone(),
            ..Default::default()
        };
        let derived = match window {
            Some(window) => {
                self.fresh(request.metadata()).await?;
                let rates = self.flow_totals(&window).await?.exact_rates();
                let derived = targets::derive(&given, wins, &rates)
                    .map_err(|e| ApiError::precondition("RATE_UNKNOWN", "targets", e))?;
                if derived.values().any(|t| t.derived.is_some()) {
                    set.trailing_start_date = domain::format_day(window.days.0);
                    set.trailing_end_date = domain::format_day(window.days.1);
                    set.trailing_time_zone = window.zone.name();
                }
                derived
            }
            None => given.into_iter().map(|(stage, count)| (stage, Target { count, derived: None })).collect(),
        };
        set.targets = derived
            .into_iter()
            .map(|(stage, t)| pb::Target {
                stage: stage_to_proto(stage) as i32,
                department: stage.department().to_owned(),
                count: t.count,
                derived: t.derived.is_some(),
                rate: t.derived.flatten().map(|r| r.value()),
            })
            .collect();
        let response: pb::SetTargetsResponse = self
            .writer
            .execute(call, vec![Need::Row(Key::LatestTargets(period.0, period.1))], move |cx| {
                let mut set = set.clone();
                set.version = cx.state.targets(period)? + 1;
                set.set_at = Some(to_timestamp(cx.now));
                let event = pb::KpiEvent {
                    occurred_at: Some(to_timestamp(cx.now)),
                    event: Some(pb::kpi_event::Event::TargetsSet(pb::TargetsSet {
                        start_date: set.start_date.clone(),
                        end_date: set.end_date.clone(),
                        version: set.version,
                    })),
                };
                let resp = pb::SetTargetsResponse { targets: Some(set.clone()) };
                Ok(Done::new(&resp)
                    .change(store::Change::Targets(period, set))
                    .effects(Effects::default().event(event)))
            })
            .await?;
        let set = response.targets.as_ref();
        tracing::info!(start = set.map(|s| s.start_date.as_str()), version = set.map(|s| s.version), "targets set");
        Ok(response)
    }

    #[tracing::instrument(skip_all, fields(start = %req.start_date, end = %req.end_date))]
    async fn list_targets(&self, req: pb::ListTargetsRequest) -> ApiResult<pb::ListTargetsResponse> {
        let mut v = Violations::new();
        let period = req.period_fields().days(&mut v, self.fiscal_year_start_month);
        let limit = page_size(&mut v, req.page_size, 20, 100);
        let period = v.build(|| period)?;
        let before = before_version(&req.page_token)?;
        let page = store::target_sets(self.writer.db(), period, before, limit + 1).await?;
        let (targets, next_page_token) = version_page(page, limit, |s| s.version);
        Ok(pb::ListTargetsResponse { targets, next_page_token })
    }

    #[tracing::instrument(skip_all, fields(start = %req.start_date, end = %req.end_date))]
    async fn get_attainment(&self, req: pb::GetAttainmentRequest) -> ApiResult<pb::GetAttainmentResponse> {
        let mut v = Violations::new();
        let period = req.period_fields().parse(&mut v, self);
        let baseline = window(
            &mut v,
            ("baseline_start_date", &req.baseline_start_date),
            ("baseline_end_date", &req.baseline_end_date),
            period.as_ref(),
        );
        let (period, baseline) = v.build(|| Some((period?, baseline?)))?;
        let db = self.writer.db();
        let set = store::target_sets(db, period.days, None, 1).await?.pop().ok_or_else(|| {
            let (s, e) = (domain::format_day(period.days.0), domain::format_day(period.days.1));
            ApiError::not_found("targets for the period", format!("[{s}, {e})"))
        })?;
        let counts = self.flow_totals(&period).await?;
        let progress = Progress::of(period.days, period.zone.day(self.clock.now()));
        let stages = set
            .targets
            .iter()
            .filter_map(|t| {
                let stage = target_stage(t.stage)?;
                let actual = stage.actual(&counts);
                let expected = progress.expected(t.count as f64);
                Some(pb::StageAttainment {
                    stage: t.stage,
                    department: t.department.clone(),
                    target: t.count,
                    actual,
                    attainment: actual as f64 / t.count as f64,
                    expected,
                    on_pace: actual as f64 >= expected,
                })
            })
            .collect();
        let revenue = match &set.revenue {
            None => None,
            Some(target) => {
                let actual = self
                    .total_revenue(store::Basis::Flow, &period)
                    .await?
                    .remove(&target.currency_code)
                    .map_or(0, |r| r.won);
                let target_nanos = domain::total_nanos(target.units, target.nanos.into());
                let expected = progress.expected_nanos(target_nanos);
                Some(pb::RevenueAttainment {
                    target: Some(target.clone()),
                    actual: Some(domain::money(&target.currency_code, actual)),
                    attainment: actual as f64 / target_nanos as f64,
                    expected: Some(domain::money(&target.currency_code, expected)),
                    on_pace: actual >= expected,
                })
            }
        };
        let starvation = set
            .capacities
            .iter()
            .filter_map(|c| {
                let department = pb_department(c.department)?;
                let stage = lookup(&CAPACITY_DEPARTMENTS, department)?;
                let capacity = c.owners.checked_mul(c.items_per_owner)?;
                let received = stage.actual(&counts);
                Some(pb::Starvation {
                    department: c.department,
                    received_stage: stage_to_proto(stage) as i32,
                    capacity,
                    received,
                    idle_capacity: targets::idle(capacity, received),
                    starved: (received as f64) < progress.expected(capacity as f64),
                })
            })
            .collect();
        let rates = counts.exact_rates();
        let baseline_rates = self.flow_totals(&baseline).await?.exact_rates();
        let local_optimisation = targets::WATCHED
            .into_iter()
            .filter_map(|stage| {
                let (rate_of, name) = stage.next_rate()?;
                let target = set.targets.iter().find(|t| target_stage(t.stage) == Some(stage))?.count;
                let actual = stage.actual(&counts);
                let (rate, base) = (rate_of(&rates), rate_of(&baseline_rates));
                Some(pb::LocalOptimisation {
                    stage: stage_to_proto(stage) as i32,
                    department: stage.department().to_owned(),
                    target,
                    actual,
                    target_met: actual >= target,
                    next_rate: name.to_owned(),
                    rate: rate.map(Rate::value),
                    baseline_rate: base.map(Rate::value),
                    locally_optimised: targets::locally_optimised(target, actual, rate, base),
                })
            })
            .collect();
        Ok(pb::GetAttainmentResponse {
            targets: Some(set),
            stages,
            revenue,
            elapsed_days: progress.elapsed,
            period_days: progress.days,
            time_zone: period.zone.name(),
            starvation,
            local_optimisation,
            baseline_start_date: domain::format_day(baseline.days.0),
            baseline_end_date: domain::format_day(baseline.days.1),
        })
    }

    #[tracing::instrument(skip_all, fields(start = %req.start_date, end = %req.end_date))]
    async fn get_retention(&self, req: pb::GetRetentionRequest) -> ApiResult<pb::GetRetentionResponse> {
        let (period, split) = self.period_and_split(&req, req.split_by)?;
        let span = period.span();
        let (start, end) = period.days;
        let db = self.writer.db();
        let histories = store::account_histories(db, span.end).await?;
        // Each account's split value: the lead's whose deal opened it.
        let values: HashMap<String, String> = match split {
            None => HashMap::new(),
            Some(dim) => {
                let accounts: Vec<&str> = histories.keys().map(String::as_str).collect();
                let opening = store::opening_leads(db, &accounts).await?;
                let leads: Vec<&str> = opening.values().map(String::as_str).collect();
                let mut conn = db.reader().acquire().await?;
                let journeys = store::journeys(&mut conn, db, &leads).await?;
                opening
                    .into_iter()
                    .map(|(account, lead)| (account, journeys.get(&lead).map(|j| j.value(dim)).unwrap_or_default()))
                    .collect()
            }
        };
        let mut total = retention::Retention::default();
        let mut splits: BTreeMap<&str, retention::Retention> = BTreeMap::new();
        for (account, changes) in &histories {
            total.add_account(changes, span.start);
            if split.is_some() {
                let value = values.get(account).map_or("", String::as_str);
                splits.entry(value).or_default().add_account(changes, span.start);
            }
        }
        splits.retain(|_, r| *r != retention::Retention::default());
        let to_proto = |r: &retention::Retention| pb::Retention {
            start_date: domain::format_day(start),
            end_date: domain::format_day(end),
            time_zone: period.zone.name(),
            accounts_at_start: r.accounts_at_start,
            churned_accounts: r.churned_accounts,
            logo_churn_rate: r.logo_churn_rate(),
            accounts_at_end: r.accounts_at_end,
            revenue: r
                .money
                .iter()
                .map(|(currency, m)| {
                    let money = |nanos: i128| Some(domain::money(currency, nanos));
                    pb::RecurringRevenue {
                        currency_code: currency.clone(),
                        accounts_at_start: m.accounts_at_start,
                        start_arr: money(m.start),
                        churned: money(m.churned),
                        contraction: money(m.contraction),
                        expansion: money(m.expansion),
                        end_arr: money(m.end),
                        gross_revenue_retention: m.gross_retention(),
                        net_revenue_retention: m.net_retention(),
                        revenue_churn_rate: m.revenue_churn_rate(),
                        average_revenue_per_account: m.average_per_account(end - start).and_then(money),
                        lifetime_value: m.lifetime_value(end - start).and_then(money),
                    }
                })
                .collect(),
        };
        Ok(pb::GetRetentionResponse {
            retention: Some(to_proto(&total)),
            split_by: req.split_by,
            splits: splits
                .iter()
                .map(|(value, r)| pb::RetentionSplit { value: (*value).to_owned(), retention: Some(to_proto(r)) })
                .collect(),
        })
    }

    #[tracing::instrument(skip_all, fields(start = %req.start_date, end = %req.end_date))]
    async fn get_recycling(&self, req: pb::GetRecyclingRequest) -> ApiResult<pb::GetRecyclingResponse> {
        let mut v = Violations::new();
        let period = req.period_fields().parse(&mut v, self);
        let as_of = day(&mut v, ("as_of_date", &req.as_of_date), false);
        let period = v.build(|| period)?;
        let reasons = store::recycle_reasons(self.writer.db(), period.span(), period.until(as_of)).await?;
        Ok(pb::GetRecyclingResponse {
            start_date: domain::format_day(period.days.0),
            end_date: domain::format_day(period.days.1),
            time_zone: period.zone.name(),
            as_of_date: req.as_of_date.clone(),
            reasons: reasons
                .into_iter()
                .map(|(reason, c)| pb::RecycleFollowUp {
                    reason,
                    recycled: c.recycled,
                    re_entered: c.re_entries,
                    converted: c.recycled_opportunities,
                    won: c.recycled_wins,
                    re_entry_rate: domain::ratio(c.re_entries, c.recycled),
                    opportunity_rate: domain::ratio(c.recycled_opportunities, c.recycled),
                    win_rate: domain::ratio(c.recycled_wins, c.recycled),
                })
                .collect(),
        })
    }

    #[tracing::instrument(skip_all, fields(start = %req.start_date, end = %req.end_date))]
    async fn get_velocity(&self, req: pb::GetVelocityRequest) -> ApiResult<pb::GetVelocityResponse> {
        let (period, split) = self.period_and_split(&req, req.split_by)?;
        let span = period.span();
        let as_of = span.end.min(self.clock.now());
        let mut by_value = store::velocity(self.writer.db(), split, span, as_of).await?;
        let total = match split {
            None => by_value.remove("").unwrap_or_default(),
            Some(_) => store::velocity(self.writer.db(), None, span, as_of).await?.remove("").unwrap_or_default(),
        };
        Ok(pb::GetVelocityResponse {
            start_date: domain::format_day(period.days.0),
            end_date: domain::format_day(period.days.1),
            time_zone: period.zone.name(),
            as_of: Some(to_timestamp(as_of)),
            velocity: Some(velocity_to_proto(total)),
            split_by: req.split_by,
            splits: by_value
                .into_iter()
                .map(|(value, v)| pb::VelocitySplit { value, velocity: Some(velocity_to_proto(v)) })
                .collect(),
        })
    }

    #[tracing::instrument(skip_all, fields(start = %req.start_date, end = %req.end_date))]
    async fn get_attribute_calibration(
        &self,
        req: pb::GetAttributeCalibrationRequest,
    ) -> ApiResult<pb::GetAttributeCalibrationResponse> {
        let mut v = Violations::new();
        let period = req.period_fields().parse(&mut v, self);
        let as_of = day(&mut v, ("as_of_date", &req.as_of_date), false);
        let min_sample = match req.min_sample {
            0 => DEFAULT_MIN_SAMPLE,
            n => n,
        };
        v.check((1..=1_000_000).contains(&min_sample), "min_sample", "must be 1-1000000 (0: 30)");
        v.check(req.definition_version >= 0, "definition_version", "must not be negative (0 = current)");
        let period = v.build(|| period)?;
        let span = period.span();
        let db = self.writer.db();
        let (definition, _) = store::definition(db, req.definition_version)
            .await?
            .ok_or_else(|| ApiError::not_found("quality definition version", req.definition_version.to_string()))?;
        let basis = store::Basis::Cohort { until: period.until(as_of) };
        let baseline = store::counts(db, basis, None, span).await?.remove("").unwrap_or_default();
        let mut rows = Vec::new();
        for dim in calibration::DIMENSIONS {
            let by_value = store::counts(db, basis, Some(dim), span).await?;
            rows.extend(by_value.into_iter().filter(|(_, c)| c.leads > 0).map(|(value, c)| (dim, value, c)));
        }
        let (rows, draft) = calibration::propose(&definition, rows, &baseline, min_sample);
        Ok(pb::GetAttributeCalibrationResponse {
            start_date: domain::format_day(period.days.0),
            end_date: domain::format_day(period.days.1),
            time_zone: period.zone.name(),
            as_of_date: req.as_of_date.clone(),
            min_sample,
            baseline: Some(attribute_rates(&baseline)),
            attributes: rows
                .iter()
                .map(|r| pb::AttributeCalibration {
                    dimension: wire_of(&DIMENSIONS, r.dimension).unwrap_or(pb::Dimension::Unspecified) as i32,
                    value: r.value.clone(),
                    rates: Some(attribute_rates(&r.counts)),
                    opportunity_lift: r.lifts.opportunity,
                    win_lift: r.lifts.win,
                    renewal_lift: r.lifts.renewal,
                    points: r.points,
                    proposed_points: r.proposed,
                })
                .collect(),
            proposed_definition: Some(to_proto(&draft, None)),
        })
    }

    #[tracing::instrument(skip_all, fields(lead = %req.lead_id))]
    async fn get_journey(&self, req: pb::GetJourneyRequest) -> ApiResult<pb::GetJourneyResponse> {
        let mut v = Violations::new();
        let lead = v.parse("lead_id", LeadId::parse(&req.lead_id));
        let zone = self.zone(&mut v, &req.time_zone);
        let (lead, zone) = v.build(|| Some((lead?, zone?)))?;
        let db = self.writer.db();
        let journey = store::journey(db, lead.as_str())
            .await?
            .ok_or_else(|| ApiError::not_found("journey of lead", lead.as_str()))?;
        let first_visit = match journey.visitor_id.as_str() {
            "" => None,
            visitor => store::first_visit(db, visitor).await?,
        };
        let dimensions = DIMENSIONS
            .iter()
            .zip(journey.values())
            .map(|((wire, _), value)| pb::DimensionValue { dimension: *wire as i32, value })
            .collect();
        let steps = journey
            .steps()
            .into_iter()
            .map(|s| pb::JourneyStep {
                kind: step_kind(s.kind) as i32,
                occurred_at: Some(to_timestamp(s.at)),
                reason: s.reason,
                amount: s.amount.map(|a| themodel_proto::common::v1::Money {
                    currency_code: a.currency,
                    units: a.units,
                    nanos: a.nanos,
                }),
            })
            .collect();
        Ok(pb::GetJourneyResponse {
            lead_id: lead.as_str().to_owned(),
            dimensions,
            visitor_id: journey.visitor_id,
            first_visit_date: first_visit.map(|at| domain::format_day(zone.day(at))).unwrap_or_default(),
            excluded: journey.excluded,
            steps,
            time_zone: zone.name(),
        })
    }

    #[tracing::instrument(skip_all, fields(version = req.version))]
    async fn get_quality_definition(
        &self,
        req: pb::GetQualityDefinitionRequest,
    ) -> ApiResult<pb::GetQualityDefinitionResponse> {
        let mut v = Violations::new();
        v.check(req.version >= 0, "version", "must not be negative (0 = current)");
        v.finish()?;
        let (d, at) = store::definition(self.writer.db(), req.version)
            .await?
            .ok_or_else(|| ApiError::not_found("quality definition version", req.version.to_string()))?;
        Ok(pb::GetQualityDefinitionResponse { definition: Some(to_proto(&d, Some(at))) })
    }

    #[tracing::instrument(skip_all)]
    async fn list_quality_definitions(
        &self,
        req: pb::ListQualityDefinitionsRequest,
    ) -> ApiResult<pb::ListQualityDefinitionsResponse> {
        let mut v = Violations::new();
        let limit = page_size(&mut v, req.page_size, 20, 100);
        v.finish()?;
        let before = before_version(&req.page_token)?;
        let page = store::definitions(self.writer.db(), before, limit + 1).await?;
        let (page, next_page_token) = version_page(page, limit, |(d, _)| d.version);
        Ok(pb::ListQualityDefinitionsResponse {
            definitions: page.iter().map(|(d, at)| to_proto(d, Some(*at))).collect(),
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn preview_quality_definition(
        &self,
        req: pb::PreviewQualityDefinitionRequest,
    ) -> ApiResult<pb::PreviewQualityDefinitionResponse> {
        let mut v = Violations::new();
        definition::required(&mut v, "definition", req.definition.as_ref());
        v.finish()?;
        let (current, at) = store::definition(self.writer.db(), 0)
            .await?
            .ok_or_else(|| anyhow::anyhow!("kpi holds no quality definition"))?;
        let mut ask = Request::new(pb::PreviewDefinitionRequest {
            baseline: Some(to_proto(&current, Some(at))),
            draft: req.definition,
        });
        ask.set_timeout(PREVIEW_TIMEOUT);
        let preview = self.marketing.clone().preview_definition(ask).await.map_err(|status| {
            tracing::warn!(code = ?status.code(), message = status.message(), "marketing could not dry-run the draft");
            match status.code() {
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::ResourceExhausted => {
                    ApiError::Unavailable(format!("marketing cannot dry-run the draft now: {}", status.message()))
                }
                _ => ApiError::Internal(anyhow::anyhow!("marketing refused the dry run: {}", status.message())),
            }
        })?;
        Ok(pb::PreviewQualityDefinitionResponse { preview: preview.into_inner().preview })
    }

    #[tracing::instrument(skip_all)]
    async fn publish_quality_definition(
        &self,
        request: Request<pb::PublishQualityDefinitionRequest>,
    ) -> ApiResult<pb::PublishQualityDefinitionResponse> {
        let call =
            Call::new(&request, "/themodel.kpi.v1.KpiService/PublishQualityDefinition", &request.get_ref().request_id)?;
        let mut v = Violations::new();
        let definition = definition::required(&mut v, "definition", request.get_ref().definition.as_ref());
        let definition = v.build(|| definition)?;
        let response: pb::PublishQualityDefinitionResponse = self
            .writer
            .execute(call, vec![Need::Row(Key::LatestDefinition)], move |cx| {
                let mut published = definition.clone();
                published.version = cx.state.definition()? + 1;
                let event = pb::KpiEvent {
                    occurred_at: Some(to_timestamp(cx.now)),
                    event: Some(pb::kpi_event::Event::DefinitionPublished(pb::DefinitionPublished {
                        version: published.version,
                    })),
                };
                let resp =
                    pb::PublishQualityDefinitionResponse { definition: Some(to_proto(&published, Some(cx.now))) };
                Ok(Done::new(&resp)
                    .change(store::Change::Definition(published, cx.now))
                    .effects(Effects::default().event(event)))
            })
            .await?;
        let version = response.definition.as_ref().map_or(0, |d| d.version);
        tracing::info!(version, "quality definition published");
        Ok(response)
    }
}

#[tonic::async_trait]
impl KpiService for Api {
    async fn get_funnel(
        &self,
        request: Request<pb::GetFunnelRequest>,
    ) -> Result<Response<pb::GetFunnelResponse>, Status> {
        self.fresh(request.metadata()).await?;
        Ok(Response::new(Api::get_funnel(self, request.into_inner()).await?))
    }

    async fn plan_from_revenue(
        &self,
        request: Request<pb::PlanFromRevenueRequest>,
    ) -> Result<Response<pb::PlanFromRevenueResponse>, Status> {
        self.fresh(request.metadata()).await?;
        Ok(Response::new(Api::plan_from_revenue(self, request.into_inner()).await?))
    }

    async fn get_bottleneck(
        &self,
        request: Request<pb::GetBottleneckRequest>,
    ) -> Result<Response<pb::GetBottleneckResponse>, Status> {
        self.fresh(request.metadata()).await?;
        Ok(Response::new(Api::get_bottleneck(self, request.into_inner()).await?))
    }

    async fn set_targets(
        &self,
        request: Request<pb::SetTargetsRequest>,
    ) -> Result<Response<pb::SetTargetsResponse>, Status> {
        Ok(Response::new(Api::set_targets(self, request).await?))
    }

    async fn list_targets(
        &self,
        request: Request<pb::ListTargetsRequest>,
    ) -> Result<Response<pb::ListTargetsResponse>, Status> {
        Ok(Response::new(Api::list_targets(self, request.into_inner()).await?))
    }

    async fn get_attainment(
        &self,
        request: Request<pb::GetAttainmentRequest>,
    ) -> Result<Response<pb::GetAttainmentResponse>, Status> {
        self.fresh(request.metadata()).await?;
        Ok(Response::new(Api::get_attainment(self, request.into_inner()).await?))
    }

    async fn get_retention(
        &self,
        request: Request<pb::GetRetentionRequest>,
    ) -> Result<Response<pb::GetRetentionResponse>, Status> {
        self.fresh(request.metadata()).await?;
        Ok(Response::new(Api::get_retention(self, request.into_inner()).await?))
    }

    async fn get_recycling(
        &self,
        request: Request<pb::GetRecyclingRequest>,
    ) -> Result<Response<pb::GetRecyclingResponse>, Status> {
        self.fresh(request.metadata()).await?;
        Ok(Response::new(Api::get_recycling(self, request.into_inner()).await?))
    }

    async fn get_velocity(
        &self,
        request: Request<pb::GetVelocityRequest>,
    ) -> Result<Response<pb::GetVelocityResponse>, Status> {
        self.fresh(request.metadata()).await?;
        Ok(Response::new(Api::get_velocity(self, request.into_inner()).await?))
    }

    async fn get_attribute_calibration(
        &self,
        request: Request<pb::GetAttributeCalibrationRequest>,
    ) -> Result<Response<pb::GetAttributeCalibrationResponse>, Status> {
        self.fresh(request.metadata()).await?;
        Ok(Response::new(Api::get_attribute_calibration(self, request.into_inner()).await?))
    }

    async fn get_journey(
        &self,
        request: Request<pb::GetJourneyRequest>,
    ) -> Result<Response<pb::GetJourneyResponse>, Status> {
        self.fresh(request.metadata()).await?;
        Ok(Response::new(Api::get_journey(self, request.into_inner()).await?))
    }

    async fn get_quality_definition(
        &self,
        request: Request<pb::GetQualityDefinitionRequest>,
    ) -> Result<Response<pb::GetQualityDefinitionResponse>, Status> {
        Ok(Response::new(Api::get_quality_definition(self, request.into_inner()).await?))
    }

    async fn list_quality_definitions(
        &self,
        request: Request<pb::ListQualityDefinitionsRequest>,
    ) -> Result<Response<pb::ListQualityDefinitionsResponse>, Status> {
        Ok(Response::new(Api::list_quality_definitions(self, request.into_inner()).await?))
    }

    async fn preview_quality_definition(
        &self,
        request: Request<pb::PreviewQualityDefinitionRequest>,
    ) -> Result<Response<pb::PreviewQualityDefinitionResponse>, Status> {
        Ok(Response::new(Api::preview_quality_definition(self, request.into_inner()).await?))
    }

    async fn publish_quality_definition(
        &self,
        request: Request<pb::PublishQualityDefinitionRequest>,
    ) -> Result<Response<pb::PublishQualityDefinitionResponse>, Status> {
        Ok(Response::new(Api::publish_quality_definition(self, request).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dimension_has_its_name_in_the_contract() {
        let mapped: Vec<Dimension> = DIMENSIONS.iter().map(|(_, d)| *d).collect();
        assert_eq!(mapped, Dimension::all().collect::<Vec<_>>());
    }
}
