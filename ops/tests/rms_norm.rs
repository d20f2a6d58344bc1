//! RMSNorm: both backends against the differentiable reference through candle autograd.

mod support;

use asrl_ops::{rms_norm, Backend};
use candle_core::{DType, Tensor, Var};
use support::{assert_close, rng, uniform};

const EPS: f64 = 1e-6;

/// Reference output and dx for upstream gradient `dy`, through autograd.
fn reference_grads(x: &Tensor, w: &Tensor, dy: &Tensor) -> (Tensor, Tensor) {
    let xv = Var::from_tensor(x).unwrap();
    let y = rms_norm::reference(xv.as_tensor(), w, EPS).unwrap();
    let grads = (&y * dy).unwrap().sum_all().unwrap().backward().unwrap();
    (y, grads.get(xv.as_tensor()).expect("x has a gradient").clone())
}

fn check_both_backends(shape: &[usize], seed: u64) {
    let mut r = rng(seed);
    let d = *shape.last().unwrap();
    // Rows at scales from 0.1 to 3: the normalisation must remove them.
    let mut row_shape = shape.to_vec();
    *row_shape.last_mut().unwrap() = 1;
    let row_scale = uniform(&mut r, row_shape.as_slice(), 1.0).abs().unwrap().affine(2.9, 0.1).unwrap();
    let x = uniform(&mut r, shape, 1.0).broadcast_mul(&row_scale).unwrap();
    let w = (uniform(&mut r, &[d], 0.5) + 1.0).unwrap();
    let dy = uniform(&mut r, shape, 1.0);
    let (y_ref, dx_ref) = reference_grads(&x, &w, &dy);
    for backend in [Backend::FusedCpu, Backend::Composite] {
        let (y, saved) = rms_norm::forward_on(backend, &x, &w, EPS).unwrap();
        assert_close(&y, &y_ref, 1e-4, &format!("{backend:?} forward {shape:?}"));
        assert_eq!(saved.rstd().dims(), [x.elem_count() / d]);
        let dx = rms_norm::backward(&saved, &dy).unwrap();
        assert_close(&dx, &dx_ref, 1e-4, &format!("{backend:?} dx {shape:?}"));
        let residual = uniform(&mut r, shape, 1.0);
        let with_residual = rms_norm::backward_add(&saved, &dy, &residual).unwrap();
        let want = (&residual + &dx_ref).unwrap();
        assert_close(&with_residual, &want, 1e-4, &format!("{backend:?} residual + dx {shape:?}"));
    }
}

#[test]
fn layer_norm_shape_matches_reference() {
    check_both_backends(&[37, 67], 1);
}

#[test]
fn per_head_shape_matches_reference() {
    // Qwen3's q/k norms: (b, t, heads, head_dim), normalised over head_dim.
    check_both_backends(&[2, 7, 4, 18], 2);
}

#[test]
fn many_rows_split_across_tasks_match_reference() {
    // More rows than one rayon task holds, and a row count that does not divide evenly.
    check_both_backends(&[1031, 40], 3);
}

#[test]
fn bf16_composite_is_close_to_the_f32_reference() {
    let mut r = rng(4);
    let x = uniform(&mut r, &[29, 70], 2.0);
    let w = (uniform(&mut r, &[70], 0.5) + 1.0).unwrap();
    let dy = uniform(&mut r, &[29, 70], 1.0);
    let (y_ref, dx_ref) = reference_grads(&x, &w, &dy);
    let bf = |t: &Tensor| t.to_dtype(DType::BF16).unwrap();
    let (y, saved) = rms_norm::forward(&bf(&x), &bf(&w), EPS).unwrap();
    assert_eq!(y.dtype(), DType::BF16);
    assert_close(&y, &y_ref, 2e-2, "bf16 forward");
    let dx = rms_norm::backward(&saved, &bf(&dy)).unwrap();
    assert_eq!(dx.dtype(), DType::BF16);
    assert_close(&dx, &dx_ref, 3e-2, "bf16 dx");
}

#[test]
fn mismatched_weight_is_refused_with_the_shapes() {
    let mut r = rng(5);
    let x = uniform(&mut r, &[3, 8], 1.0);
    let w = uniform(&mut r, &[7], 1.0);
    let err = rms_norm::forward(&x, &w, EPS).unwrap_err().to_string();
    assert!(err.contains("rms_norm") && err.contains("[7]"), "{err}");
}
