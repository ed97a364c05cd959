//! The themodel gRPC contract: code generated from `proto/` at build time.
//!
//! This crate owns nothing but the wire types. It re-exports `tonic`, `prost`
//! and `prost_types` so every crate speaks the same versions, and the encoded
//! file-descriptor set that server reflection serves.

pub use prost;
pub use prost_types;
pub use tonic;

/// Encoded `FileDescriptorSet` of every themodel proto (for server reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/themodel_descriptor.bin"));

/// `themodel.common.v1`: BANT, money, and the event stream every service serves.
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
