"""Does pd with a cached teacher cost what sft costs? sft, pd online, pd cached, side by side.

    python benchmarks/distill_speed.py --run runs/demo [--epochs 5] [--top-k 20]

Reuses the questions and answers of an existing run (run `promptdistill demo` first), so only
training and evaluation are measured. Each variant trains in its own process (a clean peak
memory reading) on a copy of the run's inputs:
  sft         cross-entropy on the sft answers
  pd-online   the paper's way: the teacher recomputed over the full vocabulary at every step
  pd-cached   one teacher pass (shared passage prefixes) caches top-k targets; training reads them
Prints seconds per epoch, teacher-cache build time, peak memory and closed-book accuracy, with
ratios to sft, and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

VARIANTS = {
    "sft": ("sft", "cached"),
    "pd-online": ("pd", "online"),
    "pd-cached": ("pd", "cached"),
}
INPUTS = ("config.yaml", "passages.jsonl", "test_questions.jsonl", "questions.jsonl", "answers")


def run_variant(run: Path, variant: str, epochs: int, top_k: int) -> dict:
    """Train and evaluate one variant in this process; return its measurements."""
    from promptdistill import pipeline
    from promptdistill.files import read_jsonl
    from promptdistill.methods import METHODS
    from promptdistill.rundir import RunDir

    method, teacher = VARIANTS[variant]
    run_dir = RunDir(run)
    config = run_dir.load_config([f"train.epochs={epochs}", f"train.teacher={teacher}",
                                  f"train.teacher_top_k={top_k}", f"methods=base,{method}"])
    pipeline.train(run_dir, config, METHODS[method])
    pipeline.evaluate(run_dir, config, METHODS[method])
    history = json.loads((run_dir.adapter_dir(method) / "metrics.json").read_text())["epochs"]
    teacher_manifest = run / "manifests" / "teacher.json"
    cache_seconds = json.loads(teacher_manifest.read_text())["seconds"] if teacher_manifest.exists() else 0.0
    records = read_jsonl(run_dir.eval(method))
    return {
        "variant": variant,
        "seconds_per_epoch": sum(epoch["seconds"] for epoch in history) / len(history),
        "teacher_cache_seconds": cache_seconds,
        "peak_memory_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "accuracy_contains": 100 * sum(r["contains"] for r in records) / len(records),
        "final_loss": history[-1]["loss"],
        "examples": len(read_jsonl(run_dir.answers(method))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished run directory (e.g. runs/demo)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/distill_speed.json"))
    parser.add_argument("--variant", choices=list(VARIANTS), help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()

    if args.variant:
        print(json.dumps(run_variant(args.run, args.variant, args.epochs, args.top_k)))
        return

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for variant in VARIANTS:
            copy = Path(scratch) / variant
            copy.mkdir()
            for name in INPUTS:
                source = args.run / name
                if source.is_dir():
                    shutil.copytree(source, copy / name)
                elif source.exists():
                    shutil.copy(source, copy / name)
            result = subprocess.run(
                [sys.executable, __file__, "--run", str(copy), "--variant", variant, "--epochs", str(args.epochs),
                 "--top-k", str(args.top_k)], check=True, capture_output=True, text=True,
            )
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
            print(f"{variant}: done", file=sys.stderr, flush=True)

    sft = rows[0]
    print(f"{'variant':<10} {'s/epoch':>8} {'x sft':>6} {'cache s':>8} {'peak MiB':>9} {'accuracy':>9} {'loss':>7}")
    for row in rows:
        print(f"{row['variant']:<10} {row['seconds_per_epoch']:8.1f} {row['seconds_per_epoch'] / sft['seconds_per_epoch']:6.2f} "
              f"{row['teacher_cache_seconds']:8.1f} {row['peak_memory_mib']:9.0f} {row['accuracy_contains']:8.1f}% "
              f"{row['final_loss']:7.4f}")
    by_name = {row["variant"]: row for row in rows}
    speedup = by_name["pd-online"]["seconds_per_epoch"] / by_name["pd-cached"]["seconds_per_epoch"]
    print(f"pd-cached epoch is {speedup:.2f}x faster than pd-online; "
          f"{by_name['pd-cached']['seconds_per_epoch'] / sft['seconds_per_epoch']:.2f}x an sft epoch")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"run": str(args.run), "epochs": args.epochs, "top_k": args.top_k,
                                    "rows": rows, "online_over_cached": speedup}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
