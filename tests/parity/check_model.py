"""Parity of the Rust model core against transformers / PEFT (developer check, needs torch).

Builds tiny random Qwen3 and Llama models with save_pretrained plus a word-level tokenizer,
then compares, through the real binaries:
  - `asrl-learner score` log-probs vs transformers (base and with a PEFT-saved adapter),
  - `asrl-rollout-worker generate --temperature 0` tokens vs transformers' greedy generate,
  - a Rust-saved adapter loaded in PEFT: log-probs, and LoRA gradients vs torch autograd.

Usage: python tests/parity/check_model.py BIN_DIR WORK_DIR
  BIN_DIR holds asrl-learner, asrl-rollout-worker and examples/lora_parity.
"""
import json
import subprocess
import sys
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen3Config

BIN, WORK = Path(sys.argv[1]), Path(sys.argv[2])
VOCAB = 64
TEXT = "w5 w9 w33 w2 w17 w60 w41 w8 w8 w23 w3 w50"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def write_tokenizer(d: Path):
    vocab = {"<unk>": 0, "</s>": 1, **{f"w{i}": i for i in range(2, VOCAB)}}
    tok = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": 1, "content": "</s>", "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}],
        "normalizer": None, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None,
        "decoder": None, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
    }
    (d / "tokenizer.json").write_text(json.dumps(tok))
    (d / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>"}))


def make_model(name, config):
    d = WORK / name
    d.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").float().eval()
    with torch.no_grad():  # norms != 1 so that they matter
        for n, p in model.named_parameters():
            if "norm" in n:
                p.add_(torch.empty_like(p).uniform_(-0.2, 0.2))
            else:
                p.mul_(3.0)
    model.save_pretrained(d)
    write_tokenizer(d)
    return d, model


def ids():
    return [int(t[1:]) for t in TEXT.split()]


def hf_logprobs(model, toks):
    x = torch.tensor([toks])
    logits = model(x).logits[0, :-1].float()
    return torch.log_softmax(logits, -1).gather(-1, x[0, 1:, None])[:, 0]


def run(cmd):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{cmd} failed: {r.stderr}")
    return json.loads(r.stdout)


def score(d, adapter=None):
    cmd = [BIN / "asrl-learner", "score", "--model", d, "--text", TEXT, "--json"]
    if adapter:
        cmd += ["--adapter", adapter]
    out = run(cmd)
    assert out["tokens"] == ids(), out["tokens"]
    assert out["logprobs"][0] is None
    return torch.tensor(out["logprobs"][1:])


failures = []


def check(what, diff, tol):
    ok = diff <= tol
    print(f"{'ok  ' if ok else 'FAIL'} {what}: {diff:.3g} (tol {tol:g})")
    if not ok:
        failures.append(what)


common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
              bos_token_id=None, eos_token_id=1, pad_token_id=None)
cases = [
    ("qwen3-tied", Qwen3Config(**common, head_dim=24, tie_word_embeddings=True, rope_theta=1e6)),
    ("qwen3-untied", Qwen3Config(**common, head_dim=16, tie_word_embeddings=False)),
    ("llama-tied", LlamaConfig(**common, tie_word_embeddings=True, rope_theta=1e5)),
    ("llama-untied", LlamaConfig(**common, tie_word_embeddings=False)),
]
for name, cfg in cases:
    d, model = make_model(name, cfg)
    toks = ids()
    with torch.no_grad():
        ref = hf_logprobs(model, toks)
    check(f"{name} score log-probs", (score(d) - ref).abs().max().item(), 1e-4)

    # Greedy generation.
    prompt = toks[:4]
    with torch.no_grad():
        g = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=24,
                           eos_token_id=1, pad_token_id=0)[0, 4:].tolist()
    out = run([BIN / "asrl-rollout-worker", "generate", "--model", d, "--raw", "--prompt", " ".join(f"w{t}" for t in prompt),
               "-n", "2", "--temperature", "0", "--max-new-tokens", "24", "--json"])
    for c in out["completions"]:
        same = c["tokens"] == g
        print(f"{'ok  ' if same else 'FAIL'} {name} greedy tokens ({len(g)} tokens)")
        if not same:
            print("   hf  ", g, "\n   rust", c["tokens"])
            failures.append(f"{name} greedy")

    # PEFT-saved adapter (random A and B) scored here.
    torch.manual_seed(1)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(d).float(),
                                LoraConfig(r=4, lora_alpha=16, target_modules=TARGETS, init_lora_weights=False,
                                           task_type="CAUSAL_LM"))
    peft_model.eval()
    pdir = WORK / f"{name}-peft-adapter"
    peft_model.save_pretrained(pdir)
    with torch.no_grad():
        ref = hf_logprobs(peft_model, toks)
    check(f"{name} PEFT-saved adapter log-probs", (score(d, pdir) - ref).abs().max().item(), 1e-4)

    # Rust-saved adapter loaded by PEFT: log-probs and LoRA gradients.
    rdir = WORK / f"{name}-rust"
    subprocess.run([BIN / "examples" / "lora_parity", d, rdir, TEXT], check=True)
    base = AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager").float()
    pm = PeftModel.from_pretrained(base, rdir / "adapter", is_trainable=True)
    pm.eval()  # dropout 0 anyway; eval keeps parity with Rust's training flag off
    lp = hf_logprobs(pm, toks)
    check(f"{name} Rust-saved adapter log-probs in PEFT", (score(d, rdir / "adapter") - lp.detach()).abs().max().item(), 1e-4)
    lp.sum().backward()
    rust_grads = load_file(rdir / "grads.safetensors")
    worst = 0.0
    n = 0
    for pname, p in pm.named_parameters():
        if "lora_" not in pname:
            continue
        key = pname.replace(".default.weight", ".weight")
        g_rust = rust_grads[key]
        rel = ((g_rust - p.grad).norm() / p.grad.norm().clamp_min(1e-12)).item()
        worst = max(worst, rel)
        n += 1
    assert n == len(rust_grads), (n, len(rust_grads))
    check(f"{name} LoRA grads ({n} matrices), worst relative L2 error", worst, 1e-4)

print("all parity checks passed" if not failures else f"FAILED: {failures}")
sys.exit(1 if failures else 0)
