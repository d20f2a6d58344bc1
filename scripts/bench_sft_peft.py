"""The PEFT side of scripts/bench-sft.sh: LoRA training throughput and peak RSS of
transformers + PEFT on a random model of the same shape as `asrl-tools bench sft`.

sft:  one sequence of --seq tokens, labels = input_ids (loss on every label).
grpo: one batch of --group-size rows of a shared --prompt-tokens prompt and --completion-tokens
      completion tokens; logits only for the completion positions (TRL's logits_to_keep), the
      GRPO clipped loss (one pass, so the old policy is the detached current one, as TRL does
      with num_iterations = 1), per-sequence token means averaged over the group.
Both: LoRA r / alpha 2r on the 7 projections, dropout 0, AdamW, grad-norm clip 1.0, f32.

Prints `peft_*` lines that bench-sft.sh parses. Peak RSS: ru_maxrss (whole process) and, on
Linux, the high-water mark since the model was built (/proc/self/clear_refs reset).
"""

import argparse
import os
import resource
import sys
import time

import peft
import torch
import transformers
from peft import LoraConfig, get_peft_model

SHAPES = {
    "smollm2-135m": ("LlamaConfig", "LlamaForCausalLM", dict(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, head_dim=64, rope_theta=100000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=True, max_position_embeddings=8192)),
    "qwen3-0.6b": ("Qwen3Config", "Qwen3ForCausalLM", dict(
        vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
        num_attention_heads=16, num_key_value_heads=8, head_dim=128, rope_theta=1000000.0,
        rms_norm_eps=1e-6, tie_word_embeddings=True, max_position_embeddings=40960)),
}
MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def status_mib(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def maxrss_mib():
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024.0 * 1024.0) if sys.platform == "darwin" else r / 1024.0


def selective_log_softmax(logits, index):
    """TRL's f32 path: gather minus a per-row logsumexp, never a full log-softmax tensor."""
    picked = torch.gather(logits, -1, index.unsqueeze(-1)).squeeze(-1)
    lse = torch.stack([torch.logsumexp(row, dim=-1) for row in logits])
    return picked - lse


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=sorted(SHAPES), default="smollm2-135m")
    ap.add_argument("--mode", choices=["sft", "grpo"], default="sft")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--group-size", type=int, default=6)
    ap.add_argument("--prompt-tokens", type=int, default=1700)
    ap.add_argument("--completion-tokens", type=int, default=300)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--checkpointing", choices=["off", "on"], default="off")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg_name, model_name, shape = SHAPES[a.shape]
    cfg = getattr(transformers, cfg_name)(**shape)
    model = getattr(transformers, model_name)(cfg).float()
    if a.checkpointing == "on":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = get_peft_model(model, LoraConfig(r=a.rank, lora_alpha=2 * a.rank, lora_dropout=0.0,
                                             target_modules=MODULES))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    model_rss, load_peak = status_mib("VmRSS:"), maxrss_mib()
    reset = reset_peak()

    if a.mode == "sft":
        ids = torch.randint(0, cfg.vocab_size, (1, a.seq))
        rows, tokens_per_row, scored = 1, a.seq, a.seq - 1

        def forward():
            return model(input_ids=ids, labels=ids).loss
    else:
        g, p, c = a.group_size, a.prompt_tokens, a.completion_tokens
        prompt = torch.randint(0, cfg.vocab_size, (1, p)).expand(g, p)
        completion = torch.randint(0, cfg.vocab_size, (g, c))
        ids = torch.cat([prompt, completion], dim=1)
        rows, tokens_per_row, scored = g, p + c, g * c
        rewards = torch.arange(g, dtype=torch.float32) / (g - 1)
        adv = ((rewards - rewards.mean()) / (rewards.std() + 1e-4)).unsqueeze(1)

        def completion_logprobs():
            # Positions p-1 .. p+c-2 predict the completion (TRL: logits_to_keep = c + 1).
            logits = model(input_ids=ids, logits_to_keep=c + 1).logits[:, :-1, :]
            return selective_log_softmax(logits, completion)

        def forward():
            lp = completion_logprobs()
            ratio = torch.exp(lp - lp.detach())
            per_token = -torch.min(ratio * adv, torch.clamp(ratio, 0.8, 1.2) * adv)
            return per_token.mean(dim=1).mean()

    def step():
        forward().backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    with torch.no_grad():
        if a.mode == "sft":
            model(input_ids=ids)
        else:
            completion_logprobs()
    fwd_s = time.perf_counter() - t0
    for _ in range(a.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    step_s = (time.perf_counter() - t0) / a.steps
    train_peak = status_mib("VmHWM:") if reset else None
    peak = max(load_peak, maxrss_mib())

    def mib(x):
        return "n/a" if x is None else f"{x:.0f}"

    print(f"peft: transformers {transformers.__version__} peft {peft.__version__} torch {torch.__version__} "
          f"threads={a.threads} attn={model.config._attn_implementation} checkpointing={a.checkpointing}")
    print(f"peft_mode={a.mode} rows={rows} tokens_per_row={tokens_per_row} scored_tokens={scored} "
          f"steps={a.steps} warmup={a.warmup}")
    print(f"peft_step_seconds={step_s:.3f} peft_forward_seconds={fwd_s:.3f}")
    print(f"peft_tokens_per_second={rows * tokens_per_row / step_s:.1f}")
    print(f"peft_model_rss_mib={mib(model_rss)} peft_train_peak_rss_mib={mib(train_peak)}")
    print(f"peft_peak_rss_mib={peak:.0f}")


if __name__ == "__main__":
    main()
