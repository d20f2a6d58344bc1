//! RoPE: both backends against the differentiable reference through candle autograd.

mod support;

use asrl_ops::rope::RopeTables;
use asrl_ops::Backend;
use candle_core::{DType, Device, Tensor, Var};
use support::{assert_close, rel_err, rng, uniform};

/// HF tables for positions 0..max_t, as the model builds them.
fn tables(max_t: usize, hd: usize) -> RopeTables {
    let half = hd / 2;
    let inv: Vec<f32> = (0..half).map(|i| 1.0 / 10000f32.powf((2 * i) as f32 / hd as f32)).collect();
    let angles: Vec<f32> = (0..max_t).flat_map(|p| inv.iter().map(move |f| p as f32 * f)).collect();
    let cos = Tensor::from_vec(angles.iter().map(|a| a.cos()).collect::<Vec<_>>(), (max_t, half), &Device::Cpu).unwrap();
    let sin = Tensor::from_vec(angles.iter().map(|a| a.sin()).collect::<Vec<_>>(), (max_t, half), &Device::Cpu).unwrap();
    RopeTables::new(&cos, &sin).unwrap()
}

fn reference_grads(tabs: &RopeTables, x: &Tensor, dy: &Tensor) -> (Tensor, Tensor) {
    let xv = Var::from_tensor(x).unwrap();
    let y = tabs.reference(xv.as_tensor()).unwrap();
    let grads = (&y * dy).unwrap().sum_all().unwrap().backward().unwrap();
    (y, grads.get(xv.as_tensor()).expect("x has a gradient").clone())
}

fn check_both_backends(shape: [usize; 4], max_t: usize, seed: u64) {
    let mut r = rng(seed);
    let tabs = tables(max_t, shape[3]);
    let x = uniform(&mut r, &shape, 2.0);
    let dy = uniform(&mut r, &shape, 1.0);
    let (y_ref, dx_ref) = reference_grads(&tabs, &x, &dy);
    // The rotation must actually move things (positions > 0), or the checks below are empty.
    assert!(rel_err(&y_ref, &x) > 0.1);
    for backend in [Backend::FusedCpu, Backend::Composite] {
        let y = tabs.forward_on(backend, &x).unwrap();
        assert_close(&y, &y_ref, 1e-4, &format!("{backend:?} forward {shape:?}"));
        let dx = tabs.backward_on(backend, &dy).unwrap();
        assert_close(&dx, &dx_ref, 1e-4, &format!("{backend:?} dx {shape:?}"));
    }
}

#[test]
fn odd_shape_matches_reference() {
    // Tables longer than t: the first t rows are used.
    check_both_backends([2, 9, 3, 22], 11, 1);
}

#[test]
fn many_rows_split_across_tasks_match_reference() {
    check_both_backends([3, 397, 5, 34], 397, 2);
}

#[test]
fn backward_undoes_forward() {
    let mut r = rng(3);
    let tabs = tables(13, 16);
    let x = uniform(&mut r, &[2, 13, 4, 16], 1.0);
    for backend in [Backend::FusedCpu, Backend::Composite] {
        let back = tabs.backward_on(backend, &tabs.forward_on(backend, &x).unwrap()).unwrap();
        assert_close(&back, &x, 1e-5, &format!("{backend:?} inverse"));
    }
}

#[test]
fn bf16_composite_is_close_to_the_f32_reference() {
    let mut r = rng(4);
    let tabs = tables(17, 26);
    let x = uniform(&mut r, &[2, 17, 3, 26], 2.0);
    let dy = uniform(&mut r, &[2, 17, 3, 26], 1.0);
    let (y_ref, dx_ref) = reference_grads(&tabs, &x, &dy);
    let bf = |t: &Tensor| t.to_dtype(DType::BF16).unwrap();
    let y = tabs.forward(&bf(&x)).unwrap();
    assert_eq!(y.dtype(), DType::BF16);
    assert_close(&y, &y_ref, 2e-2, "bf16 forward");
    assert_close(&tabs.backward(&bf(&dy)).unwrap(), &dx_ref, 2e-2, "bf16 dx");
}

#[test]
fn too_short_tables_are_refused() {
    let mut r = rng(5);
    let x = uniform(&mut r, &[1, 9, 2, 8], 1.0);
    let err = tables(8, 8).forward(&x).unwrap_err().to_string();
    assert!(err.contains("rope") && err.contains("(8, 4)"), "{err}");
}
