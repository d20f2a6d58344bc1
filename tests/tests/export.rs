//! `asrl-learner export` end to end, against tests/fixtures/export_reference.json (made once with
//! transformers + llama.cpp's `gguf` package by tests/parity/make_export_fixture.py): the CLI
//! re-exports the same tiny models, our loaders read them back, and the numbers must agree with
//! what transformers computed on the directories and GGUF files the exporter wrote.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::process::{Command, Output};

use asrl_common::model::{load, token_logprobs, Model};
use asrl_tests::{binary, fixture, fixture_json, python_with, repo_root};
use candle_core::quantized::gguf_file::{self, Value as GValue};
use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};

const TOL: f32 = 1e-4;

fn reference() -> Value {
    fixture_json("export_reference.json").expect("export_reference.json")
}

fn export(args: &[&str]) -> Output {
    Command::new(binary("asrl-learner")).arg("export").args(args).output().expect("run asrl-learner export")
}

/// Runs the CLI for a fixture record into `dir/<name>` (the name is part of the GGUF file name).
fn export_record(e: &Value, dir: &Path) -> std::path::PathBuf {
    let out = dir.join(e["name"].as_str().unwrap());
    let mut args: Vec<String> = vec![
        "--model".into(),
        fixture(e["model"].as_str().unwrap()).display().to_string(),
        "--adapter".into(),
        fixture(e["adapter"].as_str().unwrap()).display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ];
    args.extend(e["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()));
    let o = export(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "export failed: {}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("config.json") && stdout.contains("total"), "{stdout}");
    out
}

fn ids_of(v: &Value) -> Vec<Vec<u32>> {
    serde_json::from_value(v.clone()).unwrap()
}

fn floats(v: &Value) -> Vec<Vec<f32>> {
    v.as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()).collect()
}

fn score(model: &Model, ids: &[u32]) -> Vec<f32> {
    let input = Tensor::new(ids, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let logits = model.forward(&input, None).unwrap();
    let n = ids.len();
    let lp = token_logprobs(&logits.narrow(1, 0, n - 1).unwrap(), &input.narrow(1, 1, n - 1).unwrap(), 1.0).unwrap();
    lp.squeeze(0).unwrap().to_vec1().unwrap()
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let worst = got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max);
    assert!(worst <= tol, "{what}: max |diff| {worst} > {tol}\n got  {got:?}\n want {want:?}");
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// The `gguf` package's name for a value's type, and the value as JSON (arrays: item type + length).
fn gguf_py_view(v: &GValue) -> Value {
    fn kind(v: &GValue) -> &'static str {
        match v {
            GValue::U8(_) => "UINT8",
            GValue::I8(_) => "INT8",
            GValue::U16(_) => "UINT16",
            GValue::I16(_) => "INT16",
            GValue::U32(_) => "UINT32",
            GValue::I32(_) => "INT32",
            GValue::U64(_) => "UINT64",
            GValue::I64(_) => "INT64",
            GValue::F32(_) => "FLOAT32",
            GValue::F64(_) => "FLOAT64",
            GValue::Bool(_) => "BOOL",
            GValue::String(_) => "STRING",
            GValue::Array(_) => "ARRAY",
        }
    }
    match v {
        GValue::Array(items) => json!({"type": "ARRAY", "item_type": items.first().map_or("UINT32", kind), "len": items.len()}),
        GValue::String(s) => json!({"type": "STRING", "value": s}),
        GValue::U32(x) => json!({"type": "UINT32", "value": x}),
        GValue::I32(x) => json!({"type": "INT32", "value": x}),
        GValue::F32(x) => json!({"type": "FLOAT32", "value": x}),
        GValue::Bool(x) => json!({"type": "BOOL", "value": x}),
        other => json!({"type": kind(other)}),
    }
}

/// transformers loads the exported dirs (single file f32, sharded bf16) and agrees with our
/// loader's log-probs and tokenizer on them; the files and config keys it was given are the ones
/// we still write.
#[test]
fn transformers_agrees_with_our_reload_of_the_export() {
    let r = reference();
    let texts: Vec<&str> = r["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    let conversation: Vec<asrl_common::tokenizer::ChatMessage> = serde_json::from_value(r["conversation"].clone()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for e in r["exports"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        let dir = export_record(e, tmp.path());
        assert_eq!(json!(listing(&dir)), e["files"], "{name}: files");
        let cfg: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
        let keys: Vec<&String> = cfg.as_object().unwrap().keys().collect();
        assert_eq!(json!(keys), e["config_keys"], "{name}: config.json keys");

        let loaded = load(&dir, &Device::Cpu, DType::F32).unwrap();
        let t = &e["tokenizer"];
        let ids = ids_of(&t["ids"]);
        for (text, want) in texts.iter().zip(&ids) {
            assert_eq!(&loaded.tokenizer.encode(text, false).unwrap(), want, "{name}: ids of {text:?}");
        }
        if let Some(prompt) = t["chat_prompt"].as_str() {
            assert_eq!(loaded.tokenizer.apply_chat_template(&conversation, true).unwrap(), prompt, "{name}: chat prompt");
            assert_eq!(&loaded.tokenizer.encode(prompt, false).unwrap(), ids.last().unwrap(), "{name}: prompt ids");
        }
        assert_eq!(json!(loaded.tokenizer.bos_token_id()), t["bos_token_id"], "{name}: bos");
        assert_eq!(json!(loaded.tokenizer.eos_token_ids()[0]), t["eos_token_id"], "{name}: eos");
        let gen_eos = match &e["generation_eos_token_id"] {
            Value::Array(a) => a.iter().map(|x| x.as_u64().unwrap() as u32).collect::<Vec<_>>(),
            x => vec![x.as_u64().unwrap() as u32],
        };
        assert_eq!(loaded.tokenizer.eos_token_ids(), gen_eos.as_slice(), "{name}: generation eos ids");

        for (i, (ids, want)) in ids.iter().zip(floats(&e["logprobs"])).enumerate() {
            assert_close(&score(&loaded.model, ids), &want, TOL, &format!("{name}: sample {i} vs transformers"));
        }
    }
}

/// The GGUF files parse with llama.cpp's `gguf` package to the same keys, types and values, and
/// (Llama, where transformers can load GGUF) our GGUF reader agrees with transformers' GGUF loading.
#[test]
fn gguf_package_and_transformers_read_the_gguf_export() {
    let r = reference();
    let tmp = tempfile::tempdir().unwrap();
    for e in r["exports"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        let g = &e["gguf"];
        let dir = export_record(e, tmp.path());
        let path = dir.join(g["file"].as_str().unwrap());
        let content = gguf_file::Content::read(&mut File::open(&path).unwrap()).unwrap();
        let want: BTreeMap<String, Value> = serde_json::from_value(g["metadata"].clone()).unwrap();
        let got: Vec<&String> = content.metadata.keys().collect();
        assert_eq!(got.len(), want.len(), "{name}: metadata keys {got:?}");
        for (key, w) in &want {
            let v = content.metadata.get(key).unwrap_or_else(|| panic!("{name}: metadata {key} missing"));
            let view = gguf_py_view(v);
            assert_eq!(view["type"], w["type"], "{name}: type of {key}");
            if let Some(item) = w.get("item_type") {
                assert_eq!((&view["item_type"], &view["len"]), (item, &w["len"]), "{name}: {key}");
            } else if let (Some(a), Some(b)) = (view["value"].as_f64(), w["value"].as_f64()) {
                assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{name}: {key} = {a}, gguf read {b}");
            } else if w.get("value").is_some() {
                assert_eq!(view["value"], w["value"], "{name}: {key}");
            }
        }
        let tensors = g["tensors"].as_object().unwrap();
        assert_eq!(content.tensor_infos.len(), tensors.len(), "{name}: tensor count");
        for (tname, info) in &content.tensor_infos {
            let w = &tensors[tname];
            assert_eq!(format!("{:?}", info.ggml_dtype).to_uppercase(), w["type"].as_str().unwrap(), "{name}: {tname} type");
            let mut dims = info.shape.dims().to_vec();
            dims.reverse(); // gguf lists ggml's ne order
            assert_eq!(json!(dims), w["shape"], "{name}: {tname} shape");
        }

        if let Some(tg) = g.get("transformers") {
            let loaded = load(&path, &Device::Cpu, DType::F32).unwrap();
            let ids = ids_of(&tg["ids"]);
            let texts = r["texts"].as_array().unwrap();
            for (text, want) in texts.iter().zip(&ids) {
                assert_eq!(&loaded.tokenizer.encode(text.as_str().unwrap(), false).unwrap(), want, "{name}: gguf ids");
            }
            for (i, (ids, want)) in ids.iter().zip(floats(&tg["logprobs"])).enumerate() {
                assert_close(&score(&loaded.model, ids), &want, TOL, &format!("{name}: gguf sample {i} vs transformers"));
            }
        }
    }
}

/// With the Python peers installed, regenerating the reference from the current exporter
/// reproduces the committed one (the fixture is not stale).
#[test]
fn reference_is_reproducible_with_python_peers() {
    let Some(py) = python_with(&["torch", "transformers", "accelerate", "gguf"]) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let json_out = tmp.path().join("export_reference.json");
    let o = Command::new(&py)
        .arg(repo_root().join("tests/parity/make_export_fixture.py"))
        .arg("--learner")
        .arg(binary("asrl-learner"))
        .arg("--json-out")
        .arg(&json_out)
        .output()
        .unwrap();
    assert!(o.status.success(), "make_export_fixture.py failed: {}", String::from_utf8_lossy(&o.stderr));
    let fresh: Value = serde_json::from_str(&std::fs::read_to_string(&json_out).unwrap()).unwrap();
    let committed = reference();
    for (a, b) in fresh["exports"].as_array().unwrap().iter().zip(committed["exports"].as_array().unwrap()) {
        let name = a["name"].as_str().unwrap();
        for key in ["files", "config_keys", "tokenizer", "generation_eos_token_id"] {
            assert_eq!(a[key], b[key], "{name}: {key}");
        }
        for (x, y) in floats(&a["logprobs"]).iter().zip(floats(&b["logprobs"])) {
            assert_close(x, &y, TOL, &format!("{name}: fresh transformers log-probs"));
        }
        assert_eq!(a["gguf"]["metadata"], b["gguf"]["metadata"], "{name}: gguf metadata");
    }
}

fn one_error_line(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(2), "stdout: {}\nstderr: {}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

#[test]
fn cli_refuses_bad_input_with_one_error_line() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture("tiny-llama").display().to_string();
    let out = tmp.path().join("out");
    let out_s = out.display().to_string();

    let err = one_error_line(&export(&["--model", &model, "--out", &out_s, "--gguf", "q4_k"]));
    assert!(err.contains("--gguf") && err.contains("q4_k"), "{err}");
    let err = one_error_line(&export(&["--model", &model, "--out", &out_s, "--dtype", "int8"]));
    assert!(err.contains("--dtype") && err.contains("int8"), "{err}");
    let err = one_error_line(&export(&["--model", &model, "--out", &out_s, "--max-shard-size", "lots"]));
    assert!(err.contains("--max-shard-size"), "{err}");
    let missing = tmp.path().join("no-adapter").display().to_string();
    let err = one_error_line(&export(&["--model", &model, "--adapter", &missing, "--out", &out_s]));
    assert!(err.contains("no-adapter"), "{err}");
    let err = one_error_line(&export(&["--model", &model, "--out", &model]));
    assert!(err.contains("would replace the base model"), "{err}");
    assert!(!out.exists(), "nothing written on bad input");
    assert_eq!(listing(tmp.path()), Vec::<String>::new(), "no temp dirs left behind");

    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    let err = one_error_line(&export(&["--model", &model, "--out", &out_s]));
    assert!(err.contains("is not empty") && err.contains("--force"), "{err}");
    let err = one_error_line(&export(&["--model", &model, "--out", &out_s, "--force"]));
    assert!(err.contains("does not look like a previous export"), "{err}");
    assert_eq!(listing(&out), ["keep.txt"]);
}

#[test]
fn cli_force_replaces_a_previous_export_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture("tiny-llama").display().to_string();
    let adapter = fixture("tiny-llama-lora").display().to_string();
    let out = tmp.path().join("merged");
    let out_s = out.display().to_string();
    let o = export(&["--model", &model, "--adapter", &adapter, "--out", &out_s, "--max-shard-size", "20KB", "--gguf", "f16"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(listing(&out).contains(&"merged-f16.gguf".to_string()));
    assert!(listing(&out).contains(&"model.safetensors.index.json".to_string()));

    let o = export(&["--model", &model, "--out", &out_s, "--force", "--dtype", "f32"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // No shards, index or GGUF from the first export survive.
    assert_eq!(
        listing(&out),
        ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    );
    assert_eq!(listing(tmp.path()), ["merged"], "no temp or old dirs left behind");
    // Without --adapter the base is exported as-is.
    let base = load(&fixture("tiny-llama"), &Device::Cpu, DType::F32).unwrap();
    let back = load(&out, &Device::Cpu, DType::F32).unwrap();
    let ids = base.tokenizer.encode("Hello world!", false).unwrap();
    assert_eq!(score(&back.model, &ids), score(&base.model, &ids));
}
