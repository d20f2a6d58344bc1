//! One decoder layer's forward over the fused ops (keeping what each op's backward reads) and
//! its backward, plus the vocabulary head.
//!
//! ```text
//! h  = rms_norm(x)                    q|k|v = lora_linear(h)     (Qwen3: per-head rms_norm of q, k)
//! q, k = rope(q), rope(k)             o = attention(q, k, v, lens)
//! x₂ = x + lora_linear_o(o)           g|u = lora_linear(rms_norm(x₂))
//! x₃ = x₂ + lora_linear_down(swiglu(g|u))
//! ```
//!
//! With LoRA dropout active, projections sharing an input run as one-part ops so each draws
//! its own mask (as PEFT's per-module dropout does); otherwise q|k|v and gate|up each run as
//! one fused op.

use asrl_ops::attention::{self, AttentionSaved};
use asrl_ops::linear_logprob::{self, LogprobOptions, LogprobSaved};
use asrl_ops::lora_linear::{self, LinearPart, LoraLinear, LoraLinearSaved};
use asrl_ops::rms_norm::{self, RmsNormSaved};
use asrl_ops::swiglu::{self, SwigluSaved};
use candle_core::{Tensor, D};

use super::plan::Plan;
use crate::config::LoraTarget;
use crate::model::weights::{proj_rows, stack_members, Stack};
use crate::model::ModelError;

/// What one stacked projection's backward reads: one fused call, or one call per part.
pub(super) struct ProjSaved {
    stack: Stack,
    calls: Vec<LoraLinearSaved>,
}

impl ProjSaved {
    fn fused(&self) -> bool {
        self.calls.len() == 1
    }
}

/// Everything a layer's backward reads.
pub(super) struct LayerSaved {
    norm1: RmsNormSaved,
    qkv: ProjSaved,
    q_norm: Option<RmsNormSaved>,
    k_norm: Option<RmsNormSaved>,
    attn: AttentionSaved,
    o: ProjSaved,
    norm2: RmsNormSaved,
    gate_up: ProjSaved,
    swiglu: SwigluSaved,
    down: ProjSaved,
}

/// `x @ stackᵀ` (+ LoRA) for `x` (n, in). Returns one output (n, Σout) when fused, else one
/// (n, outᵢ) per part.
///
/// With `residual` (single-member stacks: o, down), the one output is `residual + x @ Wᵀ (+ LoRA)`.
fn proj_forward(
    plan: &Plan,
    i: usize,
    stack: Stack,
    x: &Tensor,
    residual: Option<&Tensor>,
) -> Result<(Vec<Tensor>, ProjSaved), ModelError> {
    let layer = &plan.model.layers[i];
    let cfg = &plan.model.cfg;
    let members = stack_members(stack);
    let adapted = members.iter().any(|&t| plan.lora(i, t).is_some());
    let split = members.len() > 1 && adapted && plan.dropout.is_some();
    debug_assert!(residual.is_none() || members.len() == 1, "a residual only ends single-member stacks");
    let mut outs = Vec::new();
    let mut calls = Vec::new();
    if split {
        for &t in members {
            let part = LinearPart { out: proj_rows(cfg, t).2, lora: plan.lora(i, t).cloned() };
            let op = LoraLinear::new(layer.proj(cfg, t)?, vec![part])?;
            let mask = plan.mask(i, t, x)?;
            let (y, s) = op.forward(x, mask.as_ref())?;
            outs.push(y);
            calls.push(s);
        }
    } else {
        let parts = members.iter().map(|&t| LinearPart { out: proj_rows(cfg, t).2, lora: plan.lora(i, t).cloned() }).collect();
        let mut op = LoraLinear::new(layer.stacked(stack).clone(), parts)?;
        if let Some(p) = plan.packed(i, stack) {
            op = op.with_packed(p)?;
        }
        // One call, so at most one adapted part when dropout is on (o, down).
        let mask = match members.iter().find(|&&t| plan.lora(i, t).is_some()) {
            Some(&t) => plan.mask(i, t, x)?,
            None => None,
        };
        let (y, s) = match residual {
            Some(r) => op.forward_add(x, mask.as_ref(), r)?,
            None => op.forward(x, mask.as_ref())?,
        };
        outs.push(y);
        calls.push(s);
    }
    Ok((outs, ProjSaved { stack, calls }))
}

/// dx of a projection (when `need_dx`) for the output gradients in the shape `proj_forward`
/// returned them; LoRA gradients go to `grads`.
fn proj_backward(
    plan: &Plan,
    i: usize,
    saved: ProjSaved,
    dys: Vec<Tensor>,
    need_dx: bool,
    grads: &mut [Option<Tensor>],
) -> Result<Option<Tensor>, ModelError> {
    let members = stack_members(saved.stack);
    let mut dx: Option<Tensor> = None;
    for (k, (call, dy)) in saved.calls.into_iter().zip(dys).enumerate() {
        let g = lora_linear::backward(&call, &dy, need_dx)?;
        drop(call);
        // A split call covers member k alone; the fused call covers all members in order.
        let targets: &[LoraTarget] = if g.parts.len() == 1 && members.len() > 1 { &members[k..=k] } else { members };
        for (&t, pg) in targets.iter().zip(g.parts) {
            if let (Some(pg), Some((ia, ib))) = (pg, plan.var_index(i, t)) {
                grads[ia] = Some(pg.da);
                grads[ib] = Some(pg.db);
            }
        }
        dx = match (dx, g.dx) {
            (Some(acc), Some(d)) => Some((acc + d)?),
            (None, d) => d,
            (acc, None) => acc,
        };
    }
    Ok(dx)
}

/// The layer's output; with `save`, also what its backward reads.
pub(super) fn forward(plan: &Plan, i: usize, x: &Tensor, save: bool) -> Result<(Tensor, Option<LayerSaved>), ModelError> {
    let layer = &plan.model.layers[i];
    let cfg = &plan.model.cfg;
    let eps = cfg.rms_norm_eps;
    let (b, t) = (plan.b, plan.t);
    let (nh, nkv, hd) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim);

    // Without `save`, each op's saved state is dropped at once: one op's alive, not a layer's.
    let (h, norm1) = rms_norm::forward(x, &layer.input_norm, eps)?;
    let norm1 = save.then_some(norm1);
    let (qkv, qkv_saved) = proj_forward(plan, i, Stack::Qkv, &h, None)?;
    let qkv_saved = save.then_some(qkv_saved);
    drop(h);
    let (q, k, v) = match qkv.as_slice() {
        [y] => (y.narrow(1, 0, nh * hd)?, y.narrow(1, nh * hd, nkv * hd)?, y.narrow(1, (nh + nkv) * hd, nkv * hd)?),
        [q, k, v] => (q.clone(), k.clone(), v.clone()),
        _ => unreachable!("q|k|v runs as one call or three"),
    };
    drop(qkv);
    let q = q.contiguous()?.reshape((b, t, nh, hd))?;
    let k = k.contiguous()?.reshape((b, t, nkv, hd))?;
    let v = v.contiguous()?.reshape((b, t, nkv, hd))?;
    let (q, q_norm) = match &layer.q_norm {
        Some(w) => rms_norm::forward(&q, w, eps).map(|(y, s)| (y, save.then_some(s)))?,
        None => (q, None),
    };
    let (k, k_norm) = match &layer.k_norm {
        Some(w) => rms_norm::forward(&k, w, eps).map(|(y, s)| (y, save.then_some(s)))?,
        None => (k, None),
    };
    let (q, k) = (plan.rope.forward(&q)?, plan.rope.forward(&k)?);
    let scale = 1.0 / (hd as f64).sqrt();
    let (o, attn) = match &plan.attention_rows {
        Some(rows) => attention::forward_gathered(&q, &k, &v, scale, rows, Default::default())?,
        None => attention::forward(&q, &k, &v, scale, Some(&plan.lens))?,
    };
    let attn = save.then_some(attn);
    drop((q, k, v));
    let o = o.reshape((b * t, nh * hd))?;
    let (x2, o_saved) = proj_forward(plan, i, Stack::O, &o, Some(x))?;
    let o_saved = save.then_some(o_saved);
    drop(o);
    let x2 = x2.into_iter().next().expect("one output");

    let (h2, norm2) = rms_norm::forward(&x2, &layer.post_norm, eps)?;
    let norm2 = save.then_some(norm2);
    let (gu, gate_up) = proj_forward(plan, i, Stack::GateUp, &h2, None)?;
    let gate_up = save.then_some(gate_up);
    drop(h2);
    let gu = if gu.len() == 1 { gu.into_iter().next().expect("one output") } else { Tensor::cat(&gu, 1)? };
    let (act, swiglu) = swiglu::forward(&gu)?;
    let swiglu = save.then_some(swiglu);
    drop(gu);
    let (out, down) = proj_forward(plan, i, Stack::Down, &act, Some(&x2))?;
    let down = save.then_some(down);
    drop(act);
    let out = out.into_iter().next().expect("one output");
    let saved = (|| {
        Some(LayerSaved {
            norm1: norm1?,
            qkv: qkv_saved?,
            q_norm,
            k_norm,
            attn: attn?,
            o: o_saved?,
            norm2: norm2?,
            gate_up: gate_up?,
            swiglu: swiglu?,
            down: down?,
        })
    })();
    Ok((out, saved))
}

/// dx of the layer input for the gradient `dout` of its output (`None` when `!need_dx`, the
/// first layer: the embedding is frozen). Each saved tensor is dropped once used.
pub(super) fn backward(
    plan: &Plan,
    i: usize,
    saved: LayerSaved,
    dout: Tensor,
    need_dx: bool,
    grads: &mut [Option<Tensor>],
) -> Result<Option<Tensor>, ModelError> {
    let LayerSaved { norm1, qkv, q_norm, k_norm, attn, o, norm2, gate_up, swiglu: swiglu_saved, down } = saved;
    let cfg = &plan.model.cfg;
    let (b, t) = (plan.b, plan.t);
    let (nh, nkv, hd) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim);
    let inter = cfg.intermediate_size;

    let dact = proj_backward(plan, i, down, vec![dout.clone()], true, grads)?.expect("dx was asked for");
    let dgu = swiglu::backward(&swiglu_saved, &dact)?;
    drop((swiglu_saved, dact));
    let dgu = if gate_up.fused() {
        vec![dgu]
    } else {
        vec![dgu.narrow(D::Minus1, 0, inter)?.contiguous()?, dgu.narrow(D::Minus1, inter, inter)?.contiguous()?]
    };
    let dh2 = proj_backward(plan, i, gate_up, dgu, true, grads)?.expect("dx was asked for");
    let dx2 = rms_norm::backward_add(&norm2, &dh2, &dout)?;
    drop(dout);
    drop((norm2, dh2));

    let d_o = proj_backward(plan, i, o, vec![dx2.clone()], true, grads)?.expect("dx was asked for");
    let g = attention::backward(&attn, &d_o.reshape((b, t, nh, hd))?)?;
    drop((attn, d_o));
    let (dq, dk) = (plan.rope.backward(&g.dq)?, plan.rope.backward(&g.dk)?);
    let dq = match &q_norm {
        Some(s) => rms_norm::backward(s, &dq)?,
        None => dq,
    };
    let dk = match &k_norm {
        Some(s) => rms_norm::backward(s, &dk)?,
        None => dk,
    };
    drop((q_norm, k_norm));
    let n = b * t;
    let (dq, dk, dv) = (dq.reshape((n, nh * hd))?, dk.reshape((n, nkv * hd))?, g.dv.reshape((n, nkv * hd))?);
    let dqkv = if qkv.fused() { vec![Tensor::cat(&[&dq, &dk, &dv], 1)?] } else { vec![dq, dk, dv] };
    let dh1 = proj_backward(plan, i, qkv, dqkv, need_dx, grads)?;
    match dh1 {
        Some(dh1) => Ok(Some(rms_norm::backward_add(&norm1, &dh1, &dx2)?)),
        None => Ok(None),
    }
}

/// What the vocabulary head's backward reads.
pub(super) struct HeadSaved {
    norm: RmsNormSaved,
    logprob: LogprobSaved,
}

/// Log-probs (m) f32 of the scored positions of the last layer's output `x` (n, hidden): the
/// final RMSNorm and the vocabulary projection see the gathered rows only.
pub(super) fn head_forward(plan: &Plan, x: &Tensor, save: bool) -> Result<(Tensor, Option<HeadSaved>), ModelError> {
    let m = &plan.model;
    let h = x.index_select(&plan.forward_index, 0)?;
    let (h, norm) = rms_norm::forward(&h, &m.norm, m.cfg.rms_norm_eps)?;
    // A forward that will be differentiated saves E_p[W]: no vocabulary product in the backward.
    let opts = LogprobOptions { expectation: save, ..Default::default() };
    let (lp, logprob) = linear_logprob::forward_with(&h, &m.lm_head, &plan.targets, plan.temperature, opts)?;
    Ok((lp, save.then_some(HeadSaved { norm, logprob })))
}

/// Gradient (n, hidden) of the last layer's output for `dlp` (m) f32.
pub(super) fn head_backward(plan: &Plan, saved: HeadSaved, dlp: &Tensor) -> Result<Tensor, ModelError> {
    let dh = linear_logprob::backward(&saved.logprob, dlp)?;
    drop(saved.logprob);
    let dh = rms_norm::backward(&saved.norm, &dh.to_dtype(plan.model.dtype)?)?;
    let zeros = Tensor::zeros((plan.b * plan.t, plan.model.cfg.hidden_size), plan.model.dtype, &plan.model.device)?;
    Ok(zeros.index_add(&plan.forward_index, &dh, 0)?)
}
