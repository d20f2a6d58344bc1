//! A frozen linear projection with LoRA updates, for projections that share an input and are
//! stacked by rows (q|k|v, gate|up, or a single projection as the one-part case).
//!
//! `W` (Σᵢ outᵢ, in) holds part i's rows at offset oᵢ; part i may carry a LoRA pair
//! Aᵢ (rᵢ, in), Bᵢ (outᵢ, rᵢ) in f32 with scale sᵢ = alpha / rᵢ. With x (n, in) in the base
//! dtype and x_l = f32(x) ⊙ m the LoRA input (m the dropout mask, or 1):
//!
//! ```text
//! y                = x Wᵀ                                  (base dtype)
//! y[:, oᵢ..oᵢ+outᵢ] += cast(sᵢ · (x_l Aᵢᵀ) Bᵢᵀ)            (LoRA branch in f32, as PEFT)
//! ```
//!
//! Backward, with dyᵢ = f32(dy[:, oᵢ..oᵢ+outᵢ]), xaᵢ = x_l Aᵢᵀ (saved) and Gᵢ = sᵢ dyᵢ Bᵢ:
//!
//! ```text
//! dAᵢ = Gᵢᵀ x_l                 (rᵢ, in)
//! dBᵢ = sᵢ dyᵢᵀ xaᵢ             (outᵢ, rᵢ)
//! dx  = dy W + cast(m ⊙ Σᵢ Gᵢ Aᵢ)
//! ```
//!
//! and never a gradient for W. The parts' A products are fused: xa = x_l [A₁;A₂;…]ᵀ (n, Σr),
//! dA = Gᵀ x_l and Σᵢ Gᵢ Aᵢ = G [A₁;A₂;…] with G = [G₁|G₂|…]. These products are thin (Σr is
//! 16–192 against in = 576–1024), so their cost is streaming x_l (n·in floats, 48 MB at
//! n = 12,000, in = 1024) through the cache: one product per part read it once per part;
//! fused it is read once. The one copy that costs is [A₁;A₂;…] (Σr·in floats, < 1 MB).
//! Measured on 2 cores (n = 8192, in = 1024, three parts of r = 16): x_l Aᵀ fused 9.2 ms
//! against 11.7 ms per part; the whole q|k|v layer (out 2048+1024+1024) took 0.74 s forward and
//! 0.80 s backward fused, 1.13 s and 1.02 s on the composite path (its copies of y's column
//! blocks and of dy's).
//!
//! Dropout: PEFT drops the LoRA input only. The caller passes the mask m (n, in) in f32 with
//! entries 0 or 1/(1−p); the op forms x_l itself and folds m into dx, so the caller gets one
//! complete dx. One mask serves all parts of a call (PEFT draws one per projection module).
//! Saved: x, m, and xa; x_l is re-formed in the backward (one elementwise pass) rather than
//! kept next to x.

use std::borrow::Cow;
use std::sync::Arc;

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use crate::cpu::{matmul, matmul_packed, rows_per_task, tensor, CpuF32, Mat, MatMut};
pub use crate::cpu::PackedProjection;
use crate::{Backend, OpError, Result};

const OP: &str = "lora_linear";

/// A LoRA pair: the update `scale · (x Aᵀ) Bᵀ`.
#[derive(Debug, Clone)]
pub struct Lora {
    /// (r, in), f32.
    pub a: Tensor,
    /// (out, r), f32.
    pub b: Tensor,
    /// alpha / r.
    pub scale: f64,
}

/// One row block of the stacked weight.
#[derive(Debug, Clone)]
pub struct LinearPart {
    /// Rows of `W` (output columns) that belong to this part.
    pub out: usize,
    pub lora: Option<Lora>,
}

/// A frozen stacked weight and its parts' LoRA pairs, checked once.
#[derive(Debug, Clone)]
pub struct LoraLinear {
    w: Tensor,
    parts: Vec<LinearPart>,
    /// Per part: (output column offset, LoRA column offset in xa, rank or 0).
    offsets: Vec<(usize, usize, usize)>,
    /// Σ rᵢ.
    rank_sum: usize,
    /// W packed for the CPU product kernel ([`LoraLinear::with_packed`]).
    packed: Option<Arc<PackedProjection>>,
}

/// What [`backward`] reads.
#[derive(Debug, Clone)]
pub struct LoraLinearSaved {
    backend: Backend,
    layer: LoraLinear,
    x: Tensor,
    mask: Option<Tensor>,
    /// x_l [A₁;A₂;…]ᵀ (n, Σr) f32, when any part has LoRA.
    xa: Option<Tensor>,
}

/// Gradients of one part's LoRA pair.
#[derive(Debug, Clone)]
pub struct LoraPairGrads {
    pub da: Tensor,
    pub db: Tensor,
}

#[derive(Debug, Clone)]
pub struct LoraLinearGrads {
    /// Gradient of x (base dtype), when asked for.
    pub dx: Option<Tensor>,
    /// Per part, in order: the pair's gradients, `None` for parts without LoRA.
    pub parts: Vec<Option<LoraPairGrads>>,
}

impl LoraLinear {
    /// `w` (Σ outᵢ, in) in the base dtype; each LoRA pair f32 on `w`'s device.
    pub fn new(w: Tensor, parts: Vec<LinearPart>) -> Result<Self> {
        let (rows, inp) =
            w.dims2().map_err(|_| OpError::shape(OP, format!("W must be (out, in), got {:?}", w.dims())))?;
        let total: usize = parts.iter().map(|p| p.out).sum();
        if parts.is_empty() || total != rows {
            return Err(OpError::shape(OP, format!("parts' out sizes sum to {total} but W has {rows} rows")));
        }
        let (mut offsets, mut off, mut roff) = (Vec::with_capacity(parts.len()), 0, 0);
        for (i, p) in parts.iter().enumerate() {
            let r = match &p.lora {
                None => 0,
                Some(l) => {
                    let r = l.a.dims().first().copied().unwrap_or(0);
                    let fits = l.a.dims() == [r, inp] && l.b.dims() == [p.out, r] && r > 0;
                    let f32s = l.a.dtype() == DType::F32 && l.b.dtype() == DType::F32;
                    let same = l.a.device().same_device(w.device()) && l.b.device().same_device(w.device());
                    if !fits || !f32s || !same || !l.scale.is_finite() {
                        return Err(OpError::shape(
                            OP,
                            format!(
                                "part {i}: A must be (r, {inp}) and B ({}, r), f32, on W's device, finite scale; \
                                 got A {:?} {:?}, B {:?} {:?}, scale {}",
                                p.out,
                                l.a.dims(),
                                l.a.dtype(),
                                l.b.dims(),
                                l.b.dtype(),
                                l.scale
                            ),
                        ));
                    }
                    r
                }
            };
            offsets.push((off, roff, r));
            off += p.out;
            roff += r;
        }
        Ok(LoraLinear { w, parts, offsets, rank_sum: roff, packed: None })
    }

    /// The fused CPU path's products with W (`x·Wᵀ`, `dy·W`) then read `packed`, W packed
    /// once for the product kernel, instead of packing W at every call; same results. The
    /// composite path ignores it. `packed` must be W's (same dims; the caller keeps it in step
    /// with W).
    pub fn with_packed(mut self, packed: Arc<PackedProjection>) -> Result<Self> {
        let dims = self.w.dims2()?;
        if packed.dims() != dims {
            return Err(OpError::shape(OP, format!("packed weight is {:?}, W is {dims:?}", packed.dims())));
        }
        self.packed = Some(packed);
        Ok(self)
    }

    pub fn w(&self) -> &Tensor {
        &self.w
    }

    pub fn parts(&self) -> &[LinearPart] {
        &self.parts
    }

    /// `y` (n, Σ outᵢ) for `x` (n, in) and an optional dropout mask (n, in) f32 on the LoRA
    /// input; the backend follows [`Backend::for_tensor`]`(x)`.
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<(Tensor, LoraLinearSaved)> {
        self.forward_on(Backend::for_tensor(x), x, mask)
    }

    /// [`forward`](Self::forward) on a chosen backend; [`backward`] then runs on the same one.
    pub fn forward_on(&self, backend: Backend, x: &Tensor, mask: Option<&Tensor>) -> Result<(Tensor, LoraLinearSaved)> {
        self.forward_impl(backend, x, mask, None)
    }

    /// `residual + y`: a projection that ends a residual block (o, down), with the sum formed
    /// by the product itself (it accumulates onto a copy of `residual`) instead of a separate
    /// add. `residual` is (n, Σ outᵢ) in x's dtype. The backward is [`backward`]'s: the
    /// residual's gradient is dy itself.
    pub fn forward_add(&self, x: &Tensor, mask: Option<&Tensor>, residual: &Tensor) -> Result<(Tensor, LoraLinearSaved)> {
        self.forward_add_on(Backend::for_tensor(x), x, mask, residual)
    }

    /// [`forward_add`](Self::forward_add) on a chosen backend.
    pub fn forward_add_on(
        &self,
        backend: Backend,
        x: &Tensor,
        mask: Option<&Tensor>,
        residual: &Tensor,
    ) -> Result<(Tensor, LoraLinearSaved)> {
        self.forward_impl(backend, x, mask, Some(residual))
    }

    fn forward_impl(
        &self,
        backend: Backend,
        x: &Tensor,
        mask: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<(Tensor, LoraLinearSaved)> {
        let n = self.check_input(x, mask)?;
        if let Some(r) = residual {
            let o = self.w.dim(0)?;
            if r.dims() != [n, o] || r.dtype() != x.dtype() || !r.device().same_device(x.device()) {
                return Err(OpError::shape(
                    OP,
                    format!("residual must be ({n}, {o}) {:?} on x's device, got {:?} {:?}", x.dtype(), r.dims(), r.dtype()),
                ));
            }
        }
        let (y, xa) = match backend {
            Backend::FusedCpu => self.fused_forward(x, mask, n, residual)?,
            Backend::Composite => {
                let (y, xa) = self.composite_forward(x, mask)?;
                let y = match residual {
                    Some(r) => (r + y)?,
                    None => y,
                };
                (y, xa)
            }
        };
        let saved = LoraLinearSaved { backend, layer: self.clone(), x: x.clone(), mask: mask.cloned(), xa };
        Ok((y, saved))
    }

    /// The forward in differentiable candle ops (today's per-projection formula).
    pub fn reference(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        self.check_input(x, mask)?;
        let y = x.matmul(&self.w.t()?)?;
        let mut cols = Vec::with_capacity(self.parts.len());
        for (p, &(off, _, _)) in self.parts.iter().zip(&self.offsets) {
            let yi = y.narrow(1, off, p.out)?;
            cols.push(match &p.lora {
                None => yi,
                Some(l) => {
                    let xl = self.lora_input(x, mask)?;
                    let d = (xl.matmul(&l.a.t()?)?.matmul(&l.b.t()?)? * l.scale)?;
                    (yi + d.to_dtype(x.dtype())?)?
                }
            });
        }
        Ok(Tensor::cat(&cols, 1)?)
    }

    fn has_lora(&self) -> bool {
        self.rank_sum > 0
    }

    /// n, for a valid input and mask.
    fn check_input(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<usize> {
        let inp = self.w.dim(1)?;
        let n = match x.dims2() {
            Ok((n, i)) if i == inp && x.dtype() == self.w.dtype() && x.device().same_device(self.w.device()) => n,
            _ => {
                return Err(OpError::shape(
                    OP,
                    format!("x must be (n, {inp}) {:?} on W's device, got {:?} {:?}", self.w.dtype(), x.dims(), x.dtype()),
                ))
            }
        };
        if let Some(m) = mask {
            if m.dims() != [n, inp] || m.dtype() != DType::F32 || !m.device().same_device(x.device()) {
                return Err(OpError::shape(
                    OP,
                    format!("dropout mask must be ({n}, {inp}) f32 on x's device, got {:?} {:?}", m.dims(), m.dtype()),
                ));
            }
        }
        Ok(n)
    }

    /// x_l = f32(x) ⊙ mask.
    fn lora_input(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let xf = x.to_dtype(DType::F32)?;
        Ok(match mask {
            Some(m) => (xf * m)?,
            None => xf,
        })
    }

    /// [A₁;A₂;…] (Σr, in) over the parts with LoRA.
    fn stacked_a(&self) -> Result<Tensor> {
        let a: Vec<&Tensor> = self.parts.iter().filter_map(|p| p.lora.as_ref().map(|l| &l.a)).collect();
        Ok(if a.len() == 1 { a[0].clone() } else { Tensor::cat(&a, 0)? })
    }

    fn composite_forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<(Tensor, Option<Tensor>)> {
        let y = x.matmul(&self.w.t()?)?;
        if !self.has_lora() {
            return Ok((y, None));
        }
        let xa = self.lora_input(x, mask)?.matmul(&self.stacked_a()?.t()?)?;
        let mut cols = Vec::with_capacity(self.parts.len());
        for (p, &(off, roff, r)) in self.parts.iter().zip(&self.offsets) {
            let yi = y.narrow(1, off, p.out)?;
            cols.push(match &p.lora {
                None => yi,
                Some(l) => {
                    let d = (xa.narrow(1, roff, r)?.contiguous()?.matmul(&l.b.t()?)? * l.scale)?;
                    (yi + d.to_dtype(x.dtype())?)?
                }
            });
        }
        let y = if cols.len() == 1 { cols.remove(0) } else { Tensor::cat(&cols, 1)? };
        Ok((y, Some(xa)))
    }

    fn fused_forward(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        n: usize,
        residual: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (o, inp, rs) = (self.w.dim(0)?, self.w.dim(1)?, self.rank_sum);
        let (x, w) = (x.contiguous()?, self.w.contiguous()?);
        let (xs, ws) = (CpuF32::new(&x, OP, "x")?, CpuF32::new(&w, OP, "W")?);
        let (xv, wv) = (xs.as_slice(), ws.as_slice());
        let threads = candle_core::utils::get_num_threads();
        let mut y = match residual {
            Some(r) => {
                let r = r.contiguous()?;
                let res = CpuF32::new(&r, OP, "residual")?;
                res.as_slice().to_vec()
            }
            None => vec![0f32; n * o],
        };
        let xm = Mat::rows(xv, n, inp, inp);
        match &self.packed {
            Some(p) => matmul_packed(MatMut::rows(&mut y, n, o, o), residual.is_some(), xm, &p.forward, threads),
            None => matmul(MatMut::rows(&mut y, n, o, o), residual.is_some(), xm, Mat::rows(wv, o, inp, inp).t(), 1.0, threads),
        }
        let xa = if self.has_lora() {
            let mask = mask.map(|m| m.contiguous()).transpose()?;
            let ms = mask.as_ref().map(|m| CpuF32::new(m, OP, "dropout mask")).transpose()?;
            let xl = masked(xv, ms.as_ref().map(|m| m.as_slice()), inp);
            let a = self.stacked_a_cpu()?;
            let mut xa = vec![0f32; n * rs];
            matmul(MatMut::rows(&mut xa, n, rs, rs), false, Mat::rows(&xl, n, inp, inp), Mat::rows(&a, rs, inp, inp).t(), 1.0, threads);
            for (p, &(off, roff, r)) in self.parts.iter().zip(&self.offsets) {
                if let Some(l) = &p.lora {
                    let b = l.b.contiguous()?;
                    let bs = CpuF32::new(&b, OP, "B")?;
                    let (xa_i, b_t) = (Mat::rows(&xa[roff..], n, r, rs), Mat::rows(bs.as_slice(), p.out, r, r).t());
                    matmul(MatMut::rows(&mut y[off..], n, p.out, o), true, xa_i, b_t, l.scale as f32, threads);
                }
            }
            Some(tensor(xa, (n, rs))?)
        } else {
            None
        };
        Ok((tensor(y, (n, o))?, xa))
    }

    /// [A₁;A₂;…] copied into one row-major buffer.
    fn stacked_a_cpu(&self) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(self.rank_sum * self.w.dim(1)?);
        for l in self.parts.iter().filter_map(|p| p.lora.as_ref()) {
            let a = l.a.contiguous()?;
            out.extend_from_slice(CpuF32::new(&a, OP, "A")?.as_slice());
        }
        Ok(out)
    }
}

/// Gradients for the upstream `dy` (n, Σ outᵢ); `need_dx = false` skips dx (the product with
/// W, the largest of the backward).
pub fn backward(saved: &LoraLinearSaved, dy: &Tensor, need_dx: bool) -> Result<LoraLinearGrads> {
    let LoraLinearSaved { backend, layer, x, .. } = saved;
    let (n, o) = (x.dim(0)?, layer.w.dim(0)?);
    if dy.dims() != [n, o] || dy.dtype() != x.dtype() {
        return Err(OpError::shape(OP, format!("dy must be ({n}, {o}) {:?}, got {:?} {:?}", x.dtype(), dy.dims(), dy.dtype())));
    }
    match backend {
        Backend::FusedCpu => fused_backward(saved, dy, need_dx),
        Backend::Composite => composite_backward(saved, dy, need_dx),
    }
}

fn composite_backward(saved: &LoraLinearSaved, dy: &Tensor, need_dx: bool) -> Result<LoraLinearGrads> {
    let LoraLinearSaved { layer, x, mask, xa, .. } = saved;
    let mut dx = if need_dx { Some(dy.matmul(&layer.w.contiguous()?)?) } else { None };
    let mut parts = vec![None; layer.parts.len()];
    let Some(xa) = xa else { return Ok(LoraLinearGrads { dx, parts }) };
    let xl = layer.lora_input(x, mask.as_ref())?;
    let dyf = dy.to_dtype(DType::F32)?;
    let mut gs = Vec::new();
    for ((p, &(off, roff, r)), slot) in layer.parts.iter().zip(&layer.offsets).zip(parts.iter_mut()) {
        let Some(l) = &p.lora else { continue };
        let dy_i = dyf.narrow(1, off, p.out)?.contiguous()?;
        let g = (dy_i.matmul(&l.b)? * l.scale)?;
        let da = g.t()?.matmul(&xl)?;
        let db = (dy_i.t()?.matmul(&xa.narrow(1, roff, r)?.contiguous()?)? * l.scale)?;
        *slot = Some(LoraPairGrads { da, db });
        gs.push(g);
    }
    if let Some(dx) = dx.as_mut() {
        let g = if gs.len() == 1 { gs.remove(0) } else { Tensor::cat(&gs, 1)? };
        let mut lx = g.matmul(&layer.stacked_a()?)?;
        if let Some(m) = mask {
            lx = (lx * m)?;
        }
        *dx = (&*dx + lx.to_dtype(x.dtype())?)?;
    }
    Ok(LoraLinearGrads { dx, parts })
}

fn fused_backward(saved: &LoraLinearSaved, dy: &Tensor, need_dx: bool) -> Result<LoraLinearGrads> {
    let LoraLinearSaved { layer, x, mask, xa, .. } = saved;
    let (n, o, inp, rs) = (x.dim(0)?, layer.w.dim(0)?, layer.w.dim(1)?, layer.rank_sum);
    let (dy, w) = (dy.contiguous()?, layer.w.contiguous()?);
    let dys = CpuF32::new(&dy, OP, "dy")?;
    let dyv = dys.as_slice();
    let threads = candle_core::utils::get_num_threads();
    let mut dx = if need_dx {
        let mut dx = vec![0f32; n * inp];
        let (dst, dym) = (MatMut::rows(&mut dx, n, inp, inp), Mat::rows(dyv, n, o, o));
        match &layer.packed {
            Some(p) => matmul_packed(dst, false, dym, &p.backward, threads),
            None => matmul(dst, false, dym, Mat::rows(CpuF32::new(&w, OP, "W")?.as_slice(), o, inp, inp), 1.0, threads),
        }
        Some(dx)
    } else {
        None
    };
    let mut parts = vec![None; layer.parts.len()];
    if let Some(xa) = xa {
        let (x, mask) = (x.contiguous()?, mask.as_ref().map(|m| m.contiguous()).transpose()?);
        let (xs, xas) = (CpuF32::new(&x, OP, "x")?, CpuF32::new(xa, OP, "xa")?);
        let ms = mask.as_ref().map(|m| CpuF32::new(m, OP, "dropout mask")).transpose()?;
        let ms = ms.as_ref().map(|m| m.as_slice());
        let xav = xas.as_slice();
        // G = [s₁ dy₁ B₁ | s₂ dy₂ B₂ | …] (n, Σr), and dBᵢ = sᵢ dyᵢᵀ xaᵢ.
        let mut g = vec![0f32; n * rs];
        let mut dbs = Vec::new();
        for (p, &(off, roff, r)) in layer.parts.iter().zip(&layer.offsets) {
            let Some(l) = &p.lora else { continue };
            let b = l.b.contiguous()?;
            let bs = CpuF32::new(&b, OP, "B")?;
            let dy_i = Mat::rows(&dyv[off..], n, p.out, o);
            matmul(MatMut::rows(&mut g[roff..], n, r, rs), false, dy_i, Mat::rows(bs.as_slice(), p.out, r, r), l.scale as f32, threads);
            let mut db = vec![0f32; p.out * r];
            matmul(MatMut::rows(&mut db, p.out, r, r), false, dy_i.t(), Mat::rows(&xav[roff..], n, r, rs), l.scale as f32, threads);
            dbs.push(tensor(db, (p.out, r))?);
        }
        let xl = masked(xs.as_slice(), ms, inp);
        let mut da = vec![0f32; rs * inp];
        matmul(MatMut::rows(&mut da, rs, inp, inp), false, Mat::rows(&g, n, rs, rs).t(), Mat::rows(&xl, n, inp, inp), 1.0, threads);
        if let Some(dx) = dx.as_mut() {
            let a = layer.stacked_a_cpu()?;
            let (g, a) = (Mat::rows(&g, n, rs, rs), Mat::rows(&a, rs, inp, inp));
            match ms {
                None => matmul(MatMut::rows(dx, n, inp, inp), true, g, a, 1.0, threads),
                Some(m) => {
                    let mut lx = vec![0f32; n * inp];
                    matmul(MatMut::rows(&mut lx, n, inp, inp), false, g, a, 1.0, threads);
                    let per = rows_per_task(inp) * inp;
                    dx.par_chunks_mut(per).zip(lx.par_chunks(per)).zip(m.par_chunks(per)).for_each(|((dx, lx), m)| {
                        for ((dx, lx), m) in dx.iter_mut().zip(lx).zip(m) {
                            *dx += lx * m;
                        }
                    });
                }
            }
        }
        let mut dbs = dbs.into_iter();
        for ((p, &(_, roff, r)), slot) in layer.parts.iter().zip(&layer.offsets).zip(parts.iter_mut()) {
            if p.lora.is_some() {
                let da_i = tensor(da[roff * inp..(roff + r) * inp].to_vec(), (r, inp))?;
                *slot = Some(LoraPairGrads { da: da_i, db: dbs.next().expect("one dB per LoRA part") });
            }
        }
    }
    let dx = dx.map(|dx| tensor(dx, (n, inp))).transpose()?;
    Ok(LoraLinearGrads { dx, parts })
}

/// x ⊙ mask (rows of `width`), or x itself without a mask.
fn masked<'a>(x: &'a [f32], mask: Option<&[f32]>, width: usize) -> Cow<'a, [f32]> {
    let Some(m) = mask else { return Cow::Borrowed(x) };
    let mut out = vec![0f32; x.len()];
    let per = rows_per_task(width) * width;
    out.par_chunks_mut(per).zip(x.par_chunks(per)).zip(m.par_chunks(per)).for_each(|((o, x), m)| {
        for ((o, x), m) in o.iter_mut().zip(x).zip(m) {
            *o = x * m;
        }
    });
    Cow::Owned(out)
}
