//! `themodel.kpi.v1.KpiService`: the funnel, and the shared quality definitions.

use std::sync::Arc;
use std::time::Duration;

use themodel_proto::kpi::v1 as pb;
use themodel_proto::kpi::v1::kpi_service_server::KpiService;
use themodel_runtime::definition::{from_proto, to_proto};
use themodel_runtime::time::to_timestamp;
use themodel_runtime::validate::Violations;
use themodel_runtime::{ApiError, ApiResult, Call, Done, Effects, Need, Writer};
use tokio::task::JoinSet;
use tonic::{Request, Response, Status};

use crate::consumer::Consumer;
use crate::domain;
use crate::journey::Dimension;
use crate::store::{self, Definitions, Latest};

/// The kpi service's handlers.
#[derive(Debug, Clone)]
pub struct Api {
    pub writer: Writer<Definitions>,
    pub time_zone: String,
    /// The stream consumers, for catching up before a read.
    pub consumers: Arc<[Arc<Consumer>]>,
}

/// A funnel request, checked.
#[derive(Debug)]
struct FunnelQuery {
    start: i64,
    end: i64,
    view: pb::View,
    basis: store::Basis,
    split: Option<Dimension>,
}

impl FunnelQuery {
    fn parse(req: &pb::GetFunnelRequest) -> ApiResult<FunnelQuery> {
        let mut v = Violations::new();
        let mut day = |field: &str, value: &str, required: bool| {
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
        };
        let start = day("start_date", &req.start_date, true);
        let end = day("end_date", &req.end_date, true);
        let as_of = day("as_of_date", &req.as_of_date, false);
        if let (Some(s), Some(e)) = (start, end)
            && e <= s
        {
            v.add("end_date", "must be after start_date (the period is [start_date, end_date))");
        }
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
        let split = match pb::Dimension::try_from(req.split_by) {
            Ok(d) => Ok(dimension(d)),
            Err(_) => {
                v.add(
                    "split_by",
                    "must be one of DIMENSION_SOURCE, DIMENSION_CAMPAIGN, DIMENSION_CHANNEL, DIMENSION_INDUSTRY, \
                     DIMENSION_COMPANY_SIZE_BAND, DIMENSION_JOB_TITLE_CLASS, DIMENSION_DEFINITION_VERSION \
                     (or unset: no split)",
                );
                Err(())
            }
        };
        v.build(|| {
            let view = view?;
            let basis = match view {
                pb::View::Cohort => store::Basis::Cohort { as_of },
                _ => store::Basis::Flow,
            };
            Some(FunnelQuery { start: start?, end: end?, view, basis, split: split.ok()? })
        })
    }
}

/// The dimension a split asks for (`None`: no split).
fn dimension(d: pb::Dimension) -> Option<Dimension> {
    match d {
        pb::Dimension::Unspecified => None,
        pb::Dimension::Source => Some(Dimension::Source),
        pb::Dimension::Campaign => Some(Dimension::Campaign),
        pb::Dimension::Channel => Some(Dimension::Channel),
        pb::Dimension::Industry => Some(Dimension::Industry),
        pb::Dimension::CompanySizeBand => Some(Dimension::CompanySizeBand),
        pb::Dimension::JobTitleClass => Some(Dimension::JobTitleClass),
        pb::Dimension::DefinitionVersion => Some(Dimension::DefinitionVersion),
    }
}

/// How long a read waits for the streams before answering with what it has.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(2);

impl Api {
    #[tracing::instrument(skip_all, fields(start = %req.start_date, end = %req.end_date, view = req.view))]
    async fn get_funnel(&self, req: pb::GetFunnelRequest) -> ApiResult<pb::GetFunnelResponse> {
        let q = FunnelQuery::parse(&req)?;

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
                    tracing::debug!(
                        source = source.name(),
                        error = format!("{e:#}"),
                        "stream not caught up for this read"
                    );
                }
            }
        };
        if tokio::time::timeout(CATCH_UP_TIMEOUT, all).await.is_err() {
            tracing::warn!("event streams did not catch up in time; answering with what is applied");
        }

        let db = self.writer.db();
        let totals = store::counts(db, q.basis, None, q.start, q.end).await?.remove("").unwrap_or_default();
        let splits = match q.split {
            None => Default::default(),
            Some(dim) => store::counts(db, q.basis, Some(dim), q.start, q.end).await?,
        };
        let cursors = store::cursors(db).await?;
        let funnel = |c: &domain::Counts| {
            let r = c.rates();
            pb::Funnel {
                view: q.view as i32,
                start_date: req.start_date.clone(),
                end_date: req.end_date.clone(),
                time_zone: self.time_zone.clone(),
                visitors: c.visitors,
                leads: c.leads,
                excluded_leads: c.excluded_leads,
                valid_leads: c.valid_leads(),
                promising_leads: c.promising_leads,
                opportunities: c.opportunities,
                wins: c.wins,
                losses: c.losses,
                retained: c.retained,
                churned: c.churned,
                acquisition_rate: r.acquisition,
                promising_rate: r.promising,
                opportunity_rate: r.opportunity,
                win_rate: r.win,
                renewal_rate: r.renewal,
                churn_rate: r.churn,
                as_of_date: req.as_of_date.clone(),
                sources: Vec::new(),
            }
        };
        let mut total = funnel(&totals);
        total.sources = self
            .consumers
            .iter()
            .map(|consumer| {
                let name = consumer.source.name();
                let c = cursors.get(name).cloned().unwrap_or_default();
                pb::SourcePosition {
                    service: name.to_owned(),
                    applied_seq: c.applied_seq,
                    stream_id: c.stream_id,
                    error: consumer.error().unwrap_or_default(),
                }
            })
            .collect();
        Ok(pb::GetFunnelResponse {
            funnel: Some(total),
            split_by: req.split_by,
            splits: splits
                .iter()
                .map(|(value, c)| pb::FunnelSplit { value: value.clone(), funnel: Some(funnel(c)) })
                .collect(),
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
    async fn publish_quality_definition(
        &self,
        request: Request<pb::PublishQualityDefinitionRequest>,
    ) -> ApiResult<pb::PublishQualityDefinitionResponse> {
        let call =
            Call::new(&request, "/themodel.kpi.v1.KpiService/PublishQualityDefinition", &request.get_ref().request_id)?;
        let mut v = Violations::new();
        let definition = match &request.get_ref().definition {
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
        let definition = v.build(|| definition)?;
        let response: pb::PublishQualityDefinitionResponse = self
            .writer
            .execute(call, vec![Need::Row(Latest)], move |cx| {
                let mut published = definition.clone();
                published.version = cx.state.latest()? + 1;
                let event = pb::KpiEvent {
                    occurred_at: Some(to_timestamp(cx.now)),
                    event: Some(pb::kpi_event::Event::DefinitionPublished(pb::DefinitionPublished {
                        version: published.version,
                    })),
                };
                let resp =
                    pb::PublishQualityDefinitionResponse { definition: Some(to_proto(&published, Some(cx.now))) };
                Ok(Done::new(&resp).change((published, cx.now)).effects(Effects::default().event(event)))
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
        Ok(Response::new(Api::get_funnel(self, request.into_inner()).await?))
    }

    async fn get_quality_definition(
        &self,
        request: Request<pb::GetQualityDefinitionRequest>,
    ) -> Result<Response<pb::GetQualityDefinitionResponse>, Status> {
        Ok(Response::new(Api::get_quality_definition(self, request.into_inner()).await?))
    }

    async fn publish_quality_definition(
        &self,
        request: Request<pb::PublishQualityDefinitionRequest>,
    ) -> Result<Response<pb::PublishQualityDefinitionResponse>, Status> {
        Ok(Response::new(Api::publish_quality_definition(self, request).await?))
    }
}
