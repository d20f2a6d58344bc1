"""Your own reward, served to the rollout workers: edit `score`, then run

    python examples/reward-service/my_reward.py --port 50061

and add the component to the run config (see README.md next to this file).
"""

from server import serve


def score(req):
    """1 when the final answer (after the thinking block) is the ground truth, else 0; a small
    penalty per character keeps answers short. The parts show in the metrics as service.<name>."""
    scores = []
    for completion in req.completions:
        answer = completion.split("<|/thinking|>")[-1].strip()
        scores.append({"correct": float(answer == req.ground_truth), "brevity": -0.001 * len(completion)})
    return scores


if __name__ == "__main__":
    serve(score)
