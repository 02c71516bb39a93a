"""Where the demo's time and memory go, and what each speed lever buys: variants side by side.

    python benchmarks/speed.py --run runs/demo [--answers 48] [--train-examples 64] [--epochs 1]

Reuses the passages, questions and answers of a finished run. Each variant runs in its own
process (a clean peak-memory reading) and is compared with the first variant of its kind:
  answer   the expert answering questions open-book at T=0.7 (64-token cap): model dtype,
           batch size, and ending each answer at its first sentence instead of the cap
  draw     the same answers in bfloat16, batches of 32, drawn by transformers' sampler or by
           promptdistill's own (generation/local.NucleusDraw)
  train    one sft epoch (cross-entropy, LoRA): model dtype float32 against bfloat16, each
           without autocast (mixed=none) and bfloat16 with train.mixed_precision=auto
  teacher  the cached teacher's pass over pd answers: float32 against bfloat16
  parts    one pd epoch as the built-in preset trains it (bfloat16 autocast, cached teacher), its
           batches whole (train.max_batch_tokens=0) or run in parts of at most N tokens
  memory   the same pd epoch with the preset's parts, without the memory levers, then adding
           them one by one: the adapted layers' frozen weights cast to bfloat16 once instead of
           by autocast at every use (cast: models.cast_frozen_linears), the loss over 128 answer
           tokens at a time (chunks: train/losses.in_chunks), the output layer's input copied to
           one block (contiguous: models.contiguous_output_input), oneDNN's cache of prepared
           products at 64 instead of its 1,024 (cache64: models.ONEDNN_CACHE_CAPACITY), one
           bfloat16 copy of an input for all the products that read it (shared:
           models.share_input_casts)
  allocator the same pd epoch with every memory lever, under glibc's malloc as it comes or with
           one of its settings in the environment (a fixed threshold above which every block is
           mapped from the system and handed back when freed; one arena for all threads)
  evaluate pd's adapter answering the run's test questions, without and with "contiguous"
  rag      answering the run's test questions with k retrieved passages: k=7 (the paper's) or 3
  attention the run's question writing (every passage, its settings: rows of one batch share the
           whole prompt, so no padding mask), the expert's answers (bfloat16, batches of 32, to the
           cap) and rag (the run's k), each with a decoding step's attention by PyTorch's SDPA
           kernel or by models.decode_attention (the default on a CPU)
Prints seconds, throughput and peak memory with ratios to the first variant of each kind (and
task), and writes JSON. Ratios, not seconds, are what to compare: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = [
    ("answer", {"dtype": "float32", "batch": 8, "stop": False}),
    ("answer", {"dtype": "bfloat16", "batch": 8, "stop": False}),
    ("answer", {"dtype": "float32", "batch": 32, "stop": False}),
    ("answer", {"dtype": "float32", "batch": 8, "stop": True}),
    ("answer", {"dtype": "bfloat16", "batch": 32, "stop": True}),
    ("draw", {"draw": "transformers"}),
    ("draw", {"draw": "own"}),
    ("train", {"dtype": "float32", "mixed": "none"}),
    ("train", {"dtype": "bfloat16", "mixed": "none"}),
    ("train", {"dtype": "bfloat16", "mixed": "auto"}),
    ("teacher", {"dtype": "float32"}),
    ("teacher", {"dtype": "bfloat16"}),
    ("parts", {"max_batch_tokens": 0}),
    ("parts", {"max_batch_tokens": 768}),
    ("parts", {"max_batch_tokens": 640}),
    ("parts", {"max_batch_tokens": 512}),
    ("parts", {"max_batch_tokens": 256}),
    ("memory", {"levers": ""}),
    ("memory", {"levers": "cast"}),
    ("memory", {"levers": "cast,chunks"}),
    ("memory", {"levers": "cast,chunks,contiguous"}),
    ("memory", {"levers": "cast,chunks,contiguous,cache64"}),
    ("memory", {"levers": "cast,chunks,contiguous,cache64,shared"}),
    ("allocator", {"malloc": ""}),
    ("allocator", {"malloc": "MALLOC_MMAP_THRESHOLD_=131072"}),
    ("allocator", {"malloc": "MALLOC_MMAP_THRESHOLD_=1048576"}),
    ("allocator", {"malloc": "MALLOC_ARENA_MAX=1"}),
    ("evaluate", {"levers": "cache64"}),
    ("evaluate", {"levers": "cache64,contiguous"}),
    ("rag", {"k": 7}),
    ("rag", {"k": 3}),
    ("attention", {"task": "questions", "attention": "sdpa"}),
    ("attention", {"task": "questions", "attention": "decode"}),
    ("attention", {"task": "answer", "attention": "sdpa"}),
    ("attention", {"task": "answer", "attention": "decode"}),
    ("attention", {"task": "rag", "attention": "sdpa"}),
    ("attention", {"task": "rag", "attention": "decode"}),
]


def measure(run_path: Path, kind: str, options: dict, answers: int, train_examples: int, epochs: int = 1) -> dict:
    """One variant, in this process."""
    import dataclasses
    import tempfile

    from promptdistill import pipeline
    from promptdistill.config import ModelConfig
    from promptdistill.files import read_jsonl
    from promptdistill.generation import SENTENCE_ENDS, Sampling, generate_all, make_backend
    from promptdistill.methods import METHODS
    from promptdistill.prompts import teacher_prompt
    from promptdistill.rundir import RunDir

    run = RunDir(run_path)
    config = run.load_config()
    if kind == "attention":  # questions, answers (bfloat16, batches of 32, to the cap) or rag
        kind, options = options["task"], {"dtype": "bfloat16", "batch": 32, "stop": False, **options}
        if options["attention"] == "sdpa":
            from promptdistill import models

            models.use_decode_attention = lambda model: None
    if kind == "draw":
        options = {"dtype": "bfloat16", "batch": 32, "stop": False, **options}
    if kind == "allocator":  # its setting is in this process's environment (main); every memory lever
        kind, options = "memory", {"levers": "cast,chunks,contiguous,cache64,shared"}
    if kind in ("parts", "memory"):
        options = {"dtype": "bfloat16", "mixed": "auto", **options}
    if kind in ("memory", "evaluate"):
        switch_off_memory_levers(options["levers"].split(","))
    model = ModelConfig(config.model.name, options.get("dtype", "float32"))
    started = time.time()
    result: dict = {}
    if kind in ("answer", "draw"):
        backend = make_backend(model)
        backend.own_draw = options.get("draw", "own") == "own"
        passages = {p.id: p for p in run.load_passages()}
        questions = read_jsonl(run.questions)[:answers]
        prompts = [teacher_prompt(passages[q["passage_id"]].text, q["question"], config.synth.teacher_instruction)
                   for q in questions]
        stop = SENTENCE_ENDS if options["stop"] else ()
        started = time.time()
        replies = generate_all(backend, prompts, Sampling(0.7, 64, 0.9, stop), seed=0, batch_size=options["batch"],
                               groups=[q["passage_id"] for q in questions])
        result["tokens"] = sum(backend.count_tokens(reply) for reply in replies)
        result["items"] = len(replies)
    elif kind == "questions":
        from promptdistill.synth import write_questions

        backend = make_backend(model)
        started = time.time()
        questions, _ = write_questions(backend, run.load_passages(), config.synth, config.seed)
        result["tokens"] = sum(backend.count_tokens(q["question"]) for q in questions)
        result["items"] = len(questions)
    elif kind in ("train", "teacher", "parts", "memory"):
        from promptdistill.models import default_device, load_model, training_precision

        weights, mixed = training_precision(model, options.get("mixed", "none"), default_device())
        loaded, tokenizer = load_model(model, dtype=weights if kind != "teacher" else None)
        method = METHODS["sft" if kind == "train" else "pd"]
        examples = pipeline.training_examples(run, config, tokenizer, method)[:train_examples]
        with tempfile.TemporaryDirectory() as scratch:
            started = time.time()
            if kind in ("train", "parts", "memory"):
                from promptdistill.teacher import TeacherCache
                from promptdistill.train import loop

                train_config = dataclasses.replace(config.train, epochs=epochs)
                if kind == "parts":
                    train_config = dataclasses.replace(train_config, max_batch_tokens=options["max_batch_tokens"])
                metrics = loop.train_adapter(loaded, tokenizer.pad_token_id, examples, method, train_config,
                                             Path(scratch), 0, mixed_precision=mixed,
                                             teacher_cache=TeacherCache(run.teacher) if kind != "train" else None)
                result["loss"] = metrics["epochs"][-1]["loss"]  # the same for levers that change no number
            else:
                from promptdistill.teacher import TeacherInput, build_teacher_cache

                items = [TeacherInput(e.key, e.teacher_ids[:e.teacher_prefix_length],
                                      e.teacher_ids[e.teacher_prefix_length:], e.answer_ids) for e in examples]
                build_teacher_cache(loaded, items, config.train.teacher_top_k, config.train.distill_temperature,
                                    config.synth.batch_size, Path(scratch), {})
        result["tokens"] = sum(len(e.answer_ids) for e in examples)
        result["items"] = len(examples)
    elif kind in ("rag", "evaluate"):
        from promptdistill.evaluate import evaluate_method, summarise

        eval_config = dataclasses.replace(config.eval, rag_k=options.get("k", config.eval.rag_k))
        backend = make_backend(config.model, run.adapter("pd") if kind == "evaluate" else None)
        started = time.time()
        records = evaluate_method(backend, METHODS["pd" if kind == "evaluate" else "rag"], run.load_test_questions(),
                                  run.load_passages(), eval_config)
        result["accuracy_contains"] = summarise(records)["contains"]
        result["items"] = len(records)
        result["tokens"] = sum(backend.count_tokens(r["reply"]) for r in records)
    result["seconds"] = time.time() - started
    result["peak_memory_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def switch_off_memory_levers(kept: list[str]) -> None:
    """The memory levers not in `kept` replaced by what ran before them."""
    from functools import partial

    from promptdistill import models
    from promptdistill.train import loop

    if "cache64" not in kept:
        os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = "1024"  # oneDNN's own default, kept by load_model
    if "shared" not in kept:
        loop.share_input_casts = lambda model, dtype: None
    if "cast" not in kept:
        loop.cast_frozen_linears = lambda model, dtype: None
    if "chunks" not in kept:
        loop.in_chunks = partial(loop.in_chunks, chunk_tokens=2**62)
    if "contiguous" not in kept:
        models.contiguous_output_input = lambda model: None


def label(options: dict) -> str:
    return " ".join(f"{key}={'sentence' if key == 'stop' and value else 'cap' if key == 'stop' else value}"
                    for key, value in options.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished run directory (e.g. runs/demo)")
    parser.add_argument("--answers", type=int, default=48, help="questions answered per answer variant")
    parser.add_argument("--train-examples", type=int, default=64, help="examples per train and teacher variant")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per train, parts, memory and allocator variant")
    parser.add_argument("--kinds", default="answer,draw,train,teacher,parts,memory,allocator,evaluate,rag,attention",
                        help="which kinds of variant to run")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/speed.json"))
    parser.add_argument("--variant", type=int, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()

    if args.variant is not None:
        kind, options = VARIANTS[args.variant]
        print(json.dumps(measure(args.run, kind, options, args.answers, args.train_examples, args.epochs)))
        return

    rows = []
    kinds = args.kinds.split(",")
    for number, (kind, options) in enumerate(VARIANTS):
        if kind not in kinds:
            continue
        malloc = dict(setting.split("=") for setting in options.get("malloc", "").split(",") if setting)
        result = subprocess.run(
            [sys.executable, __file__, "--run", str(args.run), "--variant", str(number), "--answers", str(args.answers),
             "--train-examples", str(args.train_examples), "--epochs", str(args.epochs)],
            check=True, capture_output=True, text=True, env={**os.environ, **malloc})
        rows.append({"kind": kind, "options": options, **json.loads(result.stdout.strip().splitlines()[-1])})
        print(f"{kind} {label(options)}: {rows[-1]['seconds']:.1f} s", file=sys.stderr, flush=True)

    first: dict[tuple, dict] = {}
    print(f"{'kind':<8} {'variant':<36} {'seconds':>8} {'x first':>8} {'tokens/s':>9} {'peak MiB':>9} {'accuracy':>9}")
    for row in rows:
        base = first.setdefault((row["kind"], row["options"].get("task")), row)
        row["speedup"] = base["seconds"] / row["seconds"]
        row["tokens_per_second"] = row["tokens"] / row["seconds"]
        accuracy = f"{row['accuracy_contains']:8.1f}%" if "accuracy_contains" in row else f"{'-':>9}"
        print(f"{row['kind']:<8} {label(row['options']):<36} {row['seconds']:8.1f} {row['speedup']:8.2f} "
              f"{row['tokens_per_second']:9.1f} {row['peak_memory_mib']:9.0f} {accuracy}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"run": str(args.run), "answers": args.answers,
                                    "train_examples": args.train_examples, "epochs": args.epochs, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
