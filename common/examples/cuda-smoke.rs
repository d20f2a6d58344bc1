//! First thing to run on a GPU machine: `cuda-smoke [DEVICE]` (default `cuda:0`).
//!
//! Opens the device the way the binaries do (`parse_device`, then `parse_device_with_own_stream`)
//! and checks, against the CPU, the four CUDA paths training relies on: cuBLAS matmuls (bf16 and
//! f32, Qwen3-0.6B-sized), candle's PTX kernels (rms-norm, softmax, silu; loaded by the driver
//! JIT), cuRAND, and a second device on its own stream. Exit 0: all agree; 1: a check failed or the device
//! could not be opened; 2: bad arguments. Also runs with `cpu` (then it only checks itself), so
//! CI keeps it compiling and running.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use asrl_common::device::{parse_device, parse_device_with_own_stream};
use candle_core::{DType, Device, Tensor, D};

/// Qwen3-0.6B: hidden 1024, MLP 3072.
const HIDDEN: usize = 1024;
const MLP: usize = 3072;
const TOKENS: usize = 256;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() > 1 || args.first().is_some_and(|a| a.starts_with('-')) {
        eprintln!("error: usage: cuda-smoke [cpu|cuda|cuda:N]");
        std::process::exit(2);
    }
    let spec = args.first().map(String::as_str).unwrap_or("cuda:0");
    if let Err(e) = asrl_common::device::parse_device_spec(spec) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    match run(spec) {
        Ok(()) => println!("cuda-smoke: all checks passed on {spec}"),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run(spec: &str) -> Result<()> {
    let dev = parse_device(spec)?;
    println!("device {spec}: {:?}", dev.location());
    let cpu = Device::Cpu;

    // Inputs are made on the CPU so both sides start from the same numbers.
    let x = Tensor::randn(0f32, 1., (TOKENS, HIDDEN), &cpu)?;
    let w = (Tensor::randn(0f32, 1., (MLP, HIDDEN), &cpu)? * (1. / (HIDDEN as f64).sqrt()))?;
    let alpha = Tensor::randn(1f32, 0.1, HIDDEN, &cpu)?;
    let expect_mm = x.matmul(&w.t()?)?;

    let (xd, wd) = (x.to_device(&dev)?, w.to_device(&dev)?);
    let got = xd.matmul(&wd.t()?)?;
    check("f32 matmul (cuBLAS)", &got, &expect_mm, 5e-2)?;
    let got = xd.to_dtype(DType::BF16)?.matmul(&wd.to_dtype(DType::BF16)?.t()?)?;
    check("bf16 matmul (cuBLAS)", &got.to_dtype(DType::F32)?, &expect_mm, 0.15)?;

    let expect = candle_nn::ops::rms_norm(&x, &alpha, 1e-6)?;
    let got = candle_nn::ops::rms_norm(&xd, &alpha.to_device(&dev)?, 1e-6)?;
    check("rms_norm (PTX kernel)", &got, &expect, 1e-4)?;
    check("softmax (PTX kernel)", &candle_nn::ops::softmax_last_dim(&xd)?, &candle_nn::ops::softmax_last_dim(&x)?, 1e-5)?;
    check("silu (PTX kernel)", &xd.silu()?, &x.silu()?, 1e-5)?;

    let r = Tensor::randn(0f32, 1., (1024, 1024), &dev)?;
    let mean = r.mean_all()?.to_scalar::<f32>()?;
    let std = r.sqr()?.mean_all()?.to_scalar::<f32>()?.sqrt();
    if mean.abs() > 0.01 || (std - 1.).abs() > 0.01 {
        bail!("randn (cuRAND): mean {mean}, std {std}; expected about 0 and 1");
    }
    println!("ok   randn (cuRAND): mean {mean:+.4}, std {std:.4}");

    let own = parse_device_with_own_stream(spec)?;
    let got = x.to_device(&own)?.matmul(&w.to_device(&own)?.t()?)?;
    check("f32 matmul on own stream", &got, &expect_mm, 5e-2)?;

    time_bf16_matmul(&dev)?;
    Ok(())
}

fn check(what: &str, got: &Tensor, expect: &Tensor, tol: f32) -> Result<()> {
    let diff = (got.to_device(&Device::Cpu)? - expect)?.abs()?.max_all()?.to_scalar::<f32>()?;
    if !diff.is_finite() || diff > tol {
        bail!("{what}: max abs difference to the CPU {diff} > {tol}");
    }
    println!("ok   {what}: max abs diff {diff:.2e}");
    Ok(())
}

/// Not a benchmark: a plausibility figure, so a wildly slow device (wrong arch, JIT every call)
/// shows up at once.
fn time_bf16_matmul(dev: &Device) -> Result<()> {
    let a = Tensor::randn(0f32, 1., (4096, HIDDEN), dev)?.to_dtype(DType::BF16)?;
    let b = Tensor::randn(0f32, 1., (HIDDEN, MLP), dev)?.to_dtype(DType::BF16)?;
    a.matmul(&b)?.sum_keepdim(D::Minus1)?; // warm-up: cuBLAS handle, kernel selection
    dev.synchronize()?;
    let iters = if dev.is_cpu() { 2 } else { 50 };
    let start = Instant::now();
    for _ in 0..iters {
        a.matmul(&b)?;
    }
    dev.synchronize().context("synchronize")?;
    let secs = start.elapsed().as_secs_f64() / iters as f64;
    let tflops = 2. * 4096. * HIDDEN as f64 * MLP as f64 / secs / 1e12;
    println!("info bf16 matmul 4096x{HIDDEN}x{MLP}: {:.3} ms, {tflops:.2} TFLOP/s", secs * 1e3);
    Ok(())
}
