//! The fused CPU kernel: blocked causal attention with an online softmax (FlashAttention-2).
//!
//! Blocks of [`BQ`] query tokens × [`BK`] key tokens. One block of work holds the g query heads
//! that share a kv head as g·BQ rows (Q gathered once), so each K/V block is read once per
//! group. At hd = 128, g = 2 the Q block and the O accumulator are 64 KB each, the score tile
//! 32 KB and a K or V block 32 KB: the working set stays in L2 while K/V stream through.
//! Products of blocks go to `gemm` (single-threaded inside the rayon tasks); the softmax uses
//! the vectorised `exp` of `cpu::simd`.
//!
//! Parallelism without races: results are computed head-major, (b, nkv, t, g, hd), so that
//! every task owns a contiguous piece, and transposed to token-major at the end (a parallel
//! copy, small next to the attention work). The forward's tasks are (row, kv head, query
//! block); the backward runs two passes: (row, kv head, key block) tasks, each owning dK/dV of
//! its keys, then (row, kv head, query block) tasks, each owning dQ of its queries and summing
//! over the key blocks in order. Recomputing P and dP for dQ costs two more block products than
//! sharing dQ between key-block tasks, but a shared sum would be added up in whatever order the
//! threads ran: the gradients, and so the trained adapter, would differ in the last bits from
//! run to run. So where it fits in [`DS_STORE_LIMIT_BYTES`], the key-block pass keeps each dS
//! block it computed and the query-block pass only multiplies them by K (5 block products per
//! block pair instead of 7, no second `exp`); the results are the same bits either way.

use candle_core::Tensor;
use rayon::prelude::*;

use super::{AttentionSaved, Dims, OP};
use crate::cpu::{dot, exp_affine_sum, matmul, max, CpuF32, Mat, MatMut};
use crate::Result;

/// Query tokens per block.
const BQ: usize = 64;
/// Key tokens per block. Equal to `BQ`, so query block i's diagonal is key block i and every
/// row of a block sees at least one key of each block up to its diagonal.
const BK: usize = BQ;

/// Largest scratch for the dS blocks of one backward call (f32): b · nh · (block pairs) ·
/// BQ · BK floats, 2.3 MB per layer at SmolLM2's shape and 256 tokens, 138 MB per sequence at
/// Qwen3-0.6B's and 2000. Above it, the query-block pass recomputes P and dS.
pub(crate) const DS_STORE_LIMIT_BYTES: usize = 256 << 20;

/// Read-only inputs of one call and the index arithmetic of the token-major layouts.
struct Ctx<'a> {
    d: Dims,
    g: usize,
    scale: f32,
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
}

impl Ctx<'_> {
    /// The keys (or values) kn tokens from k0 of kv head kh: rows nkv·hd apart.
    fn kv_block<'s>(&self, src: &'s [f32], bi: usize, kh: usize, k0: usize, kn: usize) -> Mat<'s> {
        let (nkv, hd) = (self.d.nkv, self.d.hd);
        let base = ((bi * self.d.t + k0) * nkv + kh) * hd;
        Mat::rows(&src[base..], kn, hd, nkv * hd)
    }

    /// Copies the g heads of group kh for tokens q0..q0+qn of a (b, t, nh, hd) tensor into
    /// `dst` as rows r = ii·g + j.
    fn gather_group(&self, src: &[f32], bi: usize, kh: usize, q0: usize, qn: usize, dst: &mut [f32]) {
        let w = self.g * self.d.hd;
        for (ii, row) in dst[..qn * w].chunks_exact_mut(w).enumerate() {
            let at = ((bi * self.d.t + q0 + ii) * self.d.nh + kh * self.g) * self.d.hd;
            row.copy_from_slice(&src[at..at + w]);
        }
    }

    /// Floats of one kept dS block: (g·BQ, BK).
    fn ds_block(&self) -> usize {
        self.g * BQ * BK
    }

    /// Number of keys row r of query block q0 sees in key block k0 (of kn keys).
    fn visible(&self, r: usize, q0: usize, k0: usize, kn: usize) -> usize {
        (q0 + r / self.g + 1 - k0).min(kn)
    }
}

/// (b, nkv, t, w) -> (b, t, nkv, w), in parallel over tokens.
fn to_token_major(x: &[f32], b: usize, nkv: usize, t: usize, w: usize) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    if !y.is_empty() {
        y.par_chunks_mut(nkv * w).enumerate().for_each(|(bt, dst)| {
            let (bi, i) = (bt / t, bt % t);
            for (kh, d) in dst.chunks_exact_mut(w).enumerate() {
                let at = ((bi * nkv + kh) * t + i) * w;
                d.copy_from_slice(&x[at..at + w]);
            }
        });
    }
    debug_assert!(b * nkv * t * w == x.len());
    y
}

/// Output (b, t, nh, hd) and lse (b, nh, t), both f32.
/// Query blocks that end at or before `query_from[row]` are skipped (zero output and lse).
pub(super) fn forward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    d: Dims,
    scale: f32,
    lens: Option<&[usize]>,
    query_from: Option<&[usize]>,
) -> Result<(Tensor, Tensor)> {
    let (qs, ks, vs) = (CpuF32::new(q, OP, "q")?, CpuF32::new(k, OP, "k")?, CpuF32::new(v, OP, "v")?);
    let ctx = Ctx { d, g: d.group(), scale, q: qs.as_slice(), k: ks.as_slice(), v: vs.as_slice() };
    let Dims { b, t, nh, nkv, hd } = d;
    let g = ctx.g;
    // Head-major (b, nkv, t, g, hd) and (b, nkv, t, g).
    let mut out = vec![0f32; b * nkv * t * g * hd];
    let mut lse = vec![0f32; b * nkv * t * g];
    if !out.is_empty() {
        out.par_chunks_mut(t * g * hd).zip(lse.par_chunks_mut(t * g)).enumerate().for_each(|(bk, (ob, lb))| {
            let (bi, kh) = (bk / nkv, bk % nkv);
            let len = lens.map_or(t, |l| l[bi]);
            let first = first_query_block(query_from, bi);
            let blocks = ob[..len * g * hd].par_chunks_mut(BQ * g * hd).zip(lb[..len * g].par_chunks_mut(BQ * g));
            blocks.enumerate().skip(first).for_each_init(
                || FwdWork::new(g * BQ, hd),
                |ws, (qb, (o, l))| forward_block(&ctx, ws, bi, kh, qb, o, l),
            );
        });
    }
    drop((qs, ks, vs));
    let o = Tensor::from_vec(to_token_major(&out, b, nkv, t, g * hd), (b, t, nh, hd), q.device())?;
    let lse = Tensor::from_vec(lse, (b, nkv, t, g), q.device())?.transpose(2, 3)?.reshape((b, nh, t))?;
    Ok((o, lse))
}

/// The first query block of row `bi` whose outputs are needed: the one holding
/// `query_from[bi]` (0 without starts).
fn first_query_block(query_from: Option<&[usize]>, bi: usize) -> usize {
    query_from.map_or(0, |f| f[bi] / BQ)
}

/// Per-task buffers of the forward.
struct FwdWork {
    q: Vec<f32>,
    s: Vec<f32>,
    m: Vec<f32>,
    l: Vec<f32>,
}

impl FwdWork {
    fn new(rows: usize, hd: usize) -> Self {
        FwdWork { q: vec![0.0; rows * hd], s: vec![0.0; rows * BK], m: vec![0.0; rows], l: vec![0.0; rows] }
    }
}

/// One query block of one kv-head group: `o` (tokens, g, hd) and `lse` (tokens, g) are its
/// head-major pieces, whose rows r = ii·g + j are those of the gathered Q.
fn forward_block(ctx: &Ctx, ws: &mut FwdWork, bi: usize, kh: usize, qb: usize, o: &mut [f32], lse: &mut [f32]) {
    let hd = ctx.d.hd;
    let q0 = qb * BQ;
    let rows = lse.len();
    let qn = rows / ctx.g;
    ctx.gather_group(ctx.q, bi, kh, q0, qn, &mut ws.q);
    let qm = Mat::rows(&ws.q, rows, hd, hd);
    ws.m[..rows].fill(f32::NEG_INFINITY);
    ws.l[..rows].fill(0.0);
    o.fill(0.0);
    for kb in 0..=qb {
        let k0 = kb * BK;
        let kn = BK.min(q0 + qn - k0);
        let km = ctx.kv_block(ctx.k, bi, kh, k0, kn);
        matmul(MatMut::rows(&mut ws.s, rows, kn, BK), false, qm, km.t(), ctx.scale, 1);
        for r in 0..rows {
            let row = &mut ws.s[r * BK..r * BK + kn];
            let vis = if kb == qb { ctx.visible(r, q0, k0, kn) } else { kn };
            let m_new = ws.m[r].max(max(&row[..vis]));
            let corr = (ws.m[r] - m_new).exp();
            let sum = exp_affine_sum(&mut row[..vis], 1.0, m_new);
            row[vis..].fill(0.0);
            ws.l[r] = ws.l[r] * corr + sum;
            ws.m[r] = m_new;
            if corr != 1.0 {
                o[r * hd..(r + 1) * hd].iter_mut().for_each(|a| *a *= corr);
            }
        }
        let vm = ctx.kv_block(ctx.v, bi, kh, k0, kn);
        matmul(MatMut::rows(o, rows, hd, hd), true, Mat::rows(&ws.s, rows, kn, BK), vm, 1.0, 1);
    }
    for (r, (orow, lse)) in o.chunks_exact_mut(hd).zip(lse).enumerate() {
        let inv = 1.0 / ws.l[r];
        orow.iter_mut().for_each(|a| *a *= inv);
        *lse = ws.m[r] + ws.l[r].ln();
    }
}

/// dq, dk, dv (f32, the input shapes) from the saved forward and dO (contiguous f32).
pub(super) fn backward(saved: &AttentionSaved, grad_o: &Tensor, d: Dims, lens: Option<&[usize]>) -> Result<(Tensor, Tensor, Tensor)> {
    backward_limited(saved, grad_o, d, lens, DS_STORE_LIMIT_BYTES)
}

/// The first query block key block kb meets in the backward, of `nb` blocks when query blocks
/// before `first` are skipped (`nb` when it meets none).
fn first_pair(nb: usize, first: usize, kb: usize) -> usize {
    kb.max(first).min(nb)
}

/// Block pairs (query block qb ≥ key block kb, qb ≥ first) of `nb` blocks: the dS blocks a
/// (row, kv head) keeps.
fn pairs(nb: usize, first: usize) -> usize {
    (0..nb).map(|kb| nb - first_pair(nb, first, kb)).sum()
}

/// Where the dS block of pair (qb, kb) starts in a (row, kv head) region of blocks of `block`
/// floats, key-block major: key block kb's blocks (query blocks first_pair(kb)..nb) follow
/// those of key blocks 0..kb.
fn ds_at(nb: usize, first: usize, kb: usize, qb: usize, block: usize) -> usize {
    debug_assert!(qb >= first_pair(nb, first, kb) && qb < nb);
    let f = first.min(nb);
    // Key blocks before `first` each meet nb − f query blocks, key block k ≥ first nb − k.
    let before = if kb <= f { kb * (nb - f) } else { f * (nb - f) + (kb - f) * nb - (kb - f) * (kb - 1 + f) / 2 };
    (before + qb - first_pair(nb, first, kb)) * block
}

/// [`backward`] with the dS scratch limit as a parameter (tests run both paths).
fn backward_limited(
    saved: &AttentionSaved,
    grad_o: &Tensor,
    d: Dims,
    lens: Option<&[usize]>,
    ds_limit_bytes: usize,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (qs, ks, vs) = (CpuF32::new(&saved.q, OP, "q")?, CpuF32::new(&saved.k, OP, "k")?, CpuF32::new(&saved.v, OP, "v")?);
    let (os, ls, dos) = (CpuF32::new(&saved.o, OP, "o")?, CpuF32::new(&saved.lse, OP, "lse")?, CpuF32::new(grad_o, OP, "grad_o")?);
    let ctx = Ctx { d, g: d.group(), scale: saved.scale as f32, q: qs.as_slice(), k: ks.as_slice(), v: vs.as_slice() };
    let Dims { b, t, nh, nkv, hd } = d;
    let g = ctx.g;
    let len_of = |bi: usize| lens.map_or(t, |l| l[bi]);
    let query_from = saved.query_from.as_deref();
    let (o, lse, dout) = (os.as_slice(), ls.as_slice(), dos.as_slice());

    // D = rowsum(dO ⊙ O), (b, t, nh); rows past their length stay 0 (never read).
    let mut dsum = vec![0f32; b * t * nh];
    if !dsum.is_empty() {
        dsum.par_chunks_mut(t * nh).enumerate().for_each(|(bi, db)| {
            for (r, x) in db[..len_of(bi) * nh].iter_mut().enumerate() {
                let at = (bi * t * nh + r) * hd;
                *x = dot(&dout[at..at + hd], &o[at..at + hd]);
            }
        });
    }

    // Head-major (b, nkv, t, g, hd) and (b, nkv, t, hd).
    let mut dq = vec![0f32; b * nkv * t * g * hd];
    let mut dk = vec![0f32; b * nkv * t * hd];
    let mut dv = vec![0f32; b * nkv * t * hd];
    // dS scratch: per (row, kv head) a region of the row's block pairs, each (g·BQ, BK),
    // key-block major (key block kb's pairs with its query blocks are contiguous: one task's).
    let slot = ctx.ds_block();
    let row_pairs = |bi: usize| pairs(len_of(bi).div_ceil(BQ), first_query_block(query_from, bi));
    let region_at: Vec<usize> = (0..=b * nkv).scan(0, |at, bk| {
        let start = *at;
        if bk < b * nkv {
            *at += row_pairs(bk / nkv) * slot;
        }
        Some(start)
    }).collect();
    let store = region_at[b * nkv] * 4 <= ds_limit_bytes;
    let mut ds = if store { vec![0f32; region_at[b * nkv]] } else { Vec::new() };
    if !dq.is_empty() {
        let bw = Bwd { ctx: &ctx, lse, dout, dsum: &dsum, query_from };
        let mut ds_regions: Vec<&mut [f32]> = Vec::with_capacity(b * nkv);
        let mut rest: &mut [f32] = &mut ds;
        for bk in 0..b * nkv {
            let (mine, tail) = rest.split_at_mut(if store { region_at[bk + 1] - region_at[bk] } else { 0 });
            ds_regions.push(mine);
            rest = tail;
        }
        dk.par_chunks_mut(t * hd).zip(dv.par_chunks_mut(t * hd)).zip(ds_regions.par_iter_mut()).enumerate().for_each(
            |(bk, ((dkb, dvb), dsr))| {
                let (bi, kh) = (bk / nkv, bk % nkv);
                let len = len_of(bi);
                let nb = len.div_ceil(BK);
                let first = first_query_block(query_from, bi);
                // Key block kb's dS blocks: one per query block it meets.
                let mut per_kb = Vec::with_capacity(nb);
                let mut rest: &mut [f32] = std::mem::take(dsr);
                for kb in 0..nb {
                    let n = if store { (nb - first_pair(nb, first, kb)) * slot } else { 0 };
                    let (mine, tail) = rest.split_at_mut(n);
                    per_kb.push(mine);
                    rest = tail;
                }
                let blocks = dkb[..len * hd].par_chunks_mut(BK * hd).zip(dvb[..len * hd].par_chunks_mut(BK * hd));
                blocks.zip(per_kb.into_par_iter()).enumerate().for_each_init(
                    || BwdWork::new(g * BQ, hd),
                    |ws, (kb, ((dkc, dvc), dsc))| bw.key_block(ws, bi, len, kh, kb, dkc, dvc, dsc),
                );
            },
        );
        let ds = &ds;
        dq.par_chunks_mut(t * g * hd).enumerate().for_each(|(bk, dqb)| {
            let (bi, kh) = (bk / nkv, bk % nkv);
            let len = len_of(bi);
            let dsr = if store { &ds[region_at[bk]..region_at[bk + 1]] } else { &[][..] };
            dqb[..len * g * hd].par_chunks_mut(BQ * g * hd).enumerate().skip(first_query_block(query_from, bi)).for_each_init(
                || BwdWork::new(g * BQ, hd),
                |ws, (qb, dqc)| {
                    if store {
                        bw.query_block_stored(bi, len, kh, qb, dqc, dsr)
                    } else {
                        bw.query_block(ws, bi, len, kh, qb, dqc)
                    }
                },
            );
        });
    }
    drop(ds);
    drop((qs, ks, vs, os, ls, dos));
    let dev = saved.q.device();
    Ok((
        Tensor::from_vec(to_token_major(&dq, b, nkv, t, g * hd), (b, t, nh, hd), dev)?,
        Tensor::from_vec(to_token_major(&dk, b, nkv, t, hd), (b, t, nkv, hd), dev)?,
        Tensor::from_vec(to_token_major(&dv, b, nkv, t, hd), (b, t, nkv, hd), dev)?,
    ))
}

/// Shared state of the backward's tasks.
struct Bwd<'a> {
    ctx: &'a Ctx<'a>,
    /// (b, nh, t)
    lse: &'a [f32],
    /// dO, the layout of q.
    dout: &'a [f32],
    /// (b, t, nh)
    dsum: &'a [f32],
    /// Per row: query blocks before [`first_query_block`] have a zero dO and are skipped.
    query_from: Option<&'a [usize]>,
}

/// Per-task buffers of the backward, reused across query blocks.
struct BwdWork {
    q: Vec<f32>,
    dout: Vec<f32>,
    p: Vec<f32>,
    dp: Vec<f32>,
    lse: Vec<f32>,
    dsum: Vec<f32>,
}

impl BwdWork {
    fn new(rows: usize, hd: usize) -> Self {
        BwdWork {
            q: vec![0.0; rows * hd],
            dout: vec![0.0; rows * hd],
            p: vec![0.0; rows * BK],
            dp: vec![0.0; rows * BK],
            lse: vec![0.0; rows],
            dsum: vec![0.0; rows],
        }
    }
}

impl Bwd<'_> {
    /// Key block kb of kv head kh against every query block at or below the diagonal:
    /// accumulates into its dK/dV rows (`dk`, `dv`: the block's (tokens, hd) head-major
    /// pieces). A non-empty `ds` receives the dS block of each query block qb ≥ kb, in order,
    /// (g·BQ, BK) each.
    #[allow(clippy::too_many_arguments)]
    fn key_block(
        &self,
        ws: &mut BwdWork,
        bi: usize,
        len: usize,
        kh: usize,
        kb: usize,
        dk: &mut [f32],
        dv: &mut [f32],
        ds: &mut [f32],
    ) {
        let ctx = self.ctx;
        let hd = ctx.d.hd;
        let k0 = kb * BK;
        let kn = dk.len() / hd;
        let km = ctx.kv_block(ctx.k, bi, kh, k0, kn);
        let vm = ctx.kv_block(ctx.v, bi, kh, k0, kn);
        let nb = len.div_ceil(BQ);
        let from = first_pair(nb, first_query_block(self.query_from, bi), kb);
        for qb in from..nb {
            let rows = self.load_queries(ws, bi, len, kh, qb);
            self.probs_and_ds(ws, rows, qb, kb, kn, km, vm);
            if !ds.is_empty() {
                // `ds` is key block kb's own run of blocks.
                let at = (qb - from) * ctx.ds_block();
                ds[at..at + rows * BK].copy_from_slice(&ws.dp[..rows * BK]);
            }
            let qm = Mat::rows(&ws.q, rows, hd, hd);
            let dom = Mat::rows(&ws.dout, rows, hd, hd);
            matmul(MatMut::rows(dv, kn, hd, hd), true, Mat::rows(&ws.p, rows, kn, BK).t(), dom, 1.0, 1);
            matmul(MatMut::rows(dk, kn, hd, hd), true, Mat::rows(&ws.dp, rows, kn, BK).t(), qm, ctx.scale, 1);
        }
    }

    /// Query block qb of kv head kh against every key block up to its diagonal, in order:
    /// recomputes P and dS as [`Self::key_block`] does and accumulates dQ into `dq` (the
    /// block's (tokens, g, hd) head-major piece).
    fn query_block(&self, ws: &mut BwdWork, bi: usize, len: usize, kh: usize, qb: usize, dq: &mut [f32]) {
        let ctx = self.ctx;
        let hd = ctx.d.hd;
        let rows = self.load_queries(ws, bi, len, kh, qb);
        for kb in 0..=qb {
            let k0 = kb * BK;
            let kn = BK.min(len - k0);
            let km = ctx.kv_block(ctx.k, bi, kh, k0, kn);
            self.probs_and_ds(ws, rows, qb, kb, kn, km, ctx.kv_block(ctx.v, bi, kh, k0, kn));
            matmul(MatMut::rows(dq, rows, hd, hd), true, Mat::rows(&ws.dp, rows, kn, BK), km, ctx.scale, 1);
        }
    }

    /// [`Self::query_block`] from the dS blocks the key-block pass kept (`ds`: this row's and kv
    /// head's region, key-block major): dQ = Σ_kb dS·K in the same order, one product each.
    fn query_block_stored(&self, bi: usize, len: usize, kh: usize, qb: usize, dq: &mut [f32], ds: &[f32]) {
        let ctx = self.ctx;
        let hd = ctx.d.hd;
        let nb = len.div_ceil(BK);
        let rows = ctx.g * BQ.min(len - qb * BQ);
        for kb in 0..=qb {
            let k0 = kb * BK;
            let kn = BK.min(len - k0);
            let km = ctx.kv_block(ctx.k, bi, kh, k0, kn);
            let at = ds_at(nb, first_query_block(self.query_from, bi), kb, qb, ctx.ds_block());
            let dsm = Mat::rows(&ds[at..at + rows * BK], rows, kn, BK);
            matmul(MatMut::rows(dq, rows, hd, hd), true, dsm, km, ctx.scale, 1);
        }
    }

    /// Gathers query block qb of kv head kh (Q, dO, lse and D of its g·qn rows) into `ws`;
    /// returns the row count.
    fn load_queries(&self, ws: &mut BwdWork, bi: usize, len: usize, kh: usize, qb: usize) -> usize {
        let ctx = self.ctx;
        let Dims { t, nh, .. } = ctx.d;
        let g = ctx.g;
        let q0 = qb * BQ;
        let qn = BQ.min(len - q0);
        ctx.gather_group(ctx.q, bi, kh, q0, qn, &mut ws.q);
        ctx.gather_group(self.dout, bi, kh, q0, qn, &mut ws.dout);
        for r in 0..qn * g {
            let (i, h) = (q0 + r / g, kh * g + r % g);
            ws.lse[r] = self.lse[(bi * nh + h) * t + i];
            ws.dsum[r] = self.dsum[(bi * t + i) * nh + h];
        }
        qn * g
    }

    /// For the loaded query block qb against key block kb (`kn` keys `km`, values `vm`):
    /// `ws.p` = P = exp(scale·Q·Kᵀ − lse), zero above the diagonal, and
    /// `ws.dp` = dS = P ⊙ (dO·Vᵀ − D).
    #[allow(clippy::too_many_arguments)]
    fn probs_and_ds(&self, ws: &mut BwdWork, rows: usize, qb: usize, kb: usize, kn: usize, km: Mat, vm: Mat) {
        let ctx = self.ctx;
        let hd = ctx.d.hd;
        let (q0, k0) = (qb * BQ, kb * BK);
        let qm = Mat::rows(&ws.q, rows, hd, hd);
        let dom = Mat::rows(&ws.dout, rows, hd, hd);
        matmul(MatMut::rows(&mut ws.p, rows, kn, BK), false, qm, km.t(), ctx.scale, 1);
        for r in 0..rows {
            let row = &mut ws.p[r * BK..r * BK + kn];
            let vis = if qb == kb { ctx.visible(r, q0, k0, kn) } else { kn };
            exp_affine_sum(&mut row[..vis], 1.0, ws.lse[r]);
            row[vis..].fill(0.0);
        }
        matmul(MatMut::rows(&mut ws.dp, rows, kn, BK), false, dom, vm.t(), 1.0, 1);
        for r in 0..rows {
            let (p, dp) = (&ws.p[r * BK..r * BK + kn], &mut ws.dp[r * BK..r * BK + kn]);
            let dr = ws.dsum[r];
            for (x, &pv) in dp.iter_mut().zip(p) {
                *x = pv * (*x - dr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::{forward_rows, random, AttentionOptions};
    use crate::Backend;

    /// Keeping dS and recomputing it give the same bits, with GQA, ragged lengths, blocks cut
    /// short at the end and rows whose first query blocks are skipped.
    #[test]
    fn stored_ds_gives_the_recomputed_bits() {
        let cases = [
            (1, 200, 4, 2, 16, None, None),
            (2, 150, 9, 3, 8, Some(vec![150, 67]), None),
            (1, 64, 2, 2, 8, None, None),
            (3, 200, 4, 2, 8, Some(vec![200, 150, 67]), Some(vec![130, 0, 67])),
        ];
        for (b, t, nh, nkv, hd, lens, from) in cases {
            let q = random(&[b, t, nh, hd], 1);
            let k = random(&[b, t, nkv, hd], 2);
            let v = random(&[b, t, nkv, hd], 3);
            // A zero dO before each row's start, as the rows of a gathered call have.
            let mut go = random(&[b, t, nh, hd], 4);
            if let Some(f) = &from {
                let m: Vec<f32> = f.iter().flat_map(|&s| (0..t).map(move |i| if i < s { 0.0 } else { 1.0 })).collect();
                go = go.broadcast_mul(&Tensor::from_vec(m, (b, t, 1, 1), &candle_core::Device::Cpu).unwrap()).unwrap();
            }
            let opts = AttentionOptions { backend: Some(Backend::FusedCpu), ..Default::default() };
            let (_, saved) = forward_rows(&q, &k, &v, 0.3, lens.as_deref(), from.as_deref(), opts).unwrap();
            let d = Dims { b, t, nh, nkv, hd };
            let stored = backward_limited(&saved, &go, d, lens.as_deref(), usize::MAX).unwrap();
            let recomputed = backward_limited(&saved, &go, d, lens.as_deref(), 0).unwrap();
            for (a, r) in [(&stored.0, &recomputed.0), (&stored.1, &recomputed.1), (&stored.2, &recomputed.2)] {
                let (a, r) = (a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), r.flatten_all().unwrap().to_vec1::<f32>().unwrap());
                assert!(a.iter().zip(&r).all(|(x, y)| x.to_bits() == y.to_bits()), "b {b} t {t}: stored dS path differs");
                assert!(a.iter().any(|x| *x != 0.0));
            }
        }
    }

    /// `ds_at` numbers a region's blocks 0, 1, 2, … in key-block-major order of the pairs the
    /// key-block pass runs, and `pairs` counts them.
    #[test]
    fn ds_offsets_enumerate_the_pairs_in_order() {
        for nb in 0..7 {
            for first in 0..9 {
                let mut next = 0;
                for kb in 0..nb {
                    for qb in first_pair(nb, first, kb)..nb {
                        assert_eq!(ds_at(nb, first, kb, qb, 3), 3 * next, "nb {nb} first {first} pair ({qb}, {kb})");
                        next += 1;
                    }
                }
                assert_eq!(pairs(nb, first), next, "nb {nb} first {first}");
            }
        }
    }
}
