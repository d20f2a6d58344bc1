#!/usr/bin/env python3
"""Writes the committed parity fixtures under tests/fixtures/ (CI never runs this).

What it writes (all deterministic: fixed seeds, CPU, float32):
  tokenizer_reference.json   transformers' apply_chat_template(tokenize=False) strings for the real
                             Qwen3 template, Qwen3 encodings, and SmolLM2 GGUF tokenizer encodings
                             + chat template output (the GGUF part only when assets/ has the file)
  gguf_reference.json        stats/slices of transformers' dequantised SmolLM2 GGUF state dict
  tiny-qwen3/                random Qwen3 (real Qwen3 tokenizer, vocab 151669, hidden 16, tied)
  tiny-qwen3-lora/           PEFT adapter (r 4, alpha 8, all 7 projections, non-zero A and B)
  tiny-llama/                random Llama (tiny byte-level BPE tokenizer trained here, untied)
  tiny-llama-lora/           PEFT adapter, same shape rules
  parity_reference.json      per model: token ids, per-token log-probs with/without adapter and at
                             temperature T, greedy continuations, LoRA gradients of sum(log-probs)

How to run (needs torch, transformers>=5, peft, tokenizers, gguf; no network):
  python3 -m venv .venv && .venv/bin/pip install torch transformers peft gguf   # or an existing env
  scripts/fetch-assets.sh                          # assets/qwen3-tokenizer + SmolLM2 GGUF
  .venv/bin/python tests/parity/make_fixtures.py   # from the repository root
  (`--references-only` rewrites just tokenizer_reference.json and gguf_reference.json)
(With the peers venv: scripts/setup-peers.sh, then .venv-peers/bin/python tests/parity/make_fixtures.py)
"""

import json
import os
import shutil
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "assets"
OUT = ROOT / "tests" / "fixtures"
QWEN3_TOK = ASSETS / "qwen3-tokenizer"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

TEMPERATURE = 0.7
GREEDY_TOKENS = 12
LORA_R, LORA_ALPHA = 4, 8
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

CONVERSATIONS = [
    ("single_turn", [{"role": "user", "content": "What is 2+2?"}]),
    (
        "system",
        [
            {"role": "system", "content": "You are a careful math tutor."},
            {"role": "user", "content": "Solve: 12 * 7 = ?"},
        ],
    ),
    (
        "multi_turn",
        [
            {"role": "user", "content": "Hi there!"},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": "Name a prime number.\nJust one, please."},
        ],
    ),
    (
        "assistant_thinking",
        [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "What is 3+5?"},
            {"role": "assistant", "content": "<think>\n3 plus 5 is 8.\n</think>\n\nThe answer is \\boxed{8}."},
            {"role": "user", "content": "And 8*2? Use \"quotes\" & <tags> ünïcödé."},
        ],
    ),
    (
        "ends_with_assistant",
        [
            {"role": "user", "content": "Say yes."},
            {"role": "assistant", "content": "<think>\nEasy.\n</think>\n\nyes"},
        ],
    ),
]

ENCODE_TEXTS = [
    "Hello world!",
    "What is 2+2? 12345 and 3.14159",
    "  leading spaces\n\nnewlines\tand tabs  ",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "héllo wörld 😀 日本語 don't I'll WE'RE",
]

SCORE_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\nThe answer is \\boxed{4}.<|im_end|>\n",
    "12345 + 678 = 13023\nnew line\ttab ünïcödé",
]

GREEDY_PROMPTS = [
    [{"role": "user", "content": "What is 2+2?"}],
    [{"role": "user", "content": "Tell me a story about a fox."}],
    [{"role": "user", "content": "List three colours."}],
    [{"role": "user", "content": "Count to five."}],
    [{"role": "user", "content": "Why is the sky blue?"}],
    [{"role": "user", "content": "Translate 'cat' to French."}],
]

# Training text for the tiny Llama tokenizer (byte-level BPE, 512 tokens).
TINY_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is 2+2? The answer is 4. What is 3+5? The answer is 8.",
    "User: Please solve the problem step by step.\nAssistant: Sure, let us think.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 100 1000 3.14159 13023",
    "The answer is \\boxed{42}. <think> reasoning </think>",
    "Tell me a story about a fox. Once upon a time there was a clever fox in the forest.",
    "List three colours: red, green and blue. Count to five: one, two, three, four, five.",
    "Why is the sky blue? Because of Rayleigh scattering of sunlight in the atmosphere.",
]
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def dump(path: Path, obj):
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n")


def compact_json_file(path: Path):
    # tokenizer.json pretty-printed is 2.5x larger; content is identical.
    obj = json.loads(path.read_text())
    path.write_text(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))


# ---------------------------------------------------------------- tokenizer / chat template


def tokenizer_reference():
    from transformers import AutoTokenizer

    ref = {}
    tok = AutoTokenizer.from_pretrained(str(QWEN3_TOK))
    ref["qwen3_chat"] = [
        {
            "name": name,
            "messages": msgs,
            "add_generation_prompt": agp,
            "expected": tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=agp),
        }
        for name, msgs in CONVERSATIONS
        for agp in (False, True)
    ]
    ref["qwen3_encode"] = [{"text": t, "ids": tok.encode(t, add_special_tokens=True)} for t in ENCODE_TEXTS]
    if (ASSETS / GGUF_NAME).exists():
        gt = AutoTokenizer.from_pretrained(str(ASSETS), gguf_file=GGUF_NAME)
        ref["smollm2_gguf_encode"] = [
            {
                "text": t,
                "ids": gt.encode(t, add_special_tokens=True),
                "decoded_skip_special": gt.decode(gt.encode(t, add_special_tokens=False), skip_special_tokens=True),
            }
            for t in ENCODE_TEXTS
        ]
        ref["smollm2_gguf_chat"] = [
            {
                "name": name,
                "messages": msgs,
                "add_generation_prompt": agp,
                "expected": gt.apply_chat_template(msgs, tokenize=False, add_generation_prompt=agp),
            }
            for name, msgs in CONVERSATIONS[:3]
            for agp in (False, True)
        ]
        ref["smollm2_gguf_eos_token_id"] = gt.eos_token_id
        ref["smollm2_gguf_vocab_size"] = len(gt)
    dump(OUT / "tokenizer_reference.json", ref)


def gguf_reference():
    path = ASSETS / GGUF_NAME
    if not path.exists():
        print(f"skipping gguf_reference.json: {path} missing", file=sys.stderr)
        return
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(ASSETS), gguf_file=GGUF_NAME, dtype=torch.float32)
    sd = model.state_dict()
    names = [
        "model.embed_tokens.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.0.self_attn.v_proj.weight",
        "model.layers.0.self_attn.o_proj.weight",
        "model.layers.0.mlp.gate_proj.weight",
        "model.layers.0.mlp.up_proj.weight",
        "model.layers.0.mlp.down_proj.weight",
        "model.layers.0.input_layernorm.weight",
        "model.layers.0.post_attention_layernorm.weight",
        "model.layers.29.self_attn.q_proj.weight",
        "model.layers.29.self_attn.k_proj.weight",
        "model.norm.weight",
    ]
    tensors = {}
    for n in names:
        w = sd[n].detach().to(torch.float64)
        w2 = w if w.dim() == 2 else w.unsqueeze(0)
        tensors[n] = {
            "shape": list(sd[n].shape),
            "sum": w.sum().item(),
            "abs_sum": w.abs().sum().item(),
            # Row sums catch a wrong q/k row permutation, which leaves sum and abs_sum unchanged.
            "row_sums_first_64": w2.sum(dim=1)[:64].tolist(),
            "rows": {str(r): w2[r, :8].tolist() for r in (0, 1, 33) if r < w2.shape[0]},
        }
    # End-to-end check of the dequantised model: per-token log-probs of a chat-formatted text.
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(ASSETS), gguf_file=GGUF_NAME)
    text = SCORE_TEXTS[1]
    ids = tok.encode(text, add_special_tokens=False)
    logprobs = score(model.eval(), torch.tensor([ids]))
    c = model.config
    dump(
        OUT / "gguf_reference.json",
        {
            "file": GGUF_NAME,
            "tied": "lm_head.weight" not in dict(model.named_parameters()),
            "config": {
                "vocab_size": c.vocab_size,
                "hidden_size": c.hidden_size,
                "intermediate_size": c.intermediate_size,
                "num_hidden_layers": c.num_hidden_layers,
                "num_attention_heads": c.num_attention_heads,
                "num_key_value_heads": c.num_key_value_heads,
                "rope_theta": c.rope_parameters["rope_theta"] if getattr(c, "rope_parameters", None) else c.rope_theta,
                "rms_norm_eps": c.rms_norm_eps,
                "max_position_embeddings": c.max_position_embeddings,
            },
            "tensors": tensors,
            "score": {"text": text, "ids": ids, "logprobs": logprobs},
        },
    )


# ---------------------------------------------------------------- tiny models


def randomise_norms(model, gen):
    # Ones would hide a norm weight that fails to load.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))


def make_tiny_qwen3(dst: Path):
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM, GenerationConfig

    tok = AutoTokenizer.from_pretrained(str(QWEN3_TOK))
    cfg = Qwen3Config(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        max_position_embeddings=512,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        initializer_range=0.4,
        bos_token_id=None,
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(1234)
    model = Qwen3ForCausalLM(cfg).to(torch.float32).eval()
    randomise_norms(model, torch.Generator().manual_seed(99))
    model.save_pretrained(str(dst), safe_serialization=True)
    tok.save_pretrained(str(dst))
    # eos as a list, so the Rust loader's merge of generation_config.json is exercised.
    GenerationConfig(eos_token_id=[cfg.eos_token_id, tok.pad_token_id], pad_token_id=tok.pad_token_id).save_pretrained(str(dst))
    return model, tok


def make_tiny_llama(dst: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, GenerationConfig

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bt = Tokenizer(models.BPE())
    bt.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bt.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bt.train_from_iterator(TINY_CORPUS * 4, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bt, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None
    )
    tok.chat_template = CHATML_TEMPLATE
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rope_theta=10_000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        initializer_range=0.4,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(4321)
    model = LlamaForCausalLM(cfg).to(torch.float32).eval()
    randomise_norms(model, torch.Generator().manual_seed(98))
    model.save_pretrained(str(dst), safe_serialization=True)
    tok.save_pretrained(str(dst))
    GenerationConfig(eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id).save_pretrained(str(dst))
    return model, tok


def make_adapter(model, dst: Path, seed: int):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0, target_modules=TARGETS, bias="none")
    peft_model = get_peft_model(model, cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            # Default init has B = 0, which would make the adapter a no-op; both A and B non-zero here.
            if "lora_A" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
            elif "lora_B" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    peft_model.save_pretrained(str(dst), safe_serialization=True)
    return peft_model.eval()


def token_logprobs(logits, ids, temperature=1.0):
    lp = torch.log_softmax(logits[0, :-1].float() / temperature, dim=-1)
    return lp.gather(1, ids[0, 1:, None])[:, 0]


def score(model, ids, temperature=1.0):
    with torch.no_grad():
        return token_logprobs(model(ids).logits, ids, temperature).tolist()


def greedy(model, prompt_ids, n):
    """Greedy tokens plus the smallest top-1/top-2 logit gap (near-ties make parity flaky)."""
    ids = prompt_ids.clone()
    out, min_gap = [], float("inf")
    with torch.no_grad():
        for _ in range(n):
            logits = model(ids).logits[0, -1]
            top = torch.topk(logits, 2)
            min_gap = min(min_gap, (top.values[0] - top.values[1]).item())
            nxt = top.indices[0].item()
            out.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return out, min_gap


def reference_for(name, base, peft_model, tok):
    entry = {"texts": [], "greedy": [], "temperature": TEMPERATURE}
    for text in SCORE_TEXTS:
        ids = tok.encode(text, add_special_tokens=False)
        t = torch.tensor([ids])
        with peft_model.disable_adapter():
            base_lp = score(peft_model, t)
        entry["texts"].append(
            {
                "text": text,
                "ids": ids,
                "logprobs_base": base_lp,
                "logprobs_adapter": score(peft_model, t),
                "logprobs_adapter_temperature": score(peft_model, t, TEMPERATURE),
            }
        )
    # Prompts whose greedy path has a clear argmax at every step, both with and without adapter.
    for msgs in GREEDY_PROMPTS:
        prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        pids = tok.encode(prompt, add_special_tokens=False)
        pt = torch.tensor([pids])
        with peft_model.disable_adapter():
            base_tokens, gap_b = greedy(peft_model, pt, GREEDY_TOKENS)
        lora_tokens, gap_a = greedy(peft_model, pt, GREEDY_TOKENS)
        if min(gap_a, gap_b) < 1e-3:
            print(f"{name}: skipping greedy prompt {msgs[0]['content']!r} (gap {min(gap_a, gap_b):.2e})")
            continue
        entry["greedy"].append(
            {"prompt": prompt, "prompt_ids": pids, "base": base_tokens, "adapter": lora_tokens, "min_logit_gap": min(gap_a, gap_b)}
        )
        if len(entry["greedy"]) == 3:
            break
    assert len(entry["greedy"]) >= 2, f"{name}: too few greedy prompts with a clear argmax"

    # d/d(LoRA) of sum(log-probs) of the first text, adapter on.
    ids = torch.tensor([tok.encode(SCORE_TEXTS[0], add_special_tokens=False)])
    peft_model.zero_grad()
    for n_, p in peft_model.named_parameters():
        p.requires_grad_("lora_" in n_)
    loss = token_logprobs(peft_model(ids).logits, ids).sum()
    loss.backward()
    grads = {}
    for n_, p in peft_model.named_parameters():
        if "lora_" in n_:
            key = n_.replace(".default.weight", ".weight")
            grads[key] = {"shape": list(p.shape), "values": p.grad.flatten().tolist()}
    entry["lora_grad_text"] = SCORE_TEXTS[0]
    entry["lora_grad_loss"] = loss.item()
    entry["lora_grads"] = grads
    return entry


def main():
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    if not QWEN3_TOK.exists():
        sys.exit(f"{QWEN3_TOK} missing: run scripts/fetch-assets.sh first")
    OUT.mkdir(parents=True, exist_ok=True)
    tokenizer_reference()
    gguf_reference()
    if sys.argv[1:] == ["--references-only"]:
        return

    reference = {"lora": {"r": LORA_R, "alpha": LORA_ALPHA, "target_modules": TARGETS}}
    for name, make, seed in (("qwen3", make_tiny_qwen3, 7), ("llama", make_tiny_llama, 8)):
        mdir, adir = OUT / f"tiny-{name}", OUT / f"tiny-{name}-lora"
        for d in (mdir, adir):
            shutil.rmtree(d, ignore_errors=True)
        base, tok = make(mdir)
        compact_json_file(mdir / "tokenizer.json")
        peft_model = make_adapter(base, adir, seed)
        reference[name] = reference_for(name, base, peft_model, tok)
        reference[name]["model_dir"] = f"tiny-{name}"
        reference[name]["adapter_dir"] = f"tiny-{name}-lora"
    dump(OUT / "parity_reference.json", reference)
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"fixtures written to {OUT} ({total / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
