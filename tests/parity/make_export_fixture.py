#!/usr/bin/env python3
"""Writes tests/fixtures/export_reference.json: what transformers (and llama.cpp's `gguf` package)
make of the models `asrl-learner export` writes (CI never runs this; tests/tests/export.rs re-exports
the same models and compares against it).

For each export below it runs the learner's `export` on the committed tiny fixtures, then records:
  files, config_keys        the directory listing and config.json keys
  tokenizer                 transformers' AutoTokenizer of the exported dir: class, ids of TEXTS and
                            of the rendered chat prompt, special token ids
  logprobs                  AutoModelForCausalLM(dtype=float32) per-token log-probs of those ids
  gguf.metadata / tensors   the GGUF parsed by gguf.GGUFReader (key -> type and value / length)
  gguf.transformers         transformers' own GGUF loading (gguf_file=...) log-probs and ids, where
                            transformers can load the architecture from GGUF (not tiny Qwen3: its
                            GGUF mapping ignores attention.key_length and assumes head_dim 128)

How to run (needs torch, transformers>=5, accelerate, gguf; no network), from the repository root:
  scripts/setup-peers.sh                       # or any venv with torch, transformers, accelerate, gguf
  cargo build -p asrl-learner
  .venv-peers/bin/python tests/parity/make_export_fixture.py [--learner PATH] [--json-out PATH]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import gguf
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"

TEXTS = [
    "Hello world! 12345 and 3.14159",
    "The answer is \\boxed{8}.\nDone?",
]
CONVERSATION = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "What is 3+5?"},
]
EXPORTS = [
    {"name": "qwen3-f32", "model": "tiny-qwen3", "adapter": "tiny-qwen3-lora",
     "args": ["--dtype", "f32", "--gguf", "q8_0"], "gguf_file": "qwen3-f32-q8_0.gguf", "transformers_gguf": False},
    {"name": "llama-bf16-sharded", "model": "tiny-llama", "adapter": "tiny-llama-lora",
     "args": ["--dtype", "bf16", "--max-shard-size", "20KB", "--gguf", "f16"],
     "gguf_file": "llama-bf16-sharded-f16.gguf", "transformers_gguf": True},
]


def logprobs(model, ids):
    t = torch.tensor([ids])
    with torch.no_grad():
        lp = torch.log_softmax(model(t).logits[0, :-1].float(), -1).gather(1, t[0, 1:, None])[:, 0]
    return lp.tolist()


def scored(model_dir, **kw):
    tok = AutoTokenizer.from_pretrained(model_dir, **kw)
    ids = [tok(t, add_special_tokens=False).input_ids for t in TEXTS]
    chat = None
    if tok.chat_template is not None:
        chat = tok.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)
        ids.append(tok(chat, add_special_tokens=False).input_ids)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, **kw).eval()
    return tok, model, ids, chat, [logprobs(model, x) for x in ids]


def jsonable(v):
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if hasattr(v, "item"):
        return v.item()
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v


def gguf_summary(path):
    reader = gguf.GGUFReader(path)
    metadata = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        kind = field.types[0].name
        if kind == "ARRAY":
            values = field.contents()
            metadata[key] = {"type": kind, "item_type": field.types[1].name, "len": len(values),
                             "first": jsonable(values[:3])}
        elif key == "tokenizer.chat_template":
            metadata[key] = {"type": kind, "len": len(field.contents())}
        else:
            metadata[key] = {"type": kind, "value": jsonable(field.contents())}
    tensors = {t.name: {"type": t.tensor_type.name, "shape": [int(x) for x in t.shape]} for t in reader.tensors}
    return {"version": int(reader.fields["GGUF.version"].contents()), "metadata": metadata, "tensors": tensors}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--learner", default=os.environ.get("ASRL_LEARNER", str(ROOT / "target/debug/asrl-learner")))
    ap.add_argument("--json-out", default=str(FIXTURES / "export_reference.json"))
    args = ap.parse_args()
    torch.manual_seed(0)
    out = {
        "generator": "tests/parity/make_export_fixture.py",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "gguf": getattr(gguf, "__version__", "unknown")},
        "texts": TEXTS,
        "conversation": CONVERSATION,
        "exports": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for e in EXPORTS:
            d = Path(tmp) / e["name"]
            cmd = [args.learner, "export", "--model", str(FIXTURES / e["model"]),
                   "--adapter", str(FIXTURES / e["adapter"]), "--out", str(d), *e["args"]]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            tok, model, ids, chat, lps = scored(d)
            gen = model.generation_config
            rec = {
                "name": e["name"], "model": e["model"], "adapter": e["adapter"], "args": e["args"],
                "files": sorted(os.listdir(d)),
                "config_keys": sorted(json.loads((d / "config.json").read_text()).keys()),
                "tokenizer": {
                    "class": type(tok).__name__, "ids": ids, "chat_prompt": chat,
                    "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
                    "pad_token_id": tok.pad_token_id,
                },
                "generation_eos_token_id": gen.eos_token_id,
                "model_dtype_loaded": str(model.dtype),
                "logprobs": lps,
            }
            g = d / e["gguf_file"]
            rec["gguf"] = {"file": e["gguf_file"], **gguf_summary(g)}
            if e["transformers_gguf"]:
                gtok, _, gids, _, glps = scored(d, gguf_file=e["gguf_file"])
                rec["gguf"]["transformers"] = {"ids": gids, "logprobs": glps}
            out["exports"].append(rec)
            print(f"{e['name']}: {len(rec['files'])} files, {sum(len(x) for x in lps)} log-probs", file=sys.stderr)
    Path(args.json_out).write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.json_out}", file=sys.stderr)


if __name__ == "__main__":
    main()
