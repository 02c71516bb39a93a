"""Evaluation settings side by side on finished runs: every method's accuracy, paired, and time.

    python benchmarks/eval_levers.py --run runs/demo --run runs/nyt10 --out /tmp/eval-levers \
        --methods base,sft,pd,open-book \
        --variant "48-token replies:" --variant "64-token replies:eval.max_answer_tokens=64"

Each variant is NAME:SETTING=VALUE,... (the first is the reference). For every run and variant,
the run directory is copied to OUT/RUN/VARIANT with the settings applied and each method is
evaluated there by the pipeline's own stage, with the run's adapters (nothing is trained; a
variant whose settings equal the run's reuses its replies). Prints, per run, each method's
containment with a 95% interval and its change against the first variant, paired over the same
questions, and the evaluation seconds of each variant; writes JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

from train_levers import paired_text, parse_arguments, score_text, scored_against, variant_copy, variant_dir

from promptdistill import pipeline
from promptdistill.files import read_jsonl
from promptdistill.methods import METHODS


def evaluate_variant(source: Path, target: Path, overrides: list[str], method_names: list[str]) -> dict:
    run, config = variant_copy(source, target, overrides)
    result = {"records": {}, "seconds": {}}
    for name in method_names:
        pipeline.evaluate(run, config, METHODS[name])
        result["records"][name] = read_jsonl(run.eval(name))
        result["seconds"][name] = json.loads(run.manifest(f"evaluate-{name}").read_text())["seconds"]
    return result


def main() -> None:
    args, method_names, variants = parse_arguments(__doc__, "base,sft,pd,open-book", "eval_levers.json")
    results = {}
    for source in args.run:
        outcomes = {name: evaluate_variant(source, variant_dir(args.out, source, name), overrides, method_names)
                    for name, overrides in variants}
        reference = outcomes[variants[0][0]]
        rows = {}
        for name, overrides in variants:
            outcome = outcomes[name]
            rows[name] = {"settings": overrides, "seconds": outcome["seconds"],
                          **scored_against(outcome["records"], reference["records"], method_names)}
        results[str(source)] = {"questions": len(reference["records"][method_names[0]]), "variants": rows}

    for source, result in results.items():
        print(f"\n{source} ({result['questions']} test questions): containment %, paired differences in points")
        print("| variant | " + " | ".join(f"{m} [95%] | {m} - ref" for m in method_names) + " | evaluation s |")
        print("|" + "---|" * (2 + 2 * len(method_names)))
        for name, row in result["variants"].items():
            cells = []
            for method in method_names:
                cells += [score_text(row[method]), paired_text(row[f"{method} - reference"])]
            print(f"| {name} | " + " | ".join(cells) + f" | {sum(row['seconds'].values()):.0f} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nJSON: {args.json}")


if __name__ == "__main__":
    main()
