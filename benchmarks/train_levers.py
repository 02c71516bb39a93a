"""Training settings side by side on finished runs: accuracy of sft and pd, paired, and training time.

    python benchmarks/train_levers.py --run runs/demo --run runs/nyt10 --out /tmp/levers \
        --variant "5 epochs, lr 1e-3:" \
        --variant "3 epochs, lr 2e-3:train.epochs=3,train.learning_rate=2e-3"

Each variant is NAME:SETTING=VALUE,... (the first is the reference). For every run and variant,
the run directory is copied to OUT/RUN/VARIANT with the settings applied, and sft and pd are
trained and evaluated there by the pipeline's own stages: the questions, answers and teacher
cache of the run are reused, so the variants differ only in training. A variant whose settings
equal the run's reuses its adapters. Prints, per run, each variant's closed-book containment
with a 95% interval, pd - sft and the change against the first variant (both paired over the
same questions), and training seconds with their ratio to the first variant's; writes JSON.
With several runs (for example the same demo drawn with several seeds, benchmarks/demo_seeds.py)
it also prints each variant pooled over them: every run's test questions together, paired the
same way, so that a lever is judged over more than one draw of the training data.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

from promptdistill import pipeline, report
from promptdistill.files import read_jsonl
from promptdistill.methods import METHODS
from promptdistill.rundir import RunDir
from promptdistill.stats import bootstrap_interval


def pooled(records_by_run: list[list[dict]]) -> list[dict]:
    """The records of several runs as one list, each id prefixed by its run's position, so that
    questions of different runs never pair with each other."""
    return [{**record, "id": f"{number}/{record['id']}"}
            for number, records in enumerate(records_by_run) for record in records]


def paired(first: list[dict], second: list[dict]) -> dict:
    """Containment of `first` minus `second` on the same questions, in points, with a 95% interval
    (the report's own paired difference, over graded records)."""
    grades = [{record["id"]: record["contains"] for record in records} for records in (first, second)]
    return report.paired(*grades, resamples=10_000, seed=0)


def paired_text(difference: dict) -> str:
    """A `paired` difference as "+4 [-2, +10]"."""
    low, high = difference["interval"]
    return f"{difference['difference']:+.0f} [{low:+.0f}, {high:+.0f}]"


def score_text(scored: dict) -> str:
    """A `score` as "30 [18, 42]"."""
    low, high = scored["interval"]
    return f"{scored['contains']:.0f} [{low:.0f}, {high:.0f}]"


def scored_against(records: dict[str, list[dict]], reference: dict[str, list[dict]], method_names: list[str],
                   reference_name: str = "reference") -> dict:
    """Per method, its `score` and its `paired` change against the reference's records of that method."""
    row = {}
    for method in method_names:
        row[method] = score(records[method])
        row[f"{method} - {reference_name}"] = paired(records[method], reference[method])
    return row


def score(records: list[dict]) -> dict:
    values = [100 * record["contains"] for record in records]
    low, high = bootstrap_interval(values)
    return {"contains": sum(values) / len(values), "interval": [low, high]}


def variant_copy(source: Path, target: Path, overrides: list[str], leave_out: tuple[str, ...] = ()):
    """(run, config) of `target`: a copy of the finished run `source` (made once, without the
    files and folders named in `leave_out`) with `overrides`."""
    if not target.exists():
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("export", "cache", *leave_out))
    run = RunDir(target)
    config = run.load_config(overrides)
    run.save_config(config)
    return run, config


def run_variant(source: Path, target: Path, overrides: list[str], method_names: list[str]) -> dict:
    run, config = variant_copy(source, target, overrides)
    result = {"records": {}, "train_seconds": {}}
    for name in method_names:  # a method that answers with another's adapter (pd+rag) after that one
        if METHODS[name].training:
            pipeline.train(run, config, METHODS[name])
            result["train_seconds"][name] = json.loads(run.manifest(f"train-{name}").read_text())["seconds"]
        pipeline.evaluate(run, config, METHODS[name])
        result["records"][name] = read_jsonl(run.eval(name))
    return result


def parse_arguments(description: str, methods: str, json_name: str, variants_required: bool = True):
    """The options every side-by-side benchmark on finished runs takes: (args, method names,
    [(variant name, its --set overrides)])."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, action="append", required=True, help="a finished run (repeatable)")
    parser.add_argument("--variant", action="append", required=variants_required, default=[],
                        help="NAME:SETTING=VALUE,... (repeatable)")
    parser.add_argument("--methods", default=methods)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / json_name)
    args = parser.parse_args()
    names = [run.name for run in args.run]
    if len(set(names)) < len(names):  # each run's variants go to OUT/RUN-NAME/: the same name would share them
        parser.error(f"--run: runs need folder names of their own, got {', '.join(names)}")
    variants = [(name, [setting for setting in settings.split(",") if setting])
                for name, _, settings in (spec.partition(":") for spec in args.variant)]
    return args, args.methods.split(","), variants


def variant_dir(out: Path, source: Path, name: str) -> Path:
    """OUT/RUN/VARIANT, the variant's name as a slug."""
    return out / source.name / re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def compared(per_variant: dict[str, dict], variants: list, method_names: list[str]) -> dict:
    """Each variant's scores, paired changes against the first variant and pd - sft, from its
    outcome (`run_variant`: records and training seconds per method)."""
    reference = per_variant[variants[0][0]]
    reference_seconds = sum(reference["train_seconds"].values())
    rows = {}
    for name, overrides in variants:
        outcome = per_variant[name]
        row = {"settings": overrides, "train_seconds": outcome["train_seconds"],
               "train_time_ratio": sum(outcome["train_seconds"].values()) / reference_seconds,
               **scored_against(outcome["records"], reference["records"], method_names)}
        if {"pd", "sft"} <= set(method_names):
            row["pd - sft"] = paired(outcome["records"]["pd"], outcome["records"]["sft"])
        rows[name] = row
    return {"questions": len(reference["records"][method_names[0]]), "variants": rows}


def pooled_outcomes(outcomes: list[dict[str, dict]], method_names: list[str]) -> dict[str, dict]:
    """Several runs' outcomes per variant as one: their test questions together (`pooled`), their
    training seconds summed."""
    return {name: {"records": {method: pooled([outcome[name]["records"][method] for outcome in outcomes])
                               for method in method_names},
                   "train_seconds": {method: sum(outcome[name]["train_seconds"][method] for outcome in outcomes)
                                     for method in outcomes[0][name]["train_seconds"]}}
            for name in outcomes[0]}


def main() -> None:
    args, method_names, variants = parse_arguments(__doc__, "sft,pd", "train_levers.json")
    outcomes = {str(source): {name: run_variant(source, variant_dir(args.out, source, name), overrides, method_names)
                              for name, overrides in variants}
                for source in args.run}
    results = {source: compared(per_variant, variants, method_names) for source, per_variant in outcomes.items()}
    if len(args.run) > 1:
        results["pooled"] = compared(pooled_outcomes(list(outcomes.values()), method_names), variants, method_names)

    for source, result in results.items():
        print(f"\n{source} ({result['questions']} test questions): containment %, paired differences in points")
        header = "| variant | " + " | ".join(f"{m} [95%] | {m} - ref" for m in method_names)
        print(header + " | pd - sft | train s | time ratio |")
        print("|" + "---|" * (4 + 2 * len(method_names)))
        for name, row in result["variants"].items():
            cells = []
            for method in method_names:
                cells += [score_text(row[method]), paired_text(row[f"{method} - reference"])]
            gap = row.get("pd - sft")
            gap_text = paired_text(gap) if gap else "-"
            print(f"| {name} | " + " | ".join(cells) +
                  f" | {gap_text} | {sum(row['train_seconds'].values()):.0f} | {row['train_time_ratio']:.2f} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nJSON: {args.json}")


if __name__ == "__main__":
    main()
