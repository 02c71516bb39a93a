"""The teacher's prompt, side by side: open-book, rag, and sft and pd trained on what it answers.

    python benchmarks/teacher_prompt.py --run runs/demo --run runs/nyt10 --out /tmp/teacher-prompt \
        --variant "instruction:synth.teacher_instruction=Answer the question below from the text above."

The expert answers the training questions with the teacher's prompt, the pd teacher reads it, and
the open-book and rag rows are asked with it. Per run, in OUT/RUN/VARIANT: a copy of the run as it
is (the reference) and each --variant NAME:SETTING=VALUE,..., whose sft and pd answers are
generated anew (answer_length.py's regenerated_run), whose teacher cache, adapters and
evaluations are made anew by the pipeline's own stages. Prints per run each method's containment
with a 95% interval, the change paired over the same test questions, pd - sft and pd's share of
open-book; writes JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

from answer_length import regenerated_run
from train_levers import paired, paired_text, parse_arguments, run_variant, score_text, scored_against, variant_dir

from promptdistill import pipeline
from promptdistill.files import read_jsonl
from promptdistill.methods import METHODS
from promptdistill.rundir import RunDir

TRAINED, ASKED = ["sft", "pd"], ["open-book", "rag"]
REFERENCE = "run's prompt"


def measure_run(source: Path, out: Path, variants: list[tuple[str, list[str]]]) -> dict:
    targets = {REFERENCE: variant_dir(out, source, REFERENCE)}
    for name, overrides in variants:
        targets[name] = variant_dir(out, source, name)
        if not targets[name].exists():
            regenerated_run(source, targets[name], overrides, TRAINED)
    records = {}
    for variant, target in targets.items():
        records[variant] = run_variant(source, target, [], TRAINED)["records"]
        run = RunDir(target)
        for name in ASKED:
            pipeline.evaluate(run, run.load_config(), METHODS[name])
            records[variant][name] = read_jsonl(run.eval(name))
    rows = {}
    for variant, outcome in records.items():
        contains = {name: sum(record["contains"] for record in outcome[name]) for name in ("pd", "open-book")}
        rows[variant] = {**scored_against(outcome, records[REFERENCE], TRAINED + ASKED, REFERENCE),
                         "pd - sft": paired(outcome["pd"], outcome["sft"]),
                         "pd / open-book": contains["pd"] / max(1.0, contains["open-book"])}
    return {"questions": len(records[REFERENCE]["pd"]), "variants": rows}


def print_table(source: str, result: dict) -> None:
    names = TRAINED + ASKED
    print(f"\n{source} ({result['questions']} test questions): containment %, paired differences in points")
    print("| teacher's prompt | " + " | ".join(f"{m} [95%] | change" for m in names) + " | pd - sft | pd / open-book |")
    print("|" + "---|" * (3 + 2 * len(names)))
    for variant, row in result["variants"].items():
        cells = [cell for m in names for cell in (score_text(row[m]), paired_text(row[f"{m} - {REFERENCE}"]))]
        print(f"| {variant} | " + " | ".join(cells)
              + f" | {paired_text(row['pd - sft'])} | {row['pd / open-book']:.2f} |")


def main() -> None:
    args, _, variants = parse_arguments(__doc__, "sft,pd", "teacher_prompt.json")
    results = {str(source): measure_run(source, args.out, variants) for source in args.run}
    for source, result in results.items():
        print_table(source, result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nJSON: {args.json}")


if __name__ == "__main__":
    main()
