//! Export tests on the committed tiny fixtures (tests/fixtures/tiny-{qwen3,llama}[-lora]) and on
//! small random models: every export is read back by our own loaders and compared with
//! base + adapter.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::*;
use crate::model::{load, token_logprobs, LoadedModel, LoraAdapter, Model};
use crate::tokenizer::{ChatMessage, Tokenizer};

mod gguf;
mod hf;
mod units;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

/// A fixture base with its adapter, and the merged model an export writes.
struct Fixture {
    path: PathBuf,
    loaded: LoadedModel,
    adapter: LoraAdapter,
    merged: Model,
    base: BaseMetadata,
}

/// `arch`: `qwen3` (tied, real Qwen3 tokenizer) or `llama` (untied, tiny BPE, bos token).
fn fixture_model(arch: &str) -> Fixture {
    let path = fixture(&format!("tiny-{arch}"));
    let loaded = load(&path, &Device::Cpu, DType::F32).unwrap();
    let adapter = LoraAdapter::load_peft(&fixture(&format!("tiny-{arch}-lora")), loaded.model.config(), &Device::Cpu).unwrap();
    let merged = loaded.model.merge(&adapter).unwrap();
    let base = BaseMetadata::read(&path, &loaded.tokenizer).unwrap();
    Fixture { path, loaded, adapter, merged, base }
}

const TEXTS: [&str; 3] = ["Hello world! 12345 and 3.14159", "The answer is \\boxed{8}.\nDone?", "  spaces\tand\ttabs  "];

fn conversation() -> Vec<ChatMessage> {
    vec![
        ChatMessage { role: "system".into(), content: "Answer briefly.".into() },
        ChatMessage { role: "user".into(), content: "What is 3+5?".into() },
    ]
}

/// Token ids to score: the texts and a rendered chat prompt.
fn samples(tok: &Tokenizer) -> Vec<Vec<u32>> {
    let mut out: Vec<Vec<u32>> = TEXTS.iter().map(|t| tok.encode(t, false).unwrap()).collect();
    let prompt = tok.apply_chat_template(&conversation(), true).unwrap();
    out.push(tok.encode(&prompt, false).unwrap());
    out
}

/// log p(ids[t] | ids[<t]) for t >= 1.
fn score(model: &Model, adapter: Option<&LoraAdapter>, ids: &[u32]) -> Vec<f32> {
    let input = Tensor::new(ids, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let logits = model.forward(&input, adapter).unwrap();
    let n = ids.len();
    let lp = token_logprobs(&logits.narrow(1, 0, n - 1).unwrap(), &input.narrow(1, 1, n - 1).unwrap(), 1.0).unwrap();
    lp.squeeze(0).unwrap().to_vec1().unwrap()
}

fn max_diff(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max)
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    let worst = max_diff(got, want);
    assert!(worst <= tol, "{what}: max |diff| {worst} > {tol}\n got  {got:?}\n want {want:?}");
}

/// Log-probs of every sample under `model` equal those of base + adapter within `tol`.
fn assert_scores_match(f: &Fixture, model: &Model, tol: f32, what: &str) {
    for ids in samples(&f.loaded.tokenizer) {
        let want = score(&f.loaded.model, Some(&f.adapter), &ids);
        assert_close(&score(model, None, &ids), &want, tol, what);
    }
}

/// The tokenizer behaves like the base's: same ids, same chat prompt, same eos.
fn assert_same_tokenizer(got: &Tokenizer, want: &Tokenizer, what: &str) {
    for text in TEXTS.iter().copied().chain(["<|im_start|>user\nhi<|im_end|>\n"]) {
        assert_eq!(got.encode(text, false).unwrap(), want.encode(text, false).unwrap(), "{what}: ids of {text:?}");
        assert_eq!(got.encode(text, true).unwrap(), want.encode(text, true).unwrap(), "{what}: ids+special of {text:?}");
    }
    assert_eq!(
        got.apply_chat_template(&conversation(), true).unwrap(),
        want.apply_chat_template(&conversation(), true).unwrap(),
        "{what}: chat template"
    );
    assert_eq!(got.chat_template(), want.chat_template(), "{what}: chat template source");
    assert_eq!(got.eos_token_ids().first(), want.eos_token_ids().first(), "{what}: eos");
    assert_eq!(got.bos_token_id(), want.bos_token_id(), "{what}: bos");
}

fn options(dtype: DType, gguf: Option<GgufType>) -> ExportOptions {
    ExportOptions { dtype, max_shard_size: DEFAULT_MAX_SHARD_SIZE, gguf, name: "tiny".into() }
}

fn export_to(model: &Model, tok: &Tokenizer, base: &BaseMetadata, opts: &ExportOptions) -> (tempfile::TempDir, ExportReport) {
    let dir = tempfile::tempdir().unwrap();
    let report = export_model(model, tok, base, dir.path(), opts).unwrap();
    (dir, report)
}

fn file_names(report: &ExportReport) -> Vec<String> {
    report.files.iter().map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned()).collect()
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `model` with every tensor passed through `round` (what a lossy export should reload as).
fn rounded(model: &Model, round: impl Fn(&str, &Tensor) -> Tensor) -> Model {
    let tensors = model.named_tensors().unwrap().into_iter().map(|(n, t)| {
        let r = round(&n, &t);
        (n, r)
    });
    Model::from_tensors(model.config().clone(), tensors.collect(), &Device::Cpu, DType::F32).unwrap()
}

/// Log-probs of every sample are bit-for-bit those of `want`.
fn assert_same_scores(tok: &Tokenizer, got: &Model, want: &Model, what: &str) {
    for ids in samples(tok) {
        assert_eq!(score(got, None, &ids), score(want, None, &ids), "{what}");
    }
}

/// A random model at HF's init scale (std 0.02; the tiny fixtures use 0.4, which makes every
/// rounding error huge) with a non-zero random adapter, on a fixture's tokenizer. Rows of 64 and
/// 128, so q8_0 quantises every weight.
struct Realistic {
    base: Model,
    adapter: LoraAdapter,
    merged: Model,
    tokenizer: Tokenizer,
    meta: BaseMetadata,
}

fn realistic(arch: crate::model::Arch) -> Realistic {
    use crate::model::{Arch, ModelConfig};
    let dir = fixture(if arch == Arch::Qwen3 { "tiny-qwen3" } else { "tiny-llama" });
    let tokenizer = Tokenizer::from_hf_dir(&dir).unwrap();
    let cfg = ModelConfig {
        arch,
        // Qwen3 checkpoints have more embedding rows than tokens (151936 vs 151669): padded ids.
        vocab_size: tokenizer.vocab_size() + if arch == Arch::Qwen3 { 7 } else { 0 },
        hidden_size: 64,
        intermediate_size: 128,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: if arch == Arch::Qwen3 { 32 } else { 16 },
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-6,
        tie_word_embeddings: arch == Arch::Qwen3,
        max_position_embeddings: 256,
    };
    let base = Model::random(cfg.clone(), &Device::Cpu, DType::F32, 7).unwrap();
    let lora = crate::config::LoraConfig { r: 4, alpha: 8.0, ..Default::default() };
    let adapter = LoraAdapter::new(&lora, &cfg, &Device::Cpu, 3).unwrap();
    for (name, var) in adapter.vars() {
        if name.contains("lora_B") {
            var.set(&var.randn_like(0.0, 0.05).unwrap()).unwrap();
        }
    }
    let merged = base.merge(&adapter).unwrap();
    let meta = BaseMetadata::read(&dir, &tokenizer).unwrap();
    Realistic { base, adapter, merged, tokenizer, meta }
}

impl Realistic {
    /// Worst |diff| of `model`'s log-probs from base + adapter over the samples.
    fn worst(&self, model: &Model) -> f32 {
        samples(&self.tokenizer)
            .iter()
            .map(|ids| max_diff(&score(model, None, ids), &score(&self.base, Some(&self.adapter), ids)))
            .fold(0f32, f32::max)
    }
}
