"""The quick demo drawn with several seeds: how much of pd - sft is the draw.

    python benchmarks/demo_seeds.py --seeds 0,1,2 --root runs/seeds [--out benchmarks/results/demo_seeds.json]
    python benchmarks/demo_seeds.py --seeds 0,1,2 --root runs/seeds-t025 --from runs/seeds \
        --set synth.pd_answer_temperature=0.25

Runs `promptdistill demo --set seed=N` (and every --set) into ROOT/seed-N for each seed (every
question and answer drawn anew; a finished run is resumed, so its stages are skipped), then
prints each run's closed-book accuracies, pd - sft with its paired interval, and the share of
test questions the training answers cover, with pd - sft over all seeds' questions at once
(paired), and writes JSON. With --from, each run starts as a copy of FROM/seed-N, so only the
stages a --set changes run again, and sft's and pd's changes against FROM's are printed too, per
seed and over all seeds, with each method against the other's FROM runs (for a setting of one
method's, such as synth.pd_answers_per_question: how it compares with the other left as it was).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from train_levers import paired, paired_text, pooled

from promptdistill.files import read_jsonl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--root", type=Path, required=True, help="folder of the runs, one seed-N each")
    parser.add_argument("--set", action="append", default=[], help="a setting for every run (repeatable)")
    parser.add_argument("--from", dest="start", type=Path, help="folder of finished runs to start from")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/demo_seeds.json"))
    args = parser.parse_args()

    rows = []
    for seed in [int(seed) for seed in args.seeds.split(",")]:
        run = args.root / f"seed-{seed}"
        if args.start and not run.exists():
            shutil.copytree(args.start / run.name, run)
        settings = [part for setting in [f"seed={seed}", *args.set] for part in ("--set", setting)]
        subprocess.run([sys.executable, "-m", "promptdistill", "demo", "--out", str(run), *settings],
                       check=True, stdout=subprocess.DEVNULL)
        report = json.loads((run / "report.json").read_text())
        rows.append({"seed": seed, "run": str(run),
                     **{name: report["methods"][name]["contains"] for name in ("base", "sft", "pd", "open-book")},
                     "pd_minus_sft": report["paired"]["pd - sft"],
                     "coverage": {name: value["covered"] for name, value in report["coverage"].items()}})

    print(f"{'seed':>4} {'base':>5} {'sft':>5} {'pd':>5} {'open-book':>9}  {'pd - sft [95%]':<18} covered sft / pd")
    for row in rows:
        low, high = row["pd_minus_sft"]["interval"]
        print(f"{row['seed']:>4} {row['base']:5.0f} {row['sft']:5.0f} {row['pd']:5.0f} {row['open-book']:9.0f}  "
              f"{row['pd_minus_sft']['difference']:+4.0f} [{low:+.0f}, {high:+.0f}]      "
              f"{row['coverage']['sft']:.0f} / {row['coverage']['pd']:.0f}%")
    margins = [row["pd_minus_sft"]["difference"] for row in rows]
    summary = {"mean": sum(margins) / len(margins), "min": min(margins), "max": max(margins)}
    per_run = {name: [read_jsonl(Path(row["run"]) / "eval" / f"{name}.jsonl") for row in rows]
               for name in ("sft", "pd")}
    summary["pooled"] = paired(pooled(per_run["pd"]), pooled(per_run["sft"]))
    print(f"pd - sft over {len(rows)} seeds: mean {summary['mean']:+.1f}, from {summary['min']:+.0f} "
          f"to {summary['max']:+.0f}; over all {summary['pooled']['questions']} questions "
          f"{paired_text(summary['pooled'])}")
    result = {"settings": args.set, "rows": rows, "pd_minus_sft": summary}
    if args.start:
        earlier = {name: [read_jsonl(args.start / Path(row["run"]).name / "eval" / f"{name}.jsonl") for row in rows]
                   for name in ("sft", "pd")}
        for name, other in (("sft", "pd"), ("pd", "sft")):
            changes = [paired(now, before) for now, before in zip(per_run[name], earlier[name])]
            result[f"{name}_change"] = {"per_seed": changes,
                                        "pooled": paired(pooled(per_run[name]), pooled(earlier[name]))}
            # A setting of one method's: how it compares with the other method left as it was.
            result[f"{name}_minus_earlier_{other}"] = paired(pooled(per_run[name]), pooled(earlier[other]))
            print(f"{name} - {name} of {args.start}: " + ", ".join(f"seed {row['seed']} {paired_text(change)}"
                                                                   for row, change in zip(rows, changes))
                  + f"; over all questions {paired_text(result[f'{name}_change']['pooled'])}; {name} - {other} "
                  f"of {args.start} {paired_text(result[f'{name}_minus_earlier_{other}'])}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
