//! `asrl-tools bench floor`: the dense products of one LoRA SFT step, run alone through the
//! engine's gemm wrapper (`asrl_ops::matmul`) on weights of the model's shape.
//!
//! A training step is those products plus attention, norms, SwiGLU, the softmax and AdamW, so
//! their time is a floor under the step on this machine: no work outside the products can take
//! the step below it; only a faster product kernel can. `scripts/bench-sft.sh --floor` prints it
//! next to the step and PEFT's figure, which bounds the ratio any engine built on this kernel
//! can show against PEFT.
//!
//! The products are the ones the engine runs at that shape with every layer's activations
//! saved (no recomputation): per layer and per stacked projection (q|k|v, o, gate|up, down)
//! `x·Wᵀ`, `x·Aᵀ` and `s·(x·Aᵢᵀ)·Bᵢᵀ` forward; `dy·W` (skipped for the first layer's q|k|v,
//! as the engine does), `s·dyᵢ·Bᵢ`, `s·dyᵢᵀ·(x·Aᵢᵀ)`, `Gᵀ·x` and `G·A` backward; and the tied
//! head's logits and `p·E` over every scored row. Each layer has its own weights, so they come
//! from memory as in the step.

use std::time::Instant;

use anyhow::bail;
use asrl_common::model::ModelConfig;
use asrl_ops::{matmul, Mat, MatMut};

use super::BenchShape;

#[derive(clap::Args, Debug)]
pub struct FloorArgs {
    /// Model shape whose products are timed.
    #[arg(long, value_enum, default_value = "smollm2-135m")]
    pub shape: BenchShape,
    /// Tokens in the sequence (every token after the first is a label, as in `bench sft`).
    #[arg(long, default_value_t = 256)]
    pub seq: usize,
    /// LoRA rank on all 7 projections.
    #[arg(long, default_value_t = 32)]
    pub rank: usize,
    /// Timed passes; the figure is the fastest (least disturbed) one.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Untimed passes first.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
}

/// One stacked projection: frozen `w` (Σ outᵢ, inp), its adapters' stacked A (members·r, inp)
/// and each member's B (outᵢ, r).
struct Stack {
    inp: usize,
    outs: Vec<usize>,
    w: Vec<f32>,
    a: Vec<f32>,
    bs: Vec<Vec<f32>>,
}

impl Stack {
    fn new(inp: usize, outs: &[usize], r: usize, fill: &mut Fill) -> Self {
        let o: usize = outs.iter().sum();
        Stack {
            inp,
            outs: outs.to_vec(),
            w: fill.vec(o * inp),
            a: fill.vec(outs.len() * r * inp),
            bs: outs.iter().map(|&out| fill.vec(out * r)).collect(),
        }
    }

    fn out(&self) -> usize {
        self.outs.iter().sum()
    }
}

/// Cheap deterministic values in ±0.05 (the products' speed does not depend on them).
struct Fill(u64);

impl Fill {
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((self.0 >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
            })
            .collect()
    }
}

/// Scratch buffers sized for the widest stack, reused by every product.
struct Scratch {
    x: Vec<f32>,
    y: Vec<f32>,
    xa: Vec<f32>,
    dy: Vec<f32>,
    dx: Vec<f32>,
    g: Vec<f32>,
    da: Vec<f32>,
    db: Vec<f32>,
}

struct Products {
    t: usize,
    r: usize,
    scale: f32,
    threads: usize,
    flops: f64,
}

impl Products {
    fn mm(&mut self, dst: MatMut, accumulate: bool, a: Mat, b: Mat, scale: f32, (m, k, n): (usize, usize, usize)) {
        matmul(dst, accumulate, a, b, scale, self.threads);
        self.flops += 2.0 * (m * k * n) as f64;
    }

    fn forward(&mut self, s: &Stack, b: &mut Scratch) {
        let (t, r, inp, o, rs) = (self.t, self.r, s.inp, s.out(), s.outs.len() * self.r);
        let x = Mat::rows(&b.x, t, inp, inp);
        self.mm(MatMut::rows(&mut b.y, t, o, o), false, x, Mat::rows(&s.w, o, inp, inp).t(), 1.0, (t, inp, o));
        self.mm(MatMut::rows(&mut b.xa, t, rs, rs), false, x, Mat::rows(&s.a, rs, inp, inp).t(), 1.0, (t, inp, rs));
        let mut off = 0;
        for (i, (&out, bm)) in s.outs.iter().zip(&s.bs).enumerate() {
            let (xa_i, b_t) = (Mat::rows(&b.xa[i * r..], t, r, rs), Mat::rows(bm, out, r, r).t());
            self.mm(MatMut::rows(&mut b.y[off..], t, out, o), true, xa_i, b_t, self.scale, (t, r, out));
            off += out;
        }
    }

    fn backward(&mut self, s: &Stack, b: &mut Scratch, need_dx: bool) {
        let (t, r, inp, o, rs) = (self.t, self.r, s.inp, s.out(), s.outs.len() * self.r);
        if need_dx {
            let (dy, w) = (Mat::rows(&b.dy, t, o, o), Mat::rows(&s.w, o, inp, inp));
            self.mm(MatMut::rows(&mut b.dx, t, inp, inp), false, dy, w, 1.0, (t, o, inp));
        }
        let mut off = 0;
        for (i, (&out, bm)) in s.outs.iter().zip(&s.bs).enumerate() {
            let dy_i = Mat::rows(&b.dy[off..], t, out, o);
            self.mm(MatMut::rows(&mut b.g[i * r..], t, r, rs), false, dy_i, Mat::rows(bm, out, r, r), self.scale, (t, out, r));
            let xa_i = Mat::rows(&b.xa[i * r..], t, r, rs);
            self.mm(MatMut::rows(&mut b.db, out, r, r), false, dy_i.t(), xa_i, self.scale, (out, t, r));
            off += out;
        }
        let (g, x) = (Mat::rows(&b.g, t, rs, rs), Mat::rows(&b.x, t, inp, inp));
        self.mm(MatMut::rows(&mut b.da, rs, inp, inp), false, g.t(), x, 1.0, (rs, t, inp));
        if need_dx {
            self.mm(MatMut::rows(&mut b.dx, t, inp, inp), true, g, Mat::rows(&s.a, rs, inp, inp), 1.0, (t, rs, inp));
        }
    }
}

/// The fastest timed pass and the floating-point operations one pass does.
#[derive(Debug, Clone, Copy)]
pub struct Floor {
    pub seconds: f64,
    pub flops: f64,
}

pub fn run(args: &FloorArgs) -> anyhow::Result<()> {
    if args.seq < 2 || args.rank == 0 || args.steps == 0 {
        bail!("--seq must be >= 2, --rank and --steps >= 1");
    }
    let threads = candle_core::utils::get_num_threads();
    let floor = measure(&args.shape.config(), args.seq, args.rank, args.warmup, args.steps);
    println!(
        "floor: the dense products of one LoRA SFT step alone ({} shape, seq {}, r {}, 7 modules, f32, {threads} threads, fastest of {})",
        args.shape.name(),
        args.seq,
        args.rank,
        args.steps
    );
    println!(
        "floor_seconds={:.3} floor_gflop={:.1} floor_gflop_per_second={:.1} floor_tokens_per_second={:.1}",
        floor.seconds,
        floor.flops * 1e-9,
        floor.flops / floor.seconds * 1e-9,
        args.seq as f64 / floor.seconds
    );
    Ok(())
}

/// Times `steps` passes over the products of one SFT step on a `seq`-token sequence after
/// `warmup` untimed ones (`seq >= 2`, `rank >= 1`, `steps >= 1`).
pub fn measure(cfg: &ModelConfig, seq: usize, rank: usize, warmup: usize, steps: usize) -> Floor {
    let (h, i, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim);
    let (q, kv) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
    let (t, r, vocab) = (seq, rank, cfg.vocab_size);
    let mut fill = Fill(0x5eed);
    let layers: Vec<[Stack; 4]> = (0..cfg.num_hidden_layers)
        .map(|_| {
            [
                Stack::new(h, &[q, kv, kv], r, &mut fill),
                Stack::new(q, &[h], r, &mut fill),
                Stack::new(h, &[i, i], r, &mut fill),
                Stack::new(i, &[h], r, &mut fill),
            ]
        })
        .collect();
    let embed = fill.vec(vocab * h);
    let widest = (q + 2 * kv).max(h).max(2 * i);
    let mut b = Scratch {
        x: fill.vec(t * widest),
        y: vec![0.0; t * widest],
        xa: vec![0.0; t * 3 * r],
        dy: fill.vec(t * widest),
        dx: vec![0.0; t * widest],
        g: vec![0.0; t * 3 * r],
        da: vec![0.0; 3 * r * widest],
        db: vec![0.0; widest * r],
    };
    // The head in chunks of rows, as `linear_logprob` runs it.
    let rows = t - 1;
    let chunk = asrl_ops::linear_logprob::default_chunk_rows(vocab).min(rows);
    let mut logits = vec![0f32; chunk * vocab];
    let mut dh = vec![0f32; rows * h];
    let threads = candle_core::utils::get_num_threads();
    let mut p = Products { t, r, scale: 2.0, threads, flops: 0.0 };

    let mut pass = |p: &mut Products| {
        for stacks in &layers {
            for s in stacks {
                p.forward(s, &mut b);
            }
        }
        let e = Mat::rows(&embed, vocab, h, h);
        for start in (0..rows).step_by(chunk) {
            let n = chunk.min(rows - start);
            let hm = Mat::rows(&b.x[start * h..], n, h, h);
            p.mm(MatMut::rows(&mut logits, n, vocab, vocab), false, hm, e.t(), 1.0, (n, h, vocab));
            let pm = Mat::rows(&logits, n, vocab, vocab);
            p.mm(MatMut::rows(&mut dh[start * h..], n, h, h), false, pm, e, 1.0, (n, vocab, h));
        }
        for (l, stacks) in layers.iter().enumerate().rev() {
            for (k, s) in stacks.iter().enumerate().rev() {
                p.backward(s, &mut b, l > 0 || k > 0);
            }
        }
    };
    let mut best = f64::INFINITY;
    asrl_ops::on_pool(|| {
        for _ in 0..warmup {
            pass(&mut p);
        }
        for _ in 0..steps {
            p.flops = 0.0;
            let start = Instant::now();
            pass(&mut p);
            best = best.min(start.elapsed().as_secs_f64());
        }
    });
    Floor { seconds: best, flops: p.flops }
}

#[cfg(test)]
mod tests {
    use asrl_common::model::{Arch, ModelConfig};

    use super::measure;

    /// The step's product FLOPs counted from the shape alone: a product missing from (or added
    /// to) the pass changes the count.
    fn closed_form(c: &ModelConfig, t: usize, r: usize) -> f64 {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let (q, kv) = (c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim);
        // (inputs, outputs) of the 7 adapted projections, q, k, v first.
        let modules = [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)];
        let mut flops = 0.0;
        for layer in 0..c.num_hidden_layers {
            for (m, &(inp, out)) in modules.iter().enumerate() {
                let need_dx = layer > 0 || m >= 3;
                // Forward: x·Wᵀ, x·Aᵀ, (x·Aᵀ)·Bᵀ. Backward: dy·B, dyᵀ·(x·Aᵀ), Gᵀ·x, and with dx
                // dy·W and G·A.
                let (frozen, lora) = ((t * inp * out) as f64, (t * r) as f64);
                flops += 2.0 * (frozen + lora * (inp + out) as f64);
                flops += 2.0 * lora * (2 * out + inp) as f64;
                if need_dx {
                    flops += 2.0 * (frozen + lora * inp as f64);
                }
            }
        }
        flops + 2.0 * 2.0 * ((t - 1) * h * c.vocab_size) as f64
    }

    #[test]
    fn the_pass_runs_every_product_of_the_step_once() {
        let tiny = |arch, heads, head_dim| ModelConfig {
            arch,
            vocab_size: 96,
            hidden_size: 32,
            intermediate_size: 48,
            num_hidden_layers: 3,
            num_attention_heads: heads,
            num_key_value_heads: 2,
            head_dim,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: true,
            max_position_embeddings: 128,
        };
        // Llama-like (heads·head_dim = hidden) and Qwen3-like (it is not).
        for cfg in [tiny(Arch::Llama, 4, 8), tiny(Arch::Qwen3, 4, 16)] {
            for (t, r) in [(2, 1), (9, 4)] {
                let floor = measure(&cfg, t, r, 0, 1);
                assert_eq!(floor.flops, closed_form(&cfg, t, r), "{:?} t {t} r {r}", cfg.arch);
                assert!(floor.seconds.is_finite() && floor.seconds > 0.0);
            }
        }
    }
}
