//! The KPI rules: how a stream's events decode, which event moves which
//! count, the business day an event falls on, and the funnel formulas
//! (docs/domain.md, "KPIs"). No SQL, no gRPC clients.

use chrono::{DateTime, NaiveDate};
use chrono_tz::Tz;
use prost::{Message, Name};
use prost_types::Any;
use themodel_proto::common::v1 as common;
use themodel_proto::customersuccess::v1 as cs;
use themodel_proto::fieldsales::v1 as fs;
use themodel_proto::insidesales::v1 as is;
use themodel_proto::marketing::v1 as mk;
use themodel_quality::Phase;
use themodel_runtime::time::{self, Micros};
use themodel_runtime::wire::enums::phase_from_proto;

/// The department services whose streams kpi reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Marketing,
    InsideSales,
    FieldSales,
    CustomerSuccess,
}

impl Source {
    /// The service's name, as in configuration and `SourcePosition.service`.
    pub fn name(self) -> &'static str {
        match self {
            Source::Marketing => "marketing",
            Source::InsideSales => "inside-sales",
            Source::FieldSales => "field-sales",
            Source::CustomerSuccess => "customer-success",
        }
    }
}

/// What the funnel counts: in the flow view the events of each kind, in the
/// cohort view the distinct cohort leads that reached each stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    Leads,
    ExcludedLeads,
    /// Handed over to inside sales (promising, ≈ MQL).
    Promising,
    Opportunities,
    /// Opportunities converted with all four BANT conditions confirmed.
    QualityOpportunities,
    Wins,
    Losses,
    Retained,
    Churned,
    /// Sent back to marketing (recycled), with a reason.
    Recycled,
    /// Handed over to inside sales again after a recycle.
    ReEntries,
    /// Converted after a recycle.
    RecycledOpportunities,
    /// Won after a recycle.
    RecycledWins,
}

impl Metric {
    pub const ALL: [Metric; 13] = [
        Metric::Leads,
        Metric::ExcludedLeads,
        Metric::Promising,
        Metric::Opportunities,
        Metric::QualityOpportunities,
        Metric::Wins,
        Metric::Losses,
        Metric::Retained,
        Metric::Churned,
        Metric::Recycled,
        Metric::ReEntries,
        Metric::RecycledOpportunities,
        Metric::RecycledWins,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Metric::Leads => "leads",
            Metric::ExcludedLeads => "excluded_leads",
            Metric::Promising => "promising_leads",
            Metric::Opportunities => "opportunities",
            Metric::QualityOpportunities => "quality_opportunities",
            Metric::Wins => "wins",
            Metric::Losses => "losses",
            Metric::Retained => "retained",
            Metric::Churned => "churned",
            Metric::Recycled => "recycled",
            Metric::ReEntries => "re_entries",
            Metric::RecycledOpportunities => "recycled_opportunities",
            Metric::RecycledWins => "recycled_wins",
        }
    }

    pub fn from_code(code: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.code() == code)
    }
}

/// What one event tells kpi. Counts are not kept per event but per lead
/// (see [`crate::journey`]): an event adds a fact to its lead's journey, or
/// to the journeys of the leads whose deals went into an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A visit by an anonymous visitor (counted distinct over a period).
    Visit(String),
    /// A lead was captured, with the facts its KPIs are split by.
    Captured { lead: String, capture: Capture },
    /// A lead's event counted at its time: handed over, converted, won, lost.
    Reached { lead: String, metric: Metric },
    /// A lead's won deal opened (`opening`) or expanded an account.
    Joined { account: String, lead: String, opening: bool },
    /// A renewal ([`Metric::Retained`]) or churn ([`Metric::Churned`]) of
    /// an account; a churn with the contract value lost.
    Account { account: String, metric: Metric, lost: Option<Amount> },
    /// Money a lead's deal moved: its won value, and the account it opened
    /// or expanded.
    Money { lead: String, kind: MoneyKind, amount: Amount },
    /// A lead went back to marketing, with the reason (its content track).
    Recycled { lead: String, reason: String },
    /// A step of the lead's stays in inside sales and field sales
    /// (velocity).
    Stay { lead: String, step: StayStep },
    /// A lead was classed never-buy after its capture, with the reason.
    /// Marketing publishes it once per lead, whoever decided.
    Excluded { lead: String, reason: String },
    /// A lead was given to an owner (empty team: none).
    Owned { lead: String, role: Role, owner: String, team: String },
    /// An account's contract value after it opened, expanded or renewed
    /// (`None`: it churned). Read in stream order, these are each account's
    /// history, which retention is measured on.
    AccountValue { account: String, value: Option<Amount> },
    /// An account's customer success manager (empty team: none), who owns
    /// every lead whose deal went into it.
    AccountOwned { account: String, owner: String, team: String },
}

/// What an [`Effect::Stay`] records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StayStep {
    /// The lead joined inside sales' queue, first contact due then.
    Queued { due: Option<Micros> },
    /// Inside sales' first contact since the lead joined the queue.
    FirstContact,
    /// The lead left the queue: converted, recycled or disqualified.
    LeftQueue,
    /// Field sales opened an opportunity of the lead (in phase 1).
    DealOpened { opportunity: String },
    /// The opportunity moved to an open phase.
    PhaseEntered { opportunity: String, phase: Phase },
    /// The opportunity was won or lost.
    DealClosed { opportunity: String },
}

/// Whose owner an [`Effect::Owned`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The inside-sales rep who works the lead (and converts it).
    InsideSalesRep,
    /// The account executive who works the lead's opportunity.
    AccountExecutive,
    /// The customer success manager of the account the lead's deal went into.
    CustomerSuccessManager,
}

/// What an amount of revenue was (docs/domain.md, "Revenue").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MoneyKind {
    /// Contract value of a deal won (field sales' bookings).
    Won,
    /// Contract value of an account a won deal opened.
    NewBusiness,
    /// Value of a won deal that expanded an existing account.
    Expansion,
    /// Contract value of an account that churned.
    Churned,
}

impl MoneyKind {
    pub const ALL: [MoneyKind; 4] = [MoneyKind::Won, MoneyKind::NewBusiness, MoneyKind::Expansion, MoneyKind::Churned];

    pub fn code(self) -> &'static str {
        match self {
            MoneyKind::Won => "won",
            MoneyKind::NewBusiness => "new_business",
            MoneyKind::Expansion => "expansion",
            MoneyKind::Churned => "churned",
        }
    }

    pub fn from_code(code: &str) -> Option<MoneyKind> {
        MoneyKind::ALL.into_iter().find(|k| k.code() == code)
    }
}

/// An amount as an event carries it: a currency code, whole units and
/// nanos (the sign of both the same). Amounts of different currencies are
/// never added.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Amount {
    pub currency: String,
    pub units: i64,
    pub nanos: i32,
}

impl Amount {
    fn of(m: Option<&common::Money>) -> Option<Amount> {
        let m = m?;
        Some(Amount { currency: m.currency_code.clone(), units: m.units, nanos: m.nanos })
    }
}

/// What a lead's capture says about it, as published.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capture {
    pub source: String,
    pub campaign: String,
    pub channel: String,
    pub industry: String,
    pub company_size: i32,
    pub job_title: String,
    pub definition_version: i64,
    pub excluded: bool,
    /// Why it is excluded (empty if it is not).
    pub exclusion_reason: String,
    /// The visitor id the lead identified as (empty if none).
    pub visitor_id: String,
}

/// An event from a source's stream, decoded with the generated types.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Marketing(mk::MarketingEvent),
    InsideSales(is::InsideSalesEvent),
    FieldSales(fs::FieldSalesEvent),
    CustomerSuccess(cs::CustomerSuccessEvent),
    Outbox(common::OutboxEvent),
}

/// Why kpi cannot count an event; it stops reading that stream rather than
/// count wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Undecodable {
    #[error("event {seq} of {stream} has no payload")]
    Missing { stream: &'static str, seq: i64 },
    #[error(
        "event {seq} of {stream} is a {type_url}, which that stream does not publish (is kpi older than {stream}?)"
    )]
    UnknownType { stream: &'static str, seq: i64, type_url: String },
    #[error("event {seq} of {stream} ({type_url}) does not decode: {reason}")]
    Malformed { stream: &'static str, seq: i64, type_url: String, reason: String },
    #[error("event {seq} of {stream} has no occurred_at, or one outside 1970-9999")]
    NoTime { stream: &'static str, seq: i64 },
}

fn decode_as<M: Message + Name + Default>(source: Source, seq: i64, any: &Any) -> Result<M, Undecodable> {
    M::decode(any.value.as_slice()).map_err(|e| Undecodable::Malformed {
        stream: source.name(),
        seq,
        type_url: any.type_url.clone(),
        reason: e.to_string(),
    })
}

/// Decodes an event of `source`'s stream: its own event type, or an outbox event.
pub fn decode(source: Source, seq: i64, any: Option<&Any>) -> Result<Decoded, Undecodable> {
    let any = any.ok_or(Undecodable::Missing { stream: source.name(), seq })?;
    let url = any.type_url.as_str();
    if url == common::OutboxEvent::type_url() {
        return decode_as(source, seq, any).map(Decoded::Outbox);
    }
    match source {
        Source::Marketing if url == mk::MarketingEvent::type_url() => {
            decode_as(source, seq, any).map(Decoded::Marketing)
        }
        Source::InsideSales if url == is::InsideSalesEvent::type_url() => {
            decode_as(source, seq, any).map(Decoded::InsideSales)
        }
        Source::FieldSales if url == fs::FieldSalesEvent::type_url() => {
            decode_as(source, seq, any).map(Decoded::FieldSales)
        }
        Source::CustomerSuccess if url == cs::CustomerSuccessEvent::type_url() => {
            decode_as(source, seq, any).map(Decoded::CustomerSuccess)
        }
        _ => Err(Undecodable::UnknownType { stream: source.name(), seq, type_url: url.to_owned() }),
    }
}

impl Decoded {
    /// When the fact happened.
    pub fn occurred_at(&self) -> Option<Micros> {
        let ts = match self {
            Decoded::Marketing(e) => e.occurred_at.as_ref(),
            Decoded::InsideSales(e) => e.occurred_at.as_ref(),
            Decoded::FieldSales(e) => e.occurred_at.as_ref(),
            Decoded::CustomerSuccess(e) => e.occurred_at.as_ref(),
            Decoded::Outbox(e) => e.occurred_at.as_ref(),
        };
        ts.and_then(time::from_timestamp)
    }

    /// What the event tells kpi (docs/domain.md, "KPIs").
    pub fn effects(&self) -> Vec<Effect> {
        use cs::customer_success_event::Event as C;
        use fs::field_sales_event::Event as F;
        use is::inside_sales_event::Event as I;
        use mk::marketing_event::Event as M;
        let reached = |lead: &str, metric| vec![Effect::Reached { lead: lead.to_owned(), metric }];
        let account = |account: &str, metric, lost| vec![Effect::Account { account: account.to_owned(), metric, lost }];
        // An event without an owner (no roster) leaves the lead's as it was.
        let owned = |lead: &str, role, owner: &str, team: &str| {
            let owned = Effect::Owned { lead: lead.to_owned(), role, owner: owner.to_owned(), team: team.to_owned() };
            if owner.is_empty() { Vec::new() } else { vec![owned] }
        };
        // Likewise an account without a manager.
        let account_owned = |account: &str, owner: &str, team: &str| {
            let owned =
                Effect::AccountOwned { account: account.to_owned(), owner: owner.to_owned(), team: team.to_owned() };
            if owner.is_empty() { Vec::new() } else { vec![owned] }
        };
        let valued = |account: &str, value: Option<&common::Money>| {
            Amount::of(value).map(|v| Effect::AccountValue { account: account.to_owned(), value: Some(v) })
        };
        let money = |lead: &str, kind, amount: Option<&common::Money>| {
            Amount::of(amount).map(|amount| Effect::Money { lead: lead.to_owned(), kind, amount })
        };
        let stay = |lead: &str, step| Effect::Stay { lead: lead.to_owned(), step };
        match self {
            Decoded::Marketing(e) => match &e.event {
                Some(M::VisitRecorded(v)) => vec![Effect::Visit(v.visitor_id.clone())],
                Some(M::LeadCaptured(c)) => vec![Effect::Captured {
                    lead: c.lead_id.clone(),
                    capture: Capture {
                        source: c.source.clone(),
                        campaign: c.campaign.clone(),
                        channel: c.channel.clone(),
                        industry: c.industry.clone(),
                        company_size: c.company_size,
                        job_title: c.job_title.clone(),
                        definition_version: c.definition_version,
                        excluded: c.excluded,
                        exclusion_reason: c.exclusion_reason.clone(),
                        visitor_id: c.visitor_id.clone(),
                    },
                }],
                Some(M::LeadPromoted(p)) => reached(&p.lead_id, Metric::Promising),
                Some(M::LeadRecycled(r)) => {
                    vec![Effect::Recycled { lead: r.lead_id.clone(), reason: r.reason.clone() }]
                }
                Some(M::LeadExcluded(x)) => {
                    vec![Effect::Excluded { lead: x.lead_id.clone(), reason: x.reason.clone() }]
                }
                // An erasure changes contact data only, which no KPI counts.
                Some(M::TouchRecorded(_) | M::LeadErased(_)) | None => Vec::new(),
            },
            Decoded::InsideSales(e) => match &e.event {
                Some(I::LeadAccepted(a)) => {
                    let due = a.follow_up_due_at.as_ref().and_then(time::from_timestamp);
                    let mut e = vec![stay(&a.lead_id, StayStep::Queued { due })];
                    e.extend(owned(&a.lead_id, Role::InsideSalesRep, &a.owner_id, &a.team));
                    e
                }
                Some(I::LeadAssigned(a)) => owned(&a.lead_id, Role::InsideSalesRep, &a.owner_id, &a.team),
                Some(I::ActivityLogged(a)) if a.first_contact => vec![stay(&a.lead_id, StayStep::FirstContact)],
                Some(I::OpportunityConverted(c)) => {
                    let mut e = reached(&c.lead_id, Metric::Opportunities);
                    if c.quality {
                        e.extend(reached(&c.lead_id, Metric::QualityOpportunities));
                    }
                    e.extend(owned(&c.lead_id, Role::InsideSalesRep, &c.owner_id, &c.team));
                    e.push(stay(&c.lead_id, StayStep::LeftQueue));
                    e
                }
                Some(I::LeadRecycled(r)) => vec![stay(&r.lead_id, StayStep::LeftQueue)],
                Some(I::LeadDisqualified(d)) => vec![stay(&d.lead_id, StayStep::LeftQueue)],
                Some(I::ActivityLogged(_) | I::BantRecorded(_)) | None => Vec::new(),
            },
            Decoded::FieldSales(e) => match &e.event {
                Some(F::OpportunityOpened(o)) => {
                    let mut e = vec![stay(&o.lead_id, StayStep::DealOpened { opportunity: o.opportunity_id.clone() })];
                    e.extend(owned(&o.lead_id, Role::AccountExecutive, &o.owner_id, &o.team));
                    e
                }
                Some(F::OpportunityAssigned(a)) => owned(&a.lead_id, Role::AccountExecutive, &a.owner_id, &a.team),
                // A move into a closed phase comes with the win or loss, which
                // ends the deal's stays; one without its lead (written before
                // events named it) has no journey to join.
                Some(F::PhaseChanged(p)) => match phase_from_proto(p.to_phase) {
                    Some(phase) if phase.is_open() && !p.lead_id.is_empty() => {
                        vec![stay(&p.lead_id, StayStep::PhaseEntered { opportunity: p.opportunity_id.clone(), phase })]
                    }
                    _ => Vec::new(),
                },
                Some(F::OpportunityWon(w)) => {
                    let mut e = reached(&w.lead_id, Metric::Wins);
                    e.extend(money(&w.lead_id, MoneyKind::Won, w.contract_value.as_ref()));
                    e.push(stay(&w.lead_id, StayStep::DealClosed { opportunity: w.opportunity_id.clone() }));
                    e
                }
                Some(F::OpportunityLost(l)) => {
                    let mut e = reached(&l.lead_id, Metric::Losses);
                    e.push(stay(&l.lead_id, StayStep::DealClosed { opportunity: l.opportunity_id.clone() }));
                    e
                }
                None => Vec::new(),
            },
            Decoded::CustomerSuccess(e) => match &e.event {
                Some(C::AccountOpened(o)) => {
                    let mut e =
                        vec![Effect::Joined { account: o.account_id.clone(), lead: o.lead_id.clone(), opening: true }];
                    e.extend(money(&o.lead_id, MoneyKind::NewBusiness, o.contract_value.as_ref()));
                    e.extend(valued(&o.account_id, o.contract_value.as_ref()));
                    e.extend(account_owned(&o.account_id, &o.owner_id, &o.team));
                    e
                }
                Some(C::AccountExpanded(x)) => {
                    let mut e =
                        vec![Effect::Joined { account: x.account_id.clone(), lead: x.lead_id.clone(), opening: false }];
                    e.extend(money(&x.lead_id, MoneyKind::Expansion, x.deal_value.as_ref()));
                    e.extend(valued(&x.account_id, x.contract_value.as_ref()));
                    e.extend(account_owned(&x.account_id, &x.owner_id, &x.team));
                    e
                }
                Some(C::RenewalRecorded(r)) => {
                    let mut e = account(&r.account_id, Metric::Retained, None);
                    e.extend(valued(&r.account_id, r.contract_value.as_ref()));
                    e
                }
                Some(C::ChurnRecorded(c)) => {
                    let mut e = account(&c.account_id, Metric::Churned, Amount::of(c.contract_value.as_ref()));
                    e.push(Effect::AccountValue { account: c.account_id.clone(), value: None });
                    e
                }
                Some(C::AccountAssigned(a)) => account_owned(&a.account_id, &a.owner_id, &a.team),
                None => Vec::new(),
            },
            Decoded::Outbox(_) => Vec::new(),
        }
    }
}

/// A business time zone: an IANA name.
pub fn parse_time_zone(name: &str) -> Option<Tz> {
    name.parse().ok()
}

const EPOCH: NaiveDate = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");

/// Days since 1970-01-01 of the date `at` falls on in `tz`.
pub fn business_day(at: Micros, tz: Tz) -> i64 {
    let utc = DateTime::from_timestamp_micros(at).unwrap_or_default();
    day_of(utc.with_timezone(&tz).date_naive())
}

/// The first moment of business day `day` in `tz` (where midnight does not
/// exist, as on some daylight-saving changes, the first moment after it).
pub fn day_start(day: i64, tz: Tz) -> Option<Micros> {
    use chrono::TimeZone;
    let midnight = date_of(day)?.and_hms_opt(0, 0, 0)?;
    (0..3)
        .find_map(|h| tz.from_local_datetime(&(midnight + chrono::TimeDelta::hours(h))).earliest())
        .map(|t| t.timestamp_micros())
}

/// Days since 1970-01-01 of a date.
pub fn day_of(date: NaiveDate) -> i64 {
    (date - EPOCH).num_days()
}

/// The date of day `day` (days since 1970-01-01); `None` past chrono's range.
pub fn date_of(day: i64) -> Option<NaiveDate> {
    EPOCH.checked_add_signed(chrono::TimeDelta::try_days(day)?)
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date.
pub fn parse_day(s: &str) -> Option<i64> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().map(day_of)
}

/// The `YYYY-MM-DD` of business day `day` (days since 1970-01-01).
pub fn format_day(day: i64) -> String {
    date_of(day).map(|d| d.to_string()).unwrap_or_default()
}

/// Flow counts for a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub visitors: i64,
    pub leads: i64,
    pub excluded_leads: i64,
    pub promising_leads: i64,
    pub opportunities: i64,
    pub quality_opportunities: i64,
    pub wins: i64,
    pub losses: i64,
    pub retained: i64,
    pub churned: i64,
    pub recycled: i64,
    pub re_entries: i64,
    pub recycled_opportunities: i64,
    pub recycled_wins: i64,
}

impl Counts {
    pub fn add(&mut self, metric: Metric, n: i64) {
        let slot = match metric {
            Metric::Leads => &mut self.leads,
            Metric::ExcludedLeads => &mut self.excluded_leads,
            Metric::Promising => &mut self.promising_leads,
            Metric::Opportunities => &mut self.opportunities,
            Metric::QualityOpportunities => &mut self.quality_opportunities,
            Metric::Wins => &mut self.wins,
            Metric::Losses => &mut self.losses,
            Metric::Retained => &mut self.retained,
            Metric::Churned => &mut self.churned,
            Metric::Recycled => &mut self.recycled,
            Metric::ReEntries => &mut self.re_entries,
            Metric::RecycledOpportunities => &mut self.recycled_opportunities,
            Metric::RecycledWins => &mut self.recycled_wins,
        };
        *slot += n;
    }
}

/// Revenue of one currency over a period, in nanos.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Revenue {
    pub won: i128,
    pub new_business: i128,
    pub expansion: i128,
    pub churned: i128,
}

impl Revenue {
    pub fn add(&mut self, kind: MoneyKind, nanos: i128) {
        let slot = match kind {
            MoneyKind::Won => &mut self.won,
            MoneyKind::NewBusiness => &mut self.new_business,
            MoneyKind::Expansion => &mut self.expansion,
            MoneyKind::Churned => &mut self.churned,
        };
        *slot += nanos;
    }
}

const NANOS_PER_UNIT: i128 = 1_000_000_000;

/// An amount's `units` and `nanos` (of the same sign) in nanos; wide enough
/// for any sum of them.
pub fn total_nanos(units: i64, nanos: i64) -> i128 {
    i128::from(units) * NANOS_PER_UNIT + i128::from(nanos)
}

/// `nanos` of `currency` as the contract's Money: whole units and the
/// nanos left, of the same sign. A sum past what Money holds (2^63 - 1
/// units, beyond any real revenue) is given as the largest Money of its
/// sign rather than wrapped.
pub fn money(currency: &str, nanos: i128) -> common::Money {
    let (units, nanos) = match i64::try_from(nanos / NANOS_PER_UNIT) {
        Ok(units) => (units, (nanos % NANOS_PER_UNIT) as i32),
        Err(_) if nanos < 0 => (i64::MIN, -999_999_999),
        Err(_) => (i64::MAX, 999_999_999),
    };
    common::Money { currency_code: currency.to_owned(), units, nanos }
}

/// The funnel's rates; `None` when the denominator is zero. As doubles for
/// responses ([`Counts::rates`]), or as exact fractions for arithmetic that
/// must not round ([`Counts::exact_rates`]).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Rates<R = f64> {
    pub acquisition: Option<R>,
    pub promising: Option<R>,
    pub opportunity: Option<R>,
    pub quality: Option<R>,
    pub win: Option<R>,
    pub renewal: Option<R>,
    pub churn: Option<R>,
}

/// A non-negative rate as an exact fraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    num: i128,
    den: i128,
}

/// Decimal places a given (not counted) rate is taken to.
const GIVEN_SCALE: i128 = 1_000_000_000;

impl Rate {
    /// `num / den`; `None` when `den` is zero (the rate is absent).
    pub fn of(num: impl Into<i128>, den: impl Into<i128>) -> Option<Rate> {
        let (num, den) = (num.into(), den.into());
        (den != 0).then_some(Rate { num, den })
    }

    /// A rate a caller gave, to nine decimal places (0.3 is 3/10, not the
    /// double nearest to it). The caller checks it is finite and positive.
    pub fn given(r: f64) -> Rate {
        Rate { num: (r * GIVEN_SCALE as f64).round() as i128, den: GIVEN_SCALE }
    }

    pub fn value(self) -> f64 {
        self.num as f64 / self.den as f64
    }

    /// ⌈out / rate⌉: how many must go in for `out` to come out. `None` when
    /// the rate is zero (no number is enough) or the answer is past i64.
    pub fn input_for(self, out: i64) -> Option<i64> {
        if self.num <= 0 {
            return None;
        }
        let x = i128::from(out).checked_mul(self.den)?;
        i64::try_from(div_ceil(x, self.num)).ok()
    }

    /// Whether this rate is below `other`, exactly.
    pub fn below(self, other: Rate) -> bool {
        self.num * other.den < other.num * self.den
    }

    /// This rate as a multiple of `base` (its lift over it); `None` when
    /// `base` is zero.
    pub fn relative_to(self, base: Rate) -> Option<f64> {
        let den = self.den.checked_mul(base.num)?;
        Rate::of(self.num.checked_mul(base.den)?, den).map(Rate::value)
    }

    /// Whether the rate is 0 (nothing came through).
    pub fn is_zero(self) -> bool {
        self.num == 0
    }
}

/// `num / den` as a double; `None` (absent) when `den` is zero.
pub fn ratio(num: impl Into<i128>, den: impl Into<i128>) -> Option<f64> {
    Rate::of(num, den).map(Rate::value)
}

/// ⌈a / b⌉ for b > 0.
pub fn div_ceil(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b != 0 && (a > 0) == (b > 0) { q + 1 } else { q }
}

impl Counts {
    pub fn valid_leads(&self) -> i64 {
        self.leads - self.excluded_leads
    }

    /// The funnel's formulas (docs/domain.md, "KPIs"), exactly.
    pub fn exact_rates(&self) -> Rates<Rate> {
        Rates {
            acquisition: Rate::of(self.leads, self.visitors),
            promising: Rate::of(self.promising_leads, self.leads),
            opportunity: Rate::of(self.opportunities, self.leads),
            quality: Rate::of(self.quality_opportunities, self.opportunities),
            win: Rate::of(self.wins, self.wins + self.losses),
            renewal: Rate::of(self.retained, self.retained + self.churned),
            churn: Rate::of(self.churned, self.retained + self.churned),
        }
    }

    /// [`Counts::exact_rates`] as doubles.
    pub fn rates(&self) -> Rates {
        let e = self.exact_rates();
        let v = |r: Option<Rate>| r.map(Rate::value);
        Rates {
            acquisition: v(e.acquisition),
            promising: v(e.promising),
            opportunity: v(e.opportunity),
            quality: v(e.quality),
            win: v(e.win),
            renewal: v(e.renewal),
            churn: v(e.churn),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas() {
        let c = Counts {
            visitors: 10,
            leads: 4,
            excluded_leads: 1,
            promising_leads: 3,
            opportunities: 2,
            quality_opportunities: 1,
            wins: 1,
            losses: 3,
            retained: 3,
            churned: 1,
            ..Counts::default()
        };
        let r = c.rates();
        assert_eq!(r.quality, Some(0.5));
        assert_eq!(r.acquisition, Some(0.4));
        assert_eq!(r.promising, Some(0.75));
        assert_eq!(r.opportunity, Some(0.5));
        assert_eq!(r.win, Some(0.25));
        assert_eq!(r.renewal, Some(0.75));
        assert_eq!(r.churn, Some(0.25));
        assert_eq!(c.valid_leads(), 3);
    }

    #[test]
    fn zero_denominators_are_absent() {
        let r = Counts::default().rates();
        assert_eq!(r, Rates::default());
        let c = Counts { leads: 3, ..Default::default() };
        assert_eq!(c.rates().acquisition, None, "leads without visitors: no acquisition rate");
        assert_eq!(c.rates().opportunity, Some(0.0), "a zero numerator is a real 0");
    }

    fn pack<E: Message + Name>(e: &E) -> Any {
        Any { type_url: E::type_url(), value: e.encode_to_vec() }
    }

    fn at() -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds: 1_800_000_000, nanos: 0 })
    }

    #[test]
    fn effects_table() {
        use cs::customer_success_event::Event as C;
        use fs::field_sales_event::Event as F;
        use is::inside_sales_event::Event as I;
        use mk::marketing_event::Event as M;
        let m = |e: M| pack(&mk::MarketingEvent { occurred_at: at(), event: Some(e) });
        let i = |e: I| pack(&is::InsideSalesEvent { occurred_at: at(), event: Some(e) });
        let f = |e: F| pack(&fs::FieldSalesEvent { occurred_at: at(), event: Some(e) });
        let c = |e: C| pack(&cs::CustomerSuccessEvent { occurred_at: at(), event: Some(e) });
        let reached = |metric| vec![Effect::Reached { lead: "l1".into(), metric }];
        let stay = |step| vec![Effect::Stay { lead: "l1".into(), step }];
        let account = |metric| vec![Effect::Account { account: "a1".into(), metric, lost: None }];
        let yen = |units| Some(common::Money { currency_code: "JPY".into(), units, nanos: 0 });
        let amount = |units| Amount { currency: "JPY".into(), units, nanos: 0 };
        let captured = M::LeadCaptured(mk::LeadCaptured {
            lead_id: "l1".into(),
            source: "web_form".into(),
            campaign: "autumn".into(),
            channel: "ads".into(),
            industry: "Software".into(),
            company_size: 120,
            job_title: "CTO".into(),
            definition_version: 3,
            excluded: true,
            exclusion_reason: "student".into(),
            visitor_id: "v1".into(),
            ..Default::default()
        });
        let cases = [
            (
                Source::Marketing,
                m(M::VisitRecorded(mk::VisitRecorded { visitor_id: "v1".into(), ..Default::default() })),
                vec![Effect::Visit("v1".into())],
            ),
            (
                Source::Marketing,
                m(captured),
                vec![Effect::Captured {
                    lead: "l1".into(),
                    capture: Capture {
                        source: "web_form".into(),
                        campaign: "autumn".into(),
                        channel: "ads".into(),
                        industry: "Software".into(),
                        company_size: 120,
                        job_title: "CTO".into(),
                        definition_version: 3,
                        excluded: true,
                        exclusion_reason: "student".into(),
                        visitor_id: "v1".into(),
                    },
                }],
            ),
            (Source::Marketing, m(M::TouchRecorded(Default::default())), vec![]),
            (
                Source::Marketing,
                m(M::LeadRecycled(mk::LeadRecycled {
                    lead_id: "l1".into(),
                    reason: "timing".into(),
                    ..Default::default()
                })),
                vec![Effect::Recycled { lead: "l1".into(), reason: "timing".into() }],
            ),
            (
                Source::Marketing,
                m(M::LeadPromoted(mk::LeadPromoted { lead_id: "l1".into(), ..Default::default() })),
                reached(Metric::Promising),
            ),
            (
                Source::InsideSales,
                i(I::OpportunityConverted(is::OpportunityConverted { lead_id: "l1".into(), ..Default::default() })),
                [reached(Metric::Opportunities), stay(StayStep::LeftQueue)].concat(),
            ),
            (
                Source::InsideSales,
                i(I::OpportunityConverted(is::OpportunityConverted {
                    lead_id: "l1".into(),
                    quality: true,
                    owner_id: "aki".into(),
                    team: "east".into(),
                    ..Default::default()
                })),
                vec![
                    Effect::Reached { lead: "l1".into(), metric: Metric::Opportunities },
                    Effect::Reached { lead: "l1".into(), metric: Metric::QualityOpportunities },
                    Effect::Owned {
                        lead: "l1".into(),
                        role: Role::InsideSalesRep,
                        owner: "aki".into(),
                        team: "east".into(),
                    },
                    Effect::Stay { lead: "l1".into(), step: StayStep::LeftQueue },
                ],
            ),
            (
                Source::InsideSales,
                i(I::LeadAssigned(is::LeadAssigned {
                    lead_id: "l1".into(),
                    owner_id: "ben".into(),
                    ..Default::default()
                })),
                vec![Effect::Owned {
                    lead: "l1".into(),
                    role: Role::InsideSalesRep,
                    owner: "ben".into(),
                    team: String::new(),
                }],
            ),
            (
                Source::InsideSales,
                i(I::LeadAccepted(is::LeadAccepted {
                    lead_id: "l1".into(),
                    follow_up_due_at: Some(prost_types::Timestamp { seconds: 7200, nanos: 0 }),
                    ..Default::default()
                })),
                stay(StayStep::Queued { due: Some(7_200_000_000) }),
            ),
            (
                Source::InsideSales,
                i(I::ActivityLogged(is::ActivityLogged {
                    lead_id: "l1".into(),
                    first_contact: true,
                    ..Default::default()
                })),
                stay(StayStep::FirstContact),
            ),
            (Source::InsideSales, i(I::ActivityLogged(is::ActivityLogged::default())), vec![]),
            (
                Source::InsideSales,
                i(I::LeadDisqualified(is::LeadDisqualified { lead_id: "l1".into(), ..Default::default() })),
                stay(StayStep::LeftQueue),
            ),
            (
                Source::Marketing,
                m(M::LeadExcluded(mk::LeadExcluded {
                    lead_id: "l1".into(),
                    reason: "student".into(),
                    ..Default::default()
                })),
                vec![Effect::Excluded { lead: "l1".into(), reason: "student".into() }],
            ),
            (
                Source::FieldSales,
                f(F::OpportunityOpened(fs::OpportunityOpened {
                    lead_id: "l1".into(),
                    opportunity_id: "o1".into(),
                    ..Default::default()
                })),
                stay(StayStep::DealOpened { opportunity: "o1".into() }),
            ),
            (
                Source::FieldSales,
                f(F::PhaseChanged(fs::PhaseChanged {
                    lead_id: "l1".into(),
                    opportunity_id: "o1".into(),
                    to_phase: fs::Phase::Evaluation as i32,
                    ..Default::default()
                })),
                stay(StayStep::PhaseEntered { opportunity: "o1".into(), phase: Phase::Evaluation }),
            ),
            (
                Source::FieldSales,
                f(F::PhaseChanged(fs::PhaseChanged {
                    opportunity_id: "o1".into(),
                    to_phase: fs::Phase::Evaluation as i32,
                    ..Default::default()
                })),
                vec![],
            ),
            (
                Source::FieldSales,
                f(F::OpportunityAssigned(fs::OpportunityAssigned {
                    lead_id: "l1".into(),
                    owner_id: "dan".into(),
                    team: "north".into(),
                    ..Default::default()
                })),
                vec![Effect::Owned {
                    lead: "l1".into(),
                    role: Role::AccountExecutive,
                    owner: "dan".into(),
                    team: "north".into(),
                }],
            ),
            (
                Source::FieldSales,
                f(F::OpportunityWon(fs::OpportunityWon {
                    lead_id: "l1".into(),
                    contract_value: yen(1_200_000),
                    ..Default::default()
                })),
                vec![
                    Effect::Reached { lead: "l1".into(), metric: Metric::Wins },
                    Effect::Money { lead: "l1".into(), kind: MoneyKind::Won, amount: amount(1_200_000) },
                    Effect::Stay { lead: "l1".into(), step: StayStep::DealClosed { opportunity: String::new() } },
                ],
            ),
            (
                Source::FieldSales,
                f(F::OpportunityLost(fs::OpportunityLost { lead_id: "l1".into(), ..Default::default() })),
                [reached(Metric::Losses), stay(StayStep::DealClosed { opportunity: String::new() })].concat(),
            ),
            (
                Source::CustomerSuccess,
                c(C::AccountOpened(cs::AccountOpened {
                    account_id: "a1".into(),
                    lead_id: "l1".into(),
                    ..Default::default()
                })),
                vec![Effect::Joined { account: "a1".into(), lead: "l1".into(), opening: true }],
            ),
            (
                Source::CustomerSuccess,
                c(C::AccountExpanded(cs::AccountExpanded {
                    account_id: "a1".into(),
                    lead_id: "l1".into(),
                    deal_value: yen(300_000),
                    contract_value: yen(1_500_000),
                    ..Default::default()
                })),
                vec![
                    Effect::Joined { account: "a1".into(), lead: "l1".into(), opening: false },
                    Effect::Money { lead: "l1".into(), kind: MoneyKind::Expansion, amount: amount(300_000) },
                    Effect::AccountValue { account: "a1".into(), value: Some(amount(1_500_000)) },
                ],
            ),
            (
                Source::CustomerSuccess,
                c(C::RenewalRecorded(cs::RenewalRecorded { account_id: "a1".into(), ..Default::default() })),
                account(Metric::Retained),
            ),
            (
                Source::CustomerSuccess,
                c(C::RenewalRecorded(cs::RenewalRecorded {
                    account_id: "a1".into(),
                    contract_value: yen(900_000),
                    ..Default::default()
                })),
                [
                    account(Metric::Retained),
                    vec![Effect::AccountValue { account: "a1".into(), value: Some(amount(900_000)) }],
                ]
                .concat(),
            ),
            (
                Source::CustomerSuccess,
                c(C::ChurnRecorded(cs::ChurnRecorded {
                    account_id: "a1".into(),
                    contract_value: yen(1_500_000),
                    ..Default::default()
                })),
                vec![
                    Effect::Account { account: "a1".into(), metric: Metric::Churned, lost: Some(amount(1_500_000)) },
                    Effect::AccountValue { account: "a1".into(), value: None },
                ],
            ),
            (
                Source::CustomerSuccess,
                c(C::AccountAssigned(cs::AccountAssigned {
                    account_id: "a1".into(),
                    owner_id: "cy".into(),
                    team: "care".into(),
                    ..Default::default()
                })),
                vec![Effect::AccountOwned { account: "a1".into(), owner: "cy".into(), team: "care".into() }],
            ),
            (Source::Marketing, pack(&common::OutboxEvent { occurred_at: at(), event: None }), vec![]),
        ];
        for (source, any, want) in cases {
            let decoded = decode(source, 1, Some(&any)).expect("decodes");
            assert_eq!(decoded.effects(), want, "{source:?} {}", any.type_url);
            assert!(decoded.occurred_at().is_some());
        }
    }

    #[test]
    fn sums_of_money_split_into_units_and_nanos() {
        let m = |n: i128| {
            let m = money("JPY", n);
            (m.units, m.nanos)
        };
        assert_eq!(m(1_500_000_000), (1, 500_000_000));
        assert_eq!(m(-1_500_000_000), (-1, -500_000_000), "the same sign");
        let twice_the_largest = 2 * (i128::from(i64::MAX) * 1_000_000_000 + 999_999_999);
        assert_eq!(m(twice_the_largest), (i64::MAX, 999_999_999), "held at the largest Money, not wrapped");
    }

    #[test]
    fn what_cannot_be_decoded_is_an_error_not_a_blank() {
        let captured = pack(&mk::MarketingEvent { occurred_at: at(), event: None });
        assert!(matches!(decode(Source::FieldSales, 7, Some(&captured)), Err(Undecodable::UnknownType { seq: 7, .. })));
        let garbage = Any { type_url: mk::MarketingEvent::type_url(), value: vec![0xff, 0xff, 0xff] };
        assert!(matches!(decode(Source::Marketing, 8, Some(&garbage)), Err(Undecodable::Malformed { .. })));
        assert!(matches!(decode(Source::Marketing, 9, None), Err(Undecodable::Missing { .. })));
    }

    #[test]
    fn business_days_follow_the_time_zone() {
        // 2026-11-01T20:00:00Z is still Nov 1 in UTC but Nov 2 in Tokyo.
        let at = 1_793_563_200_000_000;
        let utc = business_day(at, chrono_tz::UTC);
        let tokyo = business_day(at, parse_time_zone("Asia/Tokyo").expect("known zone"));
        assert_eq!(utc, parse_day("2026-11-01").expect("date"));
        assert_eq!(tokyo, utc + 1);
        assert_eq!(parse_day("2026-13-01"), None);
        assert_eq!(parse_time_zone("Mars/Olympus"), None);
    }
}
