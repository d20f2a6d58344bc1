//! Parity with transformers / peft on the committed fixtures (tests/parity/make_fixtures.py):
//! per-token log-probs, greedy continuations, LoRA gradients, PEFT adapter files both ways,
//! the dequantised SmolLM2 GGUF, and the `asrl-learner score` CLI.

use std::path::Path;
use std::process::Command;

use asrl_common::config::SamplingParams;
use asrl_common::sample::sample_group;
use asrl_common::model::{load, token_logprobs, LoadedModel, LoraAdapter, Model};
use asrl_tests::{asset, binary, fixture, fixture_json, python_with};
use candle_core::{DType, Device, Tensor};
use serde_json::Value;

const TOL: f32 = 1e-4;

fn reference() -> Value {
    fixture_json("parity_reference.json").expect("parity_reference.json")
}

fn load_fixture(arch: &str) -> (LoadedModel, LoraAdapter, Value) {
    let r = reference();
    let e = r[arch].clone();
    let loaded = load(&fixture(e["model_dir"].as_str().unwrap()), &Device::Cpu, DType::F32).expect("load model");
    let adapter = LoraAdapter::load_peft(&fixture(e["adapter_dir"].as_str().unwrap()), loaded.model.config(), &Device::Cpu)
        .expect("load PEFT adapter");
    (loaded, adapter, e)
}

fn ids_of(v: &Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

/// log p(ids[t] | ids[<t]) for t >= 1 under `model` (+ adapter) at `temperature`.
fn score(model: &Model, adapter: Option<&LoraAdapter>, ids: &[u32], temperature: f64) -> Vec<f32> {
    let input = Tensor::new(ids, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let logits = model.forward(&input, adapter).unwrap();
    let n = ids.len();
    let lp = token_logprobs(&logits.narrow(1, 0, n - 1).unwrap(), &input.narrow(1, 1, n - 1).unwrap(), temperature).unwrap();
    lp.squeeze(0).unwrap().to_vec1().unwrap()
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let worst = got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max);
    assert!(worst <= tol, "{what}: max |diff| {worst} > {tol}\n got  {got:?}\n want {want:?}");
}

fn check_logprobs(arch: &str) {
    let (loaded, adapter, e) = load_fixture(arch);
    let t = e["temperature"].as_f64().unwrap();
    let merged = loaded.model.merge(&adapter).unwrap();
    for case in e["texts"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let ids = ids_of(&case["ids"]);
        assert_eq!(loaded.tokenizer.encode(text, false).unwrap(), ids, "{arch}: tokenization of {text:?}");
        assert_close(&score(&loaded.model, None, &ids, 1.0), &floats(&case["logprobs_base"]), TOL, &format!("{arch} base {text:?}"));
        let with = floats(&case["logprobs_adapter"]);
        assert_close(&score(&loaded.model, Some(&adapter), &ids, 1.0), &with, TOL, &format!("{arch} adapter {text:?}"));
        assert_close(&score(&merged, None, &ids, 1.0), &with, TOL, &format!("{arch} merged {text:?}"));
        assert_close(
            &score(&loaded.model, Some(&adapter), &ids, t),
            &floats(&case["logprobs_adapter_temperature"]),
            TOL,
            &format!("{arch} adapter T={t} {text:?}"),
        );
    }
}

#[test]
fn qwen3_logprobs_match_transformers() {
    check_logprobs("qwen3");
}

#[test]
fn llama_logprobs_match_transformers() {
    check_logprobs("llama");
}

/// The cached path (prefill then one token at a time) gives the full forward's log-probs.
#[test]
fn cached_forward_matches_reference() {
    for arch in ["qwen3", "llama"] {
        let (loaded, adapter, e) = load_fixture(arch);
        let case = &e["texts"][1];
        let ids = ids_of(&case["ids"]);
        let mut cache = loaded.model.new_cache();
        let split = ids.len() / 2;
        let mut logits = Vec::new();
        let prefill = Tensor::new(&ids[..split], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        logits.push(loaded.model.forward_cached(&prefill, &mut cache, Some(&adapter)).unwrap());
        for &id in &ids[split..ids.len() - 1] {
            let x = Tensor::new(&[id], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
            logits.push(loaded.model.forward_cached(&x, &mut cache, Some(&adapter)).unwrap());
        }
        let logits = Tensor::cat(&logits, 1).unwrap();
        let targets = Tensor::new(&ids[1..], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let got: Vec<f32> = token_logprobs(&logits, &targets, 1.0).unwrap().squeeze(0).unwrap().to_vec1().unwrap();
        assert_close(&got, &floats(&case["logprobs_adapter"]), TOL, &format!("{arch} cached"));
    }
}

fn check_greedy(arch: &str) {
    let (loaded, adapter, e) = load_fixture(arch);
    let eos = loaded.tokenizer.eos_token_ids().to_vec();
    let cases = e["greedy"].as_array().unwrap();
    assert!(cases.len() >= 2);
    for case in cases {
        let prompt = case["prompt"].as_str().unwrap();
        let prompt_ids = ids_of(&case["prompt_ids"]);
        assert_eq!(loaded.tokenizer.encode(prompt, false).unwrap(), prompt_ids, "{arch}: prompt tokenization");
        for (key, ad) in [("base", None), ("adapter", Some(&adapter))] {
            let mut want = ids_of(&case[key]);
            // Generation stops at (and keeps) the first eos; the reference ran on regardless.
            if let Some(p) = want.iter().position(|t| eos.contains(t)) {
                want.truncate(p + 1);
            }
            let params = SamplingParams { n: 2, temperature: 0.0, top_p: 1.0, max_new_tokens: 12, seed: 3 };
            let out = sample_group(&loaded.model, ad, &loaded.tokenizer, &prompt_ids, &params).unwrap();
            for c in &out {
                assert_eq!(c.tokens, want, "{arch} greedy {key} for {prompt:?}");
            }
        }
    }
}

#[test]
fn qwen3_greedy_matches_transformers() {
    check_greedy("qwen3");
}

#[test]
fn llama_greedy_matches_transformers() {
    check_greedy("llama");
}

fn check_grads(arch: &str) {
    let (loaded, adapter, e) = load_fixture(arch);
    let ids = loaded.tokenizer.encode(e["lora_grad_text"].as_str().unwrap(), false).unwrap();
    let input = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let n = ids.len();
    let logits = loaded.model.forward(&input, Some(&adapter)).unwrap();
    let loss = token_logprobs(&logits.narrow(1, 0, n - 1).unwrap(), &input.narrow(1, 1, n - 1).unwrap(), 1.0)
        .unwrap()
        .sum_all()
        .unwrap();
    let want_loss = e["lora_grad_loss"].as_f64().unwrap() as f32;
    let got_loss: f32 = loss.to_scalar().unwrap();
    assert!((got_loss - want_loss).abs() <= TOL * want_loss.abs(), "{arch} loss {got_loss} vs {want_loss}");
    let grads = loss.backward().unwrap();
    let want = e["lora_grads"].as_object().unwrap();
    let vars = adapter.vars();
    assert_eq!(vars.len(), want.len(), "{arch}: number of LoRA matrices");
    for (name, var) in vars {
        let w = want.get(&name).unwrap_or_else(|| panic!("{arch}: torch has no gradient for {name}"));
        let shape: Vec<usize> = serde_json::from_value(w["shape"].clone()).unwrap();
        assert_eq!(var.dims(), shape.as_slice(), "{name}");
        let g: Vec<f32> = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{arch}: no gradient reached {name}"))
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let wv = floats(&w["values"]);
        let scale = wv.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(scale > 0.0, "{name}: zero reference gradient");
        let worst = g.iter().zip(&wv).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst <= TOL * scale, "{arch} {name}: max |diff| {worst} > 1e-4 x max|grad| {scale}");
    }
}

#[test]
fn qwen3_lora_gradients_match_torch() {
    check_grads("qwen3");
}

#[test]
fn llama_lora_gradients_match_torch() {
    check_grads("llama");
}

/// Ours -> PEFT files -> ours gives the same adapter; the saved files carry PEFT's names and
/// config; the transport bytes round-trip; and (when python has peft) PEFT itself loads ours.
#[test]
fn peft_adapter_round_trips() {
    for arch in ["qwen3", "llama"] {
        let (loaded, adapter, e) = load_fixture(arch);
        let case = &e["texts"][0];
        let ids = ids_of(&case["ids"]);
        let want = floats(&case["logprobs_adapter"]);
        let dir = tempfile::tempdir().unwrap();
        adapter.save_peft(dir.path(), e["model_dir"].as_str().unwrap()).unwrap();
        let back = LoraAdapter::load_peft(dir.path(), loaded.model.config(), &Device::Cpu).unwrap();
        // target_modules is a set in PEFT; the order in the file carries no meaning.
        let sorted = |a: &LoraAdapter| {
            let mut c = a.config().clone();
            c.target_modules.sort();
            c
        };
        assert_eq!(sorted(&back), sorted(&adapter));
        assert_eq!(score(&loaded.model, Some(&back), &ids, 1.0), score(&loaded.model, Some(&adapter), &ids, 1.0));
        assert_close(&score(&loaded.model, Some(&back), &ids, 1.0), &want, TOL, &format!("{arch} reloaded"));

        // Same tensor names and shapes as the PEFT-written file.
        let names = |p: &Path| {
            let bytes = std::fs::read(p.join("adapter_model.safetensors")).unwrap();
            let st = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap();
            let mut v: Vec<(String, Vec<usize>)> = st.into_iter().map(|(k, t)| (k, t.dims().to_vec())).collect();
            v.sort();
            v
        };
        assert_eq!(names(dir.path()), names(&fixture(e["adapter_dir"].as_str().unwrap())), "{arch}: adapter tensors");
        let cfg: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("adapter_config.json")).unwrap()).unwrap();
        assert_eq!(cfg["peft_type"], "LORA");
        assert_eq!(cfg["r"], 4);
        assert_eq!(cfg["lora_alpha"].as_f64(), Some(8.0));

        let bytes = adapter.to_safetensors_bytes().unwrap();
        let from_bytes = LoraAdapter::from_safetensors_bytes(&bytes, adapter.config(), loaded.model.config(), &Device::Cpu).unwrap();
        assert_eq!(score(&loaded.model, Some(&from_bytes), &ids, 1.0), score(&loaded.model, Some(&adapter), &ids, 1.0));

        if let Some(py) = python_with(&["torch", "transformers", "peft"]) {
            let script = r#"
import json, sys, torch
from transformers import AutoModelForCausalLM
from peft import PeftModel
base, adapter, ids = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
m = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter).eval()
t = torch.tensor([ids])
with torch.no_grad():
    lp = torch.log_softmax(m(t).logits[0, :-1], -1).gather(1, t[0, 1:, None])[:, 0]
print(json.dumps(lp.tolist()))
"#;
            let out = Command::new(&py)
                .args(["-c", script])
                .arg(fixture(e["model_dir"].as_str().unwrap()))
                .arg(dir.path())
                .arg(serde_json::to_string(&ids).unwrap())
                .output()
                .unwrap();
            assert!(out.status.success(), "peft failed to load our adapter: {}", String::from_utf8_lossy(&out.stderr));
            let got: Vec<f32> = serde_json::from_slice(out.stdout.trim_ascii()).unwrap();
            assert_close(&got, &want, TOL, &format!("{arch}: peft loading our adapter"));
        }
    }
}

/// The dequantised SmolLM2 GGUF scores a chat text like transformers' GGUF loading.
#[test]
fn smollm2_gguf_logprobs_match_transformers() {
    let Some(path) = asset("SmolLM2-135M-Instruct.Q4_1.gguf") else { return };
    let r = fixture_json("gguf_reference.json").unwrap();
    let s = &r["score"];
    let loaded = load(&path, &Device::Cpu, DType::F32).unwrap();
    let ids = ids_of(&s["ids"]);
    assert_eq!(loaded.tokenizer.encode(s["text"].as_str().unwrap(), false).unwrap(), ids);
    assert_close(&score(&loaded.model, None, &ids, 1.0), &floats(&s["logprobs"]), TOL, "SmolLM2 GGUF");
}

#[test]
fn learner_score_cli_matches_reference() {
    let e = reference()["qwen3"].clone();
    let case = &e["texts"][0];
    let out = Command::new(binary("asrl-learner"))
        .args(["score", "--model"])
        .arg(fixture("tiny-qwen3"))
        .arg("--adapter")
        .arg(fixture("tiny-qwen3-lora"))
        .args(["--text", case["text"].as_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "score failed: {}", String::from_utf8_lossy(&out.stderr));
    // {"tokens": [...], "logprobs": [null, lp1, ...]}: the first token has no log-prob.
    let v: Value = serde_json::from_slice(&out.stdout).expect("score --json prints one JSON object");
    // `{"tokens": ids, "logprobs": [null, lp(1), ...]}`: the first token has no log-prob.
    assert_eq!(ids_of(&v["tokens"]), ids_of(&case["ids"]));
    let lps = v["logprobs"].as_array().unwrap();
    assert!(lps[0].is_null(), "logprobs[0] must be null: {}", lps[0]);
    assert_close(&floats(&Value::Array(lps[1..].to_vec())), &floats(&case["logprobs_adapter"]), TOL, "score CLI");
}

#[test]
fn worker_generate_cli_greedy_matches_reference() {
    let r = reference();
    for arch in ["qwen3", "llama"] {
        let e = &r[arch];
        let case = &e["greedy"][0];
        let prompt = case["prompt"].as_str().unwrap();
        // The user message back out of the rendered ChatML prompt; the CLI re-renders it.
        let user = prompt.split("<|im_start|>user\n").nth(1).and_then(|s| s.split("<|im_end|>").next()).unwrap();
        let out = Command::new(binary("asrl-rollout-worker"))
            .args(["generate", "--model"])
            .arg(fixture(e["model_dir"].as_str().unwrap()))
            .args(["--prompt", user, "-n", "1", "--temperature", "0", "--max-new-tokens", "12", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "generate failed: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).expect("generate --json prints one JSON object");
        let got = ids_of(&v["completions"][0]["tokens"]);
        let want = ids_of(&case["base"]);
        assert!(!got.is_empty() && want.starts_with(&got), "{arch}: CLI greedy {got:?} vs reference {want:?}");
    }
}

#[test]
fn bad_model_path_exits_2_with_one_error_line() {
    let missing = fixture("no-such-model");
    for (bin, args) in [
        ("asrl-learner", vec!["score", "--text", "hi", "--model"]),
        ("asrl-rollout-worker", vec!["generate", "--prompt", "hi", "--model"]),
        ("asrl-tools", vec!["bench", "generate", "--model"]),
    ] {
        let out = Command::new(binary(bin)).args(&args).arg(&missing).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bin}: exit status; stderr: {}", String::from_utf8_lossy(&out.stderr));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{bin}: stderr should be one line: {stderr}");
        assert!(lines[0].starts_with("error: ") && lines[0].contains("no-such-model"), "{bin}: {stderr}");
    }
}
