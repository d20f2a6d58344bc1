"""A reference `asrl.v1.RewardService` in Python: write a scoring function, hand it to `serve`.

    from server import serve

    def score(req):
        return [1.0 if c.strip().endswith(req.ground_truth) else 0.0 for c in req.completions]

    if __name__ == "__main__":
        serve(score)

`req` is a `ScoreRequest` (below): one prompt and all its sampled completions (the workers call
once per group). Return one score per completion, in order: a float, or a dict of named parts
whose sum is the completion's score (each part shows in the learner's metrics as
`service.<name>`). Scores must be finite. An exception, a wrong count or a non-finite score
answers the call with INTERNAL, which fails that prompt's reward on the worker (not retried).

Needs `grpcio` and `grpcio-tools`: the `.proto` files of this repository (`proto/asrl/v1/`) are
compiled into a temporary directory when the server starts, so no generated code is committed
and the stubs always match the protos next to this file (`--proto-dir` points elsewhere).

Flags: `--host` (default 127.0.0.1), `--port` (default 50061; 0 picks a free one), `--token`
(default `$ASRL_REWARD_TOKEN`; when set, calls must carry `authorization: Bearer <token>`),
`--threads` (default 8). The server prints `reward service listening on HOST:PORT` once it
accepts calls, and stops on SIGINT/SIGTERM.
"""

import argparse
import dataclasses
import hmac
import importlib
import math
import os
import signal
import sys
import tempfile
import threading
from concurrent import futures
from pathlib import Path

import grpc

DEFAULT_PROTO_DIR = Path(__file__).resolve().parent.parent.parent / "proto"
PROTOS = ["asrl/v1/learner.proto", "asrl/v1/reward.proto"]


@dataclasses.dataclass(frozen=True)
class ScoreRequest:
    """What a worker sends for one prompt."""

    prompt_id: str  # unique within a GRPO phase ("" when unknown)
    prompt: str  # the chat-templated prompt the completions continue
    ground_truth: str  # the example's answer ("" for open-ended examples)
    kind: str  # "verifiable", "open" or "unspecified"
    example_type: str  # the dataset's `type` field
    completions: list  # the sampled completions (str)


def compile_protos(proto_dir=DEFAULT_PROTO_DIR):
    """Compiles the asrl protos with grpcio-tools; returns the (reward_pb2, reward_pb2_grpc) modules."""
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="asrl-reward-stubs-")
    args = ["protoc", f"-I{proto_dir}", f"--python_out={out}", f"--grpc_python_out={out}", *PROTOS]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {', '.join(PROTOS)} under {proto_dir}")
    sys.path.insert(0, out)
    return importlib.import_module("asrl.v1.reward_pb2"), importlib.import_module("asrl.v1.reward_pb2_grpc")


def _scores_to_wire(pb2, scores, n):
    """The user's scores as `CompletionScore`s; raises ValueError naming what is wrong."""
    if len(scores) != n:
        raise ValueError(f"the score function returned {len(scores)} scores for {n} completions")
    out = []
    for i, s in enumerate(scores):
        parts = s if isinstance(s, dict) else None
        total = sum(float(v) for v in parts.values()) if parts is not None else float(s)
        if not math.isfinite(total):
            raise ValueError(f"score {i} is {total}")
        components = []
        for name, v in (parts or {}).items():
            if not name or not math.isfinite(float(v)):
                raise ValueError(f"score {i}: part {name!r} = {v} needs a name and a finite value")
            components.append(pb2.ComponentScore(name=str(name), score=float(v)))
        out.append(pb2.CompletionScore(total=total, components=components))
    return out


def make_servicer(score_fn, pb2, pb2_grpc, token=None):
    kinds = {0: "unspecified", 1: "verifiable", 2: "open"}
    expected = f"Bearer {token}".encode() if token else None

    class RewardService(pb2_grpc.RewardServiceServicer):
        def Score(self, request, context):
            if expected is not None:
                presented = dict(context.invocation_metadata()).get("authorization", "")
                if not hmac.compare_digest(presented.encode(), expected):
                    context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong `authorization: Bearer <token>`")
            req = ScoreRequest(
                prompt_id=request.prompt_id,
                prompt=request.prompt_text,
                ground_truth=request.ground_truth,
                kind=kinds.get(request.kind, "unspecified"),
                example_type=request.example_type,
                completions=list(request.completions),
            )
            try:
                scores = _scores_to_wire(pb2, list(score_fn(req)), len(req.completions))
            except Exception as e:  # the user's code: report it to the caller, keep serving
                context.abort(grpc.StatusCode.INTERNAL, f"prompt {req.prompt_id}: {type(e).__name__}: {e}")
            return pb2.ScoreResponse(scores=scores)

    return RewardService()


def serve(score_fn, argv=None):
    """Parses the flags, serves `score_fn` until SIGINT/SIGTERM."""
    p = argparse.ArgumentParser(description="asrl.v1.RewardService serving a Python score function")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=50061, help="0 picks a free port")
    p.add_argument("--token", default=os.environ.get("ASRL_REWARD_TOKEN") or None)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--proto-dir", default=str(DEFAULT_PROTO_DIR))
    args = p.parse_args(argv)
    if not args.token and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host} without --token", file=sys.stderr)

    pb2, pb2_grpc = compile_protos(args.proto_dir)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.threads))
    pb2_grpc.add_RewardServiceServicer_to_server(make_servicer(score_fn, pb2, pb2_grpc, args.token), server)
    port = server.add_insecure_port(f"{args.host}:{args.port}")
    if port == 0:
        sys.exit(f"error: cannot listen on {args.host}:{args.port}")
    server.start()
    print(f"reward service listening on {args.host}:{port}", flush=True)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=2).wait()
