//! The fused CPU kernel: per chunk, one multithreaded gemm into a reused logits buffer, then
//! a rayon pass over its rows (max, vectorised exp-sum; or softmax and the one-hot correction
//! in the backward), then in the backward a second gemm for dh. With the expectation saved,
//! the forward's second gemm is p·W and the backward has none.

use candle_core::Tensor;
use rayon::prelude::*;

use super::{LogprobSaved, OP};
use crate::cpu::{exp_affine_sum, matmul, max, CpuF32, Mat, MatMut};
use crate::Result;

/// lp (m) and lse (m), f32; with `expectation`, also E_p[W] (m, d) f32.
pub(super) fn forward(
    h: &Tensor,
    w: &Tensor,
    targets: &Tensor,
    temperature: f32,
    chunk: usize,
    expectation: bool,
) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    let (m, d) = h.dims2()?;
    let vocab = w.dim(0)?;
    let ys = targets.to_vec1::<u32>()?;
    let (hs, ws) = (CpuF32::new(h, OP, "h")?, CpuF32::new(w, OP, "w")?);
    let (hv, wv) = (hs.as_slice(), ws.as_slice());
    let wt = Mat::rows(wv, vocab, d, d).t();
    let threads = rayon::current_num_threads();
    let mut logits = vec![0f32; chunk.min(m) * vocab];
    let (mut lp, mut lse) = (vec![0f32; m], vec![0f32; m]);
    let mut e = if expectation { vec![0f32; m * d] } else { Vec::new() };
    for start in (0..m).step_by(chunk) {
        let rows = chunk.min(m - start);
        let hm = Mat::rows(&hv[start * d..], rows, d, d);
        matmul(MatMut::rows(&mut logits, rows, vocab, vocab), false, hm, wt, 1.0 / temperature, threads);
        let out = lp[start..start + rows].par_iter_mut().zip(&mut lse[start..start + rows]);
        logits[..rows * vocab].par_chunks_mut(vocab).zip(out).zip(&ys[start..start + rows]).for_each(|((z, (lp, lse)), &y)| {
            let picked = z[y as usize];
            let mx = max(z);
            let sum = exp_affine_sum(z, 1.0, mx);
            *lse = mx + sum.ln();
            *lp = picked - *lse;
            if expectation {
                // z now holds exp(z − max): normalised, the softmax p.
                let inv = 1.0 / sum;
                z.iter_mut().for_each(|p| *p *= inv);
            }
        });
        if expectation {
            let pm = Mat::rows(&logits, rows, vocab, vocab);
            matmul(MatMut::rows(&mut e[start * d..], rows, d, d), false, pm, Mat::rows(wv, vocab, d, d), 1.0, threads);
        }
    }
    drop((hs, ws));
    let dev = h.device();
    let e = if expectation { Some(Tensor::from_vec(e, (m, d), dev)?) } else { None };
    Ok((Tensor::from_vec(lp, m, dev)?, Tensor::from_vec(lse, m, dev)?, e))
}

/// dh (m, d) f32 from dlp (m) f32.
pub(super) fn backward(saved: &LogprobSaved, dlp: &Tensor) -> Result<Tensor> {
    let (m, d) = saved.h.dims2()?;
    let vocab = saved.w.dim(0)?;
    let temperature = saved.temperature as f32;
    let ys = saved.targets.to_vec1::<u32>()?;
    let lse = saved.lse.to_vec1::<f32>()?;
    let g = dlp.to_vec1::<f32>()?;
    // Rows without loss contribute nothing: skip their gemm and softmax work.
    let active: Vec<usize> = (0..m).filter(|&r| g[r] != 0.0).collect();
    let mut dh = vec![0f32; m * d];
    let chunk = saved.chunk_rows.min(active.len());
    if chunk > 0 {
        let (hs, ws) = (CpuF32::new(&saved.h, OP, "h")?, CpuF32::new(&saved.w, OP, "w")?);
        let (hv, wv) = (hs.as_slice(), ws.as_slice());
        let wm = Mat::rows(wv, vocab, d, d);
        let threads = rayon::current_num_threads();
        let mut hbuf = vec![0f32; chunk * d];
        let mut dhbuf = vec![0f32; chunk * d];
        let mut dz = vec![0f32; chunk * vocab];
        for idx in active.chunks(chunk) {
            let rows = idx.len();
            for (dst, &r) in hbuf.chunks_exact_mut(d).zip(idx) {
                dst.copy_from_slice(&hv[r * d..(r + 1) * d]);
            }
            let hm = Mat::rows(&hbuf, rows, d, d);
            matmul(MatMut::rows(&mut dz, rows, vocab, vocab), false, hm, wm.t(), 1.0 / temperature, threads);
            // dz/T = (dlp/T)·(onehot(y) − p), with p = exp(z − lse).
            dz[..rows * vocab].par_chunks_mut(vocab).zip(idx).for_each(|(z, &r)| {
                let coef = g[r] / temperature;
                exp_affine_sum(z, 1.0, lse[r]);
                z.iter_mut().for_each(|p| *p *= -coef);
                z[ys[r] as usize] += coef;
            });
            matmul(MatMut::rows(&mut dhbuf, rows, d, d), false, Mat::rows(&dz, rows, vocab, vocab), wm, 1.0, threads);
            for (src, &r) in dhbuf.chunks_exact(d).zip(idx) {
                dh[r * d..(r + 1) * d].copy_from_slice(src);
            }
        }
    }
    Ok(Tensor::from_vec(dh, (m, d), saved.h.device())?)
}
