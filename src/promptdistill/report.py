"""The run report, in the paper's layout: methods as rows, accuracy by each grader as columns.

report.md and report.json hold the table, the number of test questions and the run's settings;
plots/accuracy.png has one bar per method with its 95% bootstrap interval over questions, and
beside it, where the retention check ran, each trained method's retention and drift.
"""

from __future__ import annotations

import json
from pathlib import Path

from promptdistill import methods, retention, selfcheck, update
from promptdistill.config import RunConfig
from promptdistill.evaluate import contains, summarise
from promptdistill.files import read_jsonl, write_atomic
from promptdistill.judge import agreement
from promptdistill.rundir import RunDir
from promptdistill.stats import bootstrap_interval
from promptdistill.train.tracking import log_results


# The paper's Table 2: Llama-3-8B-Instruct, closed-book accuracy % graded by its LLM judge,
# on the first 1,000 questions of each SquadShifts subset (Kujanpää et al., TMLR 2025).
PAPER_TABLE_2 = {
    "amazon": {"base": 22.1, "uft": 39.5, "sft": 75.9, "pd": 86.1, "rag": 86.3, "pd+rag": 88.5},
    "new_wiki": {"base": 61.2, "uft": 63.1, "sft": 89.5, "pd": 94.4, "rag": 95.6, "pd+rag": 96.7},
    "nyt": {"base": 38.2, "uft": 52.6, "sft": 87.5, "pd": 93.6, "rag": 96.3, "pd+rag": 96.9},
    "reddit": {"base": 20.8, "uft": 30.9, "sft": 69.8, "pd": 79.5, "rag": 78.6, "pd+rag": 77.8},
}
PAPER_SOURCE = "Kujanpää et al. 2025, Table 2 (Llama-3-8B-Instruct, LLM judge)"


def paper_reference(spec: str) -> dict[str, float] | None:
    """The paper's numbers for a dataset spec such as squadshifts:nyt or paper:nyt, if it has any."""
    family, _, rest = spec.partition(":")
    subset = rest.partition(":")[0]
    return PAPER_TABLE_2.get(subset) if family in ("squadshifts", "paper") else None


def report_run(run: RunDir, config: RunConfig) -> str:
    """The report of a run directory, from the graded replies of every chosen method: on the test
    questions, where the run has some, and on the self-check's; returns the table."""
    resamples = config.eval.bootstrap_resamples
    results, differences = scores(run, config, "test") if run.has_questions("test") else ({}, {})
    self_check = None
    if (selfcheck.wanted(config) and run.has_questions("self-check")
            and all(run.eval(name, "self-check").is_file() for name in config.methods)):
        checked, checked_differences = scores(run, config, "self-check")
        self_check = {"methods": checked, "paired": checked_differences,
                      "questions": len(read_jsonl(run.self_check_questions))}
    answered = [m.name for m in methods.trained(config.methods)
                if m.trains_on_answers and run.answers(m.name).is_file()]
    coverage = {}
    if answered and results:
        tests, questions = read_jsonl(run.test_questions), read_jsonl(run.questions)
        docs = {passage.id: passage.doc_id for passage in run.load_passages()}
        coverage = {name: answer_coverage(tests, docs, questions, read_jsonl(run.answers(name))) for name in answered}
    first = results or (self_check or {}).get("methods", {})  # the table that shows what was forgotten too
    for name in [m.name for m in methods.trained(config.methods) if m.name in first]:
        first[name].update(retention.summary(run, name, resamples, config.seed) or {})
    kept = {name: retention.kept_by_question(run, name) for name in ("pd", "sft") if run.retention(name).is_file()}
    if len(kept) == 2 and kept["pd"]:  # the paper has sft forgetting more than pd
        differences["retention: pd - sft"] = paired(kept["pd"], kept["sft"], resamples, config.seed)
    documents = by_document(run, config, "test" if results else "self-check") if first else None
    table = write_report(run.path, results, config.to_dict(), run.counts(), paper_reference(config.dataset.spec),
                         run.stage_costs(), differences, coverage, self_check, documents)
    if config.train.tracker:
        log_results(config.train.tracker, run.logs, {"test": results, "self-check": (self_check or {}).get("methods")})
    return table


def scores(run: RunDir, config: RunConfig, question_set: str) -> tuple[dict[str, dict], dict[str, dict]]:
    """Each chosen method's scores on a set of questions, and the paired differences between them."""
    graded = {name: run.load_graded(name, bool(config.eval.judge), question_set) for name in config.methods}
    resamples = config.eval.bootstrap_resamples
    results = {name: method_results(records, verdicts, resamples, config.seed)
               for name, (records, verdicts) in graded.items()}
    return results, paired_differences({name: records for name, (records, _) in graded.items()}, resamples, config.seed)


def by_document(run: RunDir, config: RunConfig, question_set: str) -> dict:
    """Each method's containment per document, and per group of documents where a method's last
    training was an update (update.py): the documents before it, those added and those edited."""
    doc_of = {question.id: question.doc_id for question in run.load_test_questions(question_set)}
    groups = next(filter(None, (update.document_groups(run, m.name) for m in methods.trained(config.methods))), {})
    grades: dict[str, dict[str, dict[str, list[float]]]] = {"documents": {}, "groups": {}}
    for name in config.methods:
        for record in read_jsonl(run.eval(name, question_set)):
            doc = doc_of[record["id"]]
            for kind, key in (("documents", doc), ("groups", groups.get(doc))):
                if key is not None:
                    grades[kind].setdefault(key, {}).setdefault(name, []).append(record["contains"])
    summary = {kind: {key: {"questions": len(next(iter(by_method.values()))),
                            "methods": {name: 100 * sum(values) / len(values) for name, values in by_method.items()}}
                      for key, by_method in sorted(found.items())} for kind, found in grades.items()}
    for doc, entry in summary["documents"].items():
        entry["group"] = groups.get(doc)
    unasked = {passage.doc_id for passage in run.load_passages()} - set(summary["documents"])
    return {"question_set": question_set, **summary, "without_questions": len(unasked)}


def method_results(records: list[dict], verdicts: list[bool | None] | None, resamples: int, seed: int) -> dict:
    """A method's scores from its graded records (evaluate.grade_all's): metric means, a 95%
    interval of containment, recall@k where it retrieved, the judge's share where it judged."""
    result: dict = summarise(records)
    low, high = bootstrap_interval([r["contains"] for r in records], resamples=resamples, seed=seed)
    result["contains_interval"] = [100 * low, 100 * high]
    if "retrieval_hit" in records[0]:
        result["recall_at_k"] = 100 * sum(r["retrieval_hit"] for r in records) / len(records)
    if verdicts is not None:
        result["judge"] = 100 * sum(v is True for v in verdicts) / len(verdicts)
        result["judge_agreement"] = agreement(verdicts, [r["contains"] for r in records])
    return result


# Differences the report states as paired intervals over the same questions, when both methods ran.
PAIRS = (("pd", "sft"), ("pd", "base"), ("pd", "rag"), ("pd+rag", "rag"))


def paired_differences(records: dict[str, list[dict]], resamples: int, seed: int) -> dict[str, dict]:
    """Containment of one method minus another's, question by question, with a 95% bootstrap
    interval over questions: whether pd beats sft is then a measured statement, not two bars."""
    grades = {name: {r["id"]: r["contains"] for r in method_records} for name, method_records in records.items()}
    return {f"{first} - {second}": paired(grades[first], grades[second], resamples, seed)
            for first, second in PAIRS if first in grades and second in grades}


def paired(first: dict[str, float], second: dict[str, float], resamples: int, seed: int) -> dict:
    """The mean of first - second over the same keys (0/1 grades, in points), with a 95% bootstrap interval."""
    per_question = [100 * (value - second[key]) for key, value in first.items()]
    low, high = bootstrap_interval(per_question, resamples=resamples, seed=seed)
    return {"difference": sum(per_question) / len(per_question), "interval": [low, high],
            "questions": len(per_question)}


def answer_coverage(tests: list[dict], passage_docs: dict[str, str], questions: list[dict],
                    answers: list[dict]) -> dict:
    """The share of test questions with an accepted answer inside some training answer about their
    document: below it, a miss comes from the questions the expert wrote, not from learning.
    Computed after training, from files training never read test questions into."""
    doc_of_question = {q["id"]: passage_docs[q["passage_id"]] for q in questions}
    texts_by_doc: dict[str, list[str]] = {}
    for answer in answers:
        texts_by_doc.setdefault(doc_of_question[answer["question_id"]], []).append(answer["answer"])
    covered = sum(any(contains(text, accepted) for text in texts_by_doc.get(test["doc_id"], [])
                      for accepted in test["answers"]) for test in tests)
    return {"covered": 100 * covered / len(tests), "questions": len(tests)}


def _paired_lines(paired: dict[str, dict]) -> list[str]:
    return [f"{name}: {d['difference']:+.1f} points, 95% interval [{d['interval'][0]:+.1f}, {d['interval'][1]:+.1f}] "
            f"(paired over {d['questions']} {'general ' if name.startswith('retention') else ''}questions)"
            for name, d in paired.items()]


def _coverage_lines(coverage: dict[str, dict]) -> list[str]:
    return [f"{method} training answers hold an accepted answer for {c['covered']:.0f}% of the test questions "
            f"(the most {method} could learn from them)" for method, c in coverage.items()]


def _note(method: str) -> str:
    return methods.METHODS[method].note if method in methods.METHODS else ""


def _columns(results: dict[str, dict]) -> list[tuple[str, str]]:
    """(key, heading) of the columns this run has: judge and recall only where measured."""
    columns = [("contains", "contains"), ("contains_interval", "95% interval"), ("em", "EM"), ("f1", "F1")]
    if any("judge" in result for result in results.values()):
        columns.append(("judge", "judge"))
    if any("recall_at_k" in result for result in results.values()):
        columns.append(("recall_at_k", "recall@k"))
    if any("paper" in result for result in results.values()):
        columns.append(("paper", "paper"))
    if any(result.get("drift") is not None for result in results.values()):
        columns += [("retention", "retention"), ("drift", "drift (KL)")]
    return columns


def _cell(value, result: dict | None = None, key: str = "") -> str:
    """A table cell; retention and drift carry their 95% interval in brackets."""
    if value is None:
        return "-"
    if key == "retention":
        low, high = result["retention_interval"]
        return f"{value:.0f} [{low:.0f}-{high:.0f}]"
    if key == "drift":
        low, high = result["drift_interval"]
        return f"{value:.3f} [{low:.3f}-{high:.3f}]"
    if isinstance(value, list):
        return f"{value[0]:.0f}-{value[1]:.0f}"
    return f"{value:.1f}"


TEST_TITLE = "accuracy, % of test questions (rag, pd+rag and open-book read passages; the rest are closed-book)"


def self_check_title(questions: int) -> str:
    return (f"self-check, % of {questions} questions the model wrote about the documents and never trained on, "
            "graded against the teacher's answers with the passage: an estimate; read the differences, not the "
            "levels (docs/quality.md)")


def table_rows(results: dict[str, dict], title: str = TEST_TITLE) -> list[str]:
    """Plain-text rows, the same in the terminal and in report.md."""
    columns = _columns(results)
    cells = {method: [_cell(result.get(key), result, key) for key, _ in columns] for method, result in results.items()}
    widths = [max([12, len(heading)] + [len(row[i]) for row in cells.values()]) for i, (_, heading) in enumerate(columns)]
    header = f"{'method':<10} " + " ".join(f"{heading:>{width}}" for (_, heading), width in zip(columns, widths))
    lines = [title, header]
    for method, row in cells.items():
        lines.append(f"{method:<10} " + " ".join(f"{cell:>{width}}" for cell, width in zip(row, widths))
                     + f"   {_note(method)}")
    return lines


def write_report(run_dir: Path, results: dict[str, dict], settings: dict, counts: dict,
                 reference: dict[str, float] | None = None, stages: dict[str, dict] | None = None,
                 paired: dict[str, dict] | None = None, coverage: dict[str, dict] | None = None,
                 self_check: dict | None = None, documents: dict | None = None) -> str:
    """Write report.md, report.json and plots/accuracy.png; return the table text.

    `results`: each method's scores on the test questions (empty: the run has none).
    `reference`: the paper's published accuracy per method for the same dataset, shown beside.
    `stages`: each stage's wall time and peak memory (RunDir.stage_costs), for a table of where
    the time went.
    `paired`: paired_differences' intervals, stated under the table.
    `coverage`: answer_coverage of each method's training answers.
    `self_check`: {"methods", "paired", "questions"} of the self-check (selfcheck.py).
    `documents`: by_document's accuracy per document, and per group after an update.
    """
    stages, paired, coverage = stages or {}, paired or {}, coverage or {}
    if reference:
        results = {method: {**result, "paper": reference.get(method)} for method, result in results.items()}
    tables = []
    if results:
        tables += table_rows(results) + _paired_lines(paired) + _coverage_lines(coverage) + [""]
    if self_check:
        tables += table_rows(self_check["methods"], self_check_title(self_check["questions"]))
        tables += _paired_lines(self_check["paired"])
    write_atomic(run_dir / "report.json",
                 json.dumps({"methods": results, "paired": paired, "coverage": coverage, "self_check": self_check,
                             "by_document": documents, "counts": counts, "stages": stages, "settings": settings},
                            indent=2) + "\n")
    plot_accuracy(results, run_dir / "plots" / "accuracy.png", self_check["methods"] if self_check else None)
    tested = f"{counts['test_questions']} test questions" if results else "no test questions"
    written = f"{counts['questions']} training questions"
    if self_check:
        written += f" and {self_check['questions']} self-check questions"
    lines = ["# promptdistill report", "",
             f"Model: `{settings['model']['name']}`; {tested} over {counts['documents']} documents "
             f"({counts['passages']} passages; the text of each in `documents/`); {written}.", ""]
    if results:
        lines += _markdown_section(results, paired, settings, reference, "Accuracy in percent. ")
    if coverage:
        lines += [f"- {line}" for line in _coverage_lines(coverage)] + [""]
    if self_check:
        lines += ["## Self-check: what was learned, estimated without test questions", "",
                  f"The expert wrote {self_check['questions']} more questions about the documents, which no method "
                  "trained on, and the teacher (the base model with the passage in its prompt) answered each; each "
                  "method then answered them as it answers test questions. A reply counts as correct when it holds "
                  "the key span of the teacher's answer (the words that answer, beyond what the question says). "
                  "This is an estimate from the model's own questions and answers, not a test: it measures how much "
                  "of what the teacher says with the passage a method says without it. Read its differences, not "
                  "its levels: on two corpora with real test questions its gain of a trained method over base came "
                  "within 2 points of the real gain, while its scores ran 6 to 15 points above the real ones (and "
                  "open-book's near its own answers); a difference between two trained methods whose interval holds "
                  "0 is not one (docs/quality.md).", ""]
        lines += _markdown_section(self_check["methods"], self_check["paired"], settings, None, "")
    lines += ["![accuracy](plots/accuracy.png)", ""]
    if documents:
        lines += _document_lines(documents)
    if stages:
        total = sum(cost["seconds"] for cost in stages.values())
        lines += [f"Where the time went ({total / 60:.1f} min over the stages' last runs; peak memory of the "
                  "promptdistill process during each; `manifests/STAGE.json`):", "",
                  "| stage | seconds | share | peak memory GB |", "|---|---|---|---|"]
        lines += [f"| {stage} | {cost['seconds']:.0f} | {100 * cost['seconds'] / max(total, 1e-9):.0f}% | "
                  f"{'-' if cost['peak_memory_gb'] is None else format(cost['peak_memory_gb'], '.2f')} |"
                  for stage, cost in stages.items()]
        lines.append("")
    lines += ["Per-question replies and grades: `eval/METHOD.jsonl` (the self-check's: `self_check/METHOD.jsonl`). "
              "Settings: `config.yaml`.", ""]
    write_atomic(run_dir / "report.md", "\n".join(lines))
    return "\n".join(tables).rstrip("\n")


EDITED_NOTE = ("An update trains an edited document's new text, and nothing unlearns its old text: an old fact can "
               "still come back (docs/quality.md measures how often). Where it must not, train from scratch: the "
               "same command without --update.")


def _document_lines(documents: dict) -> list[str]:
    """report.md's accuracy by document (and by group after an update), methods as columns."""
    names = list(next(iter(documents["documents"].values()))["methods"]) if documents["documents"] else []
    kind = "test questions" if documents["question_set"] == "test" else "self-check questions"
    lines = ["## By document", "", f"Containment in percent on each document's {kind}: which documents were learned, "
             "and which were not.", ""]
    for title, rows in (("documents", documents["groups"]), ("document", documents["documents"])):
        if not rows:
            continue
        lines += [f"| {title} | questions | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
        lines += [f"| {key}{' (' + row['group'] + ')' if row.get('group') else ''} | {row['questions']} | "
                  + " | ".join(f"{row['methods'].get(name, 0):.0f}" for name in names) + " |"
                  for key, row in rows.items()]
        lines.append("")
    if documents["without_questions"]:
        lines += [f"{documents['without_questions']} document(s) have no {kind}.", ""]
    if any(row.get("group") == "edited" for row in documents["documents"].values()):
        lines += [EDITED_NOTE, ""]
    return lines


def _markdown_section(results: dict[str, dict], paired: dict[str, dict], settings: dict,
                      reference: dict[str, float] | None, lead: str) -> list[str]:
    """One table of report.md with what its columns mean, its paired differences and the judge's agreement."""
    columns = _columns(results)
    lines = ["| method | " + " | ".join(heading for _, heading in columns) + " | what |",
             "|---" * (len(columns) + 2) + "|"]
    for method, result in results.items():
        lines.append(f"| {method} | " + " | ".join(_cell(result.get(key), result, key) for key, _ in columns)
                     + f" | {_note(method)} |")
    graders = "contains: some accepted answer appears in the reply as whole words; EM: exact match; " \
              "F1: token F1 (SQuAD normalisation); 95% interval: bootstrap over questions, for contains"
    if any("judge" in result for result in results.values()):
        graders += f"; judge: the LLM judge `{settings['eval']['judge']}` said correct"
    else:
        graders += "; no LLM judge was configured (eval.judge), so lexical grades stand alone"
    if any("recall_at_k" in result for result in results.values()):
        graders += f"; recall@k: the gold document among the {settings['eval']['rag_k']} passages retrieved " \
                   f"by {settings['eval']['retriever']}"
    if reference:
        graders += f"; paper: {PAPER_SOURCE}"
    known = next((r for r in results.values() if r.get("drift") is not None), None)
    if known:
        graders += (f"; retention: of the {known['general_questions']} bundled general questions, the "
                    f"{known['known']} the base model answers correctly, the share the trained model still does; "
                    "drift: mean KL(base || trained) per token of the base model's replies to everyday prompts "
                    "(both with 95% bootstrap intervals; `retention/`)")
    lines += ["", f"{lead}{graders}.", ""]
    if paired:
        lines += ["Differences in containment on the same questions (a difference whose interval holds 0 is "
                  "not established):", ""] + [f"- {line}" for line in _paired_lines(paired)] + [""]
    agreements = {m: r["judge_agreement"] for m, r in results.items() if "judge_agreement" in r}
    if agreements:
        lines += ["How often the judge and containment agree (over parseable verdicts):", "",
                  "| method | agree | judge only | contains only | unparseable |", "|---|---|---|---|---|"]
        for method, counted in agreements.items():
            rate = "-" if counted["agreement"] is None else f"{100 * counted['agreement']:.0f}%"
            lines.append(f"| {method} | {rate} | {counted['judge_only']} | {counted['contains_only']} | "
                         f"{counted['unparseable']} |")
        lines.append("")
    return lines


def plot_accuracy(results: dict[str, dict], path: Path, self_check: dict[str, dict] | None = None) -> None:
    """Accuracy bars with intervals, on the test questions and on the self-check's; where retention
    was measured, a panel with each trained method's retention (bars, intervals) and drift
    (written at the foot of its bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    if results:
        panels.append((results, "accuracy (contains), %", "Test questions, with 95% bootstrap intervals"))
    if self_check:
        panels.append((self_check, "self-check (contains), %", "Self-check (an estimate), with 95% intervals"))
    first = results or self_check or {}
    checked = [m for m, result in first.items() if result.get("drift") is not None]
    widths = [len(shown) + 1.5 for shown, _, _ in panels] + ([len(checked) + 1.5] if checked else [])
    figure, axes = plt.subplots(1, len(widths), figsize=(1.1 * sum(widths) + 1, 3.8), squeeze=False,
                                gridspec_kw={"width_ratios": widths})
    for axis, (shown, label, title) in zip(axes[0], panels):
        _bars(axis, shown, "contains", "contains_interval", "{:.0f}", "#4c72b0")
        axis.set_ylabel(label)
        axis.set_title(title)
    if checked:
        shown = {m: {**first[m], "retention": first[m]["retention"] or 0.0,
                     "retention_interval": first[m]["retention_interval"] or [0.0, 0.0]} for m in checked}
        axis = axes[0][-1]
        _bars(axis, shown, "retention", "retention_interval", "{:.0f}", "#55a868")
        for position, method in enumerate(checked):
            axis.text(position, 4, f"KL {first[method]['drift']:.3f}", ha="center", va="bottom", fontsize=8,
                      color="white")
        axis.set_ylabel("general questions kept, %")
        axis.set_title("Retention, and drift (KL)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(temporary, dpi=120)
    plt.close(figure)
    temporary.replace(path)


def _bars(axis, results: dict[str, dict], key: str, interval: str, label: str, color: str) -> None:
    """One bar per method with its interval, the value written above the interval."""
    names = list(results)
    means = [results[m][key] for m in names]
    errors = [[mean - results[m][interval][0] for m, mean in zip(names, means)],
              [results[m][interval][1] - mean for m, mean in zip(names, means)]]
    axis.bar(names, means, yerr=errors, capsize=4, color=color)
    for position, method in enumerate(names):  # above the interval, where nothing overlaps it
        axis.text(position, results[method][interval][1] + 2, label.format(results[method][key]),
                  ha="center", va="bottom")
    axis.set_ylim(0, 112)
