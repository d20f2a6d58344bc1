//! Fused CPU and composite chunked log-probs against the full-logits autograd reference.

mod support;

use asrl_ops::linear_logprob::{self, LogprobOptions};
use asrl_ops::Backend;
use candle_core::{DType, Device, Tensor, Var};
use rand::Rng;
use support::{assert_close, rng, triangular};

const TOL: f32 = 1e-4;

struct Inputs {
    h: Tensor,
    w: Tensor,
    targets: Tensor,
    /// Upstream gradient with some exact zeros (rows the fused kernel skips).
    dlp: Tensor,
}

fn inputs(m: usize, d: usize, vocab: usize, seed: u64) -> Inputs {
    let mut r = rng(seed);
    let ys: Vec<u32> = (0..m).map(|_| r.random_range(0..vocab as u32)).collect();
    let g: Vec<f32> = (0..m).map(|i| if i % 4 == 1 { 0.0 } else { r.random::<f32>() * 2.0 - 1.0 }).collect();
    Inputs {
        h: triangular(&mut rng(seed + 1), (m, d), 1.0),
        // Logits of standard deviation ~2: peaked enough that p is far from uniform.
        w: triangular(&mut rng(seed + 2), (vocab, d), 2.0 / (d as f32).sqrt()),
        targets: Tensor::from_vec(ys, m, &Device::Cpu).unwrap(),
        dlp: Tensor::from_vec(g, m, &Device::Cpu).unwrap(),
    }
}

/// lp and dh of the reference (autograd through the full logits).
fn expected(x: &Inputs, temperature: f64) -> (Tensor, Tensor) {
    let hv = Var::from_tensor(&x.h).unwrap();
    let lp = linear_logprob::reference(hv.as_tensor(), &x.w, &x.targets, temperature).unwrap();
    let grads = (&lp * &x.dlp).unwrap().sum_all().unwrap().backward().unwrap();
    (lp.detach(), grads.get(hv.as_tensor()).unwrap().clone())
}

fn check(x: &Inputs, temperature: f64, opts: LogprobOptions, dtype: DType, tol: f32, want: &(Tensor, Tensor)) {
    let what = format!("T {temperature} {opts:?} {dtype:?}");
    let (h, w) = (x.h.to_dtype(dtype).unwrap(), x.w.to_dtype(dtype).unwrap());
    let (lp, saved) = linear_logprob::forward_with(&h, &w, &x.targets, temperature, opts).unwrap();
    assert_eq!(lp.dtype(), DType::F32);
    assert_close(&lp, &want.0, tol, &format!("{what}: lp"));
    let dh = linear_logprob::backward(&saved, &x.dlp).unwrap();
    assert_eq!(dh.dtype(), dtype);
    assert_close(&dh, &want.1, tol, &format!("{what}: dh"));
    // Rows with dlp = 0 get exactly zero gradient.
    let g: Vec<f32> = x.dlp.to_vec1().unwrap();
    let dh: Vec<Vec<f32>> = dh.to_dtype(DType::F32).unwrap().to_vec2().unwrap();
    for (r, row) in dh.iter().enumerate().filter(|(r, _)| g[*r] == 0.0) {
        assert!(row.iter().all(|&v| v == 0.0), "{what}: row {r} has dlp 0 but a gradient");
    }
}

fn all_backends(m: usize, d: usize, vocab: usize, seed: u64) {
    let x = inputs(m, d, vocab, seed);
    for temperature in [1.0, 0.7] {
        let want = expected(&x, temperature);
        for backend in [Backend::FusedCpu, Backend::Composite] {
            // Default chunking (one chunk here) and a tiny one that leaves a partial last chunk.
            for chunk_rows in [None, Some(3)] {
                // With and without E_p[W] saved in the forward.
                for expectation in [false, true] {
                    let opts = LogprobOptions { backend: Some(backend), chunk_rows, expectation };
                    check(&x, temperature, opts, DType::F32, TOL, &want);
                }
            }
        }
    }
}

#[test]
fn matches_reference() {
    all_backends(37, 48, 1031, 1);
}

#[test]
fn wide_hidden_and_single_row() {
    all_backends(1, 130, 2053, 2);
    all_backends(8, 130, 1500, 3);
}

#[test]
fn chunk_rows_follow_the_budget() {
    assert_eq!(linear_logprob::default_chunk_rows(151_936), (64 << 20) / (4 * 151_936));
    assert_eq!(linear_logprob::default_chunk_rows(1 << 30), 1);
    let x = inputs(5, 8, 1024, 4);
    let (_, saved) = linear_logprob::forward(&x.h, &x.w, &x.targets, 1.0).unwrap();
    assert_eq!(saved.chunk_rows(), 16_384);
    assert_eq!(saved.backend(), Backend::FusedCpu);
}

#[test]
fn fused_and_composite_lse_agree() {
    let x = inputs(11, 40, 1200, 5);
    let lse = |backend| {
        let opts = LogprobOptions { backend: Some(backend), chunk_rows: Some(4), ..Default::default() };
        linear_logprob::forward_with(&x.h, &x.w, &x.targets, 0.7, opts).unwrap().1.lse().clone()
    };
    assert_close(&lse(Backend::FusedCpu), &lse(Backend::Composite), 1e-6, "lse");
}

#[test]
fn half_precision_composite() {
    let x = inputs(19, 32, 1100, 6);
    for dtype in [DType::BF16, DType::F16] {
        // The reference sees the rounded inputs, so only the op's own rounding is measured.
        let r = Inputs {
            h: x.h.to_dtype(dtype).unwrap().to_dtype(DType::F32).unwrap(),
            w: x.w.to_dtype(dtype).unwrap().to_dtype(DType::F32).unwrap(),
            targets: x.targets.clone(),
            dlp: x.dlp.clone(),
        };
        let want = expected(&r, 0.7);
        let tol = if dtype == DType::BF16 { 3e-2 } else { 4e-3 };
        for expectation in [false, true] {
            let opts = LogprobOptions { backend: None, chunk_rows: Some(5), expectation };
            check(&r, 0.7, opts, dtype, tol, &want);
        }
    }
}

#[test]
fn empty_input() {
    let x = inputs(0, 8, 1000, 7);
    for backend in [Backend::FusedCpu, Backend::Composite] {
        for expectation in [false, true] {
            let opts = LogprobOptions { backend: Some(backend), chunk_rows: None, expectation };
            let (lp, saved) = linear_logprob::forward_with(&x.h, &x.w, &x.targets, 1.0, opts).unwrap();
            assert_eq!(lp.dims(), &[0]);
            assert_eq!(linear_logprob::backward(&saved, &x.dlp).unwrap().dims(), &[0, 8]);
        }
    }
}

#[test]
fn rejects_bad_inputs() {
    let x = inputs(4, 8, 1000, 8);
    let err = linear_logprob::forward(&x.h, &x.w, &x.targets, 0.0).unwrap_err().to_string();
    assert!(err.contains("temperature"), "{err}");
    let bad = Tensor::new(&[1u32, 2, 1000, 3], &Device::Cpu).unwrap();
    let err = linear_logprob::forward(&x.h, &x.w, &bad, 1.0).unwrap_err().to_string();
    assert!(err.contains("1000 is outside"), "{err}");
    let err = linear_logprob::forward(&x.h, &x.w.narrow(1, 0, 7).unwrap(), &x.targets, 1.0).unwrap_err().to_string();
    assert!(err.contains("hidden size 7"), "{err}");
    let (_, saved) = linear_logprob::forward(&x.h, &x.w, &x.targets, 1.0).unwrap();
    let err = linear_logprob::backward(&saved, &x.dlp.narrow(0, 0, 3).unwrap()).unwrap_err().to_string();
    assert!(err.contains("dlp must be (4)"), "{err}");
}
