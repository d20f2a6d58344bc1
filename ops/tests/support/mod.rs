//! Helpers shared by every op test: seeded random tensors and the relative error that every
//! comparison uses.
#![allow(dead_code)]

use candle_core::{DType, Device, Shape, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn cpu_tensor(shape: impl Into<Shape>, mut draw: impl FnMut() -> f32) -> Tensor {
    let shape = shape.into();
    let v: Vec<f32> = (0..shape.elem_count()).map(|_| draw()).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// CPU f32 tensor with entries uniform in [-scale, scale).
pub fn uniform(rng: &mut ChaCha8Rng, shape: impl Into<Shape>, scale: f32) -> Tensor {
    cpu_tensor(shape, || rng.random_range(-scale..scale))
}

/// CPU f32 tensor with mean 0 and standard deviation `std` (triangular: the sum of two
/// uniforms, bounded by ±2.45·std).
pub fn triangular(rng: &mut ChaCha8Rng, shape: impl Into<Shape>, std: f32) -> Tensor {
    cpu_tensor(shape, || (rng.random::<f32>() + rng.random::<f32>() - 1.0) * std * 2.45)
}

/// max|got − want| / max(max|want|, 1e-6), both read as f32; infinite when either holds a
/// NaN or an infinity, so non-finite results never pass as close.
pub fn rel_err(got: &Tensor, want: &Tensor) -> f32 {
    assert_eq!(got.dims(), want.dims(), "shapes differ");
    let read = |t: &Tensor| t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let (a, b) = (read(got), read(want));
    if a.iter().chain(&b).any(|v| !v.is_finite()) {
        return f32::INFINITY;
    }
    let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    let scale = b.iter().map(|y| y.abs()).fold(0f32, f32::max).max(1e-6);
    diff / scale
}

/// Panics with `what` when the relative error of `got` against `want` exceeds `tol` (see
/// [`rel_err`]).
pub fn assert_close(got: &Tensor, want: &Tensor, tol: f32, what: &str) {
    let e = rel_err(got, want);
    assert!(e <= tol, "{what}: relative error {e:e} > {tol:e}");
}
