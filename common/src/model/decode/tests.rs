//! The batched decode step against the cached forward, and the batch cache's checks.

use candle_core::{DType, Device, Tensor};

use crate::config::LoraConfig;
use crate::model::tests::{busy_adapter, tiny_config};
use crate::model::{Arch, Model, ModelError};

/// Rows of two prompts at different positions give the logits each prompt's own cached
/// forward gives, with and without an unmerged adapter, for both architectures.
#[test]
fn decode_step_matches_forward_cached_per_prompt() {
    let prompts: [&[u32]; 2] = [&[3, 17, 42, 5, 9], &[8, 1]];
    let fed: [&[u32]; 2] = [&[22, 7, 30], &[61, 2, 14]];
    for arch in [Arch::Qwen3, Arch::Llama] {
        let cfg = tiny_config(arch, false);
        let m = Model::random(cfg.clone(), &Device::Cpu, DType::F32, 4).unwrap();
        let adapter = busy_adapter(&cfg, &LoraConfig { r: 4, alpha: 8.0, ..Default::default() }, 2);
        for ad in [None, Some(&adapter)] {
            let mut cache = m.new_batch_cache(2, 8, 3, 4).unwrap();
            // Prompt 0 in slot 1 read by sequence slots 0 and 2; prompt 1 in slot 0 by slot 1.
            for (slot, p) in [(1, prompts[0]), (0, prompts[1])] {
                let mut prefill = m.new_cache();
                m.forward_cached(&Tensor::new(p, &Device::Cpu).unwrap().unsqueeze(0).unwrap(), &mut prefill, ad).unwrap();
                cache.set_prompt(slot, &prefill).unwrap();
            }
            for (seq, prompt) in [(0, 1), (1, 0), (2, 1)] {
                cache.start_sequence(seq, prompt).unwrap();
            }
            // Sequence 2 starts one step late: rows sit at three different positions.
            let mut got: [Vec<Tensor>; 3] = Default::default();
            for step in 0..3 {
                let mut tokens = vec![fed[0][step], fed[1][step]];
                let mut slots = vec![0, 1];
                if step > 0 {
                    tokens.push(fed[0][step - 1]);
                    slots.push(2);
                }
                let logits = m.decode_step(&tokens, &slots, &mut cache, ad).unwrap();
                for (row, &slot) in slots.iter().enumerate() {
                    got[slot].push(logits.narrow(0, row, 1).unwrap());
                }
            }
            assert_eq!((cache.seq_len(0), cache.seq_len(2)), (Some(3), Some(2)));
            for (slot, p) in [(0, 0), (1, 1), (2, 0)] {
                let mut reference = m.new_cache();
                let input = Tensor::new(prompts[p], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
                m.forward_cached(&input, &mut reference, ad).unwrap();
                for (step, row) in got[slot].iter().enumerate() {
                    let x = Tensor::new(&[fed[p][step]], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
                    let want = m.forward_cached(&x, &mut reference, ad).unwrap().squeeze(1).unwrap();
                    let diff = (row - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                    assert!(diff < 1e-4, "{arch:?} adapter {} slot {slot} step {step}: {diff}", ad.is_some());
                }
            }
        }
    }
}

#[test]
fn batch_cache_misuse_is_an_error() {
    let cfg = tiny_config(Arch::Llama, true);
    let m = Model::random(cfg.clone(), &Device::Cpu, DType::F32, 1).unwrap();
    let input = |ids: &[u32]| Tensor::new(ids, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let mut prefill = m.new_cache();
    m.forward_cached(&input(&[1, 2, 3]), &mut prefill, None).unwrap();
    let mut long = m.new_cache();
    m.forward_cached(&input(&[1, 2, 3, 4, 5]), &mut long, None).unwrap();
    let err = |r: Result<(), ModelError>| r.unwrap_err().to_string();

    assert!(m.new_batch_cache(0, 4, 1, 1).is_err());
    let mut cache = m.new_batch_cache(1, 4, 2, 2).unwrap();
    assert!(err(cache.set_prompt(0, &long)).contains("prompt slot 0: needs a batch-1 prefill of 1..=4 positions, got 5"));
    assert!(err(cache.set_prompt(1, &prefill)).contains("out of range"));
    assert!(cache.start_sequence(0, 0).is_err(), "prompt slot not filled yet");
    cache.set_prompt(0, &prefill).unwrap();
    cache.start_sequence(0, 0).unwrap();
    assert!(cache.start_sequence(0, 0).is_err(), "sequence slot busy");
    assert!(err(cache.set_prompt(0, &prefill)).contains("a live sequence still reads it"));
    let step = |c: &mut crate::model::BatchKvCache, slots: &[usize]| m.decode_step(&vec![4; slots.len()], slots, c, None).map(|_| ());
    assert!(err(step(&mut cache, &[1])).contains("sequence slot 1 is free"));
    assert!(err(step(&mut cache, &[0, 0])).contains("repeated"));
    assert!(m.decode_step(&[4, 5], &[0], &mut cache, None).is_err(), "token and slot counts differ");
    step(&mut cache, &[0]).unwrap();
    step(&mut cache, &[0]).unwrap();
    assert!(err(step(&mut cache, &[0])).contains("sequence slot 0 is full (2 positions)"));
    cache.end_sequence(0);
    assert_eq!(cache.seq_len(0), None);
    cache.set_prompt(0, &prefill).unwrap();
    let other = Model::random(tiny_config(Arch::Qwen3, true), &Device::Cpu, DType::F32, 1).unwrap();
    let mut wide = other.new_batch_cache(1, 4, 1, 1).unwrap();
    assert!(wide.set_prompt(0, &prefill).is_err(), "prefill of another shape");
}
