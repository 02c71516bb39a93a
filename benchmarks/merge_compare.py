"""Several `promptdistill compare` results of one run, as one table and one pair of plots.

compare.json holds the variants of one invocation; a run compared several times (one variant a
day, as long measurements go) leaves one JSON per call. This merges them (the run's own rows are
the same in each and kept once) and draws compare's plots over all of them: accuracy against
training seconds, and against retention, a point per variant and trained method.

    python benchmarks/merge_compare.py benchmarks/results/compare_on_policy_added_demo.json \
        benchmarks/results/compare_opcd_demo.json --out benchmarks/results/self_distillation_demo
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from promptdistill.compare import REFERENCE, plot, table


def merge(paths: list[Path]) -> dict:
    """One compare.json from several of the same run: each variant once, its settings beside it.
    The run's rows come from the first file that has each method."""
    merged = {"seeds": None, "question_set": None, "settings": {}, "results": {}, "pairs": {}, "merged_from": []}
    for path in paths:
        found = json.loads(path.read_text())
        for key in ("seeds", "question_set"):
            if merged[key] not in (None, found[key]):
                raise SystemExit(f"{path}: {key} {found[key]} differs from the other files' {merged[key]}")
            merged[key] = found[key]
        for name, by_method in found["results"].items():
            rows = merged["results"].setdefault(name, {})
            if name != REFERENCE and rows:
                raise SystemExit(f"{path}: variant {name!r} is in an earlier file too")
            for method, result in by_method.items():
                rows.setdefault(method, result)
            merged["settings"][name] = found["settings"][name]
            merged["pairs"].setdefault(name, {}).update(found["pairs"].get(name, {}))
        merged["merged_from"].append(str(path))
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", type=Path, nargs="+", help="compare.json files of one run")
    parser.add_argument("--out", type=Path, required=True, help="folder for compare.json and the two plots")
    args = parser.parse_args()
    merged = merge(args.files)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compare.json").write_text(json.dumps(merged, indent=2) + "\n")
    plot(merged["results"], args.out)
    print(table(merged["results"], merged["seeds"], merged["question_set"]))


if __name__ == "__main__":
    main()
