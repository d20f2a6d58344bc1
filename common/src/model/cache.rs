//! Key/value cache for incremental decoding: one preallocated (batch, kv_heads, capacity,
//! head_dim) buffer per layer, written in place, so a decode step copies only the new position.

use candle_core::Tensor;

use super::ModelError;

pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
    /// Positions to allocate on first use (grown by doubling when exceeded).
    capacity: usize,
    batch: Option<usize>,
}

impl KvCache {
    pub(crate) fn new(num_layers: usize, capacity: usize) -> Self {
        Self { layers: (0..num_layers).map(|_| None).collect(), len: 0, capacity, batch: None }
    }

    /// Positions cached so far (the position of the next token).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Rows (sequences) in the cache, once something was cached.
    pub fn batch_size(&self) -> Option<usize> {
        self.batch
    }

    pub(crate) fn prepare(&mut self, num_layers: usize, batch: usize) -> Result<(), ModelError> {
        if self.layers.len() != num_layers {
            return Err(ModelError::Input(format!(
                "KV cache has {} layers, the model {num_layers}",
                self.layers.len()
            )));
        }
        match self.batch {
            Some(b) if b != batch => Err(ModelError::Input(format!(
                "KV cache holds {b} rows, input has {batch}: use repeat_batch / select_rows first"
            ))),
            _ => {
                self.batch = Some(batch);
                Ok(())
            }
        }
    }

    /// Layer `layer`'s cached keys and values (b, kv_heads, len, head_dim), views of the buffers.
    pub(crate) fn layer_kv(&self, layer: usize) -> Result<Option<(Tensor, Tensor)>, ModelError> {
        match self.layers.get(layer) {
            Some(Some((k, v))) => Ok(Some((k.narrow(2, 0, self.len)?, v.narrow(2, 0, self.len)?))),
            _ => Ok(None),
        }
    }

    pub(crate) fn num_layers(&self) -> usize {
        self.layers.len()
    }

    pub(crate) fn advance(&mut self, t: usize) {
        self.len += t;
    }

    /// Writes `k`, `v` (b, kv_heads, t, head_dim) after the cached positions of `layer` and
    /// returns views of all positions so far.
    pub(crate) fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor), ModelError> {
        let t = k.dim(2)?;
        let need = self.len + t;
        let slot = &mut self.layers[layer];
        let grow = match slot {
            Some((kb, _)) => kb.dim(2)? < need,
            None => true,
        };
        if grow {
            let cap = match slot {
                Some((kb, _)) => need.max(2 * kb.dim(2)?),
                None => need.max(self.capacity),
            };
            let (b, h, _, d) = k.dims4()?;
            let kb = Tensor::zeros((b, h, cap, d), k.dtype(), k.device())?;
            let vb = Tensor::zeros((b, h, cap, d), v.dtype(), v.device())?;
            if let Some((ok, ov)) = slot.as_ref() {
                if self.len > 0 {
                    kb.slice_set(&ok.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
                    vb.slice_set(&ov.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
                }
            }
            *slot = Some((kb, vb));
        }
        let (kb, vb) = slot.as_ref().ok_or_else(|| ModelError::Input("KV cache slot missing".into()))?;
        kb.slice_set(k, 2, self.len)?;
        vb.slice_set(v, 2, self.len)?;
        Ok((kb.narrow(2, 0, need)?, vb.narrow(2, 0, need)?))
    }

    /// Turns a batch-1 cache (a shared prompt prefill) into `n` identical rows.
    pub fn repeat_batch(&mut self, n: usize) -> Result<(), ModelError> {
        if n == 0 {
            return Err(ModelError::Input("repeat_batch(0)".into()));
        }
        match self.batch {
            Some(1) => {}
            Some(b) => return Err(ModelError::Input(format!("repeat_batch needs a batch-1 cache, it has {b} rows"))),
            None => return Err(ModelError::Input("repeat_batch on an empty cache".into())),
        }
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.repeat((n, 1, 1, 1))?;
            *v = v.repeat((n, 1, 1, 1))?;
        }
        self.batch = Some(n);
        Ok(())
    }

    /// Keeps only the given rows, in that order (drops finished sequences from a batch).
    pub fn select_rows(&mut self, rows: &[usize]) -> Result<(), ModelError> {
        let b = self.batch.unwrap_or(0);
        if rows.is_empty() || rows.iter().any(|&r| r >= b) {
            return Err(ModelError::Input(format!("select_rows({rows:?}) on a cache of {b} rows")));
        }
        let Some(device) = self.layers.iter().flatten().next().map(|(k, _)| k.device().clone()) else {
            return Ok(());
        };
        let idx = Tensor::from_vec(rows.iter().map(|&r| r as u32).collect::<Vec<_>>(), rows.len(), &device)?;
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.index_select(&idx, 0)?;
            *v = v.index_select(&idx, 0)?;
        }
        self.batch = Some(rows.len());
        Ok(())
    }
}
