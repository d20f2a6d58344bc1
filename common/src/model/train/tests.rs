//! The engine against the composite path (`Model::forward` + `token_logprobs` + candle
//! autograd on the adapter's Vars), on random tiny models and the committed fixtures.

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::config::{LoraConfig, LoraTarget};
use crate::model::dropout::DropoutMasks;
use crate::model::tests::tiny_config;
use crate::model::{load_hf_model, token_logprobs, Arch, ModelConfig};

const CPU: Device = Device::Cpu;

/// Qwen3 (tied and untied) and Llama, all with GQA (4 heads, 2 kv heads) and head_dim ≠
/// hidden / heads (16 and 12 against 32 / 4).
fn configs() -> Vec<ModelConfig> {
    vec![
        tiny_config(Arch::Qwen3, true),
        tiny_config(Arch::Qwen3, false),
        ModelConfig { head_dim: 12, ..tiny_config(Arch::Llama, false) },
    ]
}

/// An adapter with non-zero B (so dA ≠ 0) on `targets`.
fn adapter(cfg: &ModelConfig, targets: &[LoraTarget], dropout: f64, seed: u64) -> LoraAdapter {
    let lora = LoraConfig { r: 4, alpha: 8.0, dropout, target_modules: targets.to_vec() };
    let mut a = LoraAdapter::new(&lora, cfg, &CPU, seed).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 100);
    for (name, var) in a.vars() {
        if name.contains("lora_B") {
            let v: Vec<f32> = (0..var.elem_count()).map(|_| rng.random_range(-0.2f32..0.2)).collect();
            var.set(&Tensor::from_vec(v, var.shape(), &CPU).unwrap()).unwrap();
        }
    }
    a.set_training(dropout > 0.0);
    a
}

fn random_ids(rng: &mut ChaCha8Rng, n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|_| rng.random_range(0..vocab as u32)).collect()
}

/// Three rows of different lengths (so two are right-padded): a prompt-masked row, a fully
/// labelled one, and one with a gap in its labels.
fn sft_batch(vocab: usize, seed: u64) -> ScoringBatch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let rows = [random_ids(&mut rng, 11, vocab), random_ids(&mut rng, 7, vocab), random_ids(&mut rng, 5, vocab)];
    let labels: [Vec<bool>; 3] = [
        (0..11).map(|j| j >= 4).collect(),
        (0..7).map(|j| j >= 1).collect(),
        vec![false, true, false, true, true],
    ];
    let pairs: Vec<(&[u32], &[bool])> = rows.iter().zip(&labels).map(|(r, l)| (r.as_slice(), l.as_slice())).collect();
    ScoringBatch::new(&pairs, &CPU).unwrap()
}

/// Loss weights (b, t): the loss is Σ w · lp, so every position carries its own gradient.
fn weights(batch: &ScoringBatch, seed: u64) -> Tensor {
    let (b, t) = batch.dims();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let w: Vec<f32> = (0..b * t).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Tensor::from_vec(w, (b, t), &CPU).unwrap()
}

/// Dense (b, t) log-probs and the gradients of Σ w · lp in `vars()` order, through autograd.
fn composite(model: &Model, batch: &ScoringBatch, a: Option<&LoraAdapter>, temp: f64, w: &Tensor) -> (Tensor, Vec<Tensor>) {
    let (b, t) = batch.dims();
    let ids = batch.ids();
    let logits = model.forward(ids, a).unwrap().narrow(1, 0, t - 1).unwrap().contiguous().unwrap();
    let lp = token_logprobs(&logits, &ids.narrow(1, 1, t - 1).unwrap(), temp).unwrap();
    let lp = Tensor::cat(&[&lp, &Tensor::zeros((b, 1), DType::F32, &CPU).unwrap()], 1).unwrap();
    let lp = (lp * batch.mask()).unwrap();
    let Some(a) = a else { return (lp, vec![]) };
    let store = (&lp * w).unwrap().sum_all().unwrap().backward().unwrap();
    let grads = a.vars().iter().map(|(n, v)| store.get(v.as_tensor()).unwrap_or_else(|| panic!("no grad for {n}")).clone()).collect();
    (lp.detach(), grads)
}

/// The engine's log-probs and gradients of Σ w · lp, through the trainer's seam.
fn engine(model: &Model, batch: &ScoringBatch, a: &LoraAdapter, opts: TrainOptions, w: &Tensor) -> (Tensor, Vec<Tensor>, usize) {
    let (lp, tape) = model.train_forward(batch, a, &opts).unwrap();
    let saved = tape.saved_layers();
    let lp_var = Var::from_tensor(&lp).unwrap();
    let loss = (lp_var.as_tensor() * w).unwrap().sum_all().unwrap();
    let dl = loss.backward().unwrap().get(lp_var.as_tensor()).unwrap().clone();
    let grads = tape.backward(&dl).unwrap();
    assert_eq!(grads.names(), a.vars().iter().map(|(n, _)| n.clone()).collect::<Vec<_>>());
    (lp, grads.into_tensors(), saved)
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// max |got − want| / max |want|.
fn rel_diff(got: &Tensor, want: &Tensor) -> f32 {
    assert_eq!(got.dims(), want.dims());
    max_abs(&(got - want).unwrap()) / max_abs(want).max(1e-12)
}

fn assert_close(what: &str, got: &(Tensor, Vec<Tensor>), want: &(Tensor, Vec<Tensor>), names: &[String], tol: f32) {
    let d = rel_diff(&got.0, &want.0);
    assert!(d <= tol, "{what}: log-probs differ by {d} (relative)");
    assert_eq!(got.1.len(), want.1.len());
    for ((g, w), n) in got.1.iter().zip(&want.1).zip(names) {
        let d = rel_diff(g, w);
        assert!(d <= tol, "{what}: gradient of {n} differs by {d} (relative)");
    }
}

fn names(a: &LoraAdapter) -> Vec<String> {
    a.vars().into_iter().map(|(n, _)| n).collect()
}

fn drop_t(x: (Tensor, Vec<Tensor>, usize)) -> (Tensor, Vec<Tensor>) {
    (x.0, x.1)
}

#[test]
fn engine_matches_autograd_on_random_models() {
    for cfg in configs() {
        let model = Model::random(cfg.clone(), &CPU, DType::F32, 3).unwrap();
        let a = adapter(&cfg, &LoraTarget::ALL, 0.0, 5);
        let batch = sft_batch(cfg.vocab_size, 1);
        let w = weights(&batch, 2);
        for temp in [1.0, 0.7] {
            let want = composite(&model, &batch, Some(&a), temp, &w);
            let opts = TrainOptions { temperature: temp, checkpointing: Checkpointing::Off, ..Default::default() };
            let got = drop_t(engine(&model, &batch, &a, opts, &w));
            assert_close(&format!("{:?} head_dim {} T {temp}", cfg.arch, cfg.head_dim), &got, &want, &names(&a), 1e-4);
            // The comparison means something: every A and B gets a non-zero gradient.
            for (g, n) in got.1.iter().zip(names(&a)) {
                assert!(max_abs(g) > 0.0, "zero gradient for {n}");
            }
            // Unscored positions are exactly 0.
            let unscored = (got.0.abs().unwrap() * (1.0 - batch.mask()).unwrap()).unwrap();
            assert_eq!(max_abs(&unscored), 0.0);
        }
    }
}

#[test]
fn engine_matches_autograd_on_the_committed_fixtures() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    for name in ["tiny-qwen3", "tiny-llama"] {
        let model = load_hf_model(&fixtures.join(name), &CPU, DType::F32).unwrap();
        let cfg = model.config().clone();
        let a = adapter(&cfg, &LoraTarget::ALL, 0.0, 8);
        let batch = sft_batch(cfg.vocab_size, 4);
        let w = weights(&batch, 6);
        let want = composite(&model, &batch, Some(&a), 0.7, &w);
        let got = drop_t(engine(&model, &batch, &a, TrainOptions { temperature: 0.7, ..Default::default() }, &w));
        assert_close(name, &got, &want, &names(&a), 1e-4);
    }
}

#[test]
fn grpo_completion_batches_score_completion_tokens_only() {
    let cfg = tiny_config(Arch::Qwen3, false);
    let model = Model::random(cfg.clone(), &CPU, DType::F32, 9).unwrap();
    let a = adapter(&cfg, &[LoraTarget::Q, LoraTarget::V, LoraTarget::O, LoraTarget::Down], 0.0, 2);
    let prompts: [&[u32]; 3] = [&[3, 9, 27, 1, 5], &[40, 2], &[7, 7, 7, 60]];
    let completions: [&[u32]; 3] = [&[11, 12, 13], &[50, 51, 52, 53, 54, 55], &[]];
    let rows: Vec<(&[u32], &[u32])> = prompts.iter().copied().zip(completions.iter().copied()).collect();
    let batch = ScoringBatch::completions(&rows, &CPU).unwrap();
    assert_eq!(batch.dims(), (3, 8));
    assert_eq!(batch.num_scored(), 9);
    // Row 0 scores positions 4..7 (its prompt's last token predicts the first completion token).
    let m = batch.mask().to_vec2::<f32>().unwrap();
    assert_eq!(m[0], [0., 0., 0., 0., 1., 1., 1., 0.]);
    assert_eq!(m[1], [0., 1., 1., 1., 1., 1., 1., 0.]);
    assert_eq!(m[2], [0.; 8]);
    // The forward stops at the last scored position: 7 of 8 columns.
    assert_eq!(batch.forward_tokens(), 3 * 7);
    let w = weights(&batch, 3);
    let want = composite(&model, &batch, Some(&a), 1.3, &w);
    let got = drop_t(engine(&model, &batch, &a, TrainOptions { temperature: 1.3, ..Default::default() }, &w));
    assert_close("grpo batch", &got, &want, &names(&a), 1e-4);
}

#[test]
fn checkpointing_on_and_auto_give_the_results_of_off() {
    let cfg = ModelConfig { num_hidden_layers: 4, ..tiny_config(Arch::Qwen3, true) };
    let model = Model::random(cfg.clone(), &CPU, DType::F32, 1).unwrap();
    let a = adapter(&cfg, &LoraTarget::ALL, 0.0, 3);
    let batch = sft_batch(cfg.vocab_size, 7);
    let w = weights(&batch, 8);
    let bytes = model.train_layer_bytes(&batch, Some(&a));
    assert!(bytes.saved > 10 * bytes.checkpointed, "{bytes:?}");
    let off = engine(&model, &batch, &a, TrainOptions::default(), &w);
    assert_eq!(off.2, 4);
    // Room for the checkpoints plus exactly two fully saved layers.
    let two = 4 * bytes.checkpointed + 2 * (bytes.saved - bytes.checkpointed);
    for (ckpt, saved) in [
        (Checkpointing::On, 0),
        (Checkpointing::Auto { budget_bytes: 1 }, 0),
        (Checkpointing::Auto { budget_bytes: two }, 2),
        (Checkpointing::Auto { budget_bytes: two - 1 }, 1),
        (Checkpointing::Auto { budget_bytes: usize::MAX }, 4),
    ] {
        let got = engine(&model, &batch, &a, TrainOptions { checkpointing: ckpt, ..Default::default() }, &w);
        assert_eq!(got.2, saved, "{ckpt:?}");
        assert!(rel_diff(&got.0, &off.0) <= 1e-6, "{ckpt:?}: log-probs");
        for ((g, o), n) in got.1.iter().zip(&off.1).zip(names(&a)) {
            assert!(rel_diff(g, o) <= 1e-6, "{ckpt:?}: gradient of {n}");
        }
    }
}

#[test]
fn dropout_masks_are_the_composite_paths_per_projection_and_replayed_by_checkpointing() {
    let cfg = tiny_config(Arch::Qwen3, false);
    let model = Model::random(cfg.clone(), &CPU, DType::F32, 4).unwrap();
    let batch = sft_batch(cfg.vocab_size, 2);
    let w = weights(&batch, 5);
    // All targets (q|k|v and gate|up split into one call each), and a subset that leaves k and
    // gate unadapted inside split groups.
    let subset = [LoraTarget::Q, LoraTarget::V, LoraTarget::Up, LoraTarget::Down];
    for targets in [&LoraTarget::ALL[..], &subset[..]] {
        let a = adapter(&cfg, targets, 0.3, 6);
        a.seed_dropout(11);
        let want = composite(&model, &batch, Some(&a), 1.0, &w);
        for ckpt in [Checkpointing::Off, Checkpointing::On] {
            a.seed_dropout(11);
            let got = drop_t(engine(&model, &batch, &a, TrainOptions { checkpointing: ckpt, ..Default::default() }, &w));
            assert_close(&format!("dropout {targets:?} {ckpt:?}"), &got, &want, &names(&a), 1e-4);
        }
        // Dropout is on: another seed gives other log-probs, and scoring never drops.
        a.seed_dropout(12);
        let other = composite(&model, &batch, Some(&a), 1.0, &w);
        assert!(rel_diff(&other.0, &want.0) > 1e-3);
        let scored = model.score_logprobs(&batch, Some(&a), 1.0).unwrap();
        let mut eval = adapter(&cfg, targets, 0.3, 6);
        eval.set_training(false);
        let no_drop = composite(&model, &batch, Some(&eval), 1.0, &w);
        assert!(rel_diff(&scored, &no_drop.0) <= 1e-5);
    }
}

#[test]
fn dropout_masks_differ_per_projection_and_drop_at_rate_p() {
    let d = DropoutMasks { seed: 3, p: 0.25 };
    let q = d.mask(0, LoraTarget::Q, 10, 40, 64, &CPU).unwrap();
    let k = d.mask(0, LoraTarget::K, 10, 40, 64, &CPU).unwrap();
    let q1 = d.mask(1, LoraTarget::Q, 10, 40, 64, &CPU).unwrap();
    assert!(max_abs(&(&q - &k).unwrap()) > 0.0 && max_abs(&(&q - &q1).unwrap()) > 0.0);
    let v = q.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(v.iter().all(|&x| x == 0.0 || (x - 1.0 / 0.75).abs() < 1e-6));
    let dropped = v.iter().filter(|&&x| x == 0.0).count() as f64 / v.len() as f64;
    assert!((dropped - 0.25).abs() < 0.03, "dropped {dropped}");
    // A token's mask does not depend on the padded width: row 1 position 2 at widths 10 and 7.
    let narrow = d.mask(0, LoraTarget::Q, 7, 28, 64, &CPU).unwrap();
    assert_eq!(q.get(12).unwrap().to_vec1::<f32>().unwrap(), narrow.get(9).unwrap().to_vec1::<f32>().unwrap());
}

#[test]
fn score_logprobs_equals_train_forward_and_the_base_model() {
    for cfg in configs() {
        let model = Model::random(cfg.clone(), &CPU, DType::F32, 6).unwrap();
        let a = adapter(&cfg, &LoraTarget::ALL, 0.0, 1);
        let batch = sft_batch(cfg.vocab_size, 9);
        let (lp, _) = model.train_forward(&batch, &a, &TrainOptions { temperature: 0.7, ..Default::default() }).unwrap();
        let scored = model.score_logprobs(&batch, Some(&a), 0.7).unwrap();
        assert_eq!(max_abs(&(&lp - &scored).unwrap()), 0.0);
        let base = model.score_logprobs(&batch, None, 0.7).unwrap();
        let w = weights(&batch, 0);
        let want = composite(&model, &batch, None, 0.7, &w).0;
        assert!(rel_diff(&base, &want) <= 1e-4);
        assert!(rel_diff(&base, &lp) > 1e-3, "the adapter changes the log-probs");
        // Temperature 0 (greedy sampling) is scored at 1, like token_logprobs.
        let greedy = model.score_logprobs(&batch, None, 0.0).unwrap();
        assert_eq!(max_abs(&(&greedy - &model.score_logprobs(&batch, None, 1.0).unwrap()).unwrap()), 0.0);
    }
}

#[test]
fn bf16_runs_the_composite_op_paths_close_to_f32() {
    let cfg = tiny_config(Arch::Qwen3, false);
    let f32_model = Model::random(cfg.clone(), &CPU, DType::F32, 2).unwrap();
    let bf16_model = Model::random(cfg.clone(), &CPU, DType::BF16, 2).unwrap();
    let a = adapter(&cfg, &LoraTarget::ALL, 0.0, 4);
    let batch = sft_batch(cfg.vocab_size, 3);
    let w = weights(&batch, 1);
    let want = drop_t(engine(&f32_model, &batch, &a, TrainOptions::default(), &w));
    let got = drop_t(engine(&bf16_model, &batch, &a, TrainOptions { checkpointing: Checkpointing::On, ..Default::default() }, &w));
    assert!(rel_diff(&got.0, &want.0) < 3e-2, "log-probs {}", rel_diff(&got.0, &want.0));
    for ((g, o), n) in got.1.iter().zip(&want.1).zip(names(&a)) {
        assert_eq!(g.dtype(), DType::F32);
        assert!(rel_diff(g, o) < 0.1, "gradient of {n}: {}", rel_diff(g, o));
    }
}

#[test]
fn batches_and_gradients_with_bad_shapes_are_named_errors() {
    let cfg = tiny_config(Arch::Llama, true);
    let model = Model::random(cfg.clone(), &CPU, DType::F32, 0).unwrap();
    let a = adapter(&cfg, &[LoraTarget::Q], 0.0, 0);
    let e = ScoringBatch::new(&[(&[1, 2, 3][..], &[true, true, true][..])], &CPU).unwrap_err().to_string();
    assert!(e.contains("row 0: token 0 is labelled"), "{e}");
    let e = ScoringBatch::new(&[(&[1, 2][..], &[false, true][..]), (&[1, 2][..], &[false][..])], &CPU).unwrap_err().to_string();
    assert!(e.contains("row 1: 2 tokens but 1 labels"), "{e}");
    let e = ScoringBatch::completions(&[(&[][..], &[4][..])], &CPU).unwrap_err().to_string();
    assert!(e.contains("non-empty prompt"), "{e}");
    assert!(ScoringBatch::new(&[], &CPU).is_err());
    let oov = ScoringBatch::new(&[(&[1, 64][..], &[false, true][..])], &CPU).unwrap();
    let e = model.train_forward(&oov, &a, &TrainOptions::default()).unwrap_err().to_string();
    assert!(e.contains("token id 64"), "{e}");
    let batch = ScoringBatch::new(&[(&[1, 2, 3][..], &[false, true, true][..])], &CPU).unwrap();
    let (_, tape) = model.train_forward(&batch, &a, &TrainOptions::default()).unwrap();
    let e = tape.backward(&Tensor::zeros((1, 2), DType::F32, &CPU).unwrap()).unwrap_err().to_string();
    assert!(e.contains("shape [1, 2]") && e.contains("[1, 3]"), "{e}");
    let other = adapter(&ModelConfig { num_hidden_layers: 3, ..cfg.clone() }, &[LoraTarget::Q], 0.0, 0);
    assert!(matches!(model.train_forward(&batch, &other, &TrainOptions::default()), Err(ModelError::Adapter { .. })));
    // Nothing scored: zero log-probs and zero gradients, not an error.
    let none = ScoringBatch::new(&[(&[1, 2, 3][..], &[false, false, false][..])], &CPU).unwrap();
    let (lp, tape) = model.train_forward(&none, &a, &TrainOptions::default()).unwrap();
    assert_eq!(lp.dims(), [1, 3]);
    let grads = tape.backward(&Tensor::ones((1, 3), DType::F32, &CPU).unwrap()).unwrap();
    assert_eq!(grads.len(), 4);
    assert!(grads.iter().all(|(_, g)| max_abs(g) == 0.0));
}

#[test]
fn auto_checkpointing_plans_from_the_estimate() {
    let bytes = LayerBytes { saved: 100, checkpointed: 10 };
    assert_eq!(Checkpointing::Off.saved_layers(5, bytes), 5);
    assert_eq!(Checkpointing::On.saved_layers(5, bytes), 0);
    assert_eq!(Checkpointing::Auto { budget_bytes: 49 }.saved_layers(5, bytes), 0);
    assert_eq!(Checkpointing::Auto { budget_bytes: 50 + 90 * 3 }.saved_layers(5, bytes), 3);
    assert_eq!(Checkpointing::Auto { budget_bytes: 10_000 }.saved_layers(5, bytes), 5);
    // The estimate scales with tokens and dtype, and counts LoRA and dropout state.
    let cfg = tiny_config(Arch::Llama, false);
    let lora = LoraConfig { r: 8, ..Default::default() };
    let base = LayerBytes::estimate(&cfg, DType::F32, None, 100);
    assert_eq!(base.checkpointed, 100 * 4 * 32);
    // 4H + 2Q + 2K + 3I = 128 + 64 + 32 + 144 model-dtype values, 2 + heads f32s per token.
    assert_eq!(base.saved, 100 * (4 * (128 + 64 + 32 + 144) + 4 * (2 + 4)));
    let with_lora = LayerBytes::estimate(&cfg, DType::F32, Some((&lora, false)), 100);
    assert_eq!(with_lora.saved - base.saved, 100 * 4 * 7 * 8);
    let with_dropout = LayerBytes::estimate(&cfg, DType::F32, Some((&lora, true)), 100);
    assert_eq!(with_dropout.saved - with_lora.saved, 100 * 4 * (5 * 32 + 32 + 48));
    assert_eq!(LayerBytes::estimate(&cfg, DType::BF16, None, 100).checkpointed, 100 * 2 * 32);
}

/// The engine is bit-deterministic: the same batch, run again (with fresh allocations, under
/// whatever thread scheduling), gives the same log-probs and gradients to the bit.
#[test]
fn engine_is_bit_deterministic() {
    let cfg = ModelConfig { hidden_size: 64, intermediate_size: 160, vocab_size: 300, ..tiny_config(Arch::Qwen3, true) };
    let model = Model::random(cfg.clone(), &CPU, DType::F32, 3).unwrap();
    let a = adapter(&cfg, &LoraTarget::ALL, 0.0, 5);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let rows: Vec<Vec<u32>> = [70usize, 64, 33].iter().map(|&n| random_ids(&mut rng, n, cfg.vocab_size)).collect();
    let labels: Vec<Vec<bool>> = rows.iter().map(|r| (0..r.len()).map(|j| j >= 3).collect()).collect();
    let pairs: Vec<(&[u32], &[bool])> = rows.iter().zip(&labels).map(|(r, l)| (r.as_slice(), l.as_slice())).collect();
    let batch = ScoringBatch::new(&pairs, &CPU).unwrap();
    let w = weights(&batch, 2);
    let bits = |t: &Tensor| -> Vec<u32> { t.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect() };
    let run = || {
        let (lp, grads, _) = engine(&model, &batch, &a, TrainOptions::default(), &w);
        (bits(&lp), grads.iter().map(bits).collect::<Vec<_>>())
    };
    let first = run();
    for i in 0..20 {
        let _noise: Vec<f32> = vec![1.0; 1000 + 37 * i]; // shifts later allocations
        let again = run();
        assert!(again.0 == first.0, "run {i}: log-probs differ");
        for (j, (g, f)) in again.1.iter().zip(&first.1).enumerate() {
            assert!(g == f, "run {i}: gradient {} differs", names(&a)[j]);
        }
    }
}

/// Two prompts (one longer than an attention block) with three completions each, interleaved,
/// one completion empty: the rows sharing a prompt run it once.
fn shared_batch(vocab: usize, seed: u64) -> ScoringBatch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (a, b) = (random_ids(&mut rng, 70, vocab), random_ids(&mut rng, 5, vocab));
    let rows: Vec<(Vec<u32>, Vec<u32>)> = [(&a, 4), (&b, 3), (&a, 1), (&b, 0), (&a, 7), (&b, 6)]
        .into_iter()
        .map(|(p, c)| (p.clone(), random_ids(&mut rng, c, vocab)))
        .collect();
    let refs: Vec<(&[u32], &[u32])> = rows.iter().map(|(p, c)| (p.as_slice(), c.as_slice())).collect();
    ScoringBatch::completions(&refs, &CPU).unwrap()
}

#[test]
fn shared_prompts_give_the_log_probs_and_gradients_of_unshared_rows() {
    for cfg in configs() {
        let model = Model::random(cfg.clone(), &CPU, DType::F32, 4).unwrap();
        let a = adapter(&cfg, &LoraTarget::ALL, 0.0, 5);
        let shared = shared_batch(cfg.vocab_size, 6);
        assert!(shared.shares_prompts());
        // Each prompt once, then the completions' tokens but their last: 70 + 5 + 3 + 0 + 6 + 2 + 5.
        assert_eq!(shared.forward_tokens(), 91);
        let unshared = shared.clone().unshared();
        assert_eq!(unshared.forward_tokens(), 6 * 76);
        let w = weights(&shared, 7);
        let want = composite(&model, &shared, Some(&a), 0.7, &w);
        for ckpt in [Checkpointing::Off, Checkpointing::On] {
            let opts = TrainOptions { temperature: 0.7, checkpointing: ckpt, ..Default::default() };
            let got = drop_t(engine(&model, &shared, &a, opts, &w));
            assert_close(&format!("{:?} shared, {ckpt:?}", cfg.arch), &got, &want, &names(&a), 1e-4);
            let rows_alone = drop_t(engine(&model, &unshared, &a, opts, &w));
            assert_close(&format!("{:?} shared vs unshared, {ckpt:?}", cfg.arch), &got, &rows_alone, &names(&a), 1e-5);
        }
        for adapter_on in [false, true] {
            let got = model.score_logprobs(&shared, adapter_on.then_some(&a), 1.0).unwrap();
            let want = model.score_logprobs(&unshared, adapter_on.then_some(&a), 1.0).unwrap();
            assert!(rel_diff(&got, &want) <= 1e-5, "{:?} scoring, adapter {adapter_on}", cfg.arch);
        }
    }
}

/// Under LoRA dropout every row draws its own masks, so the engine runs a shared batch row by
/// row: the same bits as the unshared batch with the same seed.
#[test]
fn shared_prompts_under_dropout_run_row_by_row() {
    let cfg = tiny_config(Arch::Qwen3, true);
    let model = Model::random(cfg.clone(), &CPU, DType::F32, 4).unwrap();
    let a = adapter(&cfg, &LoraTarget::ALL, 0.3, 5);
    let shared = shared_batch(cfg.vocab_size, 8);
    let unshared = shared.clone().unshared();
    assert_eq!(model.train_layer_bytes(&shared, Some(&a)), model.train_layer_bytes(&unshared, Some(&a)));
    let w = weights(&shared, 9);
    let mut runs = Vec::new();
    for batch in [&shared, &unshared] {
        a.seed_dropout(11);
        runs.push(drop_t(engine(&model, batch, &a, TrainOptions::default(), &w)));
    }
    assert_close("dropout", &runs[0], &runs[1], &names(&a), 0.0);
}

#[test]
fn packed_weights_give_the_unpacked_log_probs_and_gradients() {
    for cfg in configs() {
        let model = Model::random(cfg.clone(), &CPU, DType::F32, 3).unwrap();
        let a = adapter(&cfg, &LoraTarget::ALL, 0.0, 5);
        let batch = sft_batch(cfg.vocab_size, 1);
        let w = weights(&batch, 2);
        let with = |packing| TrainOptions { temperature: 0.7, weight_packing: packing, ..Default::default() };
        let off = engine(&model, &batch, &a, with(WeightPacking::Off), &w);
        assert_eq!(model.packed_weight_bytes_held(), 0);
        let on = engine(&model, &batch, &a, with(WeightPacking::On), &w);
        if model.packed_weight_bytes_held() == 0 {
            return; // no product kernel on this CPU: nothing to compare
        }
        // The same products summed in the same order: equal up to rounding.
        assert!(rel_diff(&on.0, &off.0) <= 1e-6, "{:?}: log-probs", cfg.arch);
        for ((g, o), n) in on.1.iter().zip(&off.1).zip(names(&a)) {
            assert!(rel_diff(g, o) <= 1e-6, "{:?}: gradient of {n}", cfg.arch);
        }
        // Scoring reads the copies training made.
        let scored = model.score_logprobs(&batch, Some(&a), 0.7).unwrap();
        assert!(rel_diff(&scored, &on.0) <= 1e-6, "{:?}: scored log-probs", cfg.arch);
    }
}
