//! `themodel.kpi.v1.KpiService`: the funnel, and the shared quality definitions.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use themodel_proto::kpi::v1 as pb;
use themodel_proto::kpi::v1::kpi_service_server::KpiService;
use themodel_runtime::definition::{from_proto, to_proto};
use themodel_runtime::error::{ApiError, ApiResult};
use themodel_runtime::events::NewEvent;
use themodel_runtime::idempotency::Idempotency;
use themodel_runtime::validate::Violations;
use themodel_runtime::{Clock, Db};
use tokio::task::JoinSet;
use tonic::{Request, Response, Status};

use crate::consumer::Consumer;
use crate::domain::{self, SOURCES};
use crate::store;

/// The kpi service's handlers.
#[derive(Debug, Clone)]
pub struct Api {
    pub db: Db,
    pub clock: Clock,
    pub time_zone: String,
    /// The stream consumers, for catching up before a read.
    pub consumers: Arc<[Arc<Consumer>]>,
}

/// How long a read waits for the streams before answering with what it has.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(2);

impl Api {
    #[tracing::instrument(skip_all, fields(start = %req.start_date, end = %req.end_date))]
    async fn get_funnel(&self, req: pb::GetFunnelRequest) -> ApiResult<pb::Funnel> {
        let mut v = Violations::new();
        let mut day = |field: &str, value: &str| {
            if value.is_empty() {
                v.add(field, "is required (YYYY-MM-DD)");
                return None;
            }
            let d = domain::parse_day(value);
            if d.is_none() {
                v.add(field, "must be a date YYYY-MM-DD");
            }
            d
        };
        let start = day("start_date", &req.start_date);
        let end = day("end_date", &req.end_date);
        if let (Some(s), Some(e)) = (start, end)
            && e <= s
        {
            v.add("end_date", "must be after start_date (the period is [start_date, end_date))");
        }
        v.finish()?;
        let (start, end) = (start.unwrap_or_default(), end.unwrap_or_default());

        // Read-your-writes: everything the services committed before this call
        // is in the answer. A source that is down is reported through
        // `sources` (its applied_seq stops moving), not as an error.
        let mut catching_up = JoinSet::new();
        for c in self.consumers.iter().cloned() {
            catching_up.spawn(async move { (c.source, c.catch_up().await) });
        }
        let all = async {
            while let Some(joined) = catching_up.join_next().await {
                if let Ok((source, Err(e))) = joined {
                    tracing::debug!(source, error = format!("{e:#}"), "stream not caught up for this read");
                }
            }
        };
        if tokio::time::timeout(CATCH_UP_TIMEOUT, all).await.is_err() {
            tracing::warn!("event streams did not catch up in time; answering with what is applied");
        }

        let c = store::counts(&self.db, start, end).await?;
        let r = c.rates();
        let cursors = store::cursors(&self.db).await?;
        Ok(pb::Funnel {
            view: pb::View::Flow as i32,
            start_date: req.start_date,
            end_date: req.end_date,
            time_zone: self.time_zone.clone(),
            visitors: c.visitors,
            leads: c.leads,
            excluded_leads: c.excluded_leads,
            valid_leads: c.valid_leads(),
            opportunities: c.opportunities,
            wins: c.wins,
            losses: c.losses,
            retained: c.retained,
            churned: c.churned,
            acquisition_rate: r.acquisition,
            opportunity_rate: r.opportunity,
            win_rate: r.win,
            renewal_rate: r.renewal,
            churn_rate: r.churn,
            sources: SOURCES
                .iter()
                .map(|s| {
                    let c = cursors.get(*s).cloned().unwrap_or_default();
                    pb::SourcePosition { service: (*s).to_owned(), applied_seq: c.applied_seq, stream_id: c.stream_id }
                })
                .collect(),
        })
    }

    #[tracing::instrument(skip_all, fields(version = req.version))]
    async fn get_quality_definition(&self, req: pb::GetQualityDefinitionRequest) -> ApiResult<pb::QualityDefinition> {
        let mut v = Violations::new();
        v.check(req.version >= 0, "version", "must not be negative (0 = current)");
        v.finish()?;
        let (d, at) = store::definition(&self.db, req.version)
            .await?
            .ok_or_else(|| ApiError::not_found("quality definition version", req.version.to_string()))?;
        Ok(to_proto(&d, Some(at)))
    }

    #[tracing::instrument(skip_all)]
    async fn publish_quality_definition(
        &self,
        req: pb::PublishQualityDefinitionRequest,
    ) -> ApiResult<pb::QualityDefinition> {
        let mut v = Violations::new();
        v.request_id(&req.request_id);
        let definition = match &req.definition {
            None => {
                v.add("definition", "is required");
                None
            }
            Some(p) => match from_proto(p) {
                Ok(d) => Some(d),
                Err(e) => {
                    v.add(&format!("definition.{}", e.field), e.message);
                    None
                }
            },
        };
        v.finish()?;
        let Some(definition) = definition else {
            return Err(ApiError::field("definition", "is required"));
        };

        let key = Idempotency::new("/themodel.kpi.v1.KpiService/PublishQualityDefinition", &req.request_id, &req);
        let mut tx = self.db.begin().await?;
        if let Some(first) = key.replay(&mut tx).await? {
            return Ok(first);
        }
        let now = self.clock.now();
        let published = store::publish(&mut tx, definition, now).await?;
        let evs = [NewEvent {
            kind: "definition_published",
            subject_id: published.version.to_string(),
            occurred_at: now,
            definition_version: published.version,
            payload: json!({ "version": published.version }),
        }];
        let resp = to_proto(&published, Some(now));
        key.commit(tx, &resp, &evs, now).await?;
        tracing::info!(version = published.version, "quality definition published");
        Ok(resp)
    }
}

#[tonic::async_trait]
impl KpiService for Api {
    async fn get_funnel(&self, request: Request<pb::GetFunnelRequest>) -> Result<Response<pb::Funnel>, Status> {
        Ok(Response::new(Api::get_funnel(self, request.into_inner()).await?))
    }

    async fn get_quality_definition(
        &self,
        request: Request<pb::GetQualityDefinitionRequest>,
    ) -> Result<Response<pb::QualityDefinition>, Status> {
        Ok(Response::new(Api::get_quality_definition(self, request.into_inner()).await?))
    }

    async fn publish_quality_definition(
        &self,
        request: Request<pb::PublishQualityDefinitionRequest>,
    ) -> Result<Response<pb::QualityDefinition>, Status> {
        Ok(Response::new(Api::publish_quality_definition(self, request.into_inner()).await?))
    }
}
