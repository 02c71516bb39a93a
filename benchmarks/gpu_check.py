"""The whole pipeline on a small model, stage by stage, for the minutes a GPU is lent.

    python benchmarks/gpu_check.py --out /tmp/gpu-check            # the built-in model: no hub needed
    python benchmarks/gpu_check.py --model /path/to/local/model    # any model --model takes
    python benchmarks/gpu_check.py --documents 2 --questions 4 --epochs 1   # a CPU smoke test (75 s here)

Runs prepare, questions, answers, teacher, training and evaluation of base, sft, pd, rag and
open-book on the bundled demo documents with the in-process backend, then prints the machine,
each stage's seconds, the peak accelerator memory and the report's table, and writes JSON beside
the run (OUT/gpu_check.json). Every stage resumes, so a second call after a cut-off finishes
the rest.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from importlib import resources
from pathlib import Path

import torch

from promptdistill import pipeline
from promptdistill.config import resolve_config
from promptdistill.corpus import read_documents
from promptdistill.files import read_jsonl, write_jsonl
from promptdistill.rundir import RunDir


def demo_inputs(out: Path, documents: int) -> tuple[Path, Path]:
    """The bundled demo documents (the first `documents` of them) and their test questions."""
    demo = resources.files("promptdistill") / "demo"
    chosen = read_documents(Path(str(demo / "docs")))[:documents]
    ids = {document.id for document in chosen}
    docs, tests = out.parent / f"{out.name}-inputs" / "docs.jsonl", out.parent / f"{out.name}-inputs" / "tests.jsonl"
    write_jsonl(docs, [{"id": document.id, "text": document.text} for document in chosen])
    write_jsonl(tests, [test for test in read_jsonl(Path(str(demo / "test_questions.jsonl"))) if test["doc_id"] in ids])
    return docs, tests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--out", type=Path, default=Path("/tmp/gpu-check"))
    parser.add_argument("--documents", type=int, default=10, help="of the demo's 10")
    parser.add_argument("--questions", type=int, default=20, help="training questions per passage")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="any setting, as --set in the CLI")
    args = parser.parse_args()

    config = resolve_config(None, [
        f"model.name={args.model}", "methods=base,sft,pd,rag,open-book",
        f"synth.questions_per_passage={args.questions}", f"train.epochs={args.epochs}",
        "synth.batch_size=32", "eval.batch_size=32", *args.overrides])
    docs, tests = demo_inputs(args.out, args.documents)
    started = time.time()
    with RunDir(args.out).lock() as run:
        pipeline.prepare(run, config, docs, tests)
        table = pipeline.run_all(run, config)
        seconds = {stage: cost["seconds"] for stage, cost in run.stage_costs().items()}
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.processor() or 'unknown'})"
    result = {
        "device": device, "model": args.model, "dtype": str(config.model.dtype), "wall_seconds": round(time.time() - started, 1),
        "stage_seconds": seconds,
        "peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None,
        "settings": {"documents": args.documents, "questions_per_passage": args.questions, "epochs": args.epochs,
                     "overrides": args.overrides},
    }
    print(f"\n{device}, {args.model}: {result['wall_seconds']:.0f} s in all (this call)")
    for stage, stage_seconds in seconds.items():
        print(f"  {stage:<22} {stage_seconds:8.1f} s")
    if result["peak_gpu_memory_gb"] is not None:
        print(f"  peak GPU memory        {result['peak_gpu_memory_gb']:8.2f} GB")
    print("\n" + table)
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"JSON: {args.out / 'gpu_check.json'}")


if __name__ == "__main__":
    main()
