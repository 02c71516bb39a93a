"""The expert's answer length, side by side: sft and pd trained on answers of different lengths.

    python benchmarks/answer_length.py --run runs/demo --run runs/nyt10 --out /tmp/answer-length \
        --variant "128-token cap:synth.max_answer_tokens=128"

Per run, three kinds of variant, each in OUT/RUN/VARIANT:
- cap: the run as it is (its answers to its length cap), the reference;
- first-sentence: the run's answers cut at their first sentence. `synth.answer_length=sentence`
  stops the expert there, and a reply's first sentence does not depend on what the model would
  have written after it, so these are the answers that setting makes from the same draws;
- every --variant NAME:SETTING=VALUE,...: the answers generated anew with those synth.* settings.
sft and pd are trained and evaluated in each by the pipeline's own stages (train_levers.py's
run_variant; the teacher cache is made anew for new answers). Prints per run each variant's
containment with a 95% interval, the change paired over the same test questions, pd - sft, the
answer tokens trained on, the share of test questions whose answer the training answers hold, and
the seconds spent answering and training; writes JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

from train_levers import (paired, paired_text, parse_arguments, run_variant, score_text, scored_against, variant_copy,
                          variant_dir)

from promptdistill import pipeline
from promptdistill.files import read_jsonl, write_jsonl
from promptdistill.generation.core import SENTENCE_ENDS, cut_at_stop
from promptdistill.methods import METHODS
from promptdistill.models import load_tokenizer
from promptdistill.report import answer_coverage
from promptdistill.rundir import RunDir


def copy_without_answers(source: Path, target: Path, overrides: list[str], method_names: list[str]):
    """(run, config) of a copy of `source` with `overrides`, without the trained methods' adapters,
    replies and the teacher cache (the pipeline makes them anew)."""
    run, config = variant_copy(source, target, overrides, leave_out=("teacher", *method_names))
    for name in method_names:
        run.eval(name).unlink(missing_ok=True)
    return run, config


def first_sentence_run(source: Path, target: Path, method_names: list[str]) -> None:
    run, _ = copy_without_answers(source, target, ["synth.answer_length=sentence"], method_names)
    for name in method_names:
        answers = read_jsonl(run.answers(name))
        write_jsonl(run.answers(name), [{**a, "answer": cut_at_stop(a["answer"], SENTENCE_ENDS)} for a in answers])


def regenerated_run(source: Path, target: Path, overrides: list[str], method_names: list[str]) -> None:
    run, config = copy_without_answers(source, target, overrides, method_names)
    for name in method_names:
        run.answers(name).unlink()
        pipeline.answers(run, config, METHODS[name])


def measure_run(source: Path, out: Path, method_names: list[str], variants: list[tuple[str, list[str]]]) -> dict:
    targets = {"cap": out / source.name / "cap", "first-sentence": out / source.name / "first-sentence"}
    if not targets["first-sentence"].exists():
        first_sentence_run(source, targets["first-sentence"], method_names)
    for name, overrides in variants:
        targets[name] = variant_dir(out, source, name)
        if not targets[name].exists():
            regenerated_run(source, targets[name], overrides, method_names)
    outcomes = {variant: run_variant(source, target, [], method_names) for variant, target in targets.items()}
    source_run = RunDir(source)
    tests = read_jsonl(source_run.test_questions)
    tokenizer = load_tokenizer(source_run.load_config().model)
    rows = {}
    for variant, target in targets.items():
        run, outcome = RunDir(target), outcomes[variant]
        docs = {passage.id: passage.doc_id for passage in run.load_passages()}
        answered = variant != "first-sentence"  # answers cut from the run's took no answering
        row = {"train_seconds": outcome["train_seconds"],
               "answer_seconds": {name: json.loads(run.manifest(f"answers-{name}").read_text())["seconds"]
                                  for name in method_names} if answered else {},
               **scored_against(outcome["records"], outcomes["cap"]["records"], method_names, "cap")}
        for name in method_names:
            answers = read_jsonl(run.answers(name))
            row[f"{name} answer tokens"] = sum(len(tokenizer(a["answer"])["input_ids"]) for a in answers)
            row[f"{name} coverage"] = answer_coverage(tests, docs, read_jsonl(run.questions), answers)["covered"]
        if {"pd", "sft"} <= set(method_names):
            row["pd - sft"] = paired(outcome["records"]["pd"], outcome["records"]["sft"])
        row["train_time_ratio"] = sum(row["train_seconds"].values()) / sum(outcomes["cap"]["train_seconds"].values())
        rows[variant] = row
    return {"questions": len(tests), "variants": rows}


def print_table(source: str, result: dict, method_names: list[str]) -> None:
    print(f"\n{source} ({result['questions']} test questions): containment %, paired differences in points")
    print("| answers | " + " | ".join(f"{m} [95%] | {m} - cap | {m} answer tokens | {m} coverage" for m in method_names)
          + " | pd - sft | answer s | train s | train time ratio |")
    print("|" + "---|" * (5 + 4 * len(method_names)))
    for variant, row in result["variants"].items():
        cells = []
        for name in method_names:
            cells += [score_text(row[name]), paired_text(row[f"{name} - cap"]),
                      str(row[f"{name} answer tokens"]), f"{row[f'{name} coverage']:.0f}"]
        gap = paired_text(row["pd - sft"]) if "pd - sft" in row else "-"
        answering = f"{sum(row['answer_seconds'].values()):.0f}" if row["answer_seconds"] else "-"
        print(f"| {variant} | " + " | ".join(cells) + f" | {gap} | {answering} | "
              f"{sum(row['train_seconds'].values()):.0f} | {row['train_time_ratio']:.2f} |")


def main() -> None:
    args, method_names, variants = parse_arguments(__doc__, "sft,pd", "answer_length.json", variants_required=False)
    results = {str(source): measure_run(source, args.out, method_names, variants) for source in args.run}
    for source, result in results.items():
        print_table(source, result, method_names)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nJSON: {args.json}")


if __name__ == "__main__":
    main()
