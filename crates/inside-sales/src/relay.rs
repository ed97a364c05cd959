//! Delivers inside sales' hand-overs: opportunities to field sales, recycled
//! leads to marketing.

use themodel_proto::fieldsales::v1 as fs;
use themodel_proto::fieldsales::v1::field_sales_service_client::FieldSalesServiceClient;
use themodel_proto::marketing::v1 as mk;
use themodel_proto::marketing::v1::marketing_service_client::MarketingServiceClient;
use themodel_runtime::outbox::{Deliver, Message};
use themodel_runtime::telemetry::PeerChannel;
use themodel_runtime::time::to_timestamp;
use tonic::Status;

use crate::domain::{OpportunityHandover, RecycleHandover};

#[derive(Debug, Clone)]
pub struct Peers {
    pub field_sales: FieldSalesServiceClient<PeerChannel>,
    pub marketing: MarketingServiceClient<PeerChannel>,
}

impl Deliver for Peers {
    async fn deliver(&self, m: &Message) -> Result<(), Status> {
        match m.kind.as_str() {
            "accept_opportunity" => {
                let h: OpportunityHandover = m.decode()?;
                self.field_sales
                    .clone()
                    .accept_opportunity(fs::AcceptOpportunityRequest {
                        request_id: m.id.clone(),
                        opportunity_id: h.opportunity_id,
                        lead_id: h.lead_id,
                        company: h.company,
                        contact_name: h.contact_name,
                        contact_email: h.contact_email,
                        source: h.source,
                        bant: Some(h.bant.to_proto()),
                        estimated_value: h.estimated_value.map(|v| v.to_proto()),
                        quality: h.quality,
                        definition_version: h.definition_version,
                        occurred_at: Some(to_timestamp(h.occurred_at)),
                    })
                    .await?;
                Ok(())
            }
            "recycle_lead" => {
                let h: RecycleHandover = m.decode()?;
                self.marketing
                    .clone()
                    .recycle_lead(mk::RecycleLeadRequest {
                        request_id: m.id.clone(),
                        lead_id: h.lead_id,
                        reason: h.reason,
                        from: "inside_sales".to_owned(),
                        timing_months: h.timing_months,
                        note: h.note,
                        occurred_at: Some(to_timestamp(h.occurred_at)),
                    })
                    .await?;
                Ok(())
            }
            other => Err(Status::internal(format!("unknown hand-over kind {other}"))),
        }
    }
}
