"""Finished evaluations of different runs side by side, paired over the same test questions.

    python benchmarks/paired_evals.py --seeds 0,1,2 --out /tmp/paired.json \
        --eval "sft, 10 epochs=runs/epochs/seed-{seed}/10-epochs/eval/sft.jsonl" \
        --eval "pd, 2 answers=runs/answers2/seed-{seed}/eval/pd.jsonl"

For settings measured by different benchmarks on the same draws (benchmarks/demo_seeds.py runs
the same test questions with every setting): each --eval is NAME=PATH, {seed} in PATH standing
for each seed. Prints each evaluation's containment per seed and over all seeds' questions at
once with a 95% interval, and every pair's paired difference over those questions; writes JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

from train_levers import paired, paired_text, pooled, score, score_text

from promptdistill.files import read_jsonl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--eval", action="append", required=True, help="NAME=PATH with {seed} (repeatable)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--out", type=Path, required=True, help="JSON written here")
    args = parser.parse_args()
    seeds = args.seeds.split(",")
    paths = dict(spec.partition("=")[::2] for spec in args.eval)
    records = {name: [read_jsonl(Path(path.format(seed=seed))) for seed in seeds] for name, path in paths.items()}
    all_seeds = {name: pooled(per_seed) for name, per_seed in records.items()}

    rows = {name: {"per_seed": [score(one)["contains"] for one in per_seed], **score(all_seeds[name])}
            for name, per_seed in records.items()}
    print(f"| evaluation | {' | '.join(f'seed {seed}' for seed in seeds)} | all seeds [95%] |")
    print("|---" * (len(seeds) + 2) + "|")
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{value:.0f}" for value in row["per_seed"]) + f" | {score_text(row)} |")
    differences = {f"{first} - {second}": paired(all_seeds[first], all_seeds[second])
                   for first, second in itertools.combinations(records, 2)}
    print("\npaired over all seeds' questions, in points:")
    for name, difference in differences.items():
        print(f"  {name}: {paired_text(difference)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"seeds": seeds, "evals": paths, "scores": rows,
                                    "paired": differences}, indent=2) + "\n")
    print(f"\nJSON: {args.out}")


if __name__ == "__main__":
    main()
