//! The generated protobuf types and gRPC stubs of `interview_webhooks.v1`.

#![allow(missing_docs)]

tonic::include_proto!("interview_webhooks.v1");

/// The encoded descriptors of our protos, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("interview_webhooks_descriptor");

/// A Unix-ms time as a protobuf timestamp.
pub fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}
