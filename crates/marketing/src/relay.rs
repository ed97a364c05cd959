//! Delivers marketing's hand-overs: promising leads to inside sales.

use themodel_proto::insidesales::v1 as is;
use themodel_proto::insidesales::v1::inside_sales_service_client::InsideSalesServiceClient;
use themodel_runtime::outbox::{Deliver, Message};
use themodel_runtime::telemetry::PeerChannel;
use themodel_runtime::time::to_timestamp;
use tonic::Status;

use crate::domain::LeadHandover;

#[derive(Debug, Clone)]
pub struct Peers {
    pub inside_sales: InsideSalesServiceClient<PeerChannel>,
}

impl Deliver for Peers {
    async fn deliver(&self, m: &Message) -> Result<(), Status> {
        match m.kind.as_str() {
            "accept_lead" => {
                let h: LeadHandover = m.decode()?;
                self.inside_sales
                    .clone()
                    .accept_lead(is::AcceptLeadRequest {
                        request_id: m.id.clone(),
                        lead_id: h.lead_id,
                        email: h.email,
                        name: h.name,
                        company: h.company,
                        job_title: h.job_title,
                        source: h.source,
                        score: h.score,
                        definition_version: h.definition_version,
                        handed_over_at: Some(to_timestamp(h.handed_over_at)),
                        company_size: h.company_size,
                        industry: h.industry,
                    })
                    .await?;
                Ok(())
            }
            other => Err(Status::internal(format!("unknown hand-over kind {other}"))),
        }
    }
}
