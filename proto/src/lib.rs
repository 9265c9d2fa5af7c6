//! The `classgrid.v1` wire contract shared by the broker, agent, edge and CLI.

pub mod v1 {
    tonic::include_proto!("classgrid.v1");

    /// Encoded descriptors for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/classgrid_descriptor.bin"));
}
