"""TRL's SDFTTrainer beside promptdistill's pd, on a finished run (issue 35).

TRL 1.16's `trl.experimental.sdft.SDFTTrainer` is on-policy self-distillation as a well-kept
library does it: the student answers each question closed-book, and the teacher (the same weights
with the adapter off, the passage in its prompt) scores every token. This trains it on RUN's own
training questions and passages, with RUN's LoRA, learning rate, schedule, batch, epochs and
seed, and pd's on-policy sampling settings (train.on_policy_temperature, _max_tokens); the teacher
prompt is pd's (the passage, then the question). Then it answers RUN's test questions as
evaluation does and pairs the grades with RUN's sft and pd, question by question.

TRL is not one of promptdistill's dependencies; it and what it needs beyond them go in a folder
of their own, so that nothing of the project's environment changes (datasets 5.2 with pyarrow 26
failed here to fingerprint even a one-row dataset, a dill pickling error):

    pip install --target TRL_SITE --no-deps trl==1.16.0 "datasets<5" "pyarrow==24.*" dill==0.3.8 \
        multiprocess==0.70.16 pandas xxhash httpx httpcore h11 anyio
    PYTHONPATH=TRL_SITE python benchmarks/trl_sdft.py RUN --out benchmarks/results/trl_sdft_demo.json

Prints a table and writes JSON: accuracy with its interval, the paired differences, training
seconds against pd's (RUN/adapters/pd/metrics.json) and the process's peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

from promptdistill.config import RunConfig
from promptdistill.evaluate import evaluate_method, summarise
from promptdistill.files import read_jsonl
from promptdistill.generation import TransformersBackend
from promptdistill.methods import METHODS
from promptdistill.models import default_device, load_model, lora_config, training_precision
from promptdistill.prompts import student_prompt, teacher_context
from promptdistill.report import paired
from promptdistill.rundir import RunDir
from promptdistill.stats import bootstrap_interval


def sdft_dataset(run: RunDir, teacher_instruction: str):
    """One row per training question: its prompt as the student sees it, and its passage (with the
    teacher's instruction) as the privileged context."""
    from datasets import Dataset

    passages = {passage.id: passage.text for passage in run.load_passages()}
    questions = read_jsonl(run.questions)
    return Dataset.from_list([
        {"prompt": [{"role": "user", "content": student_prompt(q["question"])}],
         "privileged_context": teacher_context(passages[q["passage_id"]], teacher_instruction)}
        for q in questions])


def train_sdft(run: RunDir, config: RunConfig, mode: str, alpha: float, top_k: int, output_dir: str):
    """(the trained PEFT model, its tokenizer, training seconds, the SDFT settings used)."""
    from trl.experimental.sdft import SDFTConfig, SDFTTrainer

    train = config.train
    device = default_device()
    dtype, precision = training_precision(config.model, train.mixed_precision, device)
    model, tokenizer = load_model(config.model, device, dtype)
    settings = dict(
        output_dir=output_dir, per_device_train_batch_size=train.batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps, num_train_epochs=train.epochs,
        learning_rate=train.learning_rate, lr_scheduler_type="linear",
        warmup_steps=train.warmup_ratio,  # below 1: a share of the steps, as ours
        weight_decay=train.weight_decay, max_grad_norm=train.max_grad_norm, seed=config.seed,
        bf16=precision == "bf16", use_cpu=device.type == "cpu", num_generations=1,
        generation_batch_size=train.batch_size, max_completion_length=train.on_policy_max_tokens,
        temperature=train.on_policy_temperature, top_k=0, top_p=1.0, distillation_mode=mode,
        distillation_alpha=alpha, distillation_topk=top_k if mode == "topk_logits" else None,
        teacher_prompt_template="{privileged_context}\n\n{prompt}", report_to="none", save_strategy="no",
        logging_steps=10, disable_tqdm=False)
    trainer = SDFTTrainer(model=model, args=SDFTConfig(**settings), train_dataset=sdft_dataset(
        run, config.synth.teacher_instruction), processing_class=tokenizer, peft_config=lora_config(model, train))
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    return trainer.model.eval(), tokenizer, seconds, {key: value for key, value in settings.items()
                                                     if key not in ("output_dir", "disable_tqdm")}


def measure(run_dir: Path, overrides: list[str], mode: str, alpha: float, top_k: int) -> dict:
    run = RunDir(run_dir)
    config = run.load_config(overrides)
    with tempfile.TemporaryDirectory() as output_dir:
        model, tokenizer, seconds, settings = train_sdft(run, config, mode, alpha, top_k, output_dir)
    tests = run.load_test_questions()
    backend = TransformersBackend(model, tokenizer, identity="trl-sdft")
    records = evaluate_method(backend, METHODS["pd"], tests, run.load_passages(), config.eval,
                              teacher_instruction=config.synth.teacher_instruction)
    grades = {record["id"]: record["contains"] for record in records}
    resamples = config.eval.bootstrap_resamples
    low, high = bootstrap_interval([100 * grade for grade in grades.values()], resamples=resamples, seed=config.seed)
    result = {"run": str(run_dir), "settings": settings, "questions": len(records),
              "sdft": {**summarise(records), "interval": [low, high], "training_seconds": round(seconds, 1)},
              "peak_memory_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
    for method in ("sft", "pd"):
        if not run.eval(method).is_file():
            continue
        theirs = {record["id"]: record["contains"] for record in read_jsonl(run.eval(method))}
        result[method] = {"contains": 100 * sum(theirs.values()) / len(theirs),
                          "sdft_minus": paired(grades, theirs, resamples, config.seed)}
    metrics = run.adapter_dir("pd") / "metrics.json"
    if metrics.is_file():
        pd_seconds = sum(epoch["seconds"] for epoch in json.loads(metrics.read_text())["epochs"])
        result["pd"]["training_seconds"] = pd_seconds
        result["sdft"]["training_time_vs_pd"] = round(seconds / pd_seconds, 2)
    return result


def table(result: dict) -> str:
    sdft = result["sdft"]
    lines = ["| method | accuracy | SDFT minus it, paired | training s |", "|---|---|---|---|",
             f"| TRL SDFT | {sdft['contains']:.0f} [{sdft['interval'][0]:.0f}, {sdft['interval'][1]:.0f}] | | "
             f"{sdft['training_seconds']:.0f} |"]
    for method in ("sft", "pd"):
        if method in result:
            difference = result[method]["sdft_minus"]
            low, high = difference["interval"]
            lines.append(f"| {method} (the run) | {result[method]['contains']:.0f} | {difference['difference']:+.0f} "
                         f"[{low:+.0f}, {high:+.0f}] | {result[method].get('training_seconds', '')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished run with sft and pd (promptdistill demo or run)")
    parser.add_argument("--out", type=Path, required=True, help="the JSON to write")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE over RUN's config")
    parser.add_argument("--mode", default="topk_logits", choices=("topk_logits", "full_logits", "sampled_token"),
                        help="SDFT's distillation_mode (its default: the top k logits)")
    parser.add_argument("--alpha", type=float, default=0.5,
                        help="SDFT's distillation_alpha: 0 forward KL (pd's), 1 reverse, between a JSD (its default)")
    parser.add_argument("--top-k", type=int, default=100, help="SDFT's distillation_topk (its default)")
    args = parser.parse_args()
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    result = measure(args.run, args.overrides, args.mode, args.alpha, args.top_k)
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
