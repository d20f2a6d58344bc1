//! Fused CPU and composite attention against the autograd reference.

mod support;

use asrl_ops::attention::{self, AttentionOptions};
use asrl_ops::Backend;
use candle_core::{DType, Tensor, Var};
use support::{assert_close, rng, triangular};

const TOL: f32 = 1e-4;

struct Case {
    b: usize,
    t: usize,
    nh: usize,
    nkv: usize,
    hd: usize,
    lens: Option<Vec<usize>>,
}

struct Expected {
    o: Tensor,
    dq: Tensor,
    dk: Tensor,
    dv: Tensor,
}

fn inputs(c: &Case, seed: u64) -> (Tensor, Tensor, Tensor, Tensor) {
    let q = triangular(&mut rng(seed), (c.b, c.t, c.nh, c.hd), 1.0);
    let k = triangular(&mut rng(seed + 1), (c.b, c.t, c.nkv, c.hd), 1.0);
    let v = triangular(&mut rng(seed + 2), (c.b, c.t, c.nkv, c.hd), 1.0);
    let go = triangular(&mut rng(seed + 3), (c.b, c.t, c.nh, c.hd), 1.0);
    (q, k, v, go)
}

fn expected(c: &Case, q: &Tensor, k: &Tensor, v: &Tensor, go: &Tensor) -> Expected {
    let (qv, kv, vv) = (Var::from_tensor(q).unwrap(), Var::from_tensor(k).unwrap(), Var::from_tensor(v).unwrap());
    let scale = 1.0 / (c.hd as f64).sqrt();
    let o = attention::reference(qv.as_tensor(), kv.as_tensor(), vv.as_tensor(), scale, c.lens.as_deref()).unwrap();
    let grads = (&o * go).unwrap().sum_all().unwrap().backward().unwrap();
    let g = |x: &Var| grads.get(x.as_tensor()).unwrap().clone();
    Expected { dq: g(&qv), dk: g(&kv), dv: g(&vv), o: o.detach() }
}

/// Forward and backward of one backend (inputs in `dtype`) against the f32 reference.
fn check(c: &Case, want: &Expected, inp: &(Tensor, Tensor, Tensor, Tensor), opts: AttentionOptions, dtype: DType, tol: f32) {
    let (q, k, v, go) = inp;
    let cast = |x: &Tensor| x.to_dtype(dtype).unwrap();
    let scale = 1.0 / (c.hd as f64).sqrt();
    let what = format!("b{} t{} heads {}/{} hd{} lens {:?} {:?} {dtype:?}", c.b, c.t, c.nh, c.nkv, c.hd, c.lens, opts);
    let (o, saved) = attention::forward_with(&cast(q), &cast(k), &cast(v), scale, c.lens.as_deref(), opts).unwrap();
    assert_eq!(o.dtype(), dtype);
    assert_eq!(saved.lse().dims(), &[c.b, c.nh, c.t]);
    assert_close(&o, &want.o, tol, &format!("{what}: o"));
    let grads = attention::backward(&saved, &cast(go)).unwrap();
    assert_eq!(grads.dk.dtype(), dtype);
    check_grad(&grads.dq, &want.dq, tol, &format!("{what}: dq"));
    check_grad(&grads.dk, &want.dk, tol, &format!("{what}: dk"));
    assert_close(&grads.dv, &want.dv, tol, &format!("{what}: dv"));
    if let Some(lens) = &c.lens {
        // Padding rows: zero output and zero gradient, exactly.
        for (bi, &len) in lens.iter().enumerate() {
            for (x, name) in [(&o, "o"), (&grads.dq, "dq"), (&grads.dk, "dk"), (&grads.dv, "dv")] {
                let pad = x.get(bi).unwrap().narrow(0, len, c.t - len).unwrap();
                assert_eq!(max_abs(&pad), 0.0, "{what}: {name} of row {bi} past its length is not zero");
            }
        }
    }
}

/// Like `assert_close`, except where the true gradient vanishes (t = 1: a softmax over one key
/// passes no gradient to the scores, so dq and dk are rounding noise around 0).
fn check_grad(got: &Tensor, want: &Tensor, tol: f32, what: &str) {
    if max_abs(want) < 1e-6 {
        assert!(max_abs(got) < 1e-5, "{what}: should vanish, max {}", max_abs(got));
    } else {
        assert_close(got, want, tol, what);
    }
}

fn max_abs(x: &Tensor) -> f32 {
    let v: Vec<f32> = x.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    v.iter().fold(0f32, |m, y| m.max(y.abs()))
}

fn run(c: Case, seed: u64) {
    let inp = inputs(&c, seed);
    let want = expected(&c, &inp.0, &inp.1, &inp.2, &inp.3);
    let fused = AttentionOptions { backend: Some(Backend::FusedCpu), query_chunk: None };
    let composite = AttentionOptions { backend: Some(Backend::Composite), query_chunk: None };
    // An odd chunk that splits every t > 5 unevenly.
    let chunked = AttentionOptions { backend: Some(Backend::Composite), query_chunk: Some(5) };
    for opts in [fused, composite, chunked] {
        check(&c, &want, &inp, opts, DType::F32, TOL);
    }
}

#[test]
fn gqa_4_2_head_dim_16() {
    for (i, t) in [1, 7, 70, 131].into_iter().enumerate() {
        run(Case { b: 1, t, nh: 4, nkv: 2, hd: 16, lens: None }, 10 + i as u64);
    }
}

#[test]
fn gqa_9_3_head_dim_64() {
    for (i, t) in [1, 7, 70, 131].into_iter().enumerate() {
        run(Case { b: 1, t, nh: 9, nkv: 3, hd: 64, lens: None }, 20 + i as u64);
    }
}

#[test]
fn batch_with_lengths() {
    run(Case { b: 2, t: 131, nh: 4, nkv: 2, hd: 16, lens: Some(vec![131, 57]) }, 30);
    run(Case { b: 2, t: 70, nh: 9, nkv: 3, hd: 64, lens: Some(vec![1, 66]) }, 31);
    run(Case { b: 3, t: 7, nh: 4, nkv: 2, hd: 16, lens: Some(vec![0, 7, 3]) }, 32);
}

#[test]
fn single_token_batch() {
    run(Case { b: 2, t: 1, nh: 4, nkv: 2, hd: 16, lens: None }, 40);
}

#[test]
fn multi_query_and_no_grouping() {
    // nkv = 1 (every head shares one kv head) and g = 1; head_dim not a power of two.
    run(Case { b: 2, t: 67, nh: 3, nkv: 1, hd: 24, lens: Some(vec![67, 40]) }, 50);
    run(Case { b: 1, t: 129, nh: 2, nkv: 2, hd: 20, lens: None }, 51);
}

#[test]
fn fused_and_composite_lse_agree() {
    let c = Case { b: 2, t: 131, nh: 4, nkv: 2, hd: 16, lens: None };
    let (q, k, v, _) = inputs(&c, 60);
    let lse = |backend| {
        let opts = AttentionOptions { backend: Some(backend), query_chunk: Some(9) };
        attention::forward_with(&q, &k, &v, 0.25, None, opts).unwrap().1.lse().clone()
    };
    let (f, comp) = (lse(Backend::FusedCpu), lse(Backend::Composite));
    assert_close(&f, &comp, 1e-5, "lse");
}

#[test]
fn half_precision_composite() {
    let c = Case { b: 2, t: 37, nh: 4, nkv: 2, hd: 16, lens: Some(vec![37, 20]) };
    let inp = inputs(&c, 70);
    // The reference sees the rounded inputs, so only the op's own rounding is measured.
    let round = |x: &Tensor, dt| x.to_dtype(dt).unwrap().to_dtype(DType::F32).unwrap();
    for dtype in [DType::BF16, DType::F16] {
        let r = (round(&inp.0, dtype), round(&inp.1, dtype), round(&inp.2, dtype), round(&inp.3, dtype));
        let want = expected(&c, &r.0, &r.1, &r.2, &r.3);
        let opts = AttentionOptions { backend: Some(Backend::Composite), query_chunk: Some(8) };
        let tol = if dtype == DType::BF16 { 3e-2 } else { 4e-3 };
        check(&c, &want, &r, opts, dtype, tol);
    }
}

#[test]
fn default_backend_follows_the_input() {
    let c = Case { b: 1, t: 3, nh: 2, nkv: 1, hd: 8, lens: None };
    let (q, k, v, _) = inputs(&c, 80);
    let (_, saved) = attention::forward(&q, &k, &v, 0.3, None).unwrap();
    assert_eq!(saved.backend(), Backend::for_tensor(&q));
    let bf = |x: &Tensor| x.to_dtype(DType::BF16).unwrap();
    let (_, saved) = attention::forward(&bf(&q), &bf(&k), &bf(&v), 0.3, None).unwrap();
    assert_eq!(saved.backend(), Backend::Composite);
}

#[test]
fn rejects_bad_inputs() {
    let q = triangular(&mut rng(1), (1, 5, 3, 8), 1.0);
    let k = triangular(&mut rng(2), (1, 5, 2, 8), 1.0);
    let err = attention::forward(&q, &k, &k, 0.3, None).unwrap_err().to_string();
    assert!(err.contains("not a multiple"), "{err}");
    let k = triangular(&mut rng(2), (1, 5, 1, 8), 1.0);
    let err = attention::forward(&q, &k, &k, 0.3, Some(&[6])).unwrap_err().to_string();
    assert!(err.contains("exceeds"), "{err}");
    let err = attention::forward(&q, &k, &k, 0.3, Some(&[5, 5])).unwrap_err().to_string();
    assert!(err.contains("lens has 2 entries"), "{err}");
    let opts = AttentionOptions { backend: Some(Backend::FusedCpu), query_chunk: None };
    let bf = |x: &Tensor| x.to_dtype(DType::BF16).unwrap();
    let err = attention::forward_with(&bf(&q), &bf(&k), &bf(&k), 0.3, None, opts).unwrap_err().to_string();
    assert!(err.contains("CPU f32"), "{err}");
}
