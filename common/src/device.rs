//! Device selection shared by every binary: `cpu` or `cuda:N`.

use candle_core::Device;

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("invalid device {0:?}: expected `cpu` or `cuda:N`")]
    Invalid(String),
    #[error("device {spec}: {source}")]
    Unavailable {
        spec: String,
        #[source]
        source: candle_core::Error,
    },
}

/// Parses `cpu`, `cuda` (= `cuda:0`) or `cuda:N` and opens the device.
pub fn parse_device(spec: &str) -> Result<Device, DeviceError> {
    let spec_trim = spec.trim();
    if spec_trim.eq_ignore_ascii_case("cpu") {
        return Ok(Device::Cpu);
    }
    let ordinal = match spec_trim.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| DeviceError::Invalid(spec.to_string()))?,
        None => return Err(DeviceError::Invalid(spec.to_string())),
    };
    Device::new_cuda(ordinal).map_err(|source| DeviceError::Unavailable { spec: spec.to_string(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_rejects_garbage() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(matches!(parse_device("gpu:0"), Err(DeviceError::Invalid(_))));
        assert!(matches!(parse_device("cuda:x"), Err(DeviceError::Invalid(_))));
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_feature_is_a_clear_error() {
        let err = parse_device("cuda:0").unwrap_err().to_string();
        assert!(err.contains("cuda:0"), "{err}");
    }
}
