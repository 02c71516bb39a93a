"""A run's plan before the spend: what `promptdistill run|reproduce --dry-run` prints.

Everything is resolved as a real run resolves it (settings, documents, passages, test questions)
and counted: generations, training sequences, optimizer steps, trainable LoRA parameters, and the
files the run will write. No model weights are read: the architecture is built on the meta
device, and a .gguf file gives its tokenizer and config from its header.
"""

from __future__ import annotations

import math
from pathlib import Path

from promptdistill import methods, retention, selfcheck
from promptdistill.config import RunConfig
from promptdistill.corpus import Document, TestQuestion, read_documents, read_test_questions, split_with_tokenizer
from promptdistill.datasets import carries_rewritten_questions, load_cut_dataset
from promptdistill.models import add_lora, load_shapes
from promptdistill.prompts import QUESTIONS_PER_TAGGED_REPLY
from promptdistill.rundir import RunDir


def plan_run(run: RunDir, config: RunConfig, documents: list[Document], tests: list[TestQuestion],
             rewrite: bool = False) -> list[tuple[str, str]]:
    """(what, how much) rows of the run `config` would make; writes nothing."""
    model, tokenizer = load_shapes(config.model)
    passages = split_with_tokenizer(documents, tokenizer, config.corpus.passage_tokens)
    rows = [("model", f"{config.model.name} ({model.config.model_type}, "
                      f"{sum(p.numel() for p in model.parameters()) / 1e6:,.0f}M parameters)"),
            ("documents, passages, test questions", f"{len(documents)}, {len(passages)}, {len(tests)}")]
    if rewrite:
        rows.append(("test questions rewritten to stand alone (generations)", f"{len(tests)}"))
    trained = methods.trained(config.methods)
    on_answers = [method for method in trained if method.trains_on_answers]
    questions = len(passages) * config.synth.questions_per_passage
    answers = {method.name: questions * config.value(method.answers_per_question) for method in on_answers}
    if on_answers:
        per_reply = QUESTIONS_PER_TAGGED_REPLY if config.synth.question_style == "tagged" else 1
        rows += [
            ("training questions (at most)", f"{questions} ({config.synth.questions_per_passage} per passage)"),
            ("question-writing generations (first round)",
             f"{len(passages) * math.ceil(config.synth.questions_per_passage / per_reply)}"),
            ("training answers (generations)", f"{sum(answers.values())} "
                                               f"({', '.join(method.name for method in on_answers)})"),
        ]
    train = config.train
    if trained:
        lora = add_lora(model, train)
        trainable = sum(p.numel() for p in lora.parameters() if p.requires_grad)
        rows.append(("trainable LoRA parameters per adapter", f"{trainable:,} (rank {train.lora_rank}, "
                                                              f"output layer {'in' if train.lora_output_layer else 'out'})"))
    if trained and train.replay == "self":
        rows.append(("replay replies of the base model (generations)", f"{len(retention.read_prompts(train.replay_prompts))}"))
    for method in trained:
        passages_only = method.training is methods.Training.PASSAGES
        sequences = len(passages) if passages_only else answers[method.name]
        epochs = train.uft_epochs if passages_only else train.epochs
        steps = math.ceil(sequences / (train.batch_size * train.gradient_accumulation_steps)) * epochs
        rows.append((f"train {method.name}: sequences x epochs, optimizer steps", f"{sequences} x {epochs}, {steps}"))
    if tests:
        rows.append(("test answers (generations)", f"{len(tests) * len(config.methods)} "
                                                   f"({len(tests)} x {', '.join(config.methods)})"))
    if selfcheck.wanted(config):
        held_out = len(passages) * selfcheck.questions_per_passage(config)
        rows.append(("self-check: questions, references, replies (at most)",
                     f"{held_out}, {held_out}, {held_out} x {len(config.methods)} "
                     f"({selfcheck.questions_per_passage(config)} per passage, held out)"))
    if trained and config.eval.retention:
        asked = len(retention.general_questions(config.eval.retention_questions))
        drift = len(retention.bundled("drift_prompts"))
        rows.append(("retention check (generations)", f"{asked} + {drift} (base model), then up to {asked} per "
                                                      f"trained method ({', '.join(m.name for m in trained)})"))
    files = planned_files(run, config, bool(tests))
    rows.append(("files", ", ".join(str(path.relative_to(run.path)) for path in files)))
    return rows


def plan_documents(run: RunDir, config: RunConfig, docs: Path, test_questions: Path | None) -> str:
    """`run --dry-run`: the inputs checked as `prepare` checks them, the plan, and config.yaml."""
    documents = read_documents(docs, exclude=run.path)
    tests = read_test_questions(test_questions, {d.id for d in documents}) if test_questions else []
    rows = plan_run(run, config, documents, tests)
    run.save_config(config)
    return format_plan(rows)


def plan_dataset(run: RunDir, config: RunConfig, data_dir: Path | None) -> str:
    """`reproduce --dry-run`: the dataset cut as configured, the plan, and config.yaml."""
    documents, tests = load_cut_dataset(config.dataset, data_dir)
    rewrite = config.dataset.rewrite_questions and not carries_rewritten_questions(config.dataset.spec)
    rows = plan_run(run, config, documents, tests, rewrite)
    run.save_config(config)
    return format_plan(rows)


def planned_files(run: RunDir, config: RunConfig, tested: bool = True) -> list[Path]:
    trained = methods.trained(config.methods)
    files = [run.config, run.documents, run.passages, run.test_questions]
    if any(method.trains_on_answers for method in trained) or selfcheck.wanted(config):
        files.append(run.questions)
    files += [run.answers(method.name) for method in trained if method.trains_on_answers]
    if any(method.distills for method in trained) and config.train.teacher in ("cached", "server"):
        files.append(run.teacher)
    files += [run.adapter(method.name) for method in trained]
    if trained and config.train.replay == "self":
        files.append(run.replay)
    files += [run.eval(name) for name in config.methods] if tested else []
    if selfcheck.wanted(config):
        files += [run.self_check_questions] + [run.eval(name, "self-check") for name in config.methods]
    if trained and config.eval.retention:
        files += [run.retention("base"), run.retention("base-replies")]
        files += [run.retention(name) for m in trained for name in (m.name, f"{m.name}.drift")]
    return files + [run.path / "report.md", run.path / "report.json"]


def format_plan(rows: list[tuple[str, str]]) -> str:
    width = max(len(what) for what, _ in rows)
    return "\n".join(f"{what.ljust(width)}  {amount}" for what, amount in rows)
