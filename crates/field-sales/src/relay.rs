//! Delivers field sales' hand-overs: won accounts to customer success, lost
//! deals' leads to marketing.

use themodel_proto::customersuccess::v1 as cs;
use themodel_proto::customersuccess::v1::customer_success_service_client::CustomerSuccessServiceClient;
use themodel_proto::marketing::v1 as mk;
use themodel_proto::marketing::v1::marketing_service_client::MarketingServiceClient;
use themodel_runtime::outbox::{Deliver, Message};
use themodel_runtime::telemetry::PeerChannel;
use themodel_runtime::time::to_timestamp;
use tonic::Status;

use crate::domain::{RecycleHandover, WonDealHandover};

#[derive(Debug, Clone)]
pub struct Peers {
    pub customer_success: CustomerSuccessServiceClient<PeerChannel>,
    pub marketing: MarketingServiceClient<PeerChannel>,
}

impl Deliver for Peers {
    async fn deliver(&self, m: &Message) -> Result<(), Status> {
        match m.kind.as_str() {
            "accept_won_deal" => {
                let h: WonDealHandover = m.decode()?;
                self.customer_success
                    .clone()
                    .accept_won_deal(cs::AcceptWonDealRequest {
                        request_id: m.id.clone(),
                        account_id: h.account_id,
                        opportunity_id: h.opportunity_id,
                        lead_id: h.lead_id,
                        company: h.company,
                        contact_name: h.contact_name,
                        contact_email: h.contact_email,
                        contract_value: Some(h.contract_value.to_proto()),
                        term_months: h.term_months,
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
                        from: "field_sales".to_owned(),
                        timing_months: 0,
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
