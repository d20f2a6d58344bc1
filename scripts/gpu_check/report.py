"""Assembles report.json and report.md of scripts/gpu-check.sh from its results dir (stdlib only).

results/NAME.status: "STATUS SECONDS BUDGET [REASON]" written by the driver (pass = exit 0);
results/NAME.kv:     key=value lines written by the part (a `status`/`reason` key overrides a
                     pass: skipped or fail); values parse as JSON where they can;
results/NAME.checks.json: the torch comparisons (parity); results/run.summary.txt: the table.
"""
import argparse
import json
import os

PARTS = ["setup", "parity", "rollout", "train", "run"]


def value(text):
    try:
        return json.loads(text)
    except ValueError:
        return text


def read_kv(path):
    out = {}
    if os.path.exists(path):
        for line in open(path, encoding="utf-8", errors="replace"):
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                out[k] = value(v)
    return out


def nest(flat):
    """{"asrl.sft.tokens_per_s": 1} -> {"asrl": {"sft": {"tokens_per_s": 1}}}."""
    out = {}
    for key, v in flat.items():
        d = out
        *path, last = key.split(".")
        for p in path:
            d = d.setdefault(p, {}) if isinstance(d.get(p, {}), dict) else d
        d[last] = v
    return out


def part(results, name):
    status_path = os.path.join(results, f"{name}.status")
    if not os.path.exists(status_path):
        return {"status": "not_run", "reason": "the driver did not reach it"}
    fields = open(status_path).read().split(None, 3)
    status, seconds, budget = fields[0], float(fields[1]), float(fields[2])
    p = {"status": status, "seconds": seconds, "budget_s": budget}
    if len(fields) > 3:
        p["reason"] = fields[3].strip()
    kv = read_kv(os.path.join(results, f"{name}.kv"))
    declared, reason = kv.pop("status", None), kv.pop("reason", None)
    if status == "pass" and declared:
        p["status"] = declared
    if reason:
        p["reason"] = reason
    if status == "timeout":
        p["reason"] = f"ran past its budget of {budget:.0f} s"
    p["metrics"] = nest(kv)
    checks = os.path.join(results, f"{name}.checks.json")
    if os.path.exists(checks):
        p["checks"] = json.load(open(checks))
    summary = os.path.join(results, f"{name}.summary.txt")
    if os.path.exists(summary):
        p["summary"] = open(summary, encoding="utf-8", errors="replace").read()
    return p


def ratio(a, b):
    try:
        return round(float(a) / float(b), 3)
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def derive(parts):
    """Ours/torch ratios where both sides ran."""
    r = parts["rollout"].get("metrics", {})
    if all(isinstance(r.get(s), dict) and "tokens_per_s" in r[s] for s in ("asrl", "torch")):
        r["asrl_over_torch"] = ratio(r["asrl"]["tokens_per_s"], r["torch"]["tokens_per_s"])
    t = parts["train"].get("metrics", {})
    for mode in ("sft", "grpo"):
        ours, theirs = (t[s].get(mode) if isinstance(t.get(s), dict) else None for s in ("asrl", "torch"))
        if isinstance(ours, dict) and isinstance(theirs, dict) and "tokens_per_s" in ours:
            t.setdefault("asrl_over_torch", {})[mode] = ratio(ours["tokens_per_s"], theirs.get("tokens_per_s"))


def fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(", ", ": "))
    return str(v)


def flat(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def markdown(rep):
    lines = [f"# GPU check: {rep['status']}", "",
             f"device `{rep['device']}`{' (quick)' if rep['quick'] else ''}, git {rep['git']}, "
             f"{rep['seconds']:.0f} s", ""]
    for k, v in flat(rep["parts"]["setup"].get("metrics", {})):
        lines.append(f"- {k}: {fmt(v)}")
    lines += ["", "| part | status | seconds (budget) | note |", "| --- | --- | --- | --- |"]
    for name in PARTS:
        p = rep["parts"][name]
        secs = f"{p.get('seconds', 0):.0f} ({p.get('budget_s', 0):.0f})"
        lines.append(f"| {name} | {p['status']} | {secs} | {p.get('reason', '')} |")
    for name in PARTS[1:]:
        p = rep["parts"][name]
        if p["status"] == "not_selected":
            continue
        lines += ["", f"## {name}: {p['status']}", ""]
        for k, v in flat(p.get("metrics", {})):
            lines.append(f"- {k}: {fmt(v)}")
        if p.get("checks"):
            lines += ["", "| check | status | max abs | max rel | tol |", "| --- | --- | --- | --- | --- |"]
            for c in p["checks"]:
                extra = f"prefix {c['matching_prefix']}/{c['tokens']}" if "matching_prefix" in c else fmt(c.get("max_abs", ""))
                lines.append(f"| {c['name']} | {c['status']} | {extra} | {fmt(c.get('max_rel', ''))} | {fmt(c.get('tol', ''))} |")
        if p.get("summary"):
            lines += ["", "```", p["summary"].rstrip(), "```"]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", required=True)
    ap.add_argument("--quick", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=0)
    ap.add_argument("--git", default="unknown")
    a = ap.parse_args()
    parts = {name: part(a.results, name) for name in PARTS}
    derive(parts)
    bad = [n for n, p in parts.items() if p["status"] not in ("pass", "skipped", "not_selected")]
    rep = {"status": "fail" if bad else "pass", "failed_parts": bad, "device": a.device, "quick": bool(a.quick),
           "git": a.git, "seconds": a.seconds, "parts": parts}
    with open(os.path.join(a.out, "report.json"), "w") as f:
        json.dump(rep, f, indent=1)
    md = markdown(rep)
    with open(os.path.join(a.out, "report.md"), "w") as f:
        f.write(md)
    print(md)
    raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
    main()
