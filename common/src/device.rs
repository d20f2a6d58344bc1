//! Device selection shared by every binary: `cpu` or `cuda:N`.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

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

/// A parsed device string, before any device is opened (config validation needs no GPU).
///
/// The one type for a device everywhere: config fields (`model.device`, `workers.devices`),
/// `--device` flags (via [`FromStr`]) and the device a worker registers with. Written back as
/// `cpu` or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    Cuda(usize),
}

impl DeviceSpec {
    /// Opens the device. A CUDA device runs its work on the per-thread default stream of the
    /// GPU's primary context.
    pub fn open(self) -> Result<Device, DeviceError> {
        self.open_with(Device::new_cuda)
    }

    /// Like [`DeviceSpec::open`], but a CUDA device gets its own stream (see
    /// [`parse_device_with_own_stream`]).
    pub fn open_with_own_stream(self) -> Result<Device, DeviceError> {
        self.open_with(Device::new_cuda_with_stream)
    }

    fn open_with(self, new_cuda: fn(usize) -> candle_core::Result<Device>) -> Result<Device, DeviceError> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(ordinal) => {
                new_cuda(ordinal).map_err(|source| DeviceError::Unavailable { spec: self.to_string(), source })
            }
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = DeviceError;
    fn from_str(s: &str) -> Result<Self, DeviceError> {
        parse_device_spec(s)
    }
}

impl Serialize for DeviceSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_device_spec(&text).map_err(serde::de::Error::custom)
    }
}

/// Parses `cpu`, `cuda` (= `cuda:0`) or `cuda:N` without opening anything.
pub fn parse_device_spec(spec: &str) -> Result<DeviceSpec, DeviceError> {
    let spec_trim = spec.trim();
    if spec_trim.eq_ignore_ascii_case("cpu") {
        return Ok(DeviceSpec::Cpu);
    }
    match spec_trim.strip_prefix("cuda") {
        Some("") => Ok(DeviceSpec::Cuda(0)),
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse::<usize>().ok())
            .map(DeviceSpec::Cuda)
            .ok_or_else(|| DeviceError::Invalid(spec.to_string())),
        None => Err(DeviceError::Invalid(spec.to_string())),
    }
}

/// Parses `cpu`, `cuda` (= `cuda:0`) or `cuda:N` and opens the device ([`DeviceSpec::open`]).
pub fn parse_device(spec: &str) -> Result<Device, DeviceError> {
    parse_device_spec(spec)?.open()
}

/// Like [`parse_device`], but a CUDA device gets its own stream (candle's
/// `Device::new_cuda_with_stream`) in the same primary context, for a rollout worker that runs
/// in the learner's process on the learner's GPU: its kernels then queue independently of the
/// learner's instead of serialising behind them. Candle treats the result as a different device
/// (ops on tensors of both fail with a device mismatch): tensors cross with `to_device`, which
/// copies through host memory, so such a worker keeps its own copy of the weights. Separate
/// processes already get separate contexts, so there this makes no difference. `cpu` gives the
/// CPU device. Without the `cuda` feature a `cuda:N` spec fails like it does in [`parse_device`].
pub fn parse_device_with_own_stream(spec: &str) -> Result<Device, DeviceError> {
    parse_device_spec(spec)?.open_with_own_stream()
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

    #[test]
    fn parses_specs_without_opening() {
        assert_eq!(parse_device_spec(" CPU ").unwrap(), DeviceSpec::Cpu);
        assert_eq!(parse_device_spec("cuda").unwrap(), DeviceSpec::Cuda(0));
        assert_eq!(parse_device_spec("cuda:3").unwrap(), DeviceSpec::Cuda(3));
        for bad in ["cuda:", "cuda:-1", "cuda0", "cuda:1:2", "", "metal"] {
            assert!(matches!(parse_device_spec(bad), Err(DeviceError::Invalid(_))), "{bad:?}");
        }
    }

    #[test]
    fn specs_round_trip_through_text_and_serde() {
        for (text, spec) in [("cpu", DeviceSpec::Cpu), ("cuda:0", DeviceSpec::Cuda(0)), ("cuda:7", DeviceSpec::Cuda(7))] {
            assert_eq!(text.parse::<DeviceSpec>().unwrap(), spec);
            assert_eq!(spec.to_string(), text);
            assert_eq!(serde_json::to_value(spec).unwrap(), serde_json::json!(text));
            assert_eq!(serde_json::from_value::<DeviceSpec>(serde_json::json!(text)).unwrap(), spec);
        }
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap().to_string(), "cuda:0");
        let err = serde_json::from_value::<DeviceSpec>(serde_json::json!("gpu0")).unwrap_err().to_string();
        assert!(err.contains("gpu0") && err.contains("cuda:N"), "{err}");
        assert!(DeviceSpec::Cpu.open().unwrap().is_cpu());
    }

    #[test]
    fn own_stream_on_cpu_is_the_cpu() {
        assert!(parse_device_with_own_stream("cpu").unwrap().is_cpu());
        assert!(matches!(parse_device_with_own_stream("gpu"), Err(DeviceError::Invalid(_))));
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_feature_is_a_clear_error() {
        for open in [parse_device, parse_device_with_own_stream] {
            let err = open("cuda:0").unwrap_err().to_string();
            assert!(err.contains("cuda:0"), "{err}");
        }
    }

    /// Needs a GPU: without one (CI, or the libcuda stub) it checks the failure is a clean
    /// `Unavailable` naming the spec, and returns.
    #[cfg(feature = "cuda")]
    #[test]
    fn own_stream_differs_from_default_stream() {
        let shared = match parse_device("cuda:0") {
            Ok(d) => d,
            Err(e) => {
                assert!(matches!(e, DeviceError::Unavailable { .. }), "{e}");
                assert!(e.to_string().contains("cuda:0"), "{e}");
                eprintln!("skipping: no usable GPU ({e})");
                return;
            }
        };
        let own = parse_device_with_own_stream("cuda:0").unwrap();
        let (a, b) = (shared.as_cuda_device().unwrap(), own.as_cuda_device().unwrap());
        assert_ne!(a.cuda_stream().cu_stream(), b.cuda_stream().cu_stream());
        assert!(shared.same_device(&shared.clone()));
        assert!(!shared.same_device(&own), "candle must treat the two as distinct devices");
        // A tensor made on the default stream, copied over and computed on the own stream.
        let t = candle_core::Tensor::arange(0f32, 8., &shared).unwrap();
        let u = t.to_device(&own).unwrap().affine(2., 1.).unwrap();
        assert_eq!(u.to_vec1::<f32>().unwrap(), (0..8).map(|i| 2. * i as f32 + 1.).collect::<Vec<_>>());
    }
}
