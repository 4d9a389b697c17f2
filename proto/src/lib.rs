//! Generated protobuf types, tonic clients and servers for every Payouts service contract.
//! The `.proto` sources live beside this crate under `proto/payouts/<service>/v1/`.

#![allow(clippy::doc_lazy_continuation, clippy::large_enum_variant)]

/// Encoded `FileDescriptorSet` of every contract, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/payouts_descriptor.bin"));

pub mod common {
    pub mod v1 {
        tonic::include_proto!("payouts.common.v1");
    }
}

pub mod webhooks {
    pub mod v1 {
        tonic::include_proto!("payouts.webhooks.v1");
    }
}

pub mod payouts {
    pub mod v1 {
        tonic::include_proto!("payouts.payouts.v1");
    }
}

pub mod limits {
    pub mod v1 {
        tonic::include_proto!("payouts.limits.v1");
    }
}

pub mod approvals {
    pub mod v1 {
        tonic::include_proto!("payouts.approvals.v1");
    }
}

pub mod disputes {
    pub mod v1 {
        tonic::include_proto!("payouts.disputes.v1");
    }
}

pub mod balance {
    pub mod v1 {
        tonic::include_proto!("payouts.balance.v1");
    }
}

pub mod notifications {
    pub mod v1 {
        tonic::include_proto!("payouts.notifications.v1");
    }
}
