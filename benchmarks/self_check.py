"""How far can the self-check be trusted? It beside real test questions, on finished runs.

    python benchmarks/self_check.py --seeds 0,1,2 --out benchmarks/results/self_check.json \
        --corpus "demo=runs/sc/demo-s{seed}" --corpus "NYT-10=runs/sc/nyt-s{seed}"

Each --corpus is NAME=RUN with {seed} standing for each draw: run directories that have both test
questions and the self-check (promptdistill run|demo|reproduce with them). For each corpus and
method: containment on the real test questions and on the self-check, per draw and over all
draws' questions with a 95% interval, and token F1; the paired differences pd - sft and pd - base
on each; and whether the self-check orders the methods as the real questions do, draw by draw and
pooled, by containment and by F1.
Prints tables and writes JSON; docs/quality.md records a run.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

from promptdistill.files import read_jsonl
from promptdistill.report import paired
from promptdistill.stats import bootstrap_interval

METHODS = ("base", "sft", "pd", "open-book")
ORDERED = ("base", "sft", "pd")  # the methods whose order the self-check should get right
PAIRS = (("pd", "sft"), ("pd", "base"), ("sft", "base"))
RESAMPLES = 10_000


def grades(run: Path, method: str, question_set: str, metric: str = "contains") -> dict[str, float]:
    """Question id -> a grade (containment 0/1, or F1) of one method's graded replies."""
    folder = "eval" if question_set == "real" else "self_check"
    return {record["id"]: record[metric] for record in read_jsonl(run / folder / f"{method}.jsonl")}


def accuracy(by_question: dict[str, float]) -> dict:
    values = [100 * value for value in by_question.values()]
    low, high = bootstrap_interval(values, resamples=RESAMPLES, seed=0)
    return {"contains": sum(values) / len(values), "interval": [low, high], "questions": len(values)}


def order(scores: dict[str, float]) -> list[tuple[str, str, int]]:
    """For each pair of ORDERED methods, which is ahead: 1, -1, or 0 for a tie."""
    return [(a, b, (scores[a] > scores[b]) - (scores[a] < scores[b])) for a, b in itertools.combinations(ORDERED, 2)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", action="append", required=True, help="NAME=RUN with {seed} (repeatable)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated draws")
    parser.add_argument("--out", type=Path, required=True, help="JSON written here")
    args = parser.parse_args()
    seeds = args.seeds.split(",")
    results = {}
    for spec in args.corpus:
        name, _, template = spec.partition("=")
        runs = [Path(template.format(seed=seed)) for seed in seeds]
        corpus: dict = {"runs": [str(run) for run in runs], "methods": {}, "paired": {}, "order": {}}
        pooled = {}
        for question_set in ("real", "self-check"):
            for method in METHODS:
                per_draw = [grades(run, method, question_set) for run in runs]
                pooled[question_set, method] = {f"{seed}/{key}": value for seed, draw in zip(seeds, per_draw)
                                                for key, value in draw.items()}
                f1 = [100 * value for run in runs for value in grades(run, method, question_set, "f1").values()]
                corpus["methods"].setdefault(method, {})[question_set] = {
                    "per_draw": [accuracy(draw)["contains"] for draw in per_draw],
                    **accuracy(pooled[question_set, method]), "f1": sum(f1) / len(f1)}
            for first, second in PAIRS:
                corpus["paired"].setdefault(f"{first} - {second}", {})[question_set] = paired(
                    pooled[question_set, first], pooled[question_set, second], RESAMPLES, 0)
        draws = []
        for index in range(len(runs)):
            real = order({m: corpus["methods"][m]["real"]["per_draw"][index] for m in ORDERED})
            check = order({m: corpus["methods"][m]["self-check"]["per_draw"][index] for m in ORDERED})
            draws.append(sum(r[2] == c[2] for r, c in zip(real, check)))
        corpus["order"] = {"pairs_ordered_alike_per_draw": draws, "of": 3}
        for metric in ("contains", "f1"):
            real = order({m: corpus["methods"][m]["real"][metric] for m in ORDERED})
            check = order({m: corpus["methods"][m]["self-check"][metric] for m in ORDERED})
            corpus["order"][f"pooled, {metric}"] = {f"{a} vs {b}": {"real": r, "self-check": c}
                                                    for (a, b, r), (_, _, c) in zip(real, check)}
        results[name] = corpus
        print_corpus(name, seeds, corpus)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"seeds": seeds, "corpora": results}, indent=2) + "\n")
    print(f"\nJSON: {args.out}")


def print_corpus(name: str, seeds: list[str], corpus: dict) -> None:
    print(f"\n{name}: containment, % (per draw; all draws [95%]), and token F1")
    print("| method | real test questions | self-check |\n|---|---|---|")
    for method, sets in corpus["methods"].items():
        cells = [f"{' / '.join(f'{v:.0f}' for v in s['per_draw'])}; {s['contains']:.0f} "
                 f"[{s['interval'][0]:.0f}, {s['interval'][1]:.0f}] ({s['questions']} q); F1 {s['f1']:.0f}"
                 for s in sets.values()]
        print(f"| {method} | " + " | ".join(cells) + " |")
    print("\npaired differences over all draws, in points [95%]:")
    for pair, sets in corpus["paired"].items():
        print(f"  {pair}: real {sets['real']['difference']:+.1f} [{sets['real']['interval'][0]:+.1f}, "
              f"{sets['real']['interval'][1]:+.1f}], self-check {sets['self-check']['difference']:+.1f} "
              f"[{sets['self-check']['interval'][0]:+.1f}, {sets['self-check']['interval'][1]:+.1f}]")
    print(f"pairs of {', '.join(ORDERED)} ordered alike by containment, per draw (of 3): "
          f"{corpus['order']['pairs_ordered_alike_per_draw']}")
    for metric in ("contains", "f1"):
        signs = {pair: {source: "<=>"[sign + 1] for source, sign in sides.items()}
                 for pair, sides in corpus["order"][f"pooled, {metric}"].items()}
        print(f"pooled, by {metric}: " + "; ".join(
            f"{pair.replace(' vs ', ' {} ')}".format(sides["real"]) + f" (real), {sides['self-check']} (self-check)"
            for pair, sides in signs.items()))


if __name__ == "__main__":
    main()
