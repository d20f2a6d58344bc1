//! LoRA linear: both backends against the differentiable reference through candle autograd.

mod support;

use std::sync::Arc;

use asrl_ops::lora_linear::{self, LinearPart, Lora, LoraLinear, PackedProjection};
use asrl_ops::Backend;
use candle_core::{DType, Tensor, Var};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use support::{assert_close, rng, uniform};

/// One part of a test layer: output rows and LoRA rank (0 = no LoRA).
#[derive(Clone, Copy)]
struct PartSpec {
    out: usize,
    rank: usize,
}

const fn part(out: usize, rank: usize) -> PartSpec {
    PartSpec { out, rank }
}

/// A random layer with LoRA pairs held as `Var`s so the reference can differentiate them.
struct Case {
    w: Tensor,
    specs: Vec<PartSpec>,
    pairs: Vec<Option<(Var, Var, f64)>>,
}

impl Case {
    fn new(r: &mut ChaCha8Rng, inp: usize, specs: &[PartSpec]) -> Self {
        let total: usize = specs.iter().map(|s| s.out).sum();
        let w = uniform(r, &[total, inp], 0.2);
        let pairs = specs
            .iter()
            .map(|s| {
                (s.rank > 0).then(|| {
                    // B non-zero (trained adapters), scale = alpha / r with alpha = 2r.
                    let a = Var::from_tensor(&uniform(r, &[s.rank, inp], 0.3)).unwrap();
                    let b = Var::from_tensor(&uniform(r, &[s.out, s.rank], 0.3)).unwrap();
                    (a, b, 2.0)
                })
            })
            .collect();
        Case { w, specs: specs.to_vec(), pairs }
    }

    fn layer(&self, dtype: DType) -> LoraLinear {
        let parts = self
            .specs
            .iter()
            .zip(&self.pairs)
            .map(|(s, p)| LinearPart {
                out: s.out,
                lora: p.as_ref().map(|(a, b, scale)| Lora { a: a.as_tensor().clone(), b: b.as_tensor().clone(), scale: *scale }),
            })
            .collect();
        LoraLinear::new(self.w.to_dtype(dtype).unwrap(), parts).unwrap()
    }
}

/// Reference y, dx and per-part (dA, dB) through autograd.
fn reference_grads(case: &Case, x: &Tensor, mask: Option<&Tensor>, dy: &Tensor) -> (Tensor, Tensor, Vec<Option<(Tensor, Tensor)>>) {
    let xv = Var::from_tensor(x).unwrap();
    let y = case.layer(DType::F32).reference(xv.as_tensor(), mask).unwrap();
    let grads = (&y * dy).unwrap().sum_all().unwrap().backward().unwrap();
    let dx = grads.get(xv.as_tensor()).expect("x has a gradient").clone();
    let pairs = case
        .pairs
        .iter()
        .map(|p| p.as_ref().map(|(a, b, _)| (grads.get(a).unwrap().clone(), grads.get(b).unwrap().clone())))
        .collect();
    (y, dx, pairs)
}

/// Forward and backward of both backends against the reference, with and without dx.
fn check(specs: &[PartSpec], n: usize, inp: usize, dropout: Option<f32>, seed: u64) {
    let mut r = rng(seed);
    let case = Case::new(&mut r, inp, specs);
    let total: usize = specs.iter().map(|s| s.out).sum();
    let x = uniform(&mut r, &[n, inp], 1.0);
    let dy = uniform(&mut r, &[n, total], 1.0);
    let mask = dropout.map(|p| {
        let keep: Vec<f32> = (0..n * inp).map(|_| if r.random::<f32>() < p { 0.0 } else { 1.0 / (1.0 - p) }).collect();
        Tensor::from_vec(keep, (n, inp), x.device()).unwrap()
    });
    let (y_ref, dx_ref, pairs_ref) = reference_grads(&case, &x, mask.as_ref(), &dy);
    let unpacked = case.layer(DType::F32);
    // W packed once for the product kernel (where this CPU runs it): the fused path's products
    // with W read it instead of packing W per call.
    let packed = PackedProjection::pack(&case.w.flatten_all().unwrap().to_vec1::<f32>().unwrap(), total, inp)
        .map(|p| case.layer(DType::F32).with_packed(Arc::new(p)).unwrap());
    let runs = [(Backend::FusedCpu, Some(&unpacked)), (Backend::FusedCpu, packed.as_ref()), (Backend::Composite, Some(&unpacked))];
    for (backend, layer, packed) in runs.into_iter().enumerate().filter_map(|(k, (b, l))| Some((b, l?, k == 1))) {
        let kind = if packed { " packed" } else { "" };
        let sizes: Vec<_> = specs.iter().map(|s| (s.out, s.rank)).collect();
        let tag = |what: &str| format!("{backend:?}{kind} {what}, parts {sizes:?}, dropout {dropout:?}");
        let (y, saved) = layer.forward_on(backend, &x, mask.as_ref()).unwrap();
        assert_close(&y, &y_ref, 1e-4, &tag("forward"));
        let residual = uniform(&mut r, &[n, total], 1.0);
        let (y_add, _) = layer.forward_add_on(backend, &x, mask.as_ref(), &residual).unwrap();
        assert_close(&y_add, &(&y_ref + &residual).unwrap(), 1e-4, &tag("forward + residual"));
        for need_dx in [true, false] {
            let g = lora_linear::backward(&saved, &dy, need_dx).unwrap();
            match (&g.dx, need_dx) {
                (Some(dx), true) => assert_close(dx, &dx_ref, 1e-4, &tag("dx")),
                (None, false) => {}
                (dx, _) => panic!("{}: dx is {:?} with need_dx = {need_dx}", tag("dx"), dx.as_ref().map(|t| t.dims().to_vec())),
            }
            assert_eq!(g.parts.len(), specs.len());
            for (i, (got, want)) in g.parts.iter().zip(&pairs_ref).enumerate() {
                match (got, want) {
                    (Some(got), Some((da, db))) => {
                        assert_close(&got.da, da, 1e-4, &tag(&format!("part {i} dA")));
                        assert_close(&got.db, db, 1e-4, &tag(&format!("part {i} dB")));
                    }
                    (None, None) => {}
                    _ => panic!("{}: part {i} has LoRA grads {} but LoRA {}", tag(""), got.is_some(), want.is_some()),
                }
            }
        }
    }
}

#[test]
fn one_part_matches_reference() {
    check(&[part(37, 5)], 29, 45, None, 1);
}

#[test]
fn three_parts_of_different_sizes_match_reference() {
    // q|k|v-like: different out sizes and ranks.
    check(&[part(23, 3), part(13, 6), part(7, 4)], 31, 41, None, 2);
}

#[test]
fn lora_on_some_parts_only_matches_reference() {
    check(&[part(23, 3), part(13, 0), part(9, 7)], 31, 41, None, 3);
    check(&[part(19, 0), part(11, 5)], 17, 33, None, 4);
}

#[test]
fn no_lora_at_all_is_the_frozen_product() {
    check(&[part(21, 0), part(14, 0)], 19, 27, None, 5);
}

#[test]
fn dropout_mask_on_the_lora_input_matches_reference() {
    check(&[part(37, 5)], 29, 45, Some(0.3), 6);
    check(&[part(23, 3), part(13, 0), part(9, 7)], 31, 41, Some(0.1), 7);
}

#[test]
fn many_rows_match_reference() {
    // Enough rows for gemm to split the work across threads.
    check(&[part(64, 8), part(32, 8), part(32, 8)], 523, 96, Some(0.05), 8);
}

#[test]
fn half_precision_composite_is_close_to_the_f32_reference() {
    // candle's CPU matmul has no bf16 kernel (gemm has none), so the reduced-precision check on
    // CPU runs in f16; the composite code path is the same for bf16 on CUDA.
    let mut r = rng(9);
    let specs = [part(23, 4), part(13, 0), part(11, 6)];
    let case = Case::new(&mut r, 39, &specs);
    let x = uniform(&mut r, &[27, 39], 1.0);
    let dy = uniform(&mut r, &[27, 47], 1.0);
    let (y_ref, dx_ref, pairs_ref) = reference_grads(&case, &x, None, &dy);
    let h = |t: &Tensor| t.to_dtype(DType::F16).unwrap();
    let layer = case.layer(DType::F16);
    let (y, saved) = layer.forward(&h(&x), None).unwrap();
    assert_eq!(y.dtype(), DType::F16);
    assert_close(&y, &y_ref, 2e-2, "f16 forward");
    let g = lora_linear::backward(&saved, &h(&dy), true).unwrap();
    assert_eq!(g.dx.as_ref().unwrap().dtype(), DType::F16);
    assert_close(g.dx.as_ref().unwrap(), &dx_ref, 2e-2, "f16 dx");
    for (got, want) in g.parts.iter().zip(&pairs_ref) {
        if let (Some(got), Some((da, db))) = (got, want) {
            assert_eq!(got.da.dtype(), DType::F32);
            assert_close(&got.da, da, 2e-2, "f16 dA");
            assert_close(&got.db, db, 2e-2, "f16 dB");
        }
    }
}

#[test]
fn bad_shapes_are_refused_with_what_is_wrong() {
    let mut r = rng(10);
    let w = uniform(&mut r, &[10, 6], 1.0);
    let err = LoraLinear::new(w.clone(), vec![LinearPart { out: 4, lora: None }, LinearPart { out: 5, lora: None }]).unwrap_err();
    assert!(err.to_string().contains("sum to 9 but W has 10 rows"), "{err}");
    let lora = Lora { a: uniform(&mut r, &[2, 5], 1.0), b: uniform(&mut r, &[10, 2], 1.0), scale: 1.0 };
    let err = LoraLinear::new(w.clone(), vec![LinearPart { out: 10, lora: Some(lora) }]).unwrap_err();
    assert!(err.to_string().contains("part 0") && err.to_string().contains("A [2, 5]"), "{err}");
    let layer = LoraLinear::new(w.clone(), vec![LinearPart { out: 10, lora: None }]).unwrap();
    if let Some(p) = PackedProjection::pack(&[0.0; 9 * 6], 9, 6) {
        let err = layer.clone().with_packed(Arc::new(p)).unwrap_err();
        assert!(err.to_string().contains("packed weight is (9, 6), W is (10, 6)"), "{err}");
    }
    let (_, saved) = layer.forward(&uniform(&mut r, &[3, 6], 1.0), None).unwrap();
    let err = lora_linear::backward(&saved, &uniform(&mut r, &[3, 9], 1.0), true).unwrap_err();
    assert!(err.to_string().contains("dy must be (3, 10)"), "{err}");
}
