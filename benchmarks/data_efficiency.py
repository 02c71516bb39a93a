"""Data efficiency: closed-book accuracy of pd and sft against the training questions per passage.

    python benchmarks/data_efficiency.py --run runs/demo --run runs/nyt10 --scales 5,10,20 \
        --out /tmp/data-efficiency

The paper's Table 10 in small: for every run and scale S, the run is copied to OUT/RUN/qS keeping
the first S questions of each passage and their answers (so a smaller set lies inside every
larger one, and every scale reads the same expert answers), and sft and pd are trained and
evaluated there by the pipeline's own stages (train_levers.py's run_variant); the scale equal to
the run's own reuses its adapters. The run's base, rag and open-book replies are the references.
Prints per run a table (containment with 95% intervals, pd - sft paired over the same test
questions, the share of test questions whose answer appears in the training answers), writes
JSON and a plot (accuracy against questions per passage, references as horizontal lines).
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections import defaultdict
from pathlib import Path

from train_levers import paired, paired_text, run_variant, score, score_text

from promptdistill.files import read_jsonl, write_jsonl
from promptdistill.report import answer_coverage
from promptdistill.rundir import RunDir

REFERENCES = {"base": ":", "rag": "--", "open-book": "-."}  # name: line style in the plot


def subset_run(source: Path, target: Path, per_passage: int, method_names: list[str]) -> None:
    """A copy of `source` whose questions and answers are the first `per_passage` of each passage.
    Where that drops any, the trained methods' adapters and replies and the teacher cache go too
    (the pipeline rebuilds them); otherwise the copy keeps them and nothing is retrained."""
    questions = read_jsonl(RunDir(source).questions)
    taken: dict[str, int] = defaultdict(int)
    kept = []
    for question in questions:
        if taken[question["passage_id"]] < per_passage:
            taken[question["passage_id"]] += 1
            kept.append(question)
    if max(taken.values()) < per_passage:
        raise SystemExit(f"{source}: scale {per_passage} is above the run's {max(taken.values())} questions per "
                         "passage (run it with a larger synth.questions_per_passage)")
    dropped = len(kept) < len(questions)
    skipped = ("export", "cache") + (("adapters", "teacher") if dropped else ())
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(*skipped))
    if not dropped:
        return
    run = RunDir(target)
    write_jsonl(run.questions, kept)
    ids = {question["id"] for question in kept}
    for path in (target / "answers").glob("*.jsonl"):
        write_jsonl(path, [answer for answer in read_jsonl(path) if answer["question_id"] in ids])
    for name in method_names:
        run.eval(name).unlink(missing_ok=True)


def measure_run(source: Path, out: Path, scales: list[int], method_names: list[str]) -> dict:
    run = RunDir(source)
    tests = read_jsonl(run.test_questions)
    docs = {passage.id: passage.doc_id for passage in run.load_passages()}
    references = {name: read_jsonl(run.eval(name)) for name in REFERENCES if run.eval(name).is_file()}
    rows = {}
    for scale in scales:
        target = out / source.name / f"q{scale}"
        if not target.exists():
            subset_run(source, target, scale, method_names)
        outcome = run_variant(source, target, [], method_names)
        scaled = RunDir(target)
        questions = read_jsonl(scaled.questions)
        row = {"training_questions": len(questions), "train_seconds": outcome["train_seconds"]}
        for name in method_names:
            row[name] = score(outcome["records"][name])
            row[f"{name} coverage"] = answer_coverage(tests, docs, questions, read_jsonl(scaled.answers(name)))["covered"]
        if {"pd", "sft"} <= set(method_names):
            row["pd - sft"] = paired(outcome["records"]["pd"], outcome["records"]["sft"])
        rows[scale] = row
    return {"questions": len(tests), "references": {name: score(records) for name, records in references.items()},
            "scales": rows}


def print_table(source: str, result: dict, method_names: list[str]) -> None:
    references = ", ".join(f"{name} {r['contains']:.0f} [{r['interval'][0]:.0f}, {r['interval'][1]:.0f}]"
                           for name, r in result["references"].items())
    print(f"\n{source} ({result['questions']} test questions; {references}): containment %")
    print("| questions per passage | training questions | " +
          " | ".join(f"{m} [95%] | {m} coverage" for m in method_names) + " | pd - sft | train s |")
    print("|" + "---|" * (4 + 2 * len(method_names)))
    for scale, row in result["scales"].items():
        cells = []
        for method in method_names:
            cells += [score_text(row[method]), f"{row[f'{method} coverage']:.0f}"]
        gap = paired_text(row["pd - sft"]) if "pd - sft" in row else "-"
        print(f"| {scale} | {row['training_questions']} | " + " | ".join(cells) +
              f" | {gap} | {sum(row['train_seconds'].values()):.0f} |")


def plot(results: dict, method_names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for axis, (source, result) in zip(axes[0], results.items()):
        scales = [int(scale) for scale in result["scales"]]
        for method in method_names:
            rows = [result["scales"][scale][method] for scale in result["scales"]]
            means = [row["contains"] for row in rows]
            errors = [[m - row["interval"][0] for m, row in zip(means, rows)],
                      [row["interval"][1] - m for m, row in zip(means, rows)]]
            axis.errorbar(scales, means, yerr=errors, marker="o", capsize=3, label=method)
        for name, reference in result["references"].items():
            axis.axhline(reference["contains"], linestyle=REFERENCES[name], color="grey", label=name)
        axis.set_xscale("log", base=2)
        axis.set_xticks(scales, [str(scale) for scale in scales])
        axis.set_ylim(0, 100)
        axis.set_xlabel("training questions per passage")
        axis.set_ylabel("closed-book containment %")
        axis.set_title(f"{Path(source).name} ({result['questions']} test questions)")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, action="append", required=True, help="a finished run (repeatable)")
    parser.add_argument("--scales", default="5,10,20", help="questions per passage, comma-separated")
    parser.add_argument("--methods", default="sft,pd")
    parser.add_argument("--out", type=Path, required=True)
    results_dir = Path(__file__).parent / "results"
    parser.add_argument("--json", type=Path, default=results_dir / "data_efficiency.json")
    parser.add_argument("--plot", type=Path, default=results_dir / "data_efficiency.png")
    args = parser.parse_args()
    scales, method_names = sorted(int(s) for s in args.scales.split(",")), args.methods.split(",")

    results = {str(source): measure_run(source, args.out, scales, method_names) for source in args.run}
    for source, result in results.items():
        print_table(source, result, method_names)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, method_names, args.plot)
    print(f"\nJSON: {args.json}\nplot: {args.plot}")


if __name__ == "__main__":
    main()
