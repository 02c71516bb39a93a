"""What training forgets, with and without self-replay, side by side on finished runs.

    python benchmarks/retention.py --run runs/demo --run runs/nyt10 --out /tmp/retention \
        --variant "no replay:" --variant "self-replay:train.replay=self"

Each variant is NAME:SETTING=VALUE,... (the first is the reference). For every run and variant,
the run is copied to OUT/RUN/VARIANT (train_levers.py's run_variant) and uft, sft and pd are
trained and evaluated there by the pipeline's own stages, then the retention check runs
(retention.py). Prints, per run and method: closed-book containment and its change against the
reference (paired over the test questions), retention and its change against the reference
(paired over the general questions the base model knows), drift, and training seconds with
their ratio to the reference's; writes JSON.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

from train_levers import paired, paired_text, parse_arguments, run_variant, score, score_text, variant_dir

from promptdistill import pipeline, report, retention
from promptdistill.methods import METHODS
from promptdistill.rundir import RunDir


def measure(source: Path, target: Path, overrides: list[str], method_names: list[str]) -> dict:
    outcome = run_variant(source, target, overrides, method_names)
    run = RunDir(target)
    config = run.load_config()
    retention.check(run, config, [METHODS[name] for name in method_names], partial(pipeline.generation_backend, config))
    outcome["retention"] = {name: retention.summary(run, name, 10_000, 0) for name in method_names}
    outcome["kept"] = {name: retention.kept_by_question(run, name) for name in method_names}
    return outcome


def main() -> None:
    args, method_names, variants = parse_arguments(__doc__, "uft,sft,pd", "retention.json")
    results = {}
    for source in args.run:
        outcomes = {name: measure(source, variant_dir(args.out, source, name), overrides, method_names)
                    for name, overrides in variants}
        reference = outcomes[variants[0][0]]
        rows = {}
        for name, overrides in variants:
            outcome, row = outcomes[name], {"settings": overrides}
            for method in method_names:
                summary = outcome["retention"][method]
                row[method] = {
                    "contains": score(outcome["records"][method]),
                    "contains - reference": paired(outcome["records"][method], reference["records"][method]),
                    "retention": [summary["retention"], summary["retention_interval"]],
                    "retention - reference": report.paired(outcome["kept"][method], reference["kept"][method], 10_000, 0),
                    "drift": [summary["drift"], summary["drift_interval"]],
                    "train_seconds": outcome["train_seconds"][method],
                    "train_time_ratio": outcome["train_seconds"][method] / reference["train_seconds"][method],
                }
            rows[name] = row
        known = reference["retention"][method_names[0]]
        results[str(source)] = {"questions": len(reference["records"][method_names[0]]),
                                "general_questions_known": known["known"], "variants": rows}

    for source, result in results.items():
        print(f"\n{source}: {result['questions']} test questions, {result['general_questions_known']} general "
              "questions the base model knows; paired differences against the first variant, in points")
        print("| variant | method | contains [95%] | change | retention [95%] | change | drift [95%] | train s | ratio |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name, row in result["variants"].items():
            for method in method_names:
                cell = row[method]
                contains, (kept, kept_interval), (drift, drift_interval) = cell["contains"], cell["retention"], cell["drift"]
                print(f"| {name} | {method} | {score_text(contains)} | {paired_text(cell['contains - reference'])} | "
                      f"{kept:.0f} [{kept_interval[0]:.0f}, {kept_interval[1]:.0f}] | "
                      f"{paired_text(cell['retention - reference'])} | {drift:.3f} [{drift_interval[0]:.3f}, "
                      f"{drift_interval[1]:.3f}] | {cell['train_seconds']:.0f} | {cell['train_time_ratio']:.2f} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nJSON: {args.json}")


if __name__ == "__main__":
    main()
