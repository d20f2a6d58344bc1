//! GGUF exports read back by our GGUF reader, and GGUF bases exported as HF dirs.

use std::collections::HashMap;
use std::fs::File;

use candle_core::quantized::{gguf_file, GgmlDType};

use super::*;
use crate::model::gguf::read_gguf;
use crate::model::Arch;

fn gguf_path(dir: &Path, ty: GgufType) -> PathBuf {
    dir.join(gguf_file_name("tiny", ty))
}

fn content(path: &Path) -> gguf_file::Content {
    gguf_file::Content::read(&mut File::open(path).unwrap()).unwrap()
}

#[test]
fn f32_gguf_reads_back_exactly() {
    for arch in ["qwen3", "llama"] {
        let f = fixture_model(arch);
        let (dir, report) = export_to(&f.merged, &f.loaded.tokenizer, &f.base, &options(DType::F32, Some(GgufType::F32)));
        assert!(file_names(&report).contains(&"tiny-f32.gguf".to_string()));
        let (cfg, tensors, tok) = read_gguf(&gguf_path(dir.path(), GgufType::F32), &Device::Cpu, DType::F32).unwrap();
        assert_eq!(&cfg, f.loaded.model.config(), "{arch}: config from metadata");
        // Exact equality also proves the Llama q/k permutation is the reader's inverse.
        let want = f.merged.named_tensors().unwrap();
        assert_eq!(tensors.len(), want.len());
        for (name, t) in want {
            let got = &tensors[&name];
            let d = (got - &t).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
            assert_eq!(d, 0.0, "{arch}: {name}");
        }
        assert_same_tokenizer(&tok, &f.loaded.tokenizer, &format!("{arch} gguf"));
    }
}

/// f16 / q8_0 GGUFs of the fixtures reload as exactly the merged model quantised in memory
/// (norms f32, rows of 16 falling back to f16 under q8_0, with a note saying so).
#[test]
fn f16_and_q8_0_gguf_are_the_quantised_merge() {
    for arch in ["qwen3", "llama"] {
        let f = fixture_model(arch);
        for ty in [GgufType::F16, GgufType::Q8_0] {
            let (dir, report) = export_to(&f.merged, &f.loaded.tokenizer, &f.base, &options(DType::BF16, Some(ty)));
            let path = gguf_path(dir.path(), ty);
            let back = load(&path, &Device::Cpu, DType::F32).unwrap();
            let want = rounded(&f.merged, |_, t| quantised(t, ty));
            assert_same_scores(&f.loaded.tokenizer, &back.model, &want, &format!("{arch} {ty:?}"));
            assert_same_tokenizer(&back.tokenizer, &f.loaded.tokenizer, &format!("{arch} {ty:?} gguf"));

            let c = content(&path);
            let file_type = c.metadata["general.file_type"].to_u32().unwrap();
            assert_eq!(file_type, if ty == GgufType::F16 { 1 } else { 7 });
            for (name, info) in &c.tensor_infos {
                let want = expected_type(info.shape.dims(), ty);
                assert_eq!(info.ggml_dtype, want, "{arch} {ty:?}: {name} {:?}", info.shape);
            }
            if ty == GgufType::Q8_0 {
                assert!(c.tensor_infos.values().any(|i| i.ggml_dtype == GgmlDType::Q8_0), "{arch}: ffn_down is q8_0");
                assert_eq!(report.notes.len(), 1, "{:?}", report.notes);
                assert!(report.notes[0].contains("token_embd.weight") && report.notes[0].contains("as f16"));
            } else {
                assert!(report.notes.is_empty());
            }
        }
    }
}

fn expected_type(dims: &[usize], ty: GgufType) -> GgmlDType {
    match ty {
        _ if dims.len() == 1 => GgmlDType::F32,
        GgufType::F32 => GgmlDType::F32,
        GgufType::Q8_0 if dims[dims.len() - 1].is_multiple_of(32) => GgmlDType::Q8_0,
        _ => GgmlDType::F16,
    }
}

fn quantised(t: &Tensor, ty: GgufType) -> Tensor {
    let q = candle_core::quantized::QTensor::quantize(&t.force_contiguous().unwrap(), expected_type(t.dims(), ty)).unwrap();
    q.dequantize(&Device::Cpu).unwrap()
}

/// At HF's init scale: f16 within 1e-2 and q8_0 (every weight quantised) within 5e-2 of base + adapter.
#[test]
fn f16_and_q8_0_gguf_logprobs_are_within_tolerance() {
    for arch in [Arch::Qwen3, Arch::Llama] {
        let r = realistic(arch);
        for (ty, tol) in [(GgufType::F16, 1e-2), (GgufType::Q8_0, 5e-2)] {
            let (dir, report) = export_to(&r.merged, &r.tokenizer, &r.meta, &options(DType::F32, Some(ty)));
            assert!(report.notes.is_empty(), "{:?}", report.notes);
            let path = gguf_path(dir.path(), ty);
            for (name, info) in &content(&path).tensor_infos {
                let want = match ty {
                    _ if info.shape.rank() == 1 => GgmlDType::F32,
                    GgufType::F16 => GgmlDType::F16,
                    _ => GgmlDType::Q8_0,
                };
                assert_eq!(info.ggml_dtype, want, "{arch:?} {ty:?}: {name}");
            }
            let md = content(&path).metadata;
            let (tokens, types) = (md["tokenizer.ggml.tokens"].to_vec().unwrap(), md["tokenizer.ggml.token_type"].to_vec().unwrap());
            let vocab = r.merged.config().vocab_size;
            assert_eq!(tokens.len(), vocab);
            if arch == Arch::Qwen3 {
                // Embedding rows past the tokenizer: unused padding tokens, as convert_hf_to_gguf writes them.
                assert_eq!(tokens[vocab - 1].to_string().unwrap(), &format!("[PAD{}]", vocab - 1));
                assert_eq!(types[vocab - 1].to_i32().unwrap(), 5);
            }
            let back = load(&path, &Device::Cpu, DType::F32).unwrap();
            let worst = r.worst(&back.model);
            assert!(worst <= tol && worst > 0.0, "{arch:?} {ty:?}: max |diff| {worst} (tolerance {tol})");
            assert_same_tokenizer(&back.tokenizer, &r.tokenizer, &format!("{arch:?} {ty:?}"));
        }
    }
}

#[test]
fn gguf_metadata_has_what_llama_cpp_reads() {
    for (arch, pre, tied) in [("qwen3", "qwen2", true), ("llama", "gpt-2", false)] {
        let f = fixture_model(arch);
        let (dir, _) = export_to(&f.merged, &f.loaded.tokenizer, &f.base, &options(DType::F32, Some(GgufType::F16)));
        let c = content(&gguf_path(dir.path(), GgufType::F16));
        let md = &c.metadata;
        let cfg = f.loaded.model.config();
        let u32_key = |k: &str| match md.get(&format!("{arch}.{k}")) {
            Some(gguf_file::Value::U32(x)) => *x as usize,
            other => panic!("{arch}.{k}: expected u32, got {other:?}"),
        };
        assert_eq!(md["general.architecture"].to_string().unwrap(), arch);
        assert_eq!(md["general.name"].to_string().unwrap(), "tiny");
        assert_eq!(u32_key("context_length"), cfg.max_position_embeddings);
        assert_eq!(u32_key("embedding_length"), cfg.hidden_size);
        assert_eq!(u32_key("block_count"), cfg.num_hidden_layers);
        assert_eq!(u32_key("feed_forward_length"), cfg.intermediate_size);
        assert_eq!(u32_key("attention.head_count"), cfg.num_attention_heads);
        assert_eq!(u32_key("attention.head_count_kv"), cfg.num_key_value_heads);
        assert_eq!(u32_key("attention.key_length"), cfg.head_dim);
        assert_eq!(u32_key("attention.value_length"), cfg.head_dim);
        assert!(matches!(md[&format!("{arch}.attention.layer_norm_rms_epsilon")], gguf_file::Value::F32(_)));
        assert!(matches!(md[&format!("{arch}.rope.freq_base")], gguf_file::Value::F32(x) if x as f64 == cfg.rope_theta));
        assert_eq!(md["tokenizer.ggml.model"].to_string().unwrap(), "gpt2");
        assert_eq!(md["tokenizer.ggml.pre"].to_string().unwrap(), pre);
        assert_eq!(md["tokenizer.ggml.tokens"].to_vec().unwrap().len(), cfg.vocab_size);
        assert_eq!(md["tokenizer.ggml.token_type"].to_vec().unwrap().len(), cfg.vocab_size);
        assert!(matches!(md["tokenizer.ggml.token_type"].to_vec().unwrap()[0], gguf_file::Value::I32(_)));
        assert!(!md["tokenizer.ggml.merges"].to_vec().unwrap().is_empty());
        assert_eq!(md["tokenizer.ggml.eos_token_id"].to_u32().unwrap(), f.loaded.tokenizer.eos_token_ids()[0]);
        assert!(!md["tokenizer.ggml.add_bos_token"].to_bool().unwrap());
        assert_eq!(md.get("tokenizer.ggml.bos_token_id").map(|v| v.to_u32().unwrap()), f.loaded.tokenizer.bos_token_id());
        assert_eq!(md["tokenizer.ggml.padding_token_id"].to_u32().unwrap(), f.loaded.tokenizer.token_to_id("<|endoftext|>").unwrap());
        assert_eq!(
            md["tokenizer.chat_template"].to_string().unwrap().as_str(),
            f.loaded.tokenizer.chat_template().unwrap()
        );
        assert_eq!(c.tensor_infos.contains_key("output.weight"), !tied);
        assert!(c.tensor_infos.contains_key("blk.1.ffn_down.weight") && c.tensor_infos.contains_key("token_embd.weight"));
        assert_eq!(c.tensor_infos.contains_key("blk.0.attn_q_norm.weight"), arch == "qwen3");
    }
}

/// A GGUF base (tokenizer rebuilt from metadata) exported as an HF dir loads back as the same model.
#[test]
fn gguf_base_exports_to_an_hf_dir() {
    for arch in ["qwen3", "llama"] {
        let f = fixture_model(arch);
        let (gdir, _) = export_to(&f.merged, &f.loaded.tokenizer, &f.base, &options(DType::F32, Some(GgufType::F32)));
        let gpath = gguf_path(gdir.path(), GgufType::F32);
        let gbase = load(&gpath, &Device::Cpu, DType::F32).unwrap();
        let meta = BaseMetadata::read(&gpath, &gbase.tokenizer).unwrap();
        assert_eq!(meta.pad_token.as_deref(), Some("<|endoftext|>"));
        let (dir, _) = export_to(&gbase.model, &gbase.tokenizer, &meta, &options(DType::F32, None));
        let back = load(dir.path(), &Device::Cpu, DType::F32).unwrap();
        for ids in samples(&gbase.tokenizer) {
            assert_close(&score(&back.model, None, &ids), &score(&gbase.model, None, &ids), 1e-5, &format!("{arch} gguf -> hf"));
        }
        assert_same_tokenizer(&back.tokenizer, &gbase.tokenizer, &format!("{arch} gguf -> hf"));
        assert_same_tokenizer(&back.tokenizer, &f.loaded.tokenizer, &format!("{arch} gguf -> hf vs original"));
        let tc = read_json(&dir.path().join("tokenizer_config.json"));
        assert_eq!(tc["tokenizer_class"], "PreTrainedTokenizerFast");
        assert_eq!(tc["pad_token"], "<|endoftext|>");
        assert_eq!(tc["model_max_length"], f.loaded.model.config().max_position_embeddings);
        // And back to GGUF: the same vocabulary arrays as the first GGUF.
        let (g2, _) = export_to(&back.model, &back.tokenizer, &meta, &options(DType::F32, Some(GgufType::F32)));
        let (a, b) = (content(&gpath), content(&gguf_path(g2.path(), GgufType::F32)));
        for key in ["tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.pre"] {
            assert_eq!(format!("{:?}", a.metadata[key]), format!("{:?}", b.metadata[key]), "{arch}: {key}");
        }
    }
}

/// A Llama-3 style pre-tokenizer (digits in groups of three) is written as `llama-bpe` and read
/// back with the same split.
#[test]
fn llama3_pre_tokenizer_round_trips() {
    let src = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture("tiny-llama")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, src.path().join(p.file_name().unwrap())).unwrap();
    }
    let tok_path = src.path().join("tokenizer.json");
    let mut tok = read_json(&tok_path);
    let llama3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    tok["pre_tokenizer"] = serde_json::json!({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": llama3}, "behavior": "Isolated", "invert": false},
        {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]});
    std::fs::write(&tok_path, tok.to_string()).unwrap();
    let loaded = load(src.path(), &Device::Cpu, DType::F32).unwrap();
    let text = "x 12345 and 1234567, it's DONE'S";
    let ids = loaded.tokenizer.encode(text, false).unwrap();
    let gpt2 = Tokenizer::from_hf_dir(&fixture("tiny-llama")).unwrap().encode(text, false).unwrap();
    assert_ne!(ids, gpt2, "the text must tell the two pre-tokenizers apart");
    let base = BaseMetadata::read(src.path(), &loaded.tokenizer).unwrap();
    let (dir, _) = export_to(&loaded.model, &loaded.tokenizer, &base, &options(DType::F32, Some(GgufType::F16)));
    let path = gguf_path(dir.path(), GgufType::F16);
    assert_eq!(content(&path).metadata["tokenizer.ggml.pre"].to_string().unwrap(), "llama-bpe");
    let back = load(&path, &Device::Cpu, DType::F32).unwrap();
    assert_eq!(back.tokenizer.encode(text, false).unwrap(), ids);
    assert_same_tokenizer(&back.tokenizer, &loaded.tokenizer, "llama-3 pre-tokenizer");
}

#[test]
fn non_bpe_tokenizers_are_refused_for_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let vocab: HashMap<String, u32> = [("a", 0), ("b", 1), ("<unk>", 2)].into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    std::fs::write(dir.path().join("tokenizer.json"), json.to_string()).unwrap();
    let tok = Tokenizer::from_hf_dir(dir.path()).unwrap();
    let mut cfg = crate::model::tests::tiny_config(Arch::Llama, true);
    cfg.vocab_size = 3;
    let model = Model::random(cfg, &Device::Cpu, DType::F32, 1).unwrap();
    let out = tempfile::tempdir().unwrap();
    let e = export_model(&model, &tok, &BaseMetadata::default(), out.path(), &options(DType::F32, Some(GgufType::F16)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("only byte-level BPE") && e.contains("WordLevel"), "{e}");
}
