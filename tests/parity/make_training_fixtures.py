"""Reference values for the learner's training math (learner/src/training), from torch.

Writes tests/fixtures/training/{sft_loss,grpo_loss,adamw}.json. Deterministic (fixed seeds).
Run: .venv-peers/bin/python tests/parity/make_training_fixtures.py  (scripts/setup-peers.sh)

The GRPO formulas are TRL's GRPOTrainer._compute_loss (token-level importance sampling,
two-sided `delta` cap, k3 KL, loss types grpo / dapo / dr_grpo) and its advantage code
(scale_rewards="group", unbiased std, eps 1e-4); AdamW and clipping are torch's own.
"""

import json
import pathlib

import torch

OUT = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "training"
torch.manual_seed(1234)


def r(t):
    """Rounded nested lists keep the fixtures small and diff-able."""
    return [round(float(x), 7) for x in t.flatten().tolist()]


def q(t):
    """Inputs are stored rounded; compute the references from exactly what Rust will read."""
    return torch.tensor(r(t), dtype=torch.float32).view(t.shape)


def sft_fixture():
    b, t, v = 3, 7, 11
    logits = q(torch.randn(b, t, v, dtype=torch.float32) * 2.0)
    ids = torch.randint(0, v, (b, t))
    # prompt lengths 2, 3, 1; sequence lengths 7, 5, 6 (right padding after them)
    lens, prompts = [7, 5, 6], [2, 3, 1]
    mask = torch.zeros(b, t)
    for i in range(b):
        mask[i, prompts[i]:lens[i]] = 1.0
        ids[i, lens[i]:] = 0
    labels = ids.clone()
    labels[mask == 0] = -100
    logits.requires_grad_(True)
    # transformers ForCausalLMLoss: shift, ignore_index=-100, mean over label tokens
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, v), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="mean")
    loss.backward()
    return {
        "shape": [b, t, v], "logits": r(logits.detach()), "input_ids": ids.flatten().tolist(),
        "label_mask": r(mask), "loss": loss.item(), "tokens": int(mask[:, 1:].sum()),
        "grad_logits": r(logits.grad),
    }


def grpo_case(logits, targets, mask, behaviour, ref, adv, temperature, loss_type, beta, eps_low,
              eps_high, delta, max_completion_length):
    logits = logits.clone().requires_grad_(True)
    logps = torch.log_softmax(logits / temperature, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    advantages = adv.unsqueeze(1)
    coef_1 = torch.exp(logps - behaviour)
    if beta != 0.0:
        per_token_kl = torch.exp(ref - logps) - (ref - logps) - 1
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    if delta is not None:
        coef_1 = torch.clamp(coef_1, max=delta)
    per_token_loss = -torch.min(coef_1 * advantages, coef_2 * advantages)
    if beta != 0.0:
        per_token_loss = per_token_loss + beta * per_token_kl
    if loss_type == "grpo":
        loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "dr_grpo":
        loss = (per_token_loss * mask).sum() / (per_token_loss.size(0) * max_completion_length)
    elif loss_type == "dapo":
        loss = (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
    loss.backward()
    ratio = torch.exp(logps.detach() - behaviour)
    low = ((ratio < 1 - eps_low) & (advantages < 0) & (mask > 0)).sum().item()
    high = ((ratio > 1 + eps_high) & (advantages > 0) & (mask > 0)).sum().item()
    return {
        "loss_type": loss_type, "beta": beta, "delta": delta, "loss": loss.item(),
        "grad_logits": r(logits.grad), "clipped_low": int(low), "clipped_high": int(high),
    }


def grpo_fixture():
    b, t, v = 4, 6, 9
    temperature, eps_low, eps_high, max_len = 0.7, 0.2, 0.28, 8
    logits = q(torch.randn(b, t, v) * 1.5)
    targets = torch.randint(0, v, (b, t))
    mask = torch.ones(b, t)
    mask[1, 4:] = 0
    mask[3, 2:] = 0
    with torch.no_grad():
        logps = torch.log_softmax(logits / temperature, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        # behaviour within ±0.6 nats: ratios between 0.55 and 1.8, both clip sides hit
        behaviour = logps + (torch.rand(b, t) * 1.2 - 0.6)
        # one token far off-policy so the delta cap matters
        behaviour[0, 1] = logps[0, 1] - 2.5
        ref = q(logps + torch.randn(b, t) * 0.3)
        behaviour = q(behaviour)
    # TRL advantages for two groups of two
    rewards = torch.tensor([1.0, 0.0, 0.25, 0.75])
    grouped = rewards.view(-1, 2)
    adv = q((rewards - grouped.mean(1).repeat_interleave(2)) / (grouped.std(1).repeat_interleave(2) + 1e-4))
    cases = []
    for loss_type in ["grpo", "dapo", "dr_grpo"]:
        for beta in [0.0, 0.04]:
            for delta in [None, 3.0]:
                cases.append(grpo_case(logits, targets, mask, behaviour, ref, adv, temperature, loss_type,
                                       beta, eps_low, eps_high, delta, max_len))
    assert all(c["clipped_low"] > 0 and c["clipped_high"] > 0 for c in cases), cases
    return {
        "shape": [b, t, v], "temperature": temperature, "epsilon_low": eps_low, "epsilon_high": eps_high,
        "max_completion_length": max_len, "logits": r(logits), "targets": targets.flatten().tolist(),
        "mask": r(mask), "behaviour_logprobs": r(behaviour), "ref_logprobs": r(ref),
        "rewards": r(rewards), "group_size": 2, "advantages": r(adv), "cases": cases,
    }


def adamw_fixture():
    shapes = [[3, 4], [5]]
    params = [torch.nn.Parameter(q(torch.randn(*s))) for s in shapes]
    init = [r(p.detach()) for p in params]
    lr, wd, max_norm = 1e-2, 0.1, 1.0
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd)
    steps = []
    for k in range(4):
        scale = 3.0 if k % 2 == 0 else 0.1  # clipping on even steps only
        grads = [q(torch.randn(*s) * scale) for s in shapes]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        opt.step()
        steps.append({"grads": [r(g) for g in grads], "pre_clip_norm": float(norm),
                      "params": [r(p.detach()) for p in params]})
    return {"shapes": shapes, "init": init, "lr": lr, "weight_decay": wd, "beta1": 0.9, "beta2": 0.999,
            "eps": 1e-8, "max_grad_norm": max_norm, "steps": steps}


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for name, fn in [("sft_loss", sft_fixture), ("grpo_loss", grpo_fixture), ("adamw", adamw_fixture)]:
        (OUT / f"{name}.json").write_text(json.dumps(fn(), separators=(",", ":")) + "\n")
        print("wrote", OUT / f"{name}.json")
