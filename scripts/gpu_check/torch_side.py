"""The torch side of scripts/gpu-check.sh: transformers/PEFT references on the same device.

  torch_side.py probe DEVICE
      exit 0 and print the torch version when torch, transformers and peft import and DEVICE
      works; else print the reason and exit 3.
  torch_side.py parity --device D --cases FILE --out FILE
      FILE lines: "name model_dir dtype rust_dir greedy" (greedy: check|info|off); rust_dir holds
      `asrl-tools parity` output. Writes a JSON list of checks; exit 0 even when a check fails.
  torch_side.py generate --device D --model DIR --dtype T -n N --max-new M --prompts FILE --out FILE
  torch_side.py train --device D --model DIR --dtype T --rank R --seq S --steps K
                      --grpo-rows B --grpo-prompt P --grpo-completion C --out FILE

Tolerances (max abs log-prob error, worst relative L2 gradient error): 1e-3 f32, 2e-2 bf16;
a bf16 check also passes when our error against torch's f32 result is at most twice torch's own
bf16 error against it (see `judge`).
"""
import argparse
import json
import sys
import time

TOL = {"f32": 1e-3, "bf16": 2e-2}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def probe(device):
    try:
        import torch
        import transformers  # noqa: F401
        import peft  # noqa: F401
        torch.zeros(1, device=device)
    except Exception as e:  # any import or device failure means "no reference here"
        print(f"{type(e).__name__}: {e}".splitlines()[0])
        sys.exit(3)
    print(f"torch {torch.__version__}")


def torch_dtype(name):
    import torch
    return {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[name]


def sync(device):
    import torch
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def load_model(path, dtype, device):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype)).to(device)


def logprobs(model, ids):
    import torch
    logits = model(ids).logits[0, :-1].float()
    return torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None])[:, 0]


def greedy(model, prompt, n, device):
    """n arg-max tokens after prompt, eos not special (as `asrl-tools parity` does)."""
    import torch
    out, past = [], None
    x = torch.tensor([prompt], device=device)
    with torch.no_grad():
        for _ in range(n):
            r = model(x, past_key_values=past, use_cache=True)
            past = r.past_key_values
            t = int(r.logits[0, -1].float().argmax())
            out.append(t)
            x = torch.tensor([[t]], device=device)
    return out


def references(model_dir, dtype, rust, device, greedy_mode):
    """torch's base/LoRA log-probs, LoRA gradients (by PEFT name) and greedy tokens."""
    import torch
    from peft import PeftModel

    model = load_model(model_dir, dtype, device).eval()
    ids = torch.tensor([rust["tokens"]], device=device)
    out = {}
    with torch.no_grad():
        out["base"] = logprobs(model, ids)
    if greedy_mode != "off" and rust["greedy_tokens"]:
        out["greedy"] = greedy(model, rust["greedy_prompt"], len(rust["greedy_tokens"]), device)
    # PEFT wraps the base in place, so the base-model references come first.
    pm = PeftModel.from_pretrained(model, f"{rust['dir']}/adapter", is_trainable=True)
    pm.eval()  # dropout is 0 in the adapter anyway
    lp = logprobs(pm, ids)
    out["lora"] = lp.detach()
    lp.sum().backward()
    out["grads"] = {n.replace(".default.weight", ".weight"): p.grad.float()
                    for n, p in pm.named_parameters() if "lora_" in n}
    del pm, model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return out


def errors(ours, ref):
    """(max abs error, max relative error) of log-probs."""
    import torch
    ours = torch.as_tensor(ours, dtype=torch.float32, device=ref.device)
    diff = (ours - ref.float()).abs()
    return diff.max().item(), (diff / ref.float().abs().clamp_min(1e-6)).max().item()


def grad_errors(ours, ref):
    """(worst relative L2 error over matrices, max abs error) of gradients."""
    worst, max_abs = 0.0, 0.0
    for name, r in ref.items():
        o = ours[name].to(r.device)
        worst = max(worst, ((o - r).norm() / r.norm().clamp_min(1e-12)).item())
        max_abs = max(max_abs, (o - r).abs().max().item())
    return worst, max_abs


def judge(check, err, tol, ours_vs_f32=None, torch_vs_f32=None):
    """Pass within tol of torch at the same dtype. In half precision, also pass when our error
    against torch's f32 result is at most twice torch's own half-precision error against it:
    two correct bf16 implementations round differently, by more than 2e-2 on large logits."""
    ok = err <= tol
    if ours_vs_f32 is not None:
        check["ours_vs_torch_f32"] = ours_vs_f32
        check["torch_vs_torch_f32"] = torch_vs_f32
        ok = ok or ours_vs_f32 <= 2 * torch_vs_f32
    check["status"] = "pass" if ok else "fail"
    return check


def parity_case(name, model_dir, dtype, rust_dir, greedy_mode, device):
    from safetensors.torch import load_file

    tol = TOL[dtype]
    rust = json.load(open(f"{rust_dir}/parity.json"))
    rust["dir"] = rust_dir
    ref = references(model_dir, dtype, rust, device, greedy_mode)
    f32 = references(model_dir, "f32", rust, device, "off") if dtype != "f32" else None
    checks = []
    for key, what in (("base_logprobs", "base log-probs"), ("lora_logprobs", "LoRA log-probs (scoring path)"),
                      ("train_logprobs", "LoRA log-probs (training path)")):
        r = ref["lora" if key != "base_logprobs" else "base"]
        max_abs, max_rel = errors(rust[key], r)
        c = {"name": f"{name} {what}", "max_abs": max_abs, "max_rel": max_rel, "tol": tol, "metric": "max abs error"}
        if f32:
            r32 = f32["lora" if key != "base_logprobs" else "base"]
            judge(c, max_abs, tol, errors(rust[key], r32)[0], errors(r.float().tolist(), r32)[0])
        else:
            judge(c, max_abs, tol)
        checks.append(c)
    if "greedy" in ref:
        ours, theirs = rust["greedy_tokens"], ref["greedy"]
        same = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), len(theirs))
        status = "pass" if same == len(theirs) else ("fail" if greedy_mode == "check" else "info")
        checks.append({"name": f"{name} greedy tokens", "status": status, "matching_prefix": same,
                       "tokens": len(theirs), "metric": "matching prefix" + (
                           " (info only: random weights give near-ties)" if greedy_mode == "info" else "")})
    grads = load_file(f"{rust_dir}/grads.safetensors")
    if set(grads) != set(ref["grads"]):
        raise SystemExit(f"{name}: PEFT's LoRA matrices differ from asrl-tools' ({len(ref['grads'])} vs {len(grads)})")
    worst, max_abs = grad_errors(grads, ref["grads"])
    c = {"name": f"{name} LoRA gradients ({len(grads)} matrices)", "max_rel": worst, "max_abs": max_abs,
         "tol": tol, "metric": "worst relative L2 error"}
    if f32:
        judge(c, worst, tol, grad_errors(grads, f32["grads"])[0], grad_errors(ref["grads"], f32["grads"])[0])
    else:
        judge(c, worst, tol)
    checks.append(c)
    return checks


def parity(a):
    checks = []
    for line in open(a.cases):
        if not line.strip():
            continue
        name, model_dir, dtype, rust_dir, greedy_mode = line.split()
        t = time.time()
        case = parity_case(name, model_dir, dtype, rust_dir, greedy_mode, a.device)
        for c in case:
            print(f"{c['status']:5} {c['name']}: " + ", ".join(f"{k}={c[k]:.3g}" for k in ("max_abs", "max_rel", "matching_prefix") if k in c))
        case[-1]["torch_seconds"] = time.time() - t
        checks += case
        # After every case: a part killed at its budget still reports the cases done.
        json.dump(checks, open(a.out, "w"), indent=1)


def generate(a):
    import torch
    from transformers import AutoTokenizer
    from transformers.utils import logging
    logging.disable_progress_bar()
    logging.set_verbosity_error()
    tok = AutoTokenizer.from_pretrained(a.model)
    model = load_model(a.model, a.dtype, a.device).eval()
    prompts = json.load(open(a.prompts))
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p in prompts]
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    enc = tok(texts, return_tensors="pt", add_special_tokens=False, padding=True).to(a.device)
    gen = dict(do_sample=True, temperature=0.7, top_p=0.95, top_k=0, num_return_sequences=a.n,
               pad_token_id=tok.pad_token_id)
    with torch.inference_mode():
        model.generate(**enc, max_new_tokens=8, min_new_tokens=8, **gen)
        sync(a.device)
        torch.manual_seed(0)
        t = time.time()
        out = model.generate(**enc, max_new_tokens=a.max_new, min_new_tokens=a.max_new, **gen)
        sync(a.device)
        secs = time.time() - t
    total = (out.shape[1] - enc.input_ids.shape[1]) * out.shape[0]
    res = {"tokens": total, "seconds": secs, "tokens_per_s": total / secs}
    print(json.dumps(res))
    json.dump(res, open(a.out, "w"))


def train(a):
    import torch
    from peft import LoraConfig, get_peft_model
    cuda = a.device.startswith("cuda")
    model = load_model(a.model, a.dtype, a.device)
    model = get_peft_model(model, LoraConfig(r=a.rank, lora_alpha=2 * a.rank, lora_dropout=0.0,
                                             target_modules=TARGETS, task_type="CAUSAL_LM"))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    res = {}

    def step(loss_fn):
        loss_fn().backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def timed(name, tokens, loss_fn):
        step(loss_fn)  # warm-up (allocator, kernels, optimiser state)
        sync(a.device)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t = time.time()
        for _ in range(a.steps):
            step(loss_fn)
        sync(a.device)
        dt = (time.time() - t) / a.steps
        res[name] = {"tokens_per_s": tokens / dt, "step_s": dt,
                     "peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None}
        print(name, json.dumps(res[name]), flush=True)

    ids = torch.randint(0, vocab, (1, a.seq), generator=g).to(a.device)
    timed("sft", a.seq, lambda: model(input_ids=ids, labels=ids).loss)
    rows, p, c = a.grpo_rows, a.grpo_prompt, a.grpo_completion
    if rows > 0:
        gids = torch.randint(0, vocab, (rows, p + c), generator=g).to(a.device)
        adv = torch.randn(rows, generator=g).to(a.device)

        def grpo_loss():
            # Only the completion positions reach the vocabulary projection, as in TRL's GRPO.
            logits = model(input_ids=gids, logits_to_keep=c + 1).logits[:, :-1].float()
            lp = torch.log_softmax(logits, -1).gather(-1, gids[:, p:, None])[..., 0]
            return -(adv[:, None] * torch.exp(lp - lp.detach())).mean()

        timed("grpo", rows * (p + c), grpo_loss)
    json.dump(res, open(a.out, "w"))


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "probe":
        return probe(sys.argv[2] if len(sys.argv) > 2 else "cpu")
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("parity")
    p.add_argument("--cases", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--model", required=True)
    g.add_argument("--dtype", default="bf16")
    g.add_argument("-n", type=int, default=6)
    g.add_argument("--max-new", type=int, default=300)
    g.add_argument("--prompts", required=True)
    t = sub.add_parser("train")
    t.add_argument("--model", required=True)
    t.add_argument("--dtype", default="bf16")
    t.add_argument("--rank", type=int, default=32)
    t.add_argument("--seq", type=int, default=2000)
    t.add_argument("--steps", type=int, default=3)
    t.add_argument("--grpo-rows", type=int, default=6)
    t.add_argument("--grpo-prompt", type=int, default=1700)
    t.add_argument("--grpo-completion", type=int, default=300)
    for s in (p, g, t):
        s.add_argument("--device", default="cpu")
        s.add_argument("--out", required=True)
        s.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    a = ap.parse_args()
    if a.threads:
        import torch
        torch.set_num_threads(a.threads)
    {"parity": parity, "generate": generate, "train": train}[a.cmd](a)


if __name__ == "__main__":
    main()
