"""How close a teacher cache built from a server's raw top-k log-probabilities comes to the exact one.

    python benchmarks/server_teacher.py --run runs/demo [--run runs/other] [--answers 60] [--top-k 20]
        [--temperature 2]

A server (vLLM) returns the top-k log-probabilities at temperature 1; train.teacher=server tempers
them here (teacher.tempered_targets), estimating the tail's tempered weight, which the server does
not give. For the first N pd answers of each finished run this computes the exact teacher
distribution at the temperature (full vocabulary, in this process), stands in for the server
with the exact top-k at temperature 1, and compares, over all answer tokens: the tail mass (exact
and estimated), the mean absolute error of the estimate, and KL(exact || estimate) over the k
kept tokens plus the tail bucket (what the top-k loss sees). Besides the estimate in use (the
geometric mean of two bounds) it shows the bounds themselves. Writes JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from promptdistill import methods, pipeline
from promptdistill.models import load_model
from promptdistill.rundir import RunDir
from promptdistill.teacher import prefix_shared_teacher_targets, tempered_targets


def bucketed_kl(exact_top: torch.Tensor, exact_tail: torch.Tensor, top: torch.Tensor, tail: torch.Tensor) -> float:
    p = torch.cat([exact_top.exp(), exact_tail[:, None]], -1).clamp(min=1e-30)
    q = torch.cat([top.exp(), tail[:, None]], -1).clamp(min=1e-30)
    return (p * (p.log() - q.log())).sum(-1).mean().item()


def measure(run_dir: Path, answers: int, top_k: int, temperature: float) -> dict:
    run = RunDir(run_dir)
    config = run.load_config()
    model, tokenizer = load_model(config.model)
    vocab = len(tokenizer)
    rows = {"exact tail": [], "T=1 tail": [], "estimate (in use)": [], "thick bound": [], "thin bound": []}
    errors = {name: [] for name in ("estimate (in use)", "thick bound", "thin bound")}
    kls = {name: [] for name in errors}
    for example in pipeline.training_examples(run, config, tokenizer, methods.METHODS["pd"])[:answers]:
        prefix, suffix = example.teacher_ids[:example.teacher_prefix_length], example.teacher_ids[example.teacher_prefix_length:]
        full = prefix_shared_teacher_targets(model, prefix, [(suffix, example.answer_ids)], vocab, 1.0, 1)[0]
        raw = full.logprobs.double()  # every token, most likely first, at T=1
        exact = F.log_softmax(raw / temperature, dim=-1)
        exact_top, exact_tail = exact[:, :top_k], exact[:, top_k:].logsumexp(-1).exp()
        entries = [dict(zip(ids.tolist(), values.tolist())) for ids, values in zip(full.token_ids[:, :top_k], raw[:, :top_k])]
        used = tempered_targets(entries, example.answer_ids, top_k, temperature, vocab)
        estimates = {"estimate (in use)": (used.logprobs.double(), used.tail_mass.double())}
        kept = raw[:, :top_k]
        mass = (1 - kept.exp().sum(-1)).clamp(min=0)
        for name, weight in (("thick bound", mass * kept[:, -1].exp() ** (1 / temperature - 1)),
                             ("thin bound", (vocab - top_k) ** (1 - 1 / temperature) * mass ** (1 / temperature))):
            log_z = torch.logsumexp(torch.cat([kept / temperature, weight.log()[:, None]], -1), -1)
            estimates[name] = (kept / temperature - log_z[:, None], weight / log_z.exp())
        rows["exact tail"] += exact_tail.tolist()
        rows["T=1 tail"] += mass.tolist()
        for name, (top, tail) in estimates.items():
            rows[name] += tail.tolist()
            errors[name] += (tail - exact_tail).abs().tolist()
            kls[name].append(bucketed_kl(exact_top, exact_tail, top, tail) * len(tail))
    tokens = len(rows["exact tail"])
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    return {"run": str(run_dir), "model": config.model.name, "answers": answers, "answer_tokens": tokens,
            "top_k": top_k, "temperature": temperature,
            "mean_tail": {name: mean(values) for name, values in rows.items()},
            "tail_abs_error": {name: mean(values) for name, values in errors.items()},
            "kl_exact_to_estimate": {name: sum(values) / tokens for name, values in kls.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, action="append", required=True)
    parser.add_argument("--answers", type=int, default=60)
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "server_teacher.json")
    args = parser.parse_args()
    results = [measure(run, args.answers, args.top_k, args.temperature) for run in args.run]
    print(f"top-{args.top_k} at T={args.temperature}: the server's T=1 top-k tempered here, against the exact teacher")
    print(f"{'run':<24} {'tokens':>6} {'tail T=1':>8} {'exact tail':>10} | {'estimate':<18} {'its tail':>8} "
          f"{'|error|':>8} {'KL':>8}")
    for result in results:
        for name in result["tail_abs_error"]:
            print(f"{Path(result['run']).name:<24} {result['answer_tokens']:>6} {result['mean_tail']['T=1 tail']:>8.3f} "
                  f"{result['mean_tail']['exact tail']:>10.3f} | {name:<18} {result['mean_tail'][name]:>8.3f} "
                  f"{result['tail_abs_error'][name]:>8.3f} {result['kl_exact_to_estimate'][name]:>8.4f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"JSON: {args.json}")


if __name__ == "__main__":
    main()
