//! `asrl-tools bench adapter-push`: a learner server publishes an adapter of a given LoRA shape
//! and a worker-side client downloads it over loopback into memory, reassembled and
//! checksum-verified (`scripts/bench-adapter-push.sh`).

use std::time::{Duration, Instant};

use asrl_common::config::{GrpcClientConfig, GrpcServerConfig, LeaseConfig};
use asrl_common::rollout::AdapterVersion;
use asrl_common::transport::{self, fetch_adapter_into, recycle_buffer};
use asrl_learner::service::{new_learner, serve_learner, ServiceError, ServiceOptions};
use asrl_proto::v1::RegisterRequest;

#[derive(clap::Args, Debug)]
pub struct AdapterPushArgs {
    /// Timed downloads.
    #[arg(default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub iterations: u32,
}

/// The projection shapes LoRA adapts in one decoder layer: (name, in_features, out_features).
pub fn layer_projections(hidden: usize, q_dim: usize, kv_dim: usize, intermediate: usize) -> [(&'static str, usize, usize); 7] {
    [
        ("self_attn.q_proj", hidden, q_dim),
        ("self_attn.k_proj", hidden, kv_dim),
        ("self_attn.v_proj", hidden, kv_dim),
        ("self_attn.o_proj", q_dim, hidden),
        ("mlp.gate_proj", hidden, intermediate),
        ("mlp.up_proj", hidden, intermediate),
        ("mlp.down_proj", intermediate, hidden),
    ]
}

/// A PEFT-named f32 safetensors payload of a rank-`r` adapter on all 7 projections of
/// `layers` layers, filled with deterministic values. Returns (bytes, parameter count).
pub fn synthetic_adapter(
    layers: usize,
    hidden: usize,
    q_dim: usize,
    kv_dim: usize,
    intermediate: usize,
    r: usize,
) -> Result<(Vec<u8>, usize), safetensors::SafeTensorError> {
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut params = 0usize;
    for layer in 0..layers {
        for (name, fan_in, fan_out) in layer_projections(hidden, q_dim, kv_dim, intermediate) {
            for (ab, shape) in [("lora_A", vec![r, fan_in]), ("lora_B", vec![fan_out, r])] {
                let n: usize = shape.iter().product();
                params += n;
                let data: Vec<u8> = (0..n).flat_map(|i| (((i + layer) % 997) as f32 * 1e-4).to_le_bytes()).collect();
                tensors.push((format!("base_model.model.model.layers.{layer}.{name}.{ab}.weight"), shape, data));
            }
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, shape, data)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data).map(|v| (name.clone(), v))
        })
        .collect::<Result<_, _>>()?;
    Ok((safetensors::serialize(views, None)?, params))
}

#[derive(Debug, Clone)]
pub struct PushReport {
    pub payload_bytes: usize,
    pub params: usize,
    /// Every timed push, in order: request, chunk stream, reassembly into one buffer and
    /// checksum verification, ending with the verified payload in worker memory. The channel is
    /// connected and the worker registered beforehand. The first push reassembles into fresh
    /// memory, later ones into the previous push's buffer, as the worker does.
    pub times: Vec<Duration>,
    /// After each push, untimed above: parsing the payload into CPU candle tensors, the first
    /// step of the worker's `load_adapter` (the merge into base weights that follows is not
    /// transport and is not measured here).
    pub parse_times: Vec<Duration>,
}

impl PushReport {
    pub fn median(&self) -> Duration {
        median(&self.times)
    }
    pub fn min(&self) -> Duration {
        self.times.iter().copied().min().unwrap_or_default()
    }
    pub fn max(&self) -> Duration {
        self.times.iter().copied().max().unwrap_or_default()
    }
    pub fn parse_median(&self) -> Duration {
        median(&self.parse_times)
    }
}

/// Upper median (the middle value for odd counts); zero for no values.
pub fn median(times: &[Duration]) -> Duration {
    let mut t = times.to_vec();
    t.sort();
    t.get(t.len() / 2).copied().unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("building the synthetic adapter: {0}")]
    Safetensors(#[from] safetensors::SafeTensorError),
    #[error(transparent)]
    Transport(#[from] asrl_common::transport::TransportError),
    #[error(transparent)]
    Fetch(#[from] asrl_common::transport::FetchError),
    #[error("register: {0}")]
    Register(#[from] tonic::Status),
    #[error("publishing: {0}")]
    Publish(#[from] ServiceError),
    #[error("parsing the downloaded safetensors: {0}")]
    Parse(#[from] candle_core::Error),
    #[error("downloaded payload differs from the published one")]
    Mismatch,
    #[error("iterations must be at least 1")]
    NoIterations,
}

/// Qwen3-0.6B, r = 32, all 7 projections: 28 layers, hidden 1024, q 16×128, kv 8×128, mlp 3072.
pub fn qwen3_0_6b_r32() -> Result<(Vec<u8>, usize), safetensors::SafeTensorError> {
    synthetic_adapter(28, 1024, 16 * 128, 8 * 128, 3072, 32)
}

/// Serves `payload` from an in-process learner on 127.0.0.1 and downloads it `iterations` times.
pub async fn run_adapter_push(payload: Vec<u8>, params: usize, iterations: usize) -> Result<PushReport, BenchError> {
    if iterations == 0 {
        return Err(BenchError::NoIterations);
    }
    let (service, handle, _experiences) =
        new_learner(ServiceOptions::new(LeaseConfig::default(), 151_936), None);
    let payload_bytes = payload.len();
    let expected = transport::AdapterPayload::new(AdapterVersion::INITIAL, payload.clone());
    handle.publish_adapter(AdapterVersion::INITIAL, payload)?;
    let server_cfg = GrpcServerConfig { bind: ([127, 0, 0, 1], 0).into(), ..Default::default() };
    let server = serve_learner(&server_cfg, service).await?;
    let client_cfg = GrpcClientConfig { url: format!("http://{}", server.local_addr()), ..Default::default() };
    let mut client = transport::learner_client(transport::connect(&client_cfg).await?, &client_cfg)?;
    let worker_id = client
        .register(RegisterRequest { name: "bench".into(), device: "cpu".into(), capabilities: vec![], max_sequences: 0 })
        .await?
        .into_inner()
        .worker_id;
    let expected_tensors = safetensors::SafeTensors::deserialize(&expected.bytes)?.len();
    let mut times = Vec::with_capacity(iterations);
    let mut parse_times = Vec::with_capacity(iterations);
    // Like the worker: each download reuses the previous one's buffer (the first gets fresh memory).
    let mut buf = Vec::new();
    for _ in 0..iterations {
        let t0 = Instant::now();
        let got = fetch_adapter_into(&mut client, worker_id, AdapterVersion::INITIAL, Duration::from_secs(60), buf).await?;
        times.push(t0.elapsed());
        if got.checksum != expected.checksum || got.bytes != expected.bytes {
            return Err(BenchError::Mismatch);
        }
        let t1 = Instant::now();
        let tensors = candle_core::safetensors::load_buffer(&got.bytes, &candle_core::Device::Cpu)?;
        parse_times.push(t1.elapsed());
        if tensors.len() != expected_tensors {
            return Err(BenchError::Mismatch);
        }
        drop(tensors);
        buf = recycle_buffer(got.bytes);
    }
    server.shutdown().await?;
    Ok(PushReport { payload_bytes, params, times, parse_times })
}

/// Reference costs on this machine for the same payload, median of `runs`: copying it into
/// freshly allocated memory (what reassembly must do at least once) and checksumming it.
pub fn memory_floor(payload: &[u8], runs: usize) -> (Duration, Duration) {
    let mut copy = Vec::with_capacity(runs);
    let mut hash = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let v = std::hint::black_box(payload.to_vec());
        copy.push(t.elapsed());
        drop(v);
        let t = Instant::now();
        std::hint::black_box(transport::adapter::checksum(std::hint::black_box(payload)));
        hash.push(t.elapsed());
    }
    (median(&copy), median(&hash))
}

/// Runs the benchmark and prints the figures `scripts/bench-adapter-push.sh` reports.
pub fn run(args: &AdapterPushArgs) -> anyhow::Result<()> {
    let (payload, params) = qwen3_0_6b_r32()?;
    let (copy_floor, hash_floor) = memory_floor(&payload, 5);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = rt.block_on(run_adapter_push(payload, params, args.iterations as usize))?;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    const TARGET_MS: f64 = 100.0;
    println!(
        "adapter push (Qwen3-0.6B r=32, 7 modules): {} params, {} bytes ({:.1} MiB) over loopback, {} runs",
        report.params,
        report.payload_bytes,
        report.payload_bytes as f64 / (1 << 20) as f64,
        report.times.len()
    );
    println!(
        "first {:.1} ms, min {:.1} ms, median {:.1} ms, max {:.1} ms ({:.2} GB/s at median)",
        ms(report.times[0]),
        ms(report.min()),
        ms(report.median()),
        ms(report.max()),
        report.payload_bytes as f64 / report.median().as_secs_f64() / 1e9
    );
    println!(
        "not included above: parse into candle tensors, median {:.1} ms; reference on this machine: \
         copy into fresh memory {:.1} ms, XXH3-128 checksum {:.1} ms",
        ms(report.parse_median()),
        ms(copy_floor),
        ms(hash_floor)
    );
    let median = ms(report.median());
    println!(
        "adapter push median {median:.1} ms, target <= {TARGET_MS:.0} ms: {}",
        if median <= TARGET_MS { "met" } else { "NOT met" }
    );
    Ok(())
}
