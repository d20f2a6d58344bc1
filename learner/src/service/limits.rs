//! Bounds on everything a client controls, checked before anything is allocated or changed.
//! Message size, concurrency and deadlines are the transport's (`GrpcServerConfig`); per-worker
//! lease caps and the registry size are in `LeaseConfig`. docs/grpc.md lists them all.

use asrl_proto::v1 as pb;
use tonic::Status;

/// `RegisterRequest.name`: 1 to 256 bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// `RegisterRequest.device`: `cpu` or `cuda:N`, at most 64 bytes.
pub const MAX_DEVICE_BYTES: usize = 64;
/// `RegisterRequest.capabilities`: at most 32 flags of at most 64 bytes.
pub const MAX_CAPABILITIES: usize = 32;
pub const MAX_CAPABILITY_BYTES: usize = 64;
/// Reward components per completion, and the bytes of each name.
pub const MAX_REWARD_COMPONENTS: usize = 64;
pub const MAX_REWARD_NAME_BYTES: usize = 128;
/// `PromptReturn.message` is cut to this many bytes (the return itself is kept).
pub const MAX_RETURN_MESSAGE_BYTES: usize = 1024;
/// Lines of one `AddExamples` request.
pub const MAX_ADD_EXAMPLES_LINES: usize = 10_000;
/// Rejected lines listed in one `AddExamplesResponse` (`rejected_total` counts them all).
pub const MAX_REJECTIONS_LISTED: usize = 100;

/// Checks a registration's fields; errors name the field and the bound.
pub fn check_register(r: &pb::RegisterRequest) -> Result<(), Status> {
    if r.name.is_empty() || r.name.len() > MAX_NAME_BYTES {
        return Err(Status::invalid_argument(format!("name: must be 1 to {MAX_NAME_BYTES} bytes, got {}", r.name.len())));
    }
    if r.device.len() > MAX_DEVICE_BYTES || r.device.parse::<asrl_common::device::DeviceSpec>().is_err() {
        let shown: String = r.device.chars().take(MAX_DEVICE_BYTES).collect();
        return Err(Status::invalid_argument(format!("device: {shown:?} is not `cpu` or `cuda:N`")));
    }
    if r.capabilities.len() > MAX_CAPABILITIES {
        return Err(Status::invalid_argument(format!(
            "capabilities: {} entries exceed the limit of {MAX_CAPABILITIES}",
            r.capabilities.len()
        )));
    }
    if let Some((i, c)) = r.capabilities.iter().enumerate().find(|(_, c)| c.len() > MAX_CAPABILITY_BYTES) {
        return Err(Status::invalid_argument(format!(
            "capabilities[{i}]: {} bytes exceed the limit of {MAX_CAPABILITY_BYTES}",
            c.len()
        )));
    }
    Ok(())
}

/// `s` cut to at most `max` bytes on a character boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(name: &str, device: &str, caps: Vec<String>) -> pb::RegisterRequest {
        pb::RegisterRequest { name: name.into(), device: device.into(), capabilities: caps, max_sequences: 0 }
    }

    #[test]
    fn register_fields_are_bounded_by_name() {
        assert!(check_register(&reg("w", "cuda:1", vec!["bf16".into()])).is_ok());
        for (r, field) in [
            (reg("", "cpu", vec![]), "name"),
            (reg(&"n".repeat(MAX_NAME_BYTES + 1), "cpu", vec![]), "name"),
            (reg("w", "gpu", vec![]), "device"),
            (reg("w", &"c".repeat(10_000), vec![]), "device"),
            (reg("w", "cpu", vec!["x".into(); MAX_CAPABILITIES + 1]), "capabilities"),
            (reg("w", "cpu", vec!["x".repeat(MAX_CAPABILITY_BYTES + 1)]), "capabilities[0]"),
        ] {
            let e = check_register(&r).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().starts_with(&format!("{field}:")), "{field}: {}", e.message());
            assert!(e.message().len() < 200, "the message must not echo the oversized field");
        }
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate_utf8("héllo", 2), "h");
        assert_eq!(truncate_utf8("héllo", 3), "hé");
        assert_eq!(truncate_utf8("abc", 10), "abc");
    }
}
