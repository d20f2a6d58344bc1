//! The decoder: Qwen3 (per-head q/k RMSNorm) and Llama, GQA, HF rotate-half RoPE, no biases.
//!
//! `forward` (training) only uses ops with a backward pass so gradients reach the LoRA `Var`s;
//! candle's fused softmax / rms_norm / rope have none. `forward_cached` (inference) uses them.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, D};

use super::dropout::DropoutMasks;
use super::train::PackedCache;
use super::weights::{stack_members, Layer, Stack};
use super::{Arch, KvCache, LoraAdapter, ModelConfig, ModelError};
use crate::config::LoraTarget;

/// Frozen base weights. Cloning is cheap: tensors are reference-counted.
#[derive(Clone)]
pub struct Model {
    pub(super) cfg: ModelConfig,
    pub(super) device: Device,
    pub(super) dtype: DType,
    pub(super) embed: Tensor,
    pub(super) layers: Vec<Layer>,
    pub(super) norm: Tensor,
    pub(super) lm_head: Tensor,
    /// The projections packed for the CPU training kernel, when the engine made them.
    pub(super) packed: PackedCache,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("config", &self.cfg).field("dtype", &self.dtype).finish()
    }
}

/// Every tensor a model of this shape needs, with its HF name and shape.
pub fn expected_tensor_shapes(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let mut v = vec![
        ("model.embed_tokens.weight".to_string(), vec![cfg.vocab_size, cfg.hidden_size]),
        ("model.norm.weight".to_string(), vec![cfg.hidden_size]),
    ];
    if !cfg.tie_word_embeddings {
        v.push(("lm_head.weight".to_string(), vec![cfg.vocab_size, cfg.hidden_size]));
    }
    for i in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{i}");
        v.push((format!("{p}.input_layernorm.weight"), vec![cfg.hidden_size]));
        v.push((format!("{p}.post_attention_layernorm.weight"), vec![cfg.hidden_size]));
        if cfg.arch == Arch::Qwen3 {
            v.push((format!("{p}.self_attn.q_norm.weight"), vec![cfg.head_dim]));
            v.push((format!("{p}.self_attn.k_norm.weight"), vec![cfg.head_dim]));
        }
        for t in LoraTarget::ALL {
            let (o, i) = cfg.projection_shape(t);
            v.push((format!("{p}.{}.{}.weight", t.parent(), t.module_name()), vec![o, i]));
        }
    }
    v
}

pub(crate) fn validate_config(cfg: &ModelConfig, origin: &str) -> Result<(), ModelError> {
    let err = |m: String| Err(ModelError::config(origin, m));
    for (name, v) in [
        ("vocab_size", cfg.vocab_size),
        ("hidden_size", cfg.hidden_size),
        ("intermediate_size", cfg.intermediate_size),
        ("num_hidden_layers", cfg.num_hidden_layers),
        ("num_attention_heads", cfg.num_attention_heads),
        ("num_key_value_heads", cfg.num_key_value_heads),
        ("head_dim", cfg.head_dim),
    ] {
        if v == 0 {
            return err(format!("{name} must be > 0"));
        }
    }
    if !cfg.num_attention_heads.is_multiple_of(cfg.num_key_value_heads) {
        return err(format!(
            "num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
            cfg.num_attention_heads, cfg.num_key_value_heads
        ));
    }
    if !cfg.head_dim.is_multiple_of(2) {
        return err(format!("head_dim ({}) must be even", cfg.head_dim));
    }
    if !(cfg.rope_theta.is_finite() && cfg.rope_theta > 0.0) {
        return err(format!("rope_theta ({}) must be > 0", cfg.rope_theta));
    }
    if !(cfg.rms_norm_eps.is_finite() && cfg.rms_norm_eps >= 0.0) {
        return err(format!("rms_norm_eps ({}) must be >= 0", cfg.rms_norm_eps));
    }
    Ok(())
}

/// Which op flavour a pass uses: differentiable primitives or fused inference kernels.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Path {
    Train,
    Infer,
}

impl Model {
    /// Builds a model from HF-named tensors (`model.layers.0.self_attn.q_proj.weight`, ...).
    /// Tensors are moved to `device` / `dtype`; unknown extra tensors are ignored.
    pub fn from_tensors(
        config: ModelConfig,
        tensors: HashMap<String, Tensor>,
        device: &Device,
        dtype: DType,
    ) -> Result<Model, ModelError> {
        Self::from_tensors_named(config, tensors, device, dtype, "model tensors")
    }

    pub(crate) fn from_tensors_named(
        cfg: ModelConfig,
        mut tensors: HashMap<String, Tensor>,
        device: &Device,
        dtype: DType,
        origin: &str,
    ) -> Result<Model, ModelError> {
        validate_config(&cfg, origin)?;
        if !matches!(dtype, DType::F32 | DType::BF16 | DType::F16) {
            return Err(ModelError::Unsupported(format!("model dtype {dtype:?} (use f32, bf16 or f16)")));
        }
        let shapes: HashMap<String, Vec<usize>> = expected_tensor_shapes(&cfg).into_iter().collect();
        let mut take = |name: String| -> Result<Tensor, ModelError> {
            let t = tensors
                .remove(&name)
                .ok_or_else(|| ModelError::MissingTensor { origin: origin.to_string(), name: name.clone() })?;
            let expected = &shapes[&name];
            if t.dims() != expected.as_slice() {
                return Err(ModelError::TensorShape {
                    origin: origin.to_string(),
                    name,
                    expected: expected.clone(),
                    got: t.dims().to_vec(),
                });
            }
            Ok(t.to_device(device)?.to_dtype(dtype)?)
        };
        let embed = take("model.embed_tokens.weight".into())?;
        let norm = take("model.norm.weight".into())?;
        let lm_head = if cfg.tie_word_embeddings { embed.clone() } else { take("lm_head.weight".into())? };
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let (q_norm, k_norm) = if cfg.arch == Arch::Qwen3 {
                (
                    Some(take(format!("{p}.self_attn.q_norm.weight"))?),
                    Some(take(format!("{p}.self_attn.k_norm.weight"))?),
                )
            } else {
                (None, None)
            };
            // Stacked as loaded: each projection is dropped from the map once copied in.
            let mut stack = |s: Stack| -> Result<Tensor, ModelError> {
                let parts = stack_members(s)
                    .iter()
                    .map(|t| take(format!("{p}.{}.{}.weight", t.parent(), t.module_name())))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(if parts.len() == 1 { parts.into_iter().next().expect("one part") } else { Tensor::cat(&parts, 0)? })
            };
            let (qkv, o, gate_up, down) = (stack(Stack::Qkv)?, stack(Stack::O)?, stack(Stack::GateUp)?, stack(Stack::Down)?);
            layers.push(Layer {
                input_norm: take(format!("{p}.input_layernorm.weight"))?,
                post_norm: take(format!("{p}.post_attention_layernorm.weight"))?,
                q_norm,
                k_norm,
                qkv,
                o,
                gate_up,
                down,
            });
        }
        if !tensors.is_empty() {
            let mut extra: Vec<_> = tensors.keys().cloned().collect();
            extra.sort();
            tracing::debug!(?extra, "{origin}: ignoring tensors the decoder does not use");
        }
        Ok(Model { cfg, device: device.clone(), dtype, embed, layers, norm, lm_head, packed: PackedCache::default() })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Every weight under its HF name, in [`expected_tensor_shapes`] order (no `lm_head.weight`
    /// when the embeddings are tied): what an exporter writes.
    pub fn named_tensors(&self) -> Result<Vec<(String, Tensor)>, ModelError> {
        let mut out = vec![
            ("model.embed_tokens.weight".to_string(), self.embed.clone()),
            ("model.norm.weight".to_string(), self.norm.clone()),
        ];
        if !self.cfg.tie_word_embeddings {
            out.push(("lm_head.weight".to_string(), self.lm_head.clone()));
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            out.push((format!("{p}.input_layernorm.weight"), layer.input_norm.clone()));
            out.push((format!("{p}.post_attention_layernorm.weight"), layer.post_norm.clone()));
            if let (Some(q), Some(k)) = (&layer.q_norm, &layer.k_norm) {
                out.push((format!("{p}.self_attn.q_norm.weight"), q.clone()));
                out.push((format!("{p}.self_attn.k_norm.weight"), k.clone()));
            }
            for t in LoraTarget::ALL {
                out.push((format!("{p}.{}.{}.weight", t.parent(), t.module_name()), layer.proj(&self.cfg, t)?));
            }
        }
        Ok(out)
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.cfg.num_hidden_layers, 0)
    }

    /// A cache with room for `capacity` positions, so decoding never reallocates.
    pub fn new_cache_with_capacity(&self, capacity: usize) -> KvCache {
        KvCache::new(self.cfg.num_hidden_layers, capacity)
    }

    /// Training path: differentiable w.r.t. the adapter. `input_ids` (batch, seq) u32,
    /// right-padded. Returns f32 logits (batch, seq, vocab).
    pub fn forward(&self, input_ids: &Tensor, adapter: Option<&LoraAdapter>) -> Result<Tensor, ModelError> {
        self.run(input_ids, None, adapter, Path::Train, false)
    }

    /// Inference path: appends to `cache` (positions start at `cache.len()`), fused ops.
    /// Returns f32 logits (batch, new_tokens, vocab).
    pub fn forward_cached(
        &self,
        input_ids: &Tensor,
        cache: &mut KvCache,
        adapter: Option<&LoraAdapter>,
    ) -> Result<Tensor, ModelError> {
        self.run(input_ids, Some(cache), adapter, Path::Infer, false)
    }

    /// Like [`Model::forward_cached`] but only computes the last position's logits: (batch, vocab).
    /// Saves the vocabulary projection of every prompt token during prefill.
    pub fn forward_cached_last(
        &self,
        input_ids: &Tensor,
        cache: &mut KvCache,
        adapter: Option<&LoraAdapter>,
    ) -> Result<Tensor, ModelError> {
        Ok(self.run(input_ids, Some(cache), adapter, Path::Infer, true)?.squeeze(1)?)
    }

    /// W' = W + (alpha/r)·B·A for every adapted projection (computed in f32), re-stacked.
    pub fn merge(&self, adapter: &LoraAdapter) -> Result<Model, ModelError> {
        adapter.check_fits(&self.cfg)?;
        let mut merged = self.clone();
        // Its weights change below: the packed copies of these ones are not its.
        merged.packed = PackedCache::default();
        for (i, layer) in merged.layers.iter_mut().enumerate() {
            for s in Stack::ALL {
                let mut parts = Vec::new();
                let mut changed = false;
                for &t in stack_members(s) {
                    let w = layer.proj(&self.cfg, t)?;
                    parts.push(match adapter.merged_delta(i, t)? {
                        Some(d) => {
                            changed = true;
                            (w.to_dtype(DType::F32)? + d)?.to_dtype(self.dtype)?
                        }
                        None => w,
                    });
                }
                if changed {
                    *layer.stacked_mut(s) = if parts.len() == 1 { parts.remove(0) } else { Tensor::cat(&parts, 0)? };
                }
            }
        }
        Ok(merged)
    }

    pub(super) fn check_ids(&self, ids: &Tensor) -> Result<(usize, usize), ModelError> {
        if ids.dtype() != DType::U32 {
            return Err(ModelError::Input(format!("input_ids must be u32, got {:?}", ids.dtype())));
        }
        let (b, t) = ids
            .dims2()
            .map_err(|_| ModelError::Input(format!("input_ids must be (batch, seq), got shape {:?}", ids.dims())))?;
        if b == 0 || t == 0 {
            return Err(ModelError::Input(format!("input_ids is empty: shape {:?}", ids.dims())));
        }
        let max = ids.max_all()?.to_scalar::<u32>()? as usize;
        if max >= self.cfg.vocab_size {
            return Err(ModelError::Input(format!("token id {max} is out of the vocabulary (size {})", self.cfg.vocab_size)));
        }
        Ok((b, t))
    }

    /// cos / sin tables (t, head_dim/2) for positions `start..start+t` in the model dtype.
    fn rope_tables(&self, start: usize, t: usize) -> Result<(Tensor, Tensor), ModelError> {
        let (cos, sin) = self.rope_tables_f32(start, t)?;
        Ok((cos.to_dtype(self.dtype)?, sin.to_dtype(self.dtype)?))
    }

    /// The same tables in f32.
    pub(super) fn rope_tables_f32(&self, start: usize, t: usize) -> Result<(Tensor, Tensor), ModelError> {
        self.rope_at(start..start + t)
    }

    /// cos / sin tables (positions, head_dim/2), computed in f32 as HF does.
    pub(super) fn rope_at(&self, positions: impl ExactSizeIterator<Item = usize>) -> Result<(Tensor, Tensor), ModelError> {
        let t = positions.len();
        let half = self.cfg.head_dim / 2;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| 1.0 / (self.cfg.rope_theta as f32).powf((2 * i) as f32 / self.cfg.head_dim as f32))
            .collect();
        let mut cos = Vec::with_capacity(t * half);
        let mut sin = Vec::with_capacity(t * half);
        for p in positions {
            for f in &inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Ok((Tensor::from_vec(cos, (t, half), &self.device)?, Tensor::from_vec(sin, (t, half), &self.device)?))
    }

    fn run(
        &self,
        ids: &Tensor,
        mut cache: Option<&mut KvCache>,
        adapter: Option<&LoraAdapter>,
        path: Path,
        last_only: bool,
    ) -> Result<Tensor, ModelError> {
        let (b, t) = self.check_ids(ids)?;
        if let Some(a) = adapter {
            a.check_fits(&self.cfg)?;
        }
        let start = match cache.as_deref_mut() {
            Some(c) => {
                c.prepare(self.cfg.num_hidden_layers, b)?;
                c.len()
            }
            None => 0,
        };
        let (cos, sin) = self.rope_tables(start, t)?;
        let rope = match path {
            Path::Infer => Rope::Fused { cos, sin },
            Path::Train => Rope::Slow {
                cos: Tensor::cat(&[&cos, &cos], 1)?.reshape((1, t, 1, self.cfg.head_dim))?,
                sin: Tensor::cat(&[&sin, &sin], 1)?.reshape((1, t, 1, self.cfg.head_dim))?,
            },
        };
        let mask = if t > 1 { Some(self.causal_mask(start, t)?) } else { None };
        // One seed per forward; masks are keyed by (layer, projection, row, position).
        let drop_masks = adapter.and_then(LoraAdapter::next_dropout);
        let dropout = drop_masks.as_ref().map(|m| (m, t));

        let mut x = self.embed.index_select(&ids.flatten_all()?, 0)?; // (b*t, hidden)
        for (i, layer) in self.layers.iter().enumerate() {
            let h = self.norm(&x, &layer.input_norm, path)?;
            let kv = cache.as_deref_mut().map(|c| (c, i));
            let attn = self.attention(&h, layer, i, (b, t), &rope, mask.as_ref(), kv, (adapter, dropout), path)?;
            x = (x + attn)?;
            let h = self.norm(&x, &layer.post_norm, path)?;
            let gate = self.linear(&h, layer, i, LoraTarget::Gate, (adapter, dropout), path)?;
            let up = self.linear(&h, layer, i, LoraTarget::Up, (adapter, dropout), path)?;
            let mlp = self.linear(&(gate.silu()? * up)?, layer, i, LoraTarget::Down, (adapter, dropout), path)?;
            x = (x + mlp)?;
        }
        if let Some(c) = cache {
            c.advance(t);
        }
        let (x, rows) = if last_only {
            (x.reshape((b, t, self.cfg.hidden_size))?.narrow(1, t - 1, 1)?.reshape((b, self.cfg.hidden_size))?, 1)
        } else {
            (x, t)
        };
        let x = self.norm(&x, &self.norm, path)?;
        let logits = self.matmul_t(&x, &self.lm_head, path)?.to_dtype(DType::F32)?;
        Ok(logits.reshape((b, rows, self.cfg.vocab_size))?)
    }

    /// RMSNorm over the last dim, in f32 like HF, then scaled by the weight in the model dtype.
    pub(super) fn norm(&self, x: &Tensor, w: &Tensor, path: Path) -> Result<Tensor, ModelError> {
        let eps = self.cfg.rms_norm_eps;
        Ok(match path {
            Path::Infer => candle_nn::ops::rms_norm(&x.contiguous()?, w, eps as f32)?,
            Path::Train => {
                let xf = x.to_dtype(DType::F32)?;
                let ms = xf.sqr()?.mean_keepdim(D::Minus1)?;
                let y = xf.broadcast_div(&(ms + eps)?.sqrt()?)?;
                y.to_dtype(self.dtype)?.broadcast_mul(w)?
            }
        })
    }

    /// `x Wᵀ` (+ the adapter's update, with this forward's dropout) for `x` of shape (n, in).
    fn linear(
        &self,
        x: &Tensor,
        layer: &Layer,
        i: usize,
        t: LoraTarget,
        (adapter, dropout): (Option<&LoraAdapter>, Option<(&DropoutMasks, usize)>),
        path: Path,
    ) -> Result<Tensor, ModelError> {
        let y = self.matmul_t(x, &layer.proj(&self.cfg, t)?, path)?;
        match adapter.map(|a| a.delta(i, t, x, dropout)).transpose()?.flatten() {
            Some(d) => Ok((y + d)?),
            None => Ok(y),
        }
    }

    /// `x Wᵀ`; decode steps (few rows, inference) use the bandwidth-bound kernel.
    fn matmul_t(&self, x: &Tensor, w: &Tensor, path: Path) -> Result<Tensor, ModelError> {
        if path == Path::Infer {
            if let Some(y) = super::kernels::skinny_matmul_t(x, w)? {
                return Ok(y);
            }
        }
        Ok(x.matmul(&w.t()?)?)
    }

    /// (t, start+t) additive mask: query i sees keys 0..=start+i.
    fn causal_mask(&self, start: usize, t: usize) -> Result<Tensor, ModelError> {
        let l = start + t;
        let m: Vec<f32> = (0..t)
            .flat_map(|i| (0..l).map(move |j| if j <= start + i { 0.0 } else { f32::NEG_INFINITY }))
            .collect();
        Ok(Tensor::from_vec(m, (t, l), &self.device)?.to_dtype(self.dtype)?)
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        x: &Tensor,
        layer: &Layer,
        i: usize,
        (b, t): (usize, usize),
        rope: &Rope,
        mask: Option<&Tensor>,
        cache: Option<(&mut KvCache, usize)>,
        lora: (Option<&LoraAdapter>, Option<(&DropoutMasks, usize)>),
        path: Path,
    ) -> Result<Tensor, ModelError> {
        let (nh, nkv, hd) = (self.cfg.num_attention_heads, self.cfg.num_key_value_heads, self.cfg.head_dim);
        let g = nh / nkv;
        let q = self.linear(x, layer, i, LoraTarget::Q, lora, path)?.reshape((b, t, nh, hd))?;
        let k = self.linear(x, layer, i, LoraTarget::K, lora, path)?.reshape((b, t, nkv, hd))?;
        let v = self.linear(x, layer, i, LoraTarget::V, lora, path)?.reshape((b, t, nkv, hd))?;
        let (q, k) = match (&layer.q_norm, &layer.k_norm) {
            (Some(qn), Some(kn)) => (self.norm(&q, qn, path)?, self.norm(&k, kn, path)?),
            _ => (q, k),
        };
        let q = rope.apply(&q)?.transpose(1, 2)?.contiguous()?; // (b, nh, t, hd)
        let k = rope.apply(&k)?.transpose(1, 2)?.contiguous()?; // (b, nkv, t, hd)
        let v = v.transpose(1, 2)?.contiguous()?;
        let (k, v) = match cache {
            Some((c, layer_idx)) => c.append(layer_idx, &k, &v)?,
            None => (k, v),
        };
        let scale = 1.0 / (hd as f64).sqrt();
        if path == Path::Infer && t == 1 {
            if let Some(out) = super::kernels::decode_attention(&q.reshape((b, nh, hd))?, &k, &v, scale as f32)? {
                return self.linear(&out, layer, i, LoraTarget::O, lora, path);
            }
        }
        let l = k.dim(2)?;
        // GQA without copying k/v: the g query heads sharing a kv head become extra rows.
        let q = q.reshape((b, nkv, g * t, hd))?;
        let scores = (q.matmul(&k.t()?)? * scale)?;
        let scores = match mask {
            Some(m) => scores.reshape((b, nkv, g, t, l))?.broadcast_add(m)?.reshape((b, nkv, g * t, l))?,
            None => scores,
        };
        let probs = match path {
            Path::Infer => candle_nn::ops::softmax_last_dim(&scores)?,
            Path::Train => {
                let max = scores.max_keepdim(D::Minus1)?.detach();
                let e = scores.broadcast_sub(&max)?.exp()?;
                e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?
            }
        };
        let out = probs.matmul(&v)?; // (b, nkv, g*t, hd)
        let out = out.reshape((b, nh, t, hd))?.transpose(1, 2)?.reshape((b * t, nh * hd))?;
        self.linear(&out, layer, i, LoraTarget::O, lora, path)
    }
}

/// HF's non-interleaved (rotate_half) rotary embedding for (b, t, heads, head_dim) inputs.
enum Rope {
    /// cos/sin (t, hd/2), candle's fused kernel (no backward).
    Fused { cos: Tensor, sin: Tensor },
    /// cos/sin (1, t, 1, hd), differentiable.
    Slow { cos: Tensor, sin: Tensor },
}

impl Rope {
    fn apply(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        Ok(match self {
            Rope::Fused { cos, sin } => candle_nn::rotary_emb::rope_thd(&x.contiguous()?, cos, sin)?,
            Rope::Slow { cos, sin } => {
                let half = x.dim(D::Minus1)? / 2;
                let x1 = x.narrow(D::Minus1, 0, half)?;
                let x2 = x.narrow(D::Minus1, half, half)?;
                let rot = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
                (x.broadcast_mul(cos)? + rot.broadcast_mul(sin)?)?
            }
        })
    }
}
