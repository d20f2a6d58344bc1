//! Attention over rows gathered from one packed token sequence: the GRPO layout where the
//! completions of a group share their prompt.
//!
//! The projections, norms and MLP see each token once: a packed sequence of n tokens (each
//! distinct prompt once, then every completion's own tokens). Attention sees one row per
//! completion, (its prompt, its own tokens), gathered from the packed sequence by index:
//!
//! ```text
//! forward:   q_rows = gather(q)          o = take(attention(q_rows, k_rows, v_rows, lens))
//! backward:  dO_rows = scatter(dO)       dq = Σ gather-adjoint(dq_rows)  (same for dk, dv)
//! ```
//!
//! `take` picks, for every packed token, the one row slot whose output it keeps (a prompt
//! token: the slot of its first completion row); the other rows' prompt outputs are dropped,
//! so `scatter` gives them a zero dO and they add nothing to the gradients. A prompt token's
//! key and value are read by every row of its group, so their gradients add up over the rows:
//! the gradient of a shared forward is exactly that of the unshared rows it replaces.
//!
//! Only the packed q, k, v, o and the rows' log-sum-exp are saved; the rows are gathered again
//! in the backward.

use candle_core::{DType, Tensor};

use super::{forward_rows, AttentionOptions, AttentionSaved};
use crate::{OpError, Result};

const OP: &str = "attention (gathered rows)";

/// How attention rows are read from a packed sequence of n tokens.
#[derive(Debug, Clone)]
pub struct RowGather {
    rows: usize,
    width: usize,
    n: usize,
    lens: Vec<usize>,
    /// Each row's first slot whose output some packed token keeps (its length when none):
    /// earlier slots' queries need not run.
    query_from: Vec<usize>,
    /// (rows·width) u32: the packed token at each row slot (0 past the row's length).
    gather: Tensor,
    /// (n) u32: the row slot whose output each packed token keeps.
    take: Tensor,
}

impl RowGather {
    /// `rows[r]` lists the packed tokens of attention row r in order (at most n − 1 each);
    /// `take[i]` = (row, slot) whose output packed token i keeps, a slot that reads token i.
    pub fn new(n: usize, rows: &[Vec<usize>], take: &[(usize, usize)], device: &candle_core::Device) -> Result<Self> {
        let width = rows.iter().map(Vec::len).max().unwrap_or(0);
        if rows.is_empty() || width == 0 {
            return Err(OpError::shape(OP, "no attention rows"));
        }
        if take.len() != n {
            return Err(OpError::shape(OP, format!("{} output slots for {n} packed tokens", take.len())));
        }
        let mut gather = vec![0u32; rows.len() * width];
        for (r, row) in rows.iter().enumerate() {
            for (j, &i) in row.iter().enumerate() {
                if i >= n {
                    return Err(OpError::shape(OP, format!("row {r} reads token {i} of {n}")));
                }
                gather[r * width + j] = i as u32;
            }
        }
        let mut slots = Vec::with_capacity(n);
        let mut query_from: Vec<usize> = rows.iter().map(Vec::len).collect();
        for (i, &(r, j)) in take.iter().enumerate() {
            if rows.get(r).and_then(|row| row.get(j)) != Some(&i) {
                return Err(OpError::shape(OP, format!("token {i} takes its output from row {r} slot {j}, which reads another token")));
            }
            slots.push((r * width + j) as u32);
            query_from[r] = query_from[r].min(j);
        }
        Ok(RowGather {
            rows: rows.len(),
            width,
            n,
            lens: rows.iter().map(Vec::len).collect(),
            query_from,
            gather: Tensor::from_vec(gather, rows.len() * width, device)?,
            take: Tensor::from_vec(slots, n, device)?,
        })
    }

    /// Attention rows and their width (the longest row).
    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.width)
    }

    /// Row slots attention runs on: rows × width.
    pub fn slots(&self) -> usize {
        self.rows * self.width
    }

    /// Packed tokens.
    pub fn tokens(&self) -> usize {
        self.n
    }

    /// Each row's length.
    pub fn lens(&self) -> &[usize] {
        &self.lens
    }

    /// (1, n, heads, hd) -> (rows, width, heads, hd).
    fn rows_of(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, hd) = x.dims4()?;
        Ok(x.reshape((self.n, h * hd))?.index_select(&self.gather, 0)?.reshape((self.rows, self.width, h, hd))?)
    }

    /// (rows, width, heads, hd) -> (1, n, heads, hd): each packed token's kept slot.
    fn take_from(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, hd) = x.dims4()?;
        Ok(x.reshape((self.rows * self.width, h * hd))?.index_select(&self.take, 0)?.reshape((1, self.n, h, hd))?)
    }

    /// Adjoint of [`Self::take_from`]: dO at the kept slots, 0 elsewhere.
    fn scatter_to_rows(&self, d: &Tensor) -> Result<Tensor> {
        let (_, _, h, hd) = d.dims4()?;
        let zeros = Tensor::zeros((self.rows * self.width, h * hd), d.dtype(), d.device())?;
        Ok(zeros.index_add(&self.take, &d.reshape((self.n, h * hd))?, 0)?.reshape((self.rows, self.width, h, hd))?)
    }

    /// Adjoint of [`Self::rows_of`]: each slot's gradient added into the token it read, summed
    /// in f32 (a prompt token's key and value gradients add up over its group's rows).
    fn add_from_rows(&self, d: &Tensor) -> Result<Tensor> {
        let (_, _, h, hd) = d.dims4()?;
        let zeros = Tensor::zeros((self.n, h * hd), DType::F32, d.device())?;
        let d = d.reshape((self.rows * self.width, h * hd))?.to_dtype(DType::F32)?;
        Ok(zeros.index_add(&self.gather, &d, 0)?.reshape((1, self.n, h, hd))?)
    }
}

/// What [`super::backward`] reads for a gathered call: the packed tensors and the rows' lse.
#[derive(Debug, Clone)]
pub(super) struct GatheredSaved {
    pub rows: RowGather,
    /// The rows' attention state with q, k, v and o left empty (they are packed here).
    pub inner: AttentionSaved,
    pub q: Tensor,
    pub k: Tensor,
    pub v: Tensor,
    pub o: Tensor,
}

/// Causal attention of each row over its own tokens, for packed `q` (1, n, nh, hd) and `k`, `v`
/// (1, n, nkv, hd): output (1, n, nh, hd).
pub fn forward_gathered(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    rows: &RowGather,
    opts: AttentionOptions,
) -> Result<(Tensor, AttentionSaved)> {
    for (name, x) in [("q", q), ("k", k), ("v", v)] {
        let ok = x.dims4().is_ok_and(|(b, n, _, _)| b == 1 && n == rows.n);
        if !ok {
            return Err(OpError::shape(OP, format!("{name} must be (1, {}, heads, head_dim), got {:?}", rows.n, x.dims())));
        }
    }
    let (qr, kr, vr) = (rows.rows_of(q)?, rows.rows_of(k)?, rows.rows_of(v)?);
    let (o_rows, inner) = forward_rows(&qr, &kr, &vr, scale, Some(&rows.lens), Some(&rows.query_from), opts)?;
    drop((qr, kr, vr));
    let o = rows.take_from(&o_rows)?;
    drop(o_rows);
    let inner = inner.without_tensors()?;
    let saved = GatheredSaved { rows: rows.clone(), inner, q: q.clone(), k: k.clone(), v: v.clone(), o: o.clone() };
    Ok((o, AttentionSaved::gathered(saved)))
}

/// dq, dk, dv (packed) for the packed output gradient `grad_o` (1, n, nh, hd).
pub(super) fn backward(saved: &GatheredSaved, grad_o: &Tensor) -> Result<super::AttentionGrads> {
    let rows = &saved.rows;
    let inner = saved.inner.with_tensors(rows.rows_of(&saved.q)?, rows.rows_of(&saved.k)?, rows.rows_of(&saved.v)?, {
        // The row outputs the kernel's D = rowsum(dO ⊙ O) reads: only kept slots have a
        // non-zero dO, and there O is the packed output.
        rows.scatter_to_rows(&saved.o)?
    });
    let grad_rows = rows.scatter_to_rows(&grad_o.to_dtype(saved.o.dtype())?)?;
    let g = super::backward(&inner, &grad_rows)?;
    drop((inner, grad_rows));
    // Each gradient in its input's dtype, as the ungathered backward returns them.
    let packed = |d: &Tensor, like: &Tensor| -> Result<Tensor> { Ok(rows.add_from_rows(d)?.to_dtype(like.dtype())?) };
    Ok(super::AttentionGrads { dq: packed(&g.dq, &saved.q)?, dk: packed(&g.dk, &saved.k)?, dv: packed(&g.dv, &saved.v)? })
}

/// f32 zeros of no elements: the placeholder for tensors a gathered call keeps packed.
pub(super) fn empty(device: &candle_core::Device) -> Result<Tensor> {
    Ok(Tensor::zeros(0, DType::F32, device)?)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::attention::{backward, forward_with, random};
    use crate::Backend;

    fn rows_of_tokens(x: &Tensor, tokens: &[usize]) -> Tensor {
        let idx = Tensor::from_vec(tokens.iter().map(|&i| i as u32).collect::<Vec<_>>(), tokens.len(), &Device::Cpu).unwrap();
        x.index_select(&idx, 1).unwrap()
    }

    /// Two prompts (one longer than a kernel block) with their completions packed once each:
    /// the output and the gradients equal those of every row run on its own, its prompt
    /// copied in, with the prompt's key/value gradients added over the rows that read it.
    #[test]
    fn gathered_rows_equal_each_row_run_alone() {
        let (nh, nkv, hd) = (4, 2, 8);
        // Packed: prompt A [0, 5), row 0's tokens [5, 8), row 2's [8, 12), prompt B [12, 82),
        // row 3's [82, 85), row 4's [85, 88). Row 1 shares prompt A and has no tokens of its
        // own; row 4 keeps no prompt output, so the fused kernel skips its first query block.
        let a: Vec<usize> = (0..5).collect();
        let b: Vec<usize> = (12..82).collect();
        let rows = vec![
            [a.clone(), (5..8).collect()].concat(),
            a.clone(),
            [a.clone(), (8..12).collect()].concat(),
            [b.clone(), (82..85).collect()].concat(),
            [b.clone(), (85..88).collect()].concat(),
        ];
        let n = 88;
        // The first row that reads a token keeps its output.
        let mut first: Vec<Option<(usize, usize)>> = vec![None; n];
        for (r, row) in rows.iter().enumerate() {
            for (j, &i) in row.iter().enumerate() {
                first[i].get_or_insert((r, j));
            }
        }
        let take: Vec<(usize, usize)> = first.into_iter().map(|s| s.expect("every token is read")).collect();
        let gather = RowGather::new(n, &rows, &take, &Device::Cpu).unwrap();
        assert_eq!(gather.dims(), (5, 73));
        assert_eq!(gather.query_from, [0, 5, 5, 0, 70]);
        let q = random(&[1, n, nh, hd], 1);
        let k = random(&[1, n, nkv, hd], 2);
        let v = random(&[1, n, nkv, hd], 3);
        let go = random(&[1, n, nh, hd], 4);
        for backend in [Backend::FusedCpu, Backend::Composite] {
            let opts = AttentionOptions { backend: Some(backend), query_chunk: Some(16) };
            let (o, saved) = forward_gathered(&q, &k, &v, 0.35, &gather, opts).unwrap();
            let g = backward(&saved, &go).unwrap();

            let mut want_o = vec![0f32; n * nh * hd];
            let (mut dq, mut dk, mut dv) = (vec![0f32; n * nh * hd], vec![0f32; n * nkv * hd], vec![0f32; n * nkv * hd]);
            for (r, row) in rows.iter().enumerate() {
                let (qr, kr, vr) = (rows_of_tokens(&q, row), rows_of_tokens(&k, row), rows_of_tokens(&v, row));
                let (or, sr) = forward_with(&qr, &kr, &vr, 0.35, None, opts).unwrap();
                let or = or.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let gor = rows_of_tokens(&go, row).flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let mut kept = vec![0f32; gor.len()];
                for (j, &i) in row.iter().enumerate() {
                    if take[i] == (r, j) {
                        let w = nh * hd;
                        want_o[i * w..(i + 1) * w].copy_from_slice(&or[j * w..(j + 1) * w]);
                        kept[j * w..(j + 1) * w].copy_from_slice(&gor[j * w..(j + 1) * w]);
                    }
                }
                let gr = backward(&sr, &Tensor::from_vec(kept, (1, row.len(), nh, hd), &Device::Cpu).unwrap()).unwrap();
                for (acc, d, w) in [(&mut dq, &gr.dq, nh * hd), (&mut dk, &gr.dk, nkv * hd), (&mut dv, &gr.dv, nkv * hd)] {
                    let d = d.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    for (j, &i) in row.iter().enumerate() {
                        for c in 0..w {
                            acc[i * w + c] += d[j * w + c];
                        }
                    }
                }
            }
            let close = |name: &str, got: &Tensor, want: &[f32]| {
                let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert_eq!(got.len(), want.len(), "{backend:?} {name}");
                for (x, y) in got.iter().zip(want) {
                    assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{backend:?} {name}: {x} vs {y}");
                }
                assert!(want.iter().any(|x| *x != 0.0));
            };
            close("o", &o, &want_o);
            close("dq", &g.dq, &dq);
            close("dk", &g.dk, &dk);
            close("dv", &g.dv, &dv);
            assert_eq!(saved.lse().dims(), &[5, nh, 73]);
        }
    }

    #[test]
    fn a_take_slot_that_reads_another_token_is_refused() {
        let rows = vec![vec![0, 1], vec![0, 2]];
        let e = RowGather::new(3, &rows, &[(0, 0), (0, 1), (0, 1)], &Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("token 2 takes its output from row 0 slot 1"), "{e}");
        assert!(RowGather::new(3, &rows, &[(0, 0), (0, 1)], &Device::Cpu).is_err());
        assert!(RowGather::new(2, &rows, &[(0, 0), (0, 1)], &Device::Cpu).unwrap_err().to_string().contains("reads token 2 of 2"));
    }
}
