//! Model-core tests on tiny random models built in-test.

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var, D};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::config::{LoraConfig, LoraTarget, SamplingParams};
use crate::sample::{sample_group, FinishReason};

pub(crate) fn tiny_config(arch: Arch, tie: bool) -> ModelConfig {
    ModelConfig {
        arch,
        vocab_size: 64,
        hidden_size: 32,
        intermediate_size: 48,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        // Qwen3's head_dim is explicit and need not be hidden/heads.
        head_dim: if arch == Arch::Qwen3 { 16 } else { 8 },
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-6,
        tie_word_embeddings: tie,
        max_position_embeddings: 128,
    }
}

fn all_configs() -> Vec<ModelConfig> {
    vec![tiny_config(Arch::Qwen3, true), tiny_config(Arch::Qwen3, false), tiny_config(Arch::Llama, false)]
}

fn ids(rows: &[&[u32]]) -> Tensor {
    let t = rows[0].len();
    let flat: Vec<u32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_vec(flat, (rows.len(), t), &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// An adapter whose B matrices are non-zero, so it changes the model.
pub(crate) fn busy_adapter(cfg: &ModelConfig, lora: &LoraConfig, seed: u64) -> LoraAdapter {
    let a = LoraAdapter::new(lora, cfg, &Device::Cpu, seed).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 1);
    for (name, var) in a.vars() {
        if name.contains("lora_B") {
            let vals: Vec<f32> = (0..var.elem_count()).map(|_| rng.random_range(-0.05f32..0.05)).collect();
            var.set(&Tensor::from_vec(vals, var.shape(), &Device::Cpu).unwrap()).unwrap();
        }
    }
    a
}

const SEQ: [u32; 9] = [3, 17, 42, 5, 9, 63, 1, 22, 8];

#[test]
fn forward_cached_matches_forward_incrementally() {
    for cfg in all_configs() {
        let m = Model::random(cfg.clone(), &Device::Cpu, DType::F32, 7).unwrap();
        let lora = LoraConfig { r: 4, alpha: 8.0, ..Default::default() };
        let adapter = busy_adapter(&cfg, &lora, 3);
        for ad in [None, Some(&adapter)] {
            let full = m.forward(&ids(&[&SEQ]), ad).unwrap();
            assert_eq!(full.dims(), [1, SEQ.len(), cfg.vocab_size]);
            let mut cache = m.new_cache();
            let pre = m.forward_cached(&ids(&[&SEQ[..5]]), &mut cache, ad).unwrap();
            assert!(max_diff(&pre, &full.narrow(1, 0, 5).unwrap()) < 1e-4);
            for p in 5..SEQ.len() {
                let step = m.forward_cached(&ids(&[&SEQ[p..p + 1]]), &mut cache, ad).unwrap();
                let d = max_diff(&step, &full.narrow(1, p, 1).unwrap());
                assert!(d < 1e-4, "{:?} position {p}: {d}", cfg.arch);
            }
            assert_eq!(cache.len(), SEQ.len());
            let last = m.forward_cached_last(&ids(&[&SEQ]), &mut m.new_cache(), ad).unwrap();
            assert!(max_diff(&last, &full.narrow(1, SEQ.len() - 1, 1).unwrap().squeeze(1).unwrap()) < 1e-4);
        }
    }
}

#[test]
fn batched_rows_are_independent_and_cache_rows_can_be_repeated_and_dropped() {
    let cfg = tiny_config(Arch::Qwen3, true);
    let m = Model::random(cfg, &Device::Cpu, DType::F32, 1).unwrap();
    let a: &[u32] = &[4, 8, 15, 16];
    let b: &[u32] = &[23, 42, 7, 1];
    let both = m.forward(&ids(&[a, b]), None).unwrap();
    let only_b = m.forward(&ids(&[b]), None).unwrap();
    assert!(max_diff(&both.narrow(0, 1, 1).unwrap(), &only_b) < 1e-5);

    // Shared prefill of `a[..3]`, then two rows diverge; then row 1 is dropped.
    let mut cache = m.new_cache();
    m.forward_cached(&ids(&[&a[..3]]), &mut cache, None).unwrap();
    cache.repeat_batch(2).unwrap();
    let step = m.forward_cached(&ids(&[&[a[3]], &[9]]), &mut cache, None).unwrap();
    let ref0 = m.forward(&ids(&[a]), None).unwrap().narrow(1, 3, 1).unwrap();
    let ref1 = m.forward(&ids(&[&[4, 8, 15, 9]]), None).unwrap().narrow(1, 3, 1).unwrap();
    assert!(max_diff(&step.narrow(0, 0, 1).unwrap(), &ref0) < 1e-4);
    assert!(max_diff(&step.narrow(0, 1, 1).unwrap(), &ref1) < 1e-4);
    cache.select_rows(&[1]).unwrap();
    let next = m.forward_cached(&ids(&[&[30]]), &mut cache, None).unwrap();
    let ref2 = m.forward(&ids(&[&[4, 8, 15, 9, 30]]), None).unwrap().narrow(1, 4, 1).unwrap();
    assert!(max_diff(&next, &ref2) < 1e-4);
    // Row-count mismatches are clear errors, not panics.
    assert!(matches!(cache.select_rows(&[1]), Err(ModelError::Input(_))));
    assert!(matches!(m.forward_cached(&ids(&[&[1], &[2]]), &mut cache, None), Err(ModelError::Input(_))));
    let mut two = m.new_cache();
    m.forward_cached(&ids(&[&[1], &[2]]), &mut two, None).unwrap();
    assert!(matches!(two.repeat_batch(3), Err(ModelError::Input(_))));
}

#[test]
fn every_lora_var_gets_a_gradient() {
    for cfg in all_configs() {
        let m = Model::random(cfg.clone(), &Device::Cpu, DType::F32, 2).unwrap();
        let lora = LoraConfig { r: 4, alpha: 8.0, ..Default::default() };
        let adapter = busy_adapter(&cfg, &lora, 5);
        assert_eq!(adapter.vars().len(), 2 * 7 * cfg.num_hidden_layers);
        let input = ids(&[&SEQ[..8], &SEQ[1..]]);
        let logits = m.forward(&input, Some(&adapter)).unwrap();
        let lp = token_logprobs(&logits, &ids(&[&SEQ[1..], &SEQ[..8]]), 0.7).unwrap();
        let grads = lp.sum_all().unwrap().backward().unwrap();
        for (name, var) in adapter.vars() {
            let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{:?}: no gradient for {name}", cfg.arch));
            let norm = g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(norm > 0.0, "{:?}: zero gradient for {name}", cfg.arch);
        }
    }
}

#[test]
fn lora_gradient_matches_finite_difference() {
    let cfg = tiny_config(Arch::Qwen3, false);
    let m = Model::random(cfg.clone(), &Device::Cpu, DType::F32, 4).unwrap();
    let lora = LoraConfig { r: 2, alpha: 4.0, target_modules: vec![LoraTarget::Q, LoraTarget::Down], ..Default::default() };
    let adapter = busy_adapter(&cfg, &lora, 9);
    let input = ids(&[&SEQ[..8]]);
    let target = ids(&[&SEQ[1..]]);
    let loss = |a: &LoraAdapter| -> Tensor {
        token_logprobs(&m.forward(&input, Some(a)).unwrap(), &target, 1.0).unwrap().sum_all().unwrap()
    };
    let grads = loss(&adapter).backward().unwrap();
    let (name, var) = adapter.vars().into_iter().find(|(n, _)| n.contains("layers.0.self_attn.q_proj.lora_A")).unwrap();
    let g = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let base = var.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let eps = 1e-2f32;
    for idx in [0usize, 7, 20] {
        let eval = |delta: f32| {
            let mut v = base.clone();
            v[idx] += delta;
            var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap()).unwrap();
            loss(&adapter).to_scalar::<f32>().unwrap()
        };
        let fd = (eval(eps) - eval(-eps)) / (2.0 * eps);
        assert!((fd - g[idx]).abs() < 2e-2 * g[idx].abs().max(1e-2), "{name}[{idx}]: fd {fd} vs grad {}", g[idx]);
    }
}

#[test]
fn merge_equals_adapter_forward_and_fresh_adapter_is_a_no_op() {
    for cfg in all_configs() {
        let m = Model::random(cfg.clone(), &Device::Cpu, DType::F32, 8).unwrap();
        let input = ids(&[&SEQ]);
        let base = m.forward(&input, None).unwrap();
        let fresh = LoraAdapter::new(&LoraConfig::default(), &cfg, &Device::Cpu, 1).unwrap();
        assert!(max_diff(&m.forward(&input, Some(&fresh)).unwrap(), &base) < 1e-6);
        let adapter = busy_adapter(&cfg, &LoraConfig { r: 8, alpha: 16.0, ..Default::default() }, 11);
        let with = m.forward(&input, Some(&adapter)).unwrap();
        assert!(max_diff(&with, &base) > 1e-3, "the test adapter must change the logits");
        let merged = m.merge(&adapter).unwrap();
        assert!(max_diff(&merged.forward(&input, None).unwrap(), &with) < 1e-4);
        let cached = merged.forward_cached(&input, &mut merged.new_cache(), None).unwrap();
        assert!(max_diff(&cached, &with) < 1e-4);
    }
}

#[test]
fn lora_init_follows_peft() {
    let cfg = tiny_config(Arch::Llama, false);
    let a = LoraAdapter::new(&LoraConfig::default(), &cfg, &Device::Cpu, 42).unwrap();
    let b = LoraAdapter::new(&LoraConfig::default(), &cfg, &Device::Cpu, 42).unwrap();
    for ((name, va), (_, vb)) in a.vars().iter().zip(b.vars()) {
        let x = va.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(x, vb.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap(), "seeded init");
        assert_eq!(va.dtype(), DType::F32);
        if name.contains("lora_B") {
            assert!(x.iter().all(|&v| v == 0.0));
        } else {
            let fan_in = va.dims()[1] as f32;
            let bound = 1.0 / fan_in.sqrt();
            assert!(x.iter().all(|&v| v.abs() <= bound));
            assert!(x.iter().any(|&v| v.abs() > bound * 0.5));
        }
    }
    let names: Vec<String> = a.vars().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"base_model.model.model.layers.1.mlp.down_proj.lora_B.weight".to_string()));
    assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted by name");
}

#[test]
fn peft_files_round_trip() {
    let cfg = tiny_config(Arch::Qwen3, true);
    let lora = LoraConfig { r: 4, alpha: 16.0, dropout: 0.05, target_modules: vec![LoraTarget::V, LoraTarget::Q] };
    let a = busy_adapter(&cfg, &lora, 2);
    let dir = tempfile::tempdir().unwrap();
    a.save_peft(dir.path(), "tiny-qwen3").unwrap();
    let text = std::fs::read_to_string(dir.path().join(ADAPTER_CONFIG)).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["peft_type"], "LORA");
    assert_eq!(json["task_type"], "CAUSAL_LM");
    assert_eq!(json["base_model_name_or_path"], "tiny-qwen3");
    assert_eq!(json["target_modules"], serde_json::json!(["q_proj", "v_proj"]));
    let b = LoraAdapter::load_peft(dir.path(), &cfg, &Device::Cpu).unwrap();
    assert_eq!(b.config().r, 4);
    assert_eq!(b.config().alpha, 16.0);
    assert_eq!(b.config().dropout, 0.05);
    let same = |x: &LoraAdapter, y: &LoraAdapter| {
        let (vx, vy) = (x.vars(), y.vars());
        assert_eq!(vx.len(), vy.len());
        for ((nx, tx), (ny, ty)) in vx.iter().zip(&vy) {
            assert_eq!(nx, ny);
            assert_eq!(max_diff(tx.as_tensor(), ty.as_tensor()), 0.0);
        }
    };
    same(&a, &b);
    let bytes = a.to_safetensors_bytes().unwrap();
    same(&a, &LoraAdapter::from_safetensors_bytes(&bytes, &lora, &cfg, &Device::Cpu).unwrap());
}

#[test]
fn adapter_errors_name_the_problem() {
    let cfg = tiny_config(Arch::Qwen3, true);
    let lora = LoraConfig { r: 4, alpha: 8.0, ..Default::default() };
    let a = LoraAdapter::new(&lora, &cfg, &Device::Cpu, 0).unwrap();
    let bytes = a.to_safetensors_bytes().unwrap();
    // A base with a different intermediate size: the MLP shapes no longer fit.
    let other = ModelConfig { intermediate_size: 40, ..cfg.clone() };
    let e = LoraAdapter::from_safetensors_bytes(&bytes, &lora, &other, &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("`base_model.model.model.layers.0.mlp.gate_proj.lora_B.weight` has shape [48, 4], the base model needs [40, 4]"), "{e}");
    // A config that expects targets the file lacks.
    let fewer = LoraConfig { target_modules: vec![LoraTarget::Q], ..lora.clone() };
    let e = LoraAdapter::from_safetensors_bytes(&bytes, &fewer, &cfg, &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("unexpected tensor"), "{e}");
    let deeper = ModelConfig { num_hidden_layers: 3, ..cfg.clone() };
    let e = LoraAdapter::from_safetensors_bytes(&bytes, &lora, &deeper, &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("missing tensor `base_model.model.model.layers.2."), "{e}");
    let e = LoraAdapter::from_safetensors_bytes(b"garbage", &lora, &cfg, &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("not a valid safetensors"), "{e}");
    // Using an adapter made for another base is an error, not a panic.
    let m = Model::random(deeper, &Device::Cpu, DType::F32, 0).unwrap();
    assert!(matches!(m.forward(&ids(&[&SEQ]), Some(&a)), Err(ModelError::Adapter { .. })));
    assert!(m.merge(&a).is_err());
    // PEFT configs we would apply differently are refused by field.
    let dir = tempfile::tempdir().unwrap();
    a.save_peft(dir.path(), "x").unwrap();
    let p = dir.path().join(ADAPTER_CONFIG);
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    json["use_dora"] = true.into();
    std::fs::write(&p, json.to_string()).unwrap();
    let e = LoraAdapter::load_peft(dir.path(), &cfg, &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("use_dora"), "{e}");
    let e = LoraAdapter::load_peft(Path::new("/nonexistent/adapter"), &cfg, &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/adapter/adapter_config.json"), "{e}");
}

#[test]
fn bad_inputs_are_errors() {
    let cfg = tiny_config(Arch::Llama, true);
    let m = Model::random(cfg.clone(), &Device::Cpu, DType::F32, 0).unwrap();
    let e = m.forward(&ids(&[&[1, 64]]), None).unwrap_err().to_string();
    assert!(e.contains("token id 64"), "{e}");
    let f = Tensor::zeros((1, 2), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(m.forward(&f, None), Err(ModelError::Input(_))));
    let mut tensors = random_tensors(&cfg, 0).unwrap();
    tensors.remove("model.layers.1.mlp.up_proj.weight");
    let e = Model::from_tensors(cfg.clone(), tensors, &Device::Cpu, DType::F32).err().unwrap().to_string();
    assert!(e.contains("missing tensor `model.layers.1.mlp.up_proj.weight`"), "{e}");
    let mut tensors = random_tensors(&cfg, 0).unwrap();
    tensors.insert("model.norm.weight".into(), Tensor::zeros(5, DType::F32, &Device::Cpu).unwrap());
    let e = Model::from_tensors(cfg.clone(), tensors, &Device::Cpu, DType::F32).err().unwrap().to_string();
    assert!(e.contains("`model.norm.weight` has shape [5], expected [32]"), "{e}");
    let bad = ModelConfig { num_key_value_heads: 3, ..cfg };
    let e = Model::random(bad, &Device::Cpu, DType::F32, 0).err().unwrap().to_string();
    assert!(e.contains("num_key_value_heads"), "{e}");
}

#[test]
fn token_logprobs_is_log_softmax_at_targets() {
    let logits = Tensor::new(&[[[1.0f32, 2.0, 3.0], [0.0, 0.0, 0.0]]], &Device::Cpu).unwrap();
    let targets = Tensor::new(&[[2u32, 1]], &Device::Cpu).unwrap();
    let lp = token_logprobs(&logits, &targets, 0.5).unwrap().to_vec2::<f32>().unwrap();
    let lse = (2f32.exp() + 4f32.exp() + 6f32.exp()).ln();
    assert!((lp[0][0] - (6.0 - lse)).abs() < 1e-6);
    assert!((lp[0][1] - (1f32 / 3.0).ln()).abs() < 1e-6);
    let via_softmax = candle_nn::ops::log_softmax(&(logits / 0.5).unwrap(), D::Minus1).unwrap();
    assert!((via_softmax.to_vec3::<f32>().unwrap()[0][0][2] - lp[0][0]).abs() < 1e-6);
    assert!(token_logprobs(&Tensor::zeros((1, 2, 3), DType::F32, &Device::Cpu).unwrap(), &targets, -1.0).is_err());
    let bad = Tensor::new(&[[3u32, 0]], &Device::Cpu).unwrap();
    assert!(token_logprobs(&Tensor::zeros((1, 2, 3), DType::F32, &Device::Cpu).unwrap(), &bad, 1.0).is_err());
}

/// Writes a tiny HF model dir: config.json, model.safetensors, a word-level tokenizer
/// (`<unk>` = 0, `</s>` = 1 = eos, `w2` .. `w63`).
pub(crate) fn write_hf_dir(dir: &Path, cfg: &ModelConfig, seed: u64) {
    let model_type = match cfg.arch {
        Arch::Qwen3 => "qwen3",
        Arch::Llama => "llama",
    };
    let config = serde_json::json!({
        "model_type": model_type, "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size, "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads, "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim, "rope_theta": cfg.rope_theta, "rms_norm_eps": cfg.rms_norm_eps,
        "tie_word_embeddings": cfg.tie_word_embeddings, "max_position_embeddings": cfg.max_position_embeddings,
        "hidden_act": "silu"
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    candle_core::safetensors::save(&random_tensors(cfg, seed).unwrap(), dir.join("model.safetensors")).unwrap();
    let mut vocab = serde_json::Map::new();
    vocab.insert("<unk>".into(), 0.into());
    vocab.insert("</s>".into(), 1.into());
    for i in 2..cfg.vocab_size {
        vocab.insert(format!("w{i}"), i.into());
    }
    let tok = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [{"id": 1, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false,
                          "normalized": false, "special": true}],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    std::fs::write(dir.join("tokenizer_config.json"), r#"{"eos_token": "</s>"}"#).unwrap();
}

#[test]
fn loads_hf_dirs_and_names_bad_files() {
    let cfg = tiny_config(Arch::Qwen3, false);
    let dir = tempfile::tempdir().unwrap();
    write_hf_dir(dir.path(), &cfg, 5);
    let loaded = load(dir.path(), &Device::Cpu, DType::F32).unwrap();
    assert_eq!(loaded.model.config(), &cfg);
    assert_eq!(loaded.tokenizer.eos_token_ids(), &[1]);
    assert_eq!(loaded.tokenizer.encode("w5 w9 </s>", false).unwrap(), vec![5, 9, 1]);
    let direct = Model::random(cfg.clone(), &Device::Cpu, DType::F32, 5).unwrap();
    let input = ids(&[&SEQ]);
    assert_eq!(max_diff(&loaded.model.forward(&input, None).unwrap(), &direct.forward(&input, None).unwrap()), 0.0);

    // bf16 loading runs and stays close.
    let bf = load_hf_model(dir.path(), &Device::Cpu, DType::BF16).unwrap();
    assert_eq!(bf.dtype(), DType::BF16);
    assert!(max_diff(&bf.forward(&input, None).unwrap(), &direct.forward(&input, None).unwrap()) < 0.1);

    // A tensor of the wrong shape names the file and the tensor.
    let mut tensors = random_tensors(&cfg, 5).unwrap();
    tensors.insert("model.layers.1.self_attn.k_proj.weight".into(), Tensor::zeros((8, 32), DType::F32, &Device::Cpu).unwrap());
    candle_core::safetensors::save(&tensors, dir.path().join("model.safetensors")).unwrap();
    let e = load(dir.path(), &Device::Cpu, DType::F32).err().unwrap().to_string();
    assert!(e.contains("model.safetensors: tensor `model.layers.1.self_attn.k_proj.weight` has shape [8, 32], expected [32, 32]"), "{e}");

    std::fs::write(dir.path().join("config.json"), r#"{"model_type": "gpt2"}"#).unwrap();
    let e = load(dir.path(), &Device::Cpu, DType::F32).err().unwrap().to_string();
    assert!(e.contains("config.json: model_type \"gpt2\" is not supported"), "{e}");
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    let e = load(dir.path(), &Device::Cpu, DType::F32).err().unwrap().to_string();
    assert!(e.contains("config.json"), "{e}");
    let e = load(Path::new("/nonexistent/model"), &Device::Cpu, DType::F32).err().unwrap().to_string();
    assert!(e.contains("/nonexistent/model"), "{e}");
}

#[test]
fn sample_group_is_seeded_and_reports_true_logprobs() {
    let cfg = tiny_config(Arch::Llama, true);
    let dir = tempfile::tempdir().unwrap();
    write_hf_dir(dir.path(), &cfg, 3);
    let LoadedModel { model, tokenizer, .. } = load(dir.path(), &Device::Cpu, DType::F32).unwrap();
    let adapter = busy_adapter(&cfg, &LoraConfig { r: 4, alpha: 8.0, ..Default::default() }, 1);
    let prompt = [5u32, 9, 33, 2];
    let params = SamplingParams { n: 4, temperature: 1.3, top_p: 0.9, max_new_tokens: 12, seed: 17 };
    let group = sample_group(&model, Some(&adapter), &tokenizer, &prompt, &params).unwrap();
    assert_eq!(group.len(), 4);
    assert_eq!(group, sample_group(&model, Some(&adapter), &tokenizer, &prompt, &params).unwrap());
    let other = sample_group(&model, Some(&adapter), &tokenizer, &prompt, &SamplingParams { seed: 18, ..params.clone() });
    assert_ne!(group, other.unwrap(), "a different seed gives a different group");
    assert!(group.windows(2).any(|w| w[0].tokens != w[1].tokens), "samples of a group differ");
    for c in &group {
        assert_eq!(c.tokens.len(), c.logprobs.len());
        match c.finish {
            FinishReason::Eos => assert_eq!(c.tokens.last(), Some(&1)),
            FinishReason::Length => assert_eq!(c.tokens.len(), 12),
        }
        // The sampler's log-probs are the training path's log-probs of the same tokens.
        let full: Vec<u32> = prompt.iter().chain(&c.tokens).copied().collect();
        let n = full.len();
        let logits = model.forward(&ids(&[&full[..n - 1]]), Some(&adapter)).unwrap();
        let lp = token_logprobs(&logits, &ids(&[&full[1..]]), 1.3).unwrap().to_vec2::<f32>().unwrap();
        for (i, &l) in c.logprobs.iter().enumerate() {
            assert!((lp[0][prompt.len() - 1 + i] - l).abs() < 1e-4, "token {i}: {} vs {l}", lp[0][prompt.len() - 1 + i]);
        }
        let words: Vec<String> = c.tokens.iter().filter(|&&t| t != 1).map(|&t| if t == 0 { "<unk>".to_string() } else { format!("w{t}") }).collect();
        assert_eq!(c.text, words.join(" "));
    }

    // Greedy: every row is the same argmax continuation, matching a merged model.
    let greedy = SamplingParams { n: 3, temperature: 0.0, top_p: 1.0, max_new_tokens: 8, seed: 0 };
    let g = sample_group(&model, Some(&adapter), &tokenizer, &prompt, &greedy).unwrap();
    assert!(g.iter().all(|c| c.tokens == g[0].tokens));
    let merged = model.merge(&adapter).unwrap();
    assert_eq!(sample_group(&merged, None, &tokenizer, &prompt, &greedy).unwrap()[0].tokens, g[0].tokens);
    let mut seq = prompt.to_vec();
    for &t in &g[0].tokens {
        let logits = model.forward(&ids(&[&seq]), Some(&adapter)).unwrap();
        let last = logits.narrow(1, seq.len() - 1, 1).unwrap().flatten_all().unwrap();
        assert_eq!(last.argmax(0).unwrap().to_scalar::<u32>().unwrap(), t);
        seq.push(t);
    }

    assert!(sample_group(&model, None, &tokenizer, &[], &greedy).is_err());
    assert!(sample_group(&model, None, &tokenizer, &prompt, &SamplingParams { top_p: 0.0, ..greedy.clone() }).is_err());
    assert!(sample_group(&model, None, &tokenizer, &[70], &greedy).is_err());
    let none = sample_group(&model, None, &tokenizer, &prompt, &SamplingParams { max_new_tokens: 0, ..greedy }).unwrap();
    assert!(none.iter().all(|c| c.tokens.is_empty()));
}

#[test]
fn vars_are_f32_even_for_a_bf16_base() {
    let cfg = tiny_config(Arch::Qwen3, true);
    let m = Model::random(cfg.clone(), &Device::Cpu, DType::BF16, 1).unwrap();
    let adapter = busy_adapter(&cfg, &LoraConfig { r: 4, alpha: 8.0, ..Default::default() }, 1);
    let logits = m.forward(&ids(&[&SEQ]), Some(&adapter)).unwrap();
    assert_eq!(logits.dtype(), DType::F32);
    let grads = token_logprobs(&logits, &ids(&[&SEQ]), 1.0).unwrap().sum_all().unwrap().backward().unwrap();
    let vars: Vec<(String, Var)> = adapter.vars();
    assert!(vars.iter().all(|(_, v)| v.dtype() == DType::F32 && grads.get(v.as_tensor()).is_some()));
}
