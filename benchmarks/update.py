"""Does `run --update` keep a model current as well as training again from scratch, for less?

    python benchmarks/update.py --name demo --docs src/promptdistill/demo/docs \
        --test-questions src/promptdistill/demo/test_questions.jsonl --add 2 --seeds 0,1 \
        --out runs/update --json benchmarks/results/update.json -- --config src/promptdistill/configs/demo.yaml

For each draw (seed): a run on every document but the last --add (by id), with their test
questions; then, on a copy of it (hard links), all the documents with `--update`, and on the other
copy all of them without (a full retraining; the changed documents' questions and answers are
written in both, the unchanged ones' reused). Both train and evaluate pd (and base). Per draw and
over all draws: pd's accuracy on the added documents' test questions and on the old ones', the
update against the full retraining paired over the same questions, and the update's training
seconds (and the whole second run's) as a share of the full retraining's. Arguments after `--` go to every `run` (a preset, --set).
--docs is a folder of documents or a JSONL of {"id", "text"} (a dataset's run: RUN/inputs/documents.jsonl).
Prints a table and writes JSON; docs/quality.md records a run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from promptdistill.compare import link_run
from promptdistill.files import read_jsonl, write_jsonl
from promptdistill.report import paired
from promptdistill.stats import bootstrap_interval

RESAMPLES = 10_000


def split_documents(docs: Path, add: int, folder: Path) -> tuple[Path, Path, list[str]]:
    """(the documents before, all of them, the added ids) as inputs `run` reads, under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    if docs.suffix == ".jsonl":
        records = sorted(read_jsonl(docs), key=lambda record: record["id"])
        added = [record["id"] for record in records[-add:]]
        write_jsonl(folder / "before.jsonl", [record for record in records if record["id"] not in added])
        write_jsonl(folder / "all.jsonl", records)
        return folder / "before.jsonl", folder / "all.jsonl", added
    files = sorted(path for path in docs.iterdir() if path.is_file())
    added = [path.stem for path in files[-add:]]
    for name, chosen in (("before", files[:-add]), ("all", files)):
        (folder / name).mkdir(exist_ok=True)
        for path in chosen:
            shutil.copy2(path, folder / name / path.name)
    return folder / "before", folder / "all", added


def run(docs: Path, tests: Path, out: Path, seed: str, extra: list[str], update: bool = False) -> float:
    """`promptdistill run` on pd and base; its wall seconds."""
    command = [sys.executable, "-m", "promptdistill", "run", "--docs", str(docs), "--test-questions", str(tests),
               "--out", str(out), "--methods", "base,pd", "--set", f"seed={seed}", "--set", "eval.retention=false",
               *(["--update"] if update else []), *extra]
    started = time.time()
    with open(out.with_suffix(".log"), "a") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    return time.time() - started


def copy_run(source: Path, target: Path) -> None:
    """A run directory of hard links to `source`'s files (compare.link_run), with a copy of its
    generation caches, as the run itself would have them when the documents change."""
    if not target.exists():
        link_run(source, target)
        shutil.copytree(source / "cache", target / "cache")


def grades(run_dir: Path, docs: set[str]) -> dict[str, float]:
    doc_of = {record["id"]: record["doc_id"] for record in read_jsonl(run_dir / "test_questions.jsonl")}
    return {record["id"]: record["contains"] for record in read_jsonl(run_dir / "eval" / "pd.jsonl")
            if doc_of[record["id"]] in docs}


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
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--json", type=Path, required=True, help="results, merged into this file under --name")
    parser.add_argument("run_arguments", nargs="*", help="after --: passed to every `run`")
    args = parser.parse_args()
    out = args.out / args.name
    before_docs, all_docs, added = split_documents(args.docs, args.add, out / "inputs")
    tests = read_jsonl(args.test_questions)
    write_jsonl(out / "inputs" / "tests-before.jsonl", [t for t in tests if t["doc_id"] not in added])
    old = {t["doc_id"] for t in tests} - set(added)
    draws, pooled = [], {kind: {way: {} for way in ("update", "full")} for kind in ("added", "old")}
    for seed in args.seeds.split(","):
        first, updated, full = (out / f"seed-{seed}" / name for name in ("before", "update", "full"))
        first.parent.mkdir(parents=True, exist_ok=True)
        run(before_docs, out / "inputs" / "tests-before.jsonl", first, seed, args.run_arguments)
        copy_run(first, updated)
        copy_run(first, full)
        wall = {"update": run(all_docs, args.test_questions, updated, seed, args.run_arguments, update=True),
                "full": run(all_docs, args.test_questions, full, seed, args.run_arguments)}
        draw = {"seed": seed, "train_seconds": {"update": train_seconds(updated), "full": train_seconds(full)},
                "wall_seconds": wall}
        for kind, docs in (("added", set(added)), ("old", old)):
            for way, run_dir in (("update", updated), ("full", full)):
                found = grades(run_dir, docs)
                draw.setdefault(kind, {})[way] = accuracy(found)["accuracy"]
                pooled[kind][way].update({f"{seed}/{key}": value for key, value in found.items()})
        draw["train_seconds"]["ratio"] = draw["train_seconds"]["update"] / draw["train_seconds"]["full"]
        draws.append(draw)
    summary = {kind: {**{way: accuracy(pooled[kind][way]) for way in ("update", "full")},
                      "update - full": paired(pooled[kind]["update"], pooled[kind]["full"], RESAMPLES, 0)}
               for kind in ("added", "old")}
    ratio = sum(d["train_seconds"]["update"] for d in draws) / sum(d["train_seconds"]["full"] for d in draws)
    wall = sum(d["wall_seconds"]["update"] for d in draws) / sum(d["wall_seconds"]["full"] for d in draws)
    result = {"added_documents": added, "seeds": args.seeds.split(","), "run_arguments": args.run_arguments,
              "draws": draws, "pooled": summary, "train_seconds_ratio": ratio, "wall_seconds_ratio": wall}
    print(f"{args.name}: pd after an update (added {', '.join(added)}) against a full retraining, "
          f"{len(draws)} draw(s)")
    for kind in ("added", "old"):
        s = summary[kind]
        d = s["update - full"]
        print(f"  {kind} documents ({s['update']['questions']} questions): update {s['update']['accuracy']:.0f}, "
              f"full {s['full']['accuracy']:.0f}, update - full {d['difference']:+.1f} "
              f"[{d['interval'][0]:+.1f}, {d['interval'][1]:+.1f}]")
    print(f"  training seconds, update / full: {ratio:.2f}; the whole second run's wall seconds: {wall:.2f}")
    stored = json.loads(args.json.read_text()) if args.json.is_file() else {}
    stored[args.name] = result
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(stored, indent=2) + "\n")


if __name__ == "__main__":
    main()
