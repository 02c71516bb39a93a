"""The run report: a methods x metrics table (report.md, report.json) and a bar chart."""

from __future__ import annotations

import json
from pathlib import Path

from promptdistill.evaluate import METRICS
from promptdistill.rundir import write_atomic

NOTES = {
    "base": "the model closed-book, no training",
    "sft": "closed-book after cross-entropy on the expert's answers",
    "pd": "closed-book after prompt distillation",
    "open-book": "the teacher, passage in prompt: the ceiling",
}


def table_rows(summaries: dict[str, dict[str, float]]) -> list[str]:
    """Plain-text rows, the same in the terminal and in report.md."""
    lines = [f"{'method':<11} closed-book accuracy (contains / EM / F1)"]
    for method, summary in summaries.items():
        scores = " / ".join(f"{summary[metric]:5.1f}" for metric in METRICS)
        lines.append(f"{method:<11} {scores}   ({NOTES.get(method, '')})")
    return lines


def write_report(run_dir: Path, summaries: dict[str, dict[str, float]], settings: dict, counts: dict) -> str:
    """Write report.md, report.json and plots/accuracy.png; return the table text."""
    table = "\n".join(table_rows(summaries))
    report = {"methods": summaries, "counts": counts, "settings": settings}
    write_atomic(run_dir / "report.json", json.dumps(report, indent=2) + "\n")
    plot_path = run_dir / "plots" / "accuracy.png"
    plot_accuracy(summaries, plot_path)
    lines = [
        "# promptdistill report", "",
        f"Model: `{settings['model']['name']}`; {counts['test_questions']} test questions over "
        f"{counts['documents']} documents ({counts['passages']} passages); "
        f"{counts.get('questions', 0)} training questions.", "",
        "| method | contains | EM | F1 | what |", "|---|---|---|---|---|",
    ]
    for method, summary in summaries.items():
        lines.append(f"| {method} | {summary['contains']:.1f} | {summary['em']:.1f} | "
                     f"{summary['f1']:.1f} | {NOTES.get(method, '')} |")
    lines += ["", "Accuracy in percent. contains: some accepted answer appears in the reply as whole "
              "words; EM: exact match; F1: token F1 (SQuAD normalisation).", "",
              "![accuracy](plots/accuracy.png)", "",
              "Per-question replies and grades: `eval/METHOD.jsonl`. Settings: `config.yaml`.", ""]
    write_atomic(run_dir / "report.md", "\n".join(lines))
    return table


def plot_accuracy(summaries: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(summaries)
    figure, axis = plt.subplots(figsize=(6, 3.5))
    bars = axis.bar(methods, [summaries[m]["contains"] for m in methods], color="#4c72b0")
    axis.bar_label(bars, fmt="%.0f")
    axis.set_ylim(0, 105)
    axis.set_ylabel("accuracy (contains), %")
    axis.set_title("Closed-book accuracy by method")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(temporary, dpi=120)
    plt.close(figure)
    temporary.replace(path)
