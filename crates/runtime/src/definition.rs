//! The shared quality definition as a service holds it: the current version,
//! refreshed from the kpi service that owns it, and the conversions between
//! the wire form and `themodel_quality::Definition`.
//!
//! Until the first refresh succeeds a service uses the built-in definition,
//! which is exactly version 1 as kpi serves it on a fresh install.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use themodel_proto::kpi::v1 as pb;
use themodel_proto::kpi::v1::kpi_service_client::KpiServiceClient;
use themodel_quality::{
    AttributeScoring, BantRequirement, BehaviourScoring, Definition, Exclusion, InvalidDefinition, PhaseExit,
    RecycleReason,
};
use tokio_util::sync::CancellationToken;

use crate::telemetry::peer_channel;
use crate::time::{self, Micros};
use crate::wire::enums::{phase_from_proto, phase_to_proto, touch_kind_from_proto, touch_kind_to_proto};

/// The definition version a service currently applies.
#[derive(Debug, Clone)]
pub struct SharedDefinition(Arc<RwLock<Arc<Definition>>>);

impl Default for SharedDefinition {
    fn default() -> Self {
        SharedDefinition::new(Definition::default())
    }
}

impl SharedDefinition {
    pub fn new(d: Definition) -> Self {
        SharedDefinition(Arc::new(RwLock::new(Arc::new(d))))
    }

    /// The current definition; a decision takes it once and records its version.
    pub fn current(&self) -> Arc<Definition> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn set(&self, d: Definition) {
        let mut g = match self.0.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if g.version != d.version {
            tracing::info!(from = g.version, to = d.version, "quality definition updated");
        }
        *g = Arc::new(d);
    }

    /// Keeps the definition in step with kpi's current version until `shutdown`.
    pub async fn follow(
        self,
        kpi_addr: String,
        credential: crate::auth::Credential,
        every: Duration,
        shutdown: CancellationToken,
    ) {
        let mut client = match peer_channel(&kpi_addr, &credential) {
            Ok(ch) => KpiServiceClient::new(ch),
            Err(e) => {
                tracing::error!(error = %e, kpi = %kpi_addr, "bad kpi address; using the built-in definition");
                return;
            }
        };
        loop {
            match client.get_quality_definition(pb::GetQualityDefinitionRequest { version: 0 }).await {
                Ok(resp) => match resp.get_ref().definition.as_ref().map(from_proto) {
                    Some(Ok(d)) => self.set(d),
                    Some(Err(e)) => tracing::error!(error = %e, "kpi served an unusable definition"),
                    None => tracing::error!("kpi answered without a definition"),
                },
                Err(status)
                    if matches!(status.code(), tonic::Code::Unauthenticated | tonic::Code::PermissionDenied) =>
                {
                    tracing::warn!(code = ?status.code(), "kpi refused this service's credential for the definition")
                }
                Err(status) => {
                    tracing::debug!(code = ?status.code(), "kpi not reachable for the definition")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}

fn requirement_to_proto(r: BantRequirement) -> pb::BantRequirement {
    pb::BantRequirement { budget: r.budget, authority: r.authority, need: r.need, timeline: r.timeline }
}

fn requirement_from_proto(r: Option<&pb::BantRequirement>) -> BantRequirement {
    r.map(|r| BantRequirement { budget: r.budget, authority: r.authority, need: r.need, timeline: r.timeline })
        .unwrap_or_default()
}

/// The wire form of a definition.
pub fn to_proto(d: &Definition, published_at: Option<Micros>) -> pb::QualityDefinition {
    pb::QualityDefinition {
        version: d.version,
        published_at: time::to_timestamp_opt(published_at),
        attribute: Some(pb::AttributeScoring {
            company_size_bands: d
                .attribute
                .company_size_bands
                .iter()
                .map(|(min_employees, points)| pb::SizeBand { min_employees: *min_employees, points: *points })
                .collect(),
            industry_points: d.attribute.industry_points.clone().into_iter().collect(),
            other_industry_points: d.attribute.other_industry_points,
            job_title_rules: d
                .attribute
                .job_title_rules
                .iter()
                .map(|(words, points)| pb::TitleRule { words: words.clone(), points: *points })
                .collect(),
            other_title_points: d.attribute.other_title_points,
            max: d.attribute.max,
        }),
        behaviour: Some(pb::BehaviourScoring {
            touch_points: d
                .behaviour
                .touch_points
                .iter()
                .map(|(k, p)| pb::TouchPoints { kind: touch_kind_to_proto(*k) as i32, points: *p })
                .collect(),
            max: d.behaviour.max,
        }),
        promising_threshold: d.promising_threshold,
        exclusion: Some(pb::Exclusion {
            competitor_domains: d.exclusion.competitor_domains.clone(),
            partner_domains: d.exclusion.partner_domains.clone(),
            student_domain_suffixes: d.exclusion.student_domain_suffixes.clone(),
            student_title_words: d.exclusion.student_title_words.clone(),
        }),
        opportunity_requires: Some(requirement_to_proto(d.opportunity_requires)),
        phase_exits: d
            .phase_exits
            .iter()
            .map(|e| pb::PhaseExit {
                phase: phase_to_proto(e.phase) as i32,
                requires: Some(requirement_to_proto(e.requires)),
            })
            .collect(),
        recycle_reasons: d
            .recycle_reasons
            .iter()
            .map(|r| pb::RecycleReason { code: r.code.clone(), requires_timing_months: r.requires_timing_months })
            .collect(),
        lost_reasons: d.lost_reasons.clone(),
        never_buy_reasons: d.never_buy_reasons.clone(),
        follow_up_sla_hours: d.follow_up_sla_hours.clone().into_iter().collect(),
        default_follow_up_sla_hours: d.default_follow_up_sla_hours,
        recycle_resets_behaviour: d.recycle_resets_behaviour,
    }
}

fn invalid(field: &str, message: impl Into<String>) -> InvalidDefinition {
    InvalidDefinition { field: field.to_owned(), message: message.into() }
}

/// The definition a request's `field` must hold, validated; what is wrong
/// with it goes into `v` under `field`.
pub fn required(
    v: &mut crate::validate::Violations,
    field: &str,
    p: Option<&pb::QualityDefinition>,
) -> Option<Definition> {
    let Some(p) = p else {
        v.add(field, "is required");
        return None;
    };
    from_proto(p).map_err(|e| v.add(&format!("{field}.{}", e.field), e.message)).ok()
}

/// A definition from its wire form, validated.
pub fn from_proto(p: &pb::QualityDefinition) -> Result<Definition, InvalidDefinition> {
    let a = p.attribute.as_ref().ok_or_else(|| invalid("attribute", "is required"))?;
    let b = p.behaviour.as_ref().ok_or_else(|| invalid("behaviour", "is required"))?;
    let mut touch_points = BTreeMap::new();
    for (i, t) in b.touch_points.iter().enumerate() {
        let kind = touch_kind_from_proto(t.kind).ok_or_else(|| {
            invalid(
                &format!("behaviour.touch_points[{i}].kind"),
                format!("must be one of {}", crate::wire::enums::touch_kind_names()),
            )
        })?;
        if touch_points.insert(kind, t.points).is_some() {
            return Err(invalid(&format!("behaviour.touch_points[{i}].kind"), "is listed twice"));
        }
    }
    let mut phase_exits = Vec::new();
    for (i, e) in p.phase_exits.iter().enumerate() {
        let phase = phase_from_proto(e.phase).ok_or_else(|| {
            invalid(
                &format!("phase_exits[{i}].phase"),
                "must be PHASE_PRE_OPPORTUNITY, PHASE_ISSUE_RECOGNITION, PHASE_EVALUATION, PHASE_NEGOTIATION or PHASE_APPROVAL",
            )
        })?;
        phase_exits.push(PhaseExit { phase, requires: requirement_from_proto(e.requires.as_ref()) });
    }
    let ex = p.exclusion.clone().unwrap_or_default();
    let d = Definition {
        version: p.version,
        attribute: AttributeScoring {
            company_size_bands: a.company_size_bands.iter().map(|b| (b.min_employees, b.points)).collect(),
            industry_points: a.industry_points.iter().map(|(k, v)| (k.trim().to_lowercase(), *v)).collect(),
            other_industry_points: a.other_industry_points,
            job_title_rules: a.job_title_rules.iter().map(|r| (r.words.clone(), r.points)).collect(),
            other_title_points: a.other_title_points,
            max: a.max,
        },
        behaviour: BehaviourScoring { touch_points, max: b.max },
        promising_threshold: p.promising_threshold,
        exclusion: Exclusion {
            competitor_domains: ex.competitor_domains,
            partner_domains: ex.partner_domains,
            student_domain_suffixes: ex.student_domain_suffixes,
            student_title_words: ex.student_title_words,
        },
        opportunity_requires: requirement_from_proto(p.opportunity_requires.as_ref()),
        phase_exits,
        recycle_reasons: p
            .recycle_reasons
            .iter()
            .map(|r| RecycleReason { code: r.code.clone(), requires_timing_months: r.requires_timing_months })
            .collect(),
        lost_reasons: p.lost_reasons.clone(),
        never_buy_reasons: p.never_buy_reasons.clone(),
        follow_up_sla_hours: p.follow_up_sla_hours.clone().into_iter().collect(),
        default_follow_up_sla_hours: p.default_follow_up_sla_hours,
        recycle_resets_behaviour: p.recycle_resets_behaviour,
    };
    d.validate()?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_round_trip() {
        let d = Definition::default();
        assert_eq!(from_proto(&to_proto(&d, None)).expect("valid"), d);
    }

    #[test]
    fn unknown_names_are_refused() {
        let mut p = to_proto(&Definition::default(), None);
        p.behaviour.as_mut().expect("set").touch_points.push(pb::TouchPoints { kind: 99, points: 5 });
        assert_eq!(from_proto(&p).unwrap_err().field, format!("behaviour.touch_points[{}].kind", 13));
    }
}
