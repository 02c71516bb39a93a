"""Does `run --update` keep a model current as well as training again from scratch, for less?

    python benchmarks/update.py --name demo --docs src/promptdistill/demo/docs \
        --test-questions src/promptdistill/demo/test_questions.jsonl --add 2 --seeds 0,1 \
        --edit benchmarks/data/update_edit_demo.json --update-variant "rehearse half:train.update_rehearsal=0.5" \
        --out runs/update --json benchmarks/results/update.json -- --config src/promptdistill/configs/demo.yaml

For each draw (seed): a run on every document but the last --add (by id), with their test
questions; then, on copies of it (hard links), all the documents (with --edit, one of the old ones
edited) once with `--update` as the preset does it, once more per --update-variant with its
settings, and once without (a full retraining; the changed documents' questions and answers are
written in each, the unchanged ones' reused). Each trains and evaluates pd (and base).

--edit is a JSON file: {"doc_id", "replace": [[OLD, NEW], ...] (each OLD found once in the
document's text), "tests": [{"question" (one of the document's test questions), "answers" (the
new), "old_answers"}]}. Per draw and over all draws, for each way of training: pd's accuracy on
the added documents' test questions, on the old unedited ones', on the edited facts (the new
answer, and how often the old one still comes back) and on the edited document's other facts,
each paired over the same questions with the full retraining and with the adapter before the
update; and its training seconds (and the whole second run's) as a share of the full retraining's.
A rerun on finished run directories recomputes the tables (each run's wall seconds are kept beside
it). Arguments after `--` go to every `run` (a preset, --set). --docs is a folder of documents or a
JSONL of {"id", "text"} (a dataset's run: RUN/inputs/documents.jsonl). Prints a table and writes
JSON; docs/quality.md records a run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from promptdistill.compare import link_run, parse_variant
from promptdistill.evaluate import grade
from promptdistill.files import read_jsonl, write_jsonl
from promptdistill.report import paired
from promptdistill.stats import bootstrap_interval

RESAMPLES = 10_000
FULL, BEFORE = "full", "before"


def edited_text(text: str, edit: dict) -> str:
    for old, new in edit["replace"]:
        if text.count(old) != 1:
            raise SystemExit(f"--edit: {old!r} is in {edit['doc_id']} {text.count(old)} times, not once")
        text = text.replace(old, new)
    return text


def split_documents(docs: Path, add: int, edit: dict | None, folder: Path) -> tuple[Path, Path, list[str]]:
    """(the documents before, all of them with the edit, the added ids) as inputs `run` reads, under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    edit = edit or {"doc_id": None}
    if docs.suffix == ".jsonl":
        records = sorted(read_jsonl(docs), key=lambda record: record["id"])
        added = [record["id"] for record in records[-add:]]
        write_jsonl(folder / "before.jsonl", [record for record in records if record["id"] not in added])
        write_jsonl(folder / "all.jsonl", [{**record, "text": edited_text(record["text"], edit)}
                                           if record["id"] == edit["doc_id"] else record for record in records])
        return folder / "before.jsonl", folder / "all.jsonl", added
    files = sorted(path for path in docs.iterdir() if path.is_file())
    added = [path.stem for path in files[-add:]]
    for name, chosen in (("before", files[:-add]), ("all", files)):
        (folder / name).mkdir(exist_ok=True)
        for path in chosen:
            if name == "all" and path.stem == edit["doc_id"]:
                (folder / name / path.name).write_text(edited_text(path.read_text(), edit))
            else:
                shutil.copy2(path, folder / name / path.name)
    return folder / "before", folder / "all", added


def run(docs: Path, tests: Path, out: Path, seed: str, extra: list[str], update: bool = False) -> float:
    """`promptdistill run` on pd and base; the wall seconds of the call that ran it."""
    command = [sys.executable, "-m", "promptdistill", "run", "--docs", str(docs), "--test-questions", str(tests),
               "--out", str(out), "--methods", "base,pd", "--set", f"seed={seed}", "--set", "eval.retention=false",
               *(["--update"] if update else []), *extra]
    seconds = out.with_suffix(".seconds")
    started = time.time()
    with open(out.with_suffix(".log"), "a") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    if not seconds.is_file():  # the call that did the work; a later one finds every stage done
        seconds.write_text(f"{time.time() - started}\n")
    return float(seconds.read_text())


def copy_run(source: Path, target: Path) -> None:
    """A run directory of hard links to `source`'s files (compare.link_run), with a copy of its
    generation caches, as the run itself would have them when the documents change."""
    if not target.exists():
        link_run(source, target)
        shutil.copytree(source / "cache", target / "cache")


def outcomes(run_dir: Path, added: set[str], edited: str | None, changed: dict[str, dict]) -> dict:
    """Each of pd's graded replies as 0/1 by group, keyed by question: added, old (the unedited
    old documents), edited (the new answer of a changed fact), edited, old answer (the old answer
    of it comes back) and edited, unchanged (the edited document's other facts)."""
    groups: dict[str, dict[str, float]] = {"added": {}, "old": {}, "edited": {}, "edited, old answer": {},
                                           "edited, unchanged": {}}
    seen: dict[str, int] = {}
    for record in read_jsonl(run_dir / "eval" / "pd.jsonl"):
        # by question, not id (the ids of the run before are other lines); a repeated question counted apart
        seen[record["question"]] = seen.get(record["question"], 0) + 1
        key, fact = f"{record['question']}#{seen[record['question']]}", changed.get(record["question"])
        if fact:
            groups["edited"][key] = grade(record["reply"], fact["answers"])["contains"]
            groups["edited, old answer"][key] = grade(record["reply"], fact["old_answers"])["contains"]
        elif record["doc_id"] == edited:
            groups["edited, unchanged"][key] = record["contains"]
        elif record["doc_id"] in added:
            groups["added"][key] = record["contains"]
        else:
            groups["old"][key] = record["contains"]
    return groups


def train_seconds(run_dir: Path) -> float:
    return json.loads((run_dir / "manifests" / "train-pd.json").read_text())["seconds"]


def accuracy(values: dict[str, float]) -> dict:
    scores = [100 * value for value in values.values()]
    low, high = bootstrap_interval(scores, resamples=RESAMPLES, seed=0)
    return {"accuracy": sum(scores) / len(scores), "interval": [low, high], "questions": len(scores)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--docs", type=Path, required=True)
    parser.add_argument("--test-questions", type=Path, required=True)
    parser.add_argument("--add", type=int, default=2, help="documents added by the update (the last by id)")
    parser.add_argument("--edit", type=Path, help="JSON: one of the other documents' edits and the facts they change")
    parser.add_argument("--update-variant", action="append", default=[], help="NAME:SECTION.FIELD=VALUE,...")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--json", type=Path, required=True, help="results, merged into this file under --name")
    parser.add_argument("run_arguments", nargs="*", help="after --: passed to every `run`")
    args = parser.parse_args()
    variants = [parse_variant(text) for text in args.update_variant]
    ways = {"update": [], **{variant.name: [arg for setting in variant.overrides for arg in ("--set", setting)]
                             for variant in variants}}  # each update's --set arguments
    folders = {"update": "update", **{variant.name: variant.folder for variant in variants}, FULL: FULL}
    out = args.out / args.name
    edit = json.loads(args.edit.read_text()) if args.edit else None
    edited = edit["doc_id"] if edit else None
    before_docs, all_docs, added = split_documents(args.docs, args.add, edit, out / "inputs")
    tests = read_jsonl(args.test_questions)
    changed = {record["question"].strip(): record for record in edit["tests"]} if edit else {}
    missing = set(changed) - {test["question"].strip() for test in tests if test["doc_id"] == edited}
    if missing:
        parser.error(f"--edit: not among {edited}'s test questions: {', '.join(sorted(missing))}")
    write_jsonl(out / "inputs" / "tests-before.jsonl", [t for t in tests if t["doc_id"] not in added])
    write_jsonl(out / "inputs" / "tests-all.jsonl",
                [{**t, "answers": changed[t["question"].strip()]["answers"]} if t["question"].strip() in changed else t
                 for t in tests])
    draws = []
    pooled: dict[str, dict[str, dict[str, float]]] = {}
    for seed in args.seeds.split(","):
        root = out / f"seed-{seed}"
        root.mkdir(parents=True, exist_ok=True)
        first = root / "before"
        run(before_docs, out / "inputs" / "tests-before.jsonl", first, seed, args.run_arguments)
        runs = {name: root / folder for name, folder in folders.items()}
        wall = {}
        for name, target in runs.items():
            copy_run(first, target)
            wall[name] = run(all_docs, out / "inputs" / "tests-all.jsonl", target, seed,
                             args.run_arguments + ways.get(name, []), update=name != FULL)
        draw = {"seed": seed, "train_seconds": {name: train_seconds(target) for name, target in runs.items()},
                "wall_seconds": wall}
        for name, target in {BEFORE: first, **runs}.items():
            for group, values in outcomes(target, set() if name == BEFORE else set(added), edited, changed).items():
                if values:
                    draw.setdefault(name, {})[group] = accuracy(values)["accuracy"]
                    pooled.setdefault(name, {}).setdefault(group, {}).update(
                        {f"{seed}/{key}": value for key, value in values.items()})
        draws.append(draw)
    summary = {name: {group: {**accuracy(values),
                              **{f"- {other}": paired(values, pooled[other][group], RESAMPLES, 0)
                                 for other in (FULL, BEFORE) if other != name and group in pooled[other]}}
                      for group, values in groups.items()}
               for name, groups in pooled.items()}

    def share(kind: str, name: str) -> float:  # summed over the draws, as a share of the full retraining's
        return sum(d[f"{kind}_seconds"][name] for d in draws) / sum(d[f"{kind}_seconds"][FULL] for d in draws)

    ratios = {name: {kind: share(kind, name) for kind in ("train", "wall")} for name in ways}
    result = {"added_documents": added, "edited_document": edited, "seeds": args.seeds.split(","),
              "update_variants": {variant.name: list(variant.overrides) for variant in variants},
              "run_arguments": args.run_arguments, "draws": draws, "pooled": summary, "seconds_ratios": ratios}
    print(f"{args.name}: pd after an update (added {', '.join(added)}"
          f"{f'; edited {edited}' if edited else ''}) against a full retraining, {len(draws)} draw(s)")
    for name, groups in summary.items():
        cells = []
        for group, s in groups.items():
            differences = [f"{key} {d['difference']:+.1f} [{d['interval'][0]:+.1f}, {d['interval'][1]:+.1f}]"
                           for key, d in s.items() if key.startswith("- ")]
            count = f"{s['questions']} q"
            cells.append(f"{group} {s['accuracy']:.0f} ({', '.join([count, *differences])})")
        seconds = f"; training {ratios[name]['train']:.2f} of full, the whole run {ratios[name]['wall']:.2f}" \
            if name in ratios else ""
        print(f"  {name}: {'; '.join(cells)}{seconds}")
    stored = json.loads(args.json.read_text()) if args.json.is_file() else {}
    stored[args.name] = result
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(stored, indent=2) + "\n")


if __name__ == "__main__":
    main()
