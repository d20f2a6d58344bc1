//! The rows a training or scoring forward reads, and which positions it scores.

use std::collections::HashMap;

use asrl_ops::attention::RowGather;
use candle_core::{DType, Device, Tensor};

use crate::model::ModelError;

/// Right-padded token rows (b, t) and the positions to score.
///
/// Position p of row r scores the next token, `ids[r][p + 1]`; its log-prob lands at (r, p) of
/// the dense (b, t) outputs, so column t − 1 (and every unscored position) is always 0. Only
/// the first `last scored position + 1` tokens of a row influence its scores (the decoder is
/// causal), so the forward runs on that many positions per row (`forward_lens`) and on the
/// width of the longest, never on padding or trailing context.
#[derive(Debug, Clone)]
pub struct ScoringBatch {
    b: usize,
    t: usize,
    ids: Tensor,
    lens: Vec<usize>,
    max_id: u32,
    /// Positions the forward runs per row, and the widest of them.
    forward_lens: Vec<usize>,
    forward_t: usize,
    /// (b · forward_t) u32: the forward's input ids.
    input: Tensor,
    /// (m) u32: each scored position as `row · forward_t + p` (row-major order).
    forward_index: Tensor,
    /// (m) u32: the same positions as `row · t + p`, in the dense outputs.
    dense_index: Tensor,
    /// (m) u32: the token each scored position predicts.
    targets: Tensor,
    /// (b, t) f32: 1 at scored positions.
    mask: Tensor,
    scored: usize,
    /// Set when rows share a prompt: the layout that runs each distinct prompt once.
    shared: Option<SharedPrompts>,
}

/// Completions that share a prompt, packed so the prompt runs once ([`ScoringBatch::completions`]).
///
/// The forward is one sequence: each distinct prompt once, then every completion's own input
/// tokens (all but its last, which nothing reads), at their positions after the prompt for
/// RoPE. Projections, norms and the MLP see each token once; attention runs per completion on
/// (its prompt, its tokens), gathered by index ([`RowGather`]). The log-prob of a completion's
/// first token is read at its prompt's last position, shared by the group.
#[derive(Debug, Clone)]
pub(super) struct SharedPrompts {
    /// (n) u32: the packed input ids.
    pub input: Tensor,
    /// Position of each packed token.
    pub positions: Vec<usize>,
    pub rows: RowGather,
    /// (m) u32: each scored position's packed token, in the dense order of `targets`.
    pub forward_index: Tensor,
}

impl ScoringBatch {
    /// Rows of (token ids, labels) where `labels[j]` says whether token j is scored (predicted
    /// from position j − 1), the SFT label-mask convention: `labels[0]` must be false.
    pub fn new(rows: &[(&[u32], &[bool])], device: &Device) -> Result<Self, ModelError> {
        for (r, (ids, labels)) in rows.iter().enumerate() {
            if ids.len() != labels.len() {
                return Err(ModelError::Input(format!("scoring batch row {r}: {} tokens but {} labels", ids.len(), labels.len())));
            }
            if labels.first() == Some(&true) {
                return Err(ModelError::Input(format!("scoring batch row {r}: token 0 is labelled but nothing predicts it")));
            }
        }
        Self::build(rows.iter().map(|(ids, labels)| (*ids, labels.iter().skip(1).copied().collect())).collect(), device)
    }

    /// Rows of (prompt, completion): scores every completion token (GRPO). A row with a
    /// completion needs a non-empty prompt.
    ///
    /// When two or more rows have the same prompt, the batch also carries the layout that runs
    /// that prompt once for them ([`SharedPrompts`]); the training engine uses it unless LoRA
    /// dropout is active (each row then draws its own masks) or [`Self::unshared`] dropped it.
    /// The log-probs and gradients are the same either way.
    pub fn completions(rows: &[(&[u32], &[u32])], device: &Device) -> Result<Self, ModelError> {
        let mut batch = Self::completions_unshared(rows, device)?;
        batch.shared = SharedPrompts::build(rows, batch.scored, device)?;
        Ok(batch)
    }

    /// The same batch without the shared-prompt layout: every row runs its whole prompt.
    pub fn unshared(mut self) -> Self {
        self.shared = None;
        self
    }

    /// Whether the batch carries a shared-prompt layout.
    pub fn shares_prompts(&self) -> bool {
        self.shared.is_some()
    }

    fn completions_unshared(rows: &[(&[u32], &[u32])], device: &Device) -> Result<Self, ModelError> {
        let mut built = Vec::with_capacity(rows.len());
        let mut joined = Vec::with_capacity(rows.len());
        for (r, (prompt, completion)) in rows.iter().enumerate() {
            if prompt.is_empty() && !completion.is_empty() {
                return Err(ModelError::Input(format!("scoring batch row {r}: a completion needs a non-empty prompt")));
            }
            joined.push([*prompt, *completion].concat());
            let positions = prompt.len() + completion.len();
            let mut scored = vec![false; positions.saturating_sub(1)];
            scored[prompt.len().saturating_sub(1)..].fill(true);
            built.push(scored);
        }
        Self::build(joined.iter().map(Vec::as_slice).zip(built).collect(), device)
    }

    /// `rows[r] = (ids, scored)` with `scored[p]` for positions p < len − 1.
    fn build(rows: Vec<(&[u32], Vec<bool>)>, device: &Device) -> Result<Self, ModelError> {
        let b = rows.len();
        let t = rows.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0);
        if b == 0 || t == 0 {
            return Err(ModelError::Input(format!("scoring batch is empty ({b} rows of at most {t} tokens)")));
        }
        let lens: Vec<usize> = rows.iter().map(|(ids, _)| ids.len()).collect();
        let forward_lens: Vec<usize> =
            rows.iter().map(|(_, s)| s.iter().rposition(|&x| x).map_or(0, |p| p + 1)).collect();
        let forward_t = forward_lens.iter().copied().max().unwrap_or(0).max(1);
        let (mut padded, mut input) = (vec![0u32; b * t], vec![0u32; b * forward_t]);
        let (mut forward_index, mut dense_index, mut targets) = (Vec::new(), Vec::new(), Vec::new());
        let mut mask = vec![0f32; b * t];
        for (r, (ids, scored)) in rows.iter().enumerate() {
            padded[r * t..r * t + ids.len()].copy_from_slice(ids);
            let keep = ids.len().min(forward_t);
            input[r * forward_t..r * forward_t + keep].copy_from_slice(&ids[..keep]);
            for (p, _) in scored.iter().enumerate().filter(|(_, &s)| s) {
                forward_index.push((r * forward_t + p) as u32);
                dense_index.push((r * t + p) as u32);
                targets.push(ids[p + 1]);
                mask[r * t + p] = 1.0;
            }
        }
        let scored = targets.len();
        let max_id = rows.iter().flat_map(|(ids, _)| ids.iter().copied()).max().unwrap_or(0);
        let index = |v: Vec<u32>| Tensor::from_vec(v, scored, device);
        Ok(ScoringBatch {
            b,
            t,
            ids: Tensor::from_vec(padded, (b, t), device)?,
            lens,
            max_id,
            forward_lens,
            forward_t,
            input: Tensor::from_vec(input, b * forward_t, device)?,
            forward_index: index(forward_index)?,
            dense_index: index(dense_index)?,
            targets: index(targets)?,
            mask: Tensor::from_vec(mask, (b, t), device)?,
            scored,
            shared: None,
        })
    }

    /// (b, t): rows and the padded width, the shape of the dense outputs.
    pub fn dims(&self) -> (usize, usize) {
        (self.b, self.t)
    }

    /// (b, t) u32 token ids, right-padded with 0.
    pub fn ids(&self) -> &Tensor {
        &self.ids
    }

    /// Each row's token count.
    pub fn lens(&self) -> &[usize] {
        &self.lens
    }

    /// (b, t) f32: 1 at scored positions, 0 elsewhere (the losses' mask).
    pub fn mask(&self) -> &Tensor {
        &self.mask
    }

    /// Number of scored positions (the rows that reach the vocabulary projection).
    pub fn num_scored(&self) -> usize {
        self.scored
    }

    /// Tokens the forward runs on: b × (one past the last scored position of any row), or the
    /// packed tokens when prompts are shared (unless dropout unshares them).
    pub fn forward_tokens(&self) -> usize {
        self.shared.as_ref().map_or(self.b * self.forward_t, SharedPrompts::tokens)
    }

    /// The shared-prompt layout the engine runs, if any: none while LoRA dropout is active,
    /// since every row draws its own masks.
    pub(super) fn shared_layout(&self, dropout: bool) -> Option<&SharedPrompts> {
        self.shared.as_ref().filter(|_| !dropout)
    }

    pub(super) fn max_id(&self) -> u32 {
        self.max_id
    }

    pub(super) fn forward_t(&self) -> usize {
        self.forward_t
    }

    pub(super) fn forward_lens(&self) -> &[usize] {
        &self.forward_lens
    }

    pub(super) fn input(&self) -> &Tensor {
        &self.input
    }

    pub(super) fn forward_index(&self) -> &Tensor {
        &self.forward_index
    }

    pub(super) fn dense_index(&self) -> &Tensor {
        &self.dense_index
    }

    pub(super) fn targets(&self) -> &Tensor {
        &self.targets
    }

    /// Dense (b, t) f32 from the m scored values.
    pub(super) fn scatter(&self, values: &Tensor) -> Result<Tensor, ModelError> {
        let zeros = Tensor::zeros(self.b * self.t, DType::F32, values.device())?;
        Ok(zeros.index_add(&self.dense_index, &values.to_dtype(DType::F32)?, 0)?.reshape((self.b, self.t))?)
    }
}

impl SharedPrompts {
    /// `None` unless some prompt is shared by two rows that score tokens.
    fn build(rows: &[(&[u32], &[u32])], scored: usize, device: &Device) -> Result<Option<Self>, ModelError> {
        let mut users: HashMap<&[u32], usize> = HashMap::new();
        for (prompt, completion) in rows {
            if !completion.is_empty() {
                *users.entry(*prompt).or_default() += 1;
            }
        }
        if !users.values().any(|&u| u > 1) {
            return Ok(None);
        }
        // Packed token → (row, slot) whose attention output it keeps: a prompt's, the first
        // row that reads it.
        let (mut input, mut positions, mut take) = (Vec::new(), Vec::new(), Vec::new());
        let mut attention_rows = vec![Vec::new(); rows.len()];
        let mut forward_index = Vec::with_capacity(scored);
        let mut prompt_start: HashMap<&[u32], usize> = HashMap::new();
        for (r, (prompt, completion)) in rows.iter().enumerate() {
            if completion.is_empty() {
                continue;
            }
            let p = prompt.len();
            let start = *prompt_start.entry(*prompt).or_insert_with(|| {
                let at = input.len();
                input.extend_from_slice(prompt);
                positions.extend(0..p);
                take.extend((0..p).map(|j| (r, j)));
                at
            });
            let own = completion.len() - 1;
            let seg = input.len();
            input.extend_from_slice(&completion[..own]);
            positions.extend(p..p + own);
            take.extend((0..own).map(|j| (r, p + j)));
            attention_rows[r] = (start..start + p).chain(seg..seg + own).collect();
            forward_index.push((start + p - 1) as u32);
            forward_index.extend((seg..seg + own).map(|i| i as u32));
        }
        debug_assert_eq!(forward_index.len(), scored);
        let n = input.len();
        Ok(Some(SharedPrompts {
            input: Tensor::from_vec(input, n, device)?,
            positions,
            rows: RowGather::new(n, &attention_rows, &take, device)?,
            forward_index: Tensor::from_vec(forward_index, scored, device)?,
        }))
    }

    /// Tokens the shared forward runs on.
    pub fn tokens(&self) -> usize {
        self.positions.len()
    }
}
