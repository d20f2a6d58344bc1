//! SwiGLU: both backends against the differentiable reference through candle autograd.

mod support;

use asrl_ops::{swiglu, Backend};
use candle_core::{DType, Tensor, Var};
use support::{assert_close, rng, uniform};

fn reference_grads(gu: &Tensor, dh: &Tensor) -> (Tensor, Tensor) {
    let v = Var::from_tensor(gu).unwrap();
    let h = swiglu::reference(v.as_tensor()).unwrap();
    let grads = (&h * dh).unwrap().sum_all().unwrap().backward().unwrap();
    (h, grads.get(v.as_tensor()).expect("gu has a gradient").clone())
}

fn check_both_backends(n: usize, i: usize, seed: u64) {
    let mut r = rng(seed);
    // Gates from -12 to 12 reach both saturated ends of the sigmoid.
    let gu = Tensor::cat(&[uniform(&mut r, &[n, i], 12.0), uniform(&mut r, &[n, i], 2.0)], 1).unwrap();
    let dh = uniform(&mut r, &[n, i], 1.0);
    let (h_ref, dgu_ref) = reference_grads(&gu, &dh);
    for backend in [Backend::FusedCpu, Backend::Composite] {
        let (h, saved) = swiglu::forward_on(backend, &gu).unwrap();
        assert_close(&h, &h_ref, 1e-4, &format!("{backend:?} forward ({n}, {i})"));
        let dgu = swiglu::backward(&saved, &dh).unwrap();
        assert_eq!(dgu.dims(), [n, 2 * i]);
        // Gate and up halves separately: a swapped or mis-scaled half must not hide in the other's range.
        for (name, off) in [("dg", 0), ("du", i)] {
            let (got, want) = (dgu.narrow(1, off, i).unwrap(), dgu_ref.narrow(1, off, i).unwrap());
            assert_close(&got, &want, 1e-4, &format!("{backend:?} {name} ({n}, {i})"));
        }
    }
}

#[test]
fn odd_shape_matches_reference() {
    check_both_backends(37, 53, 1);
}

#[test]
fn many_rows_split_across_tasks_match_reference() {
    check_both_backends(613, 97, 2);
}

#[test]
fn bf16_composite_is_close_to_the_f32_reference() {
    let mut r = rng(3);
    let gu = uniform(&mut r, &[31, 2 * 45], 4.0);
    let dh = uniform(&mut r, &[31, 45], 1.0);
    let (h_ref, dgu_ref) = reference_grads(&gu, &dh);
    let bf = |t: &Tensor| t.to_dtype(DType::BF16).unwrap();
    let (h, saved) = swiglu::forward(&bf(&gu)).unwrap();
    assert_eq!(h.dtype(), DType::BF16);
    assert_close(&h, &h_ref, 2e-2, "bf16 forward");
    let dgu = swiglu::backward(&saved, &bf(&dh)).unwrap();
    assert_close(&dgu, &dgu_ref, 2e-2, "bf16 dgu");
}

#[test]
fn odd_width_is_refused() {
    let mut r = rng(4);
    let err = swiglu::forward(&uniform(&mut r, &[3, 7], 1.0)).unwrap_err().to_string();
    assert!(err.contains("swiglu") && err.contains("[3, 7]"), "{err}");
}
