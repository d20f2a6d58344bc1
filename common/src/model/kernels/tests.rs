use candle_core::{Device, Tensor};

#[test]
fn matches_matmul() {
    let d = Device::Cpu;
    for (n, k, out) in [(1, 37, 130), (6, 576, 200), (16, 64, 65), (7, 1536, 9), (3, 5, 70), (13, 40, 129)] {
        let x = Tensor::randn(0f32, 1., (n, k), &d).unwrap();
        let w = Tensor::randn(0f32, 1., (out, k), &d).unwrap();
        let fast = super::skinny_matmul_t(&x, &w).unwrap().unwrap();
        let slow = x.matmul(&w.t().unwrap()).unwrap();
        let diff = (fast - slow).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-3, "{n}x{k}x{out}: {diff}");
    }
    // A row view of a stacked weight (k of q|k|v) is read in place at its offset.
    let x = Tensor::randn(0f32, 1., (3, 40), &d).unwrap();
    let stacked = Tensor::randn(0f32, 1., (90, 40), &d).unwrap();
    let view = stacked.narrow(0, 50, 20).unwrap();
    let fast = super::skinny_matmul_t(&x, &view).unwrap().unwrap();
    let slow = x.matmul(&view.contiguous().unwrap().t().unwrap()).unwrap();
    let diff = (fast - slow).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(diff < 1e-4, "row view: {diff}");
    // Decode attention against a strided cache view equals softmax(q kᵀ · s) v.
    let (b, nkv, g, len, cap, hd) = (2, 2, 3, 5, 8, 16);
    let kb = Tensor::randn(0f32, 1., (b, nkv, cap, hd), &d).unwrap();
    let vb = Tensor::randn(0f32, 1., (b, nkv, cap, hd), &d).unwrap();
    let (k, v) = (kb.narrow(2, 0, len).unwrap(), vb.narrow(2, 0, len).unwrap());
    let q = Tensor::randn(0f32, 1., (b, nkv * g, hd), &d).unwrap();
    let fast = super::decode_attention(&q, &k, &v, 0.25).unwrap().unwrap();
    let qg = q.reshape((b, nkv, g, hd)).unwrap();
    let s = (qg.matmul(&k.t().unwrap()).unwrap() * 0.25).unwrap();
    let slow = candle_nn::ops::softmax_last_dim(&s).unwrap().matmul(&v).unwrap().reshape((b, nkv * g * hd)).unwrap();
    let diff = (fast - slow).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(diff < 1e-5, "attention: {diff}");
    let big = Tensor::zeros((17, 4), candle_core::DType::F32, &d).unwrap();
    assert!(super::skinny_matmul_t(&big, &Tensor::zeros((3, 4), candle_core::DType::F32, &d).unwrap()).unwrap().is_none());
}

/// Each row of the decode kernel is computed alone: the same bits in a batch of any size.
#[test]
fn decode_rows_do_not_depend_on_the_batch() {
    let d = Device::Cpu;
    for (n, k, out) in [(48, 576, 70), (33, 40, 129), (7, 1536, 9)] {
        let x = Tensor::randn(0f32, 1., (n, k), &d).unwrap();
        let w = Tensor::randn(0f32, 1., (out, k), &d).unwrap();
        let all = super::decode_matmul_t(&x, &w).unwrap().unwrap().to_vec2::<f32>().unwrap();
        for r in [0, n / 2, n - 1] {
            let one = super::decode_matmul_t(&x.narrow(0, r, 1).unwrap(), &w).unwrap().unwrap();
            assert_eq!(one.to_vec2::<f32>().unwrap()[0], all[r], "{n}x{k}x{out} row {r}");
        }
        let slow = x.matmul(&w.t().unwrap()).unwrap();
        let fast = Tensor::new(all, &d).unwrap();
        let diff = (fast - slow).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-3, "{n}x{k}x{out}: {diff}");
    }
}

/// The batch attention kernel equals the masked candle version on ragged spans, and a row's
/// result is the same alone.
#[test]
fn batch_attention_matches_masked_attention() {
    use super::RowSpan;
    let d = Device::Cpu;
    let (nkv, g, hd) = (2, 3, 16);
    let width = nkv * hd;
    let (pk, pv) = (Tensor::randn(0f32, 1., (3 * 10, width), &d).unwrap(), Tensor::randn(0f32, 1., (3 * 10, width), &d).unwrap());
    let (gk, gv) = (Tensor::randn(0f32, 1., (4 * 6, width), &d).unwrap(), Tensor::randn(0f32, 1., (4 * 6, width), &d).unwrap());
    let span = |p: usize, pl: usize, s: usize, gl: usize| RowSpan { prompt_start: p * 10, prompt_len: pl, gen_start: s * 6, gen_len: gl };
    let spans = [span(2, 7, 0, 1), span(0, 10, 3, 6), span(2, 7, 1, 4), span(1, 1, 2, 2)];
    let q = Tensor::randn(0f32, 1., (spans.len(), nkv * g, hd), &d).unwrap();
    let fast = super::batch_decode_attention(&q, (&pk, &pv), (&gk, &gv), &spans, 0.25).unwrap().unwrap();
    let slow = crate::model::decode::masked_attention(&q, (&pk, &pv), (&gk, &gv), &spans, 0.25).unwrap();
    let diff = (&fast - slow).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(diff < 1e-5, "batch attention: {diff}");
    let fast = fast.to_vec2::<f32>().unwrap();
    for (r, s) in spans.iter().enumerate() {
        let one = super::batch_decode_attention(&q.narrow(0, r, 1).unwrap(), (&pk, &pv), (&gk, &gv), &[*s], 0.25).unwrap().unwrap();
        assert_eq!(one.to_vec2::<f32>().unwrap()[0], fast[r], "row {r}");
    }
    let outside = [span(2, 11, 0, 1)];
    assert!(super::batch_decode_attention(&q.narrow(0, 0, 1).unwrap(), (&pk, &pv), (&gk, &gv), &outside, 0.25).is_err());
}

/// Uniform values in [-1, 1) from a fixed seed.
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn outer_matmul(x: &[f32], w: &[f32], k: usize, n: usize) -> Vec<f32> {
    let mut y = vec![f32::NAN; n * (w.len() / k)];
    super::outer::matmul_t(x, w, k, n, &mut y);
    y
}

/// Odd shapes (k and out off the 8/16 grid, 1..=37 rows) against an f64 reference, and bit for
/// bit against the scalar in-order `mul_add` path.
#[test]
fn outer_matmul_matches_f64_and_the_scalar_order() {
    let ks = [1, 5, 37, 203, 579];
    let outs = [1, 15, 16, 17, 70, 129];
    for n in 1..=37 {
        let (k, out) = (ks[n % ks.len()], outs[n % outs.len()]);
        let (x, w) = (values(n * k, n as u64), values(out * k, 100 + n as u64));
        let y = outer_matmul(&x, &w, k, n);
        for b in 0..n {
            for o in 0..out {
                let (xb, wo) = (&x[b * k..(b + 1) * k], &w[o * k..(o + 1) * k]);
                let exact: f64 = xb.iter().zip(wo).map(|(&a, &c)| a as f64 * c as f64).sum();
                let scale: f64 = xb.iter().zip(wo).map(|(&a, &c)| (a as f64 * c as f64).abs()).sum();
                let got = y[b * out + o] as f64;
                assert!((got - exact).abs() <= 1e-5 * scale.max(1e-30), "{n}x{k}x{out} [{b},{o}]: {got} vs {exact}");
            }
        }
        let mut scalar = vec![f32::NAN; n * out];
        super::outer::scalar_panel(&w, &x, k, n, super::outer::OutCols::whole(&mut scalar, out));
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&y), bits(&scalar), "{n}x{k}x{out}: SIMD and scalar orders differ");
    }
}

/// A row's outputs are the same bits alone and in batches of 5, 24 and 37 rows at any offset.
#[test]
fn outer_matmul_rows_do_not_depend_on_the_batch() {
    for (k, out) in [(203, 133), (576, 70), (64, 16)] {
        let n = 37;
        let (x, w) = (values(n * k, 7), values(out * k, 8));
        let alone: Vec<Vec<f32>> = (0..n).map(|r| outer_matmul(&x[r * k..(r + 1) * k], &w, k, 1)).collect();
        for batch in [5, 24, 37] {
            for start in [0, 3, n - batch].into_iter().filter(|s| s + batch <= n) {
                let y = outer_matmul(&x[start * k..(start + batch) * k], &w, k, batch);
                for (i, row) in y.chunks(out).enumerate() {
                    let want = &alone[start + i];
                    assert!(row.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits()), "k {k} out {out}: row {} in a batch of {batch} from {start}", start + i);
                }
            }
        }
    }
}

/// The attention core gives the portable build's bits on the AVX2 path (where it inlines
/// asrl_ops::dot), and that dot product is accurate.
#[test]
fn attention_core_keeps_the_portable_bits() {
    use super::batch_attention::{attend, attend_impl, Segment};
    let (g, hd, width) = (3, 20, 60);
    let q = values(g * hd, 1);
    let (pk, pv, gk, gv) = (values(9 * width, 2), values(9 * width, 3), values(5 * width, 4), values(5 * width, 5));
    let segs = [
        Segment { keys: &pk[width + 20..8 * width], vals: &pv[width + 20..8 * width], len: 7, stride: width },
        Segment { keys: &gk[20..4 * width], vals: &gv[20..4 * width], len: 4, stride: width },
    ];
    let (mut fast, mut portable) = (vec![0f32; g * hd], vec![0f32; g * hd]);
    attend(&q, &segs, hd, 0.3, &mut fast);
    attend_impl(&q, &segs, hd, 0.3, &mut portable);
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&fast), bits(&portable));
    let (a, b) = (values(37, 6), values(37, 7));
    let exact: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
    assert!((asrl_ops::dot(&a, &b) as f64 - exact).abs() < 1e-5);
}
