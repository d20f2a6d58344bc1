//! Helpers shared by the attention and linear_logprob tests: seeded random tensors and the
//! relative error used for every comparison.

#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Seeded f32 CPU values with mean 0 and standard deviation `std` (triangular: the sum of two
/// uniforms, bounded by ±2.45·std).
pub fn rand_tensor<S: Into<candle_core::Shape>>(shape: S, std: f32, seed: u64) -> Tensor {
    let shape = shape.into();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..shape.elem_count()).map(|_| (rng.random::<f32>() + rng.random::<f32>() - 1.0) * std * 2.45).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// max|a − b| / max(max|b|, 1e-6), both read as f32.
pub fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a: Vec<f32> = a.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, |m, d| if d.is_nan() { f32::NAN } else { m.max(d) });
    let scale = b.iter().fold(0f32, |m, y| m.max(y.abs())).max(1e-6);
    diff / scale
}

/// Panics with `what` when the relative error of `got` against `want` exceeds `tol` (or is NaN).
pub fn assert_close(got: &Tensor, want: &Tensor, tol: f32, what: &str) {
    let e = rel_err(got, want);
    assert!(e <= tol, "{what}: relative error {e:e} > {tol:e}");
}
