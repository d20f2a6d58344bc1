//! HF directory exports reloaded by our own loader.

use super::*;
use crate::model::ModelConfig;

fn safetensors_header(path: &Path) -> Vec<(String, safetensors::Dtype, Vec<usize>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = st.tensors().into_iter().map(|(n, v)| (n, v.dtype(), v.shape().to_vec())).collect();
    out.sort();
    out
}

#[test]
fn f32_export_reloads_with_the_merged_logprobs() {
    for arch in ["qwen3", "llama"] {
        let f = fixture_model(arch);
        let (dir, report) = export_to(&f.merged, &f.loaded.tokenizer, &f.base, &options(DType::F32, None));
        assert_eq!(
            file_names(&report),
            ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
        );
        assert!(report.files.iter().all(|f| f.bytes > 0) && report.notes.is_empty());
        let back = load(dir.path(), &Device::Cpu, DType::F32).unwrap();
        assert_eq!(back.model.config(), f.loaded.model.config(), "{arch}: config");
        assert_scores_match(&f, &back.model, 1e-5, &format!("{arch} f32 export"));
        assert_same_tokenizer(&back.tokenizer, &f.loaded.tokenizer, arch);
        assert_eq!(back.tokenizer.eos_token_ids(), f.loaded.tokenizer.eos_token_ids(), "{arch}: all eos ids");
    }
}

/// A bf16/f16 export reloads as exactly the merged model rounded to that dtype.
#[test]
fn bf16_and_f16_exports_are_the_rounded_merge() {
    for arch in ["qwen3", "llama"] {
        let f = fixture_model(arch);
        for (dtype, st, name) in
            [(DType::BF16, safetensors::Dtype::BF16, "bfloat16"), (DType::F16, safetensors::Dtype::F16, "float16")]
        {
            let (dir, _) = export_to(&f.merged, &f.loaded.tokenizer, &f.base, &options(dtype, None));
            let header = safetensors_header(&dir.path().join("model.safetensors"));
            assert!(header.iter().all(|(_, d, _)| *d == st), "{arch} {name}: {header:?}");
            assert_eq!(read_json(&dir.path().join("config.json"))["torch_dtype"], name);
            let back = load(dir.path(), &Device::Cpu, DType::F32).unwrap();
            let want = rounded(&f.merged, |_, t| t.to_dtype(dtype).unwrap().to_dtype(DType::F32).unwrap());
            assert_same_scores(&f.loaded.tokenizer, &back.model, &want, &format!("{arch} {name}"));
        }
    }
}

/// At HF's init scale a bf16 export stays within 2e-2 of base + adapter (f16 within 5e-3).
#[test]
fn bf16_and_f16_exports_are_within_dtype_tolerance() {
    for arch in [crate::model::Arch::Qwen3, crate::model::Arch::Llama] {
        let r = realistic(arch);
        for (dtype, tol) in [(DType::BF16, 2e-2), (DType::F16, 5e-3)] {
            let (dir, _) = export_to(&r.merged, &r.tokenizer, &r.meta, &options(dtype, None));
            let back = load(dir.path(), &Device::Cpu, DType::F32).unwrap();
            let worst = r.worst(&back.model);
            assert!(worst <= tol && worst > 0.0, "{arch:?} {dtype:?}: max |diff| {worst} (tolerance {tol})");
        }
    }
}

#[test]
fn sharded_export_reloads_identically() {
    let f = fixture_model("llama");
    let (single, _) = export_to(&f.merged, &f.loaded.tokenizer, &f.base, &options(DType::F32, None));
    let mut opts = options(DType::F32, None);
    opts.max_shard_size = 8_000;
    let (sharded, report) = export_to(&f.merged, &f.loaded.tokenizer, &f.base, &opts);
    let names = file_names(&report);
    let shards: Vec<&String> = names.iter().filter(|n| n.starts_with("model-")).collect();
    assert!(shards.len() >= 3, "{names:?}");
    let n = shards.len();
    for (i, s) in shards.iter().enumerate() {
        assert_eq!(**s, format!("model-{:05}-of-{n:05}.safetensors", i + 1));
    }
    assert!(!names.contains(&"model.safetensors".to_string()));

    let index = read_json(&sharded.path().join("model.safetensors.index.json"));
    let map = index["weight_map"].as_object().unwrap();
    let mut total = 0;
    let mut seen = 0;
    for s in &shards {
        for (name, dtype, shape) in safetensors_header(&sharded.path().join(s)) {
            assert_eq!(map[&name], s.as_str(), "{name} is indexed in its shard");
            assert_eq!(dtype, safetensors::Dtype::F32);
            total += 4 * shape.iter().product::<usize>();
            seen += 1;
        }
    }
    assert_eq!(seen, map.len());
    assert_eq!(seen, f.merged.named_tensors().unwrap().len());
    assert_eq!(index["metadata"]["total_size"], total);

    let a = load(single.path(), &Device::Cpu, DType::F32).unwrap();
    let b = load(sharded.path(), &Device::Cpu, DType::F32).unwrap();
    for ids in samples(&f.loaded.tokenizer) {
        assert_eq!(score(&a.model, None, &ids), score(&b.model, None, &ids));
    }
}

#[test]
fn config_json_describes_the_model_for_transformers() {
    for (arch, architecture, tied) in [("qwen3", "Qwen3ForCausalLM", true), ("llama", "LlamaForCausalLM", false)] {
        let f = fixture_model(arch);
        let (dir, _) = export_to(&f.merged, &f.loaded.tokenizer, &f.base, &options(DType::BF16, None));
        let cfg = read_json(&dir.path().join("config.json"));
        assert_eq!(cfg["architectures"], serde_json::json!([architecture]));
        assert_eq!(cfg["model_type"], arch);
        assert_eq!(cfg["tie_word_embeddings"], tied);
        assert_eq!(cfg["hidden_act"], "silu");
        assert_eq!(ModelConfig::from_hf_value(&cfg, "config.json").unwrap(), *f.loaded.model.config());
        let names: Vec<String> =
            safetensors_header(&dir.path().join("model.safetensors")).into_iter().map(|(n, _, _)| n).collect();
        assert_eq!(names.contains(&"lm_head.weight".to_string()), !tied, "{arch}: lm_head.weight only when untied");
        let mut want: Vec<String> = crate::model::expected_tensor_shapes(f.loaded.model.config()).into_iter().map(|(n, _)| n).collect();
        want.sort();
        assert_eq!(names, want);
        // Special ids agree with the tokenizer.
        let eos = f.loaded.tokenizer.eos_token_ids()[0];
        assert_eq!(cfg["eos_token_id"], eos);
        assert_eq!(cfg["bos_token_id"], serde_json::json!(f.loaded.tokenizer.bos_token_id()));
    }
}

#[test]
fn tokenizer_and_generation_configs_keep_the_base_settings() {
    let f = fixture_model("qwen3");
    let (dir, _) = export_to(&f.merged, &f.loaded.tokenizer, &f.base, &options(DType::BF16, None));
    let tc = read_json(&dir.path().join("tokenizer_config.json"));
    assert_eq!(tc["tokenizer_class"], "Qwen2Tokenizer");
    assert_eq!(tc["eos_token"], "<|im_end|>");
    assert_eq!(tc["pad_token"], "<|endoftext|>");
    assert_eq!(tc["bos_token"], serde_json::Value::Null);
    let jinja = std::fs::read_to_string(f.path.join("chat_template.jinja")).unwrap();
    assert_eq!(tc["chat_template"], jinja.as_str());
    let gen = read_json(&dir.path().join("generation_config.json"));
    assert_eq!(gen["eos_token_id"], serde_json::json!([151645, 151643]));
    assert_eq!(gen["pad_token_id"], 151643);
    assert!(gen.get("bos_token_id").is_none());
}

/// A base whose tokenizer_config asks for bos: the exported tokenizer.json itself adds it (what
/// transformers and vLLM see), and our reload adds it exactly once.
#[test]
fn add_bos_token_survives_the_export() {
    let src = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture("tiny-llama")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, src.path().join(p.file_name().unwrap())).unwrap();
    }
    let cfg_path = src.path().join("tokenizer_config.json");
    let mut cfg = read_json(&cfg_path);
    cfg["add_bos_token"] = serde_json::json!(true);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let loaded = load(src.path(), &Device::Cpu, DType::F32).unwrap();
    let bos = loaded.tokenizer.bos_token_id().unwrap();
    assert_eq!(loaded.tokenizer.encode("hello", true).unwrap()[0], bos);
    let base = BaseMetadata::read(src.path(), &loaded.tokenizer).unwrap();

    let (dir, _) = export_to(&loaded.model, &loaded.tokenizer, &base, &options(DType::F32, None));
    assert_eq!(read_json(&dir.path().join("tokenizer_config.json"))["add_bos_token"], true);
    let raw = tokenizers::Tokenizer::from_file(dir.path().join("tokenizer.json")).unwrap();
    let ids = raw.encode("hello", true).unwrap().get_ids().to_vec();
    assert_eq!(ids, loaded.tokenizer.encode("hello", true).unwrap(), "tokenizer.json alone adds bos");
    assert_eq!(raw.encode("hello", false).unwrap().get_ids(), loaded.tokenizer.encode("hello", false).unwrap());
    let back = load(dir.path(), &Device::Cpu, DType::F32).unwrap();
    assert_eq!(back.tokenizer.encode("hello", true).unwrap(), ids);
    assert_eq!(ids.iter().filter(|&&i| i == bos).count(), 1);
}

#[test]
fn unadapted_export_is_the_base() {
    let f = fixture_model("llama");
    let (dir, _) = export_to(&f.loaded.model, &f.loaded.tokenizer, &f.base, &options(DType::F32, None));
    let back = load(dir.path(), &Device::Cpu, DType::F32).unwrap();
    for ids in samples(&f.loaded.tokenizer) {
        assert_eq!(score(&back.model, None, &ids), score(&f.loaded.model, None, &ids));
    }
}

#[test]
fn bad_options_are_refused() {
    let f = fixture_model("llama");
    let dir = tempfile::tempdir().unwrap();
    let e = export_model(&f.merged, &f.loaded.tokenizer, &f.base, dir.path(), &options(DType::U32, None)).unwrap_err();
    assert!(e.to_string().contains("export dtype U32 is not supported"), "{e}");
    let mut opts = options(DType::F32, None);
    opts.max_shard_size = 0;
    let e = export_model(&f.merged, &f.loaded.tokenizer, &f.base, dir.path(), &opts).unwrap_err();
    assert!(e.to_string().contains("max shard size"), "{e}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written");
}
