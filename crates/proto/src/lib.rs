//! The themodel gRPC contract: code generated from `proto/` at build time.
//!
//! This crate owns nothing but the wire types. It re-exports `tonic`, `prost`
//! and `prost_types` so every crate speaks the same versions, the encoded
//! file-descriptor set that server reflection serves, and [`HandoverRequest`]:
//! which requests one service sends another through its outbox.

pub use prost;
pub use prost_types;
pub use tonic;

/// Encoded `FileDescriptorSet` of every themodel proto and of the
/// `google.rpc` error details (for server reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/themodel_descriptor.bin"));

/// `themodel.common.v1`: BANT, money, the event stream and the outbox service.
pub mod common {
    pub mod v1 {
        tonic::include_proto!("themodel.common.v1");
    }
}

/// `themodel.marketing.v1`.
pub mod marketing {
    pub mod v1 {
        tonic::include_proto!("themodel.marketing.v1");
    }
}

/// `themodel.insidesales.v1`.
pub mod insidesales {
    pub mod v1 {
        tonic::include_proto!("themodel.insidesales.v1");
    }
}

/// `themodel.fieldsales.v1`.
pub mod fieldsales {
    pub mod v1 {
        tonic::include_proto!("themodel.fieldsales.v1");
    }
}

/// `themodel.customersuccess.v1`.
pub mod customersuccess {
    pub mod v1 {
        tonic::include_proto!("themodel.customersuccess.v1");
    }
}

/// `themodel.kpi.v1`.
pub mod kpi {
    pub mod v1 {
        tonic::include_proto!("themodel.kpi.v1");
    }
}

/// A request one service sends another as a hand-over: written into the
/// sender's outbox and delivered by its relay, with the hand-over id as the
/// receiver's `request_id`.
pub trait HandoverRequest: prost::Message + prost::Name + Sized {
    /// The receiving service, as peers are named in configuration.
    const DESTINATION: &'static str;
    /// The receiver's full gRPC method path.
    const METHOD: &'static str;

    /// Sets the receiver's idempotency key (the hand-over id).
    fn set_request_id(&mut self, id: String);

    /// The record the hand-over is about; hand-overs about one record are
    /// delivered in the order they were made.
    fn subject_id(&self) -> &str;
}

macro_rules! handover {
    ($ty:ty, $dest:literal, $method:literal, $subject:ident) => {
        impl HandoverRequest for $ty {
            const DESTINATION: &'static str = $dest;
            const METHOD: &'static str = $method;

            fn set_request_id(&mut self, id: String) {
                self.request_id = id;
            }

            fn subject_id(&self) -> &str {
                &self.$subject
            }
        }
    };
}

handover!(
    insidesales::v1::AcceptLeadRequest,
    "inside-sales",
    "/themodel.insidesales.v1.InsideSalesService/AcceptLead",
    lead_id
);
handover!(
    fieldsales::v1::AcceptOpportunityRequest,
    "field-sales",
    "/themodel.fieldsales.v1.FieldSalesService/AcceptOpportunity",
    opportunity_id
);
handover!(
    customersuccess::v1::AcceptWonDealRequest,
    "customer-success",
    "/themodel.customersuccess.v1.CustomerSuccessService/AcceptWonDeal",
    account_id
);
handover!(
    marketing::v1::RecycleLeadRequest,
    "marketing",
    "/themodel.marketing.v1.MarketingService/RecycleLead",
    lead_id
);
handover!(
    marketing::v1::ExcludeLeadRequest,
    "marketing",
    "/themodel.marketing.v1.MarketingService/ExcludeLead",
    lead_id
);
// An erasure follows the hand-overs that brought the record: same subject.
handover!(
    insidesales::v1::ErasePersonRequest,
    "inside-sales",
    "/themodel.insidesales.v1.InsideSalesService/ErasePerson",
    lead_id
);
handover!(
    fieldsales::v1::ErasePersonRequest,
    "field-sales",
    "/themodel.fieldsales.v1.FieldSalesService/ErasePerson",
    opportunity_id
);
handover!(
    customersuccess::v1::ErasePersonRequest,
    "customer-success",
    "/themodel.customersuccess.v1.CustomerSuccessService/ErasePerson",
    account_id
);

#[cfg(test)]
mod tests {
    use prost::Name;

    use super::*;

    #[test]
    fn event_type_urls_name_the_proto_messages() {
        assert_eq!(
            marketing::v1::MarketingEvent::type_url(),
            "type.googleapis.com/themodel.marketing.v1.MarketingEvent"
        );
        assert_eq!(common::v1::OutboxEvent::full_name(), "themodel.common.v1.OutboxEvent");
    }

    #[test]
    fn descriptor_set_describes_the_error_details() {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptor set");
        assert!(set.file.iter().any(|f| f.name() == "google/rpc/error_details.proto"));
    }
}
