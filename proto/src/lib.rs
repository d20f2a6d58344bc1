//! Generated gRPC code for package `asrl.v1` (see `proto/asrl/v1/*.proto`).
//!
//! - `asrl.v1.Learner`: the learner service rollout workers talk to.
//! - `asrl.v1.Worker`: a rollout worker's own status endpoint.
//! - `asrl.v1.RewardService`: an external reward service users may implement.

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("asrl.v1");
}

/// Encoded `FileDescriptorSet` of every `asrl.v1` file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/asrl_v1_descriptor.bin"));

#[cfg(test)]
mod tests {
    use prost::Message;

    #[test]
    fn descriptor_set_names_every_service() {
        let fds = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).unwrap();
        let services: Vec<String> = fds
            .file
            .iter()
            .flat_map(|f| f.service.iter().map(move |s| format!("{}.{}", f.package(), s.name())))
            .collect();
        for want in ["asrl.v1.Learner", "asrl.v1.Worker", "asrl.v1.RewardService"] {
            assert!(services.iter().any(|s| s == want), "{want} missing from {services:?}");
        }
    }
}
