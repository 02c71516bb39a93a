"""The stages of a run, each reading the files of the one before and writing its own.

    prepare    documents + test questions -> passages.jsonl, test_questions.jsonl, config.yaml
    questions  passages -> questions.jsonl (the expert writes them)
    answers    questions -> answers/METHOD.jsonl (the expert answers open-book; pd and sft differ
               in temperature)
    teacher    answers/pd -> teacher/ (top-k teacher targets, when train.teacher is cached)
    train      answers -> adapters/METHOD/adapter (LoRA, checkpoints per epoch)
    evaluate   test questions -> eval/METHOD.jsonl (replies and grades; rag methods retrieve first)
    judge      eval/METHOD.jsonl -> eval/METHOD.judge.jsonl (the LLM judge, when eval.judge is set)
    report     eval -> report.md, report.json, plots/accuracy.png

A stage's manifest key hashes its settings and the contents of its inputs, so a finished stage
is skipped and a stage whose inputs changed is redone, along with everything after it.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path

import yaml

from promptdistill.config import ANSWERED_METHODS, RAG_METHODS, TRAINED_METHODS, RunConfig, load_run_config
from promptdistill.corpus import (
    Document, Passage, TestQuestion, join_passages, read_documents, read_test_questions, split_passages,
)
from promptdistill.errors import UserError
from promptdistill.evaluate import answer_test_questions, gold_context, grade_all, summarise
from promptdistill.generation import Sampling, TransformersBackend, generate_all
from promptdistill.models import chat_prompt, load_adapter, load_model, load_tokenizer, resolve_model_source
from promptdistill.prompts import student_prompt, teacher_prompt
from promptdistill.report import paper_reference, write_report
from promptdistill.rundir import PartialFile, Stage, file_digest, read_jsonl, stage_key, write_atomic, write_jsonl
from promptdistill.synth import answer_questions, write_questions
from promptdistill.teacher import TeacherCache, TeacherInput, build_teacher_cache
from promptdistill.train.data import Example, encode_answer, encode_prompt, encode_teacher_prompt

log = logging.getLogger(__name__)

ANSWER_SEED_OFFSET = {"pd": 1, "sft": 2}  # pd and sft answers are independent samples


def answer_temperature(config: RunConfig, method: str) -> float:
    return {"pd": config.synth.pd_answer_temperature, "sft": config.synth.sft_answer_temperature}[method]


class RunDir:
    """Paths of a run directory and the records in it."""

    def __init__(self, path: Path):
        self.path = Path(path)

    config = property(lambda self: self.path / "config.yaml")
    passages = property(lambda self: self.path / "passages.jsonl")
    test_questions = property(lambda self: self.path / "test_questions.jsonl")
    questions = property(lambda self: self.path / "questions.jsonl")
    teacher = property(lambda self: self.path / "teacher")

    def answers(self, method: str) -> Path:
        return self.path / "answers" / f"{method}.jsonl"

    def adapter_dir(self, method: str) -> Path:
        return self.path / "adapters" / method

    def eval(self, method: str) -> Path:
        return self.path / "eval" / f"{method}.jsonl"

    def judged(self, method: str) -> Path:
        return self.path / "eval" / f"{method}.judge.jsonl"

    def load_config(self, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
        if not self.config.is_file():
            raise UserError(f"{self.path}: not a run directory (no config.yaml); start one with `promptdistill run`")
        return load_run_config(self.config, overrides)

    def load_passages(self) -> list[Passage]:
        return [Passage(**record) for record in read_jsonl(self.passages)]

    def load_test_questions(self) -> list[TestQuestion]:
        return [TestQuestion(**record) for record in read_jsonl(self.test_questions)]


def save_config(run: RunDir, config: RunConfig) -> None:
    write_atomic(run.config, yaml.safe_dump(config.to_dict(), sort_keys=False))


def prepare(run: RunDir, config: RunConfig, docs: Path, test_questions: Path) -> None:
    """Read and check every input before any model work, then write the corpus files."""
    documents = read_documents(docs)
    tests = read_test_questions(test_questions, {document.id for document in documents})
    resolve_model_source(config.model.name)
    save_config(run, config)
    stage = Stage(run.path, "prepare", stage_key(
        config.model.name, config.section_hash("corpus"),
        [(d.id, d.text) for d in documents], [t.to_dict() for t in tests],
    ))
    if stage.done():
        log.info("prepare: inputs unchanged, skipping")
        return
    started = time.time()
    tokenizer = load_tokenizer(config.model)
    count_tokens = lambda text: len(tokenizer(text, add_special_tokens=False).input_ids)  # noqa: E731
    passages = split_passages(documents, count_tokens, config.corpus.passage_tokens)
    write_jsonl(run.passages, [passage.to_dict() for passage in passages])
    write_jsonl(run.test_questions, [test.to_dict() for test in tests])
    stage.finish({"documents": len(documents), "passages": len(passages), "test_questions": len(tests)}, started)
    log.info("prepare: %d documents -> %d passages; %d test questions",
             len(documents), len(passages), len(tests))


def prepare_dataset(run: RunDir, config: RunConfig, data_dir: Path | None) -> None:
    """Read a known dataset (config.dataset), cut it as configured, then `prepare` it.

    The cut documents and test questions are written to RUN_DIR/inputs/ first, so the run
    directory holds exactly what was trained and tested on.
    """
    from promptdistill.datasets import load_dataset_spec

    documents, tests = load_dataset_spec(config.dataset.spec, data_dir, config.dataset.limit_questions)
    if config.dataset.limit_passages:
        documents = documents[:config.dataset.limit_passages]
        kept = {document.id for document in documents}
        tests = [test for test in tests if test.doc_id in kept]
    inputs = run.path / "inputs"
    write_jsonl(inputs / "documents.jsonl", [{"id": d.id, "text": d.text} for d in documents])
    write_jsonl(inputs / "test_questions.jsonl", [test.to_dict() for test in tests])
    already_rewritten = config.dataset.spec.startswith("paper:") and not config.dataset.spec.endswith(":original")
    if config.dataset.rewrite_questions and already_rewritten:
        log.info("dataset %s carries the paper's rewritten questions: not rewriting them", config.dataset.spec)
    elif config.dataset.rewrite_questions:
        rewrite_questions(run, config, documents, inputs / "test_questions.jsonl")
    log.info("dataset %s: %d documents, %d test questions", config.dataset.spec, len(documents), len(tests))
    prepare(run, config, inputs / "documents.jsonl", inputs / "test_questions.jsonl")


def rewrite_questions(run: RunDir, config: RunConfig, documents: list[Document], tests_path: Path) -> None:
    """Rewrite each test question to stand alone (greedy, with its document in the prompt).

    The pairs are kept in inputs/rewritten_questions.jsonl and applied to the test questions
    file; a reply that is no question keeps the original.
    """
    from promptdistill.prompts import rewriting_prompt
    from promptdistill.synth import clean_question

    rewritten_path = run.path / "inputs" / "rewritten_questions.jsonl"
    tests = read_jsonl(tests_path)
    stage = Stage(run.path, "rewrite", stage_key(config.model.name, config.synth.max_question_tokens,
                                                 file_digest(tests_path)))
    if stage.done():
        log.info("rewrite: done, skipping")
    else:
        started = time.time()
        backend = _backend(config)
        texts = {document.id: document.text for document in documents}
        prompts = [chat_prompt(backend.tokenizer, rewriting_prompt(texts[t["doc_id"]], t["question"])) for t in tests]
        replies = generate_all(backend, prompts, Sampling(0.0, config.synth.max_question_tokens), seed=config.seed,
                               batch_size=config.eval.batch_size, description="rewriting test questions")
        pairs = [{"id": t["id"], "original": t["question"], "rewritten": clean_question(reply) or t["question"]}
                 for t, reply in zip(tests, replies)]
        write_jsonl(rewritten_path, pairs)
        stage.finish({"questions": len(pairs), "changed": sum(p["rewritten"] != p["original"] for p in pairs)},
                     started)
    rewrites = {pair["id"]: pair["rewritten"] for pair in read_jsonl(rewritten_path)}
    write_jsonl(tests_path, [{**test, "question": rewrites[test["id"]]} for test in tests])


def _backend(config: RunConfig, adapter: Path | None = None) -> TransformersBackend:
    model, tokenizer = load_model(config.model)
    if adapter is not None:
        model = load_adapter(model, adapter)
        model.eval()
    return TransformersBackend(model, tokenizer)


def questions(run: RunDir, config: RunConfig) -> None:
    synth = config.synth
    stage = Stage(run.path, "questions", stage_key(
        config.model.name, config.seed, file_digest(run.passages), synth.questions_per_passage,
        synth.question_temperature, synth.top_p, synth.max_question_tokens, synth.max_attempts,
        synth.batch_size,
    ))
    if stage.done():
        log.info("questions: done, skipping")
        return
    started = time.time()
    backend = _backend(config)
    passages = run.load_passages()
    records, stats = write_questions(
        backend, backend.tokenizer, passages, synth, config.seed, run.questions, stage.key,
    )
    if not records:
        raise UserError("the model wrote no usable question for any passage; see docs/sampling.md "
                        "(try a lower synth.question_temperature)")
    write_jsonl(run.questions, records)
    for partial in run.path.glob("questions.jsonl.round*.partial"):
        partial.unlink()
    counts = {"questions": len(records), **vars(stats)}
    stage.finish(counts, started)
    log.info("questions: %d kept of %d written (%d not questions, %d off-topic, %d duplicates)",
             len(records), stats.generated, stats.not_a_question, stats.off_topic, stats.duplicate)


def answers(run: RunDir, config: RunConfig, method: str) -> None:
    synth = config.synth
    temperature = answer_temperature(config, method)
    stage = Stage(run.path, f"answers-{method}", stage_key(
        config.model.name, config.seed, method, temperature, synth.top_p, synth.max_answer_tokens,
        synth.batch_size, file_digest(run.questions, run.passages),
    ))
    if stage.done():
        log.info("answers %s: done, skipping", method)
        return
    started = time.time()
    backend = _backend(config)
    passages = {passage.id: passage for passage in run.load_passages()}
    partial = PartialFile(run.answers(method), stage.key)
    records, counts = answer_questions(
        backend, backend.tokenizer, passages, read_jsonl(run.questions), temperature, synth,
        config.seed + ANSWER_SEED_OFFSET[method], partial,
    )
    write_jsonl(run.answers(method), records)
    partial.remove()
    stage.finish(counts, started)
    log.info("answers %s: %d kept (%d trimmed to a full sentence; dropped: %d empty, %d unfinished)",
             method, counts["answers"], counts["trimmed"], counts["dropped_empty"], counts["dropped_unfinished"])


def training_examples(run: RunDir, tokenizer, method: str) -> list[Example]:
    if method == "uft":
        return passage_examples(run, tokenizer)
    passages = {passage.id: passage for passage in run.load_passages()}
    questions_by_id = {record["id"]: record for record in read_jsonl(run.questions)}
    examples = []
    for record in read_jsonl(run.answers(method)):
        question = questions_by_id[record["question_id"]]
        example = Example(
            key=record["question_id"],
            student_ids=encode_prompt(tokenizer, student_prompt(question["question"])),
            answer_ids=encode_answer(tokenizer, record["answer"]),
        )
        if method == "pd":
            prefix, suffix = encode_teacher_prompt(tokenizer, passages[question["passage_id"]].text, question["question"])
            example.teacher_ids, example.teacher_prefix_length = prefix + suffix, len(prefix)
        examples.append(example)
    return examples


def passage_examples(run: RunDir, tokenizer) -> list[Example]:
    """uft: next-token training on the raw passages; every token after the first is a target."""
    examples = []
    for passage in run.load_passages():
        tokens = tokenizer(passage.text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        examples.append(Example(key=passage.id, student_ids=tokens[:1], answer_ids=tokens[1:]))
    return examples


def teacher_cache(run: RunDir, config: RunConfig) -> None:
    """One teacher pass over the pd answers: top-k targets per answer token, in teacher/."""
    train = config.train
    inputs = [run.answers("pd"), run.questions, run.passages]
    stage = Stage(run.path, "teacher", stage_key(
        config.model.name, train.teacher_top_k, train.distill_temperature, file_digest(*inputs),
    ))
    if stage.done():
        log.info("teacher: cache done, skipping")
        return
    started = time.time()
    model, tokenizer = load_model(config.model)
    items = [
        TeacherInput(example.key, example.teacher_ids[:example.teacher_prefix_length],
                     example.teacher_ids[example.teacher_prefix_length:], example.answer_ids)
        for example in training_examples(run, tokenizer, "pd")
    ]
    settings = {"top_k": train.teacher_top_k, "temperature": train.distill_temperature, "model": config.model.name}
    build_teacher_cache(model, items, train.teacher_top_k, train.distill_temperature, config.synth.batch_size,
                        run.teacher, settings)
    stage.finish({"answers": len(items), "answer_tokens": sum(len(item.answer_ids) for item in items),
                  "passages": len({tuple(item.prefix_ids) for item in items})}, started)
    log.info("teacher: cached top-%d targets for %d answers in %.0f s", train.teacher_top_k, len(items),
             time.time() - started)


def train(run: RunDir, config: RunConfig, method: str) -> None:
    from promptdistill.train.loop import train_adapter

    out_dir = run.adapter_dir(method)
    cached = method == "pd" and config.train.teacher == "cached"
    if cached:
        teacher_cache(run, config)
    if method == "uft":
        inputs = [run.passages]
    else:
        inputs = [run.answers(method), run.questions, run.passages] + ([run.teacher / "index.json"] if cached else [])
    stage = Stage(run.path, f"train-{method}", stage_key(
        config.model.name, config.seed, config.section_hash("train"), method, file_digest(*inputs),
    ))
    if stage.done():
        log.info("train %s: done, skipping", method)
        return
    # Checkpoints of other settings must not be resumed from.
    key_file = out_dir / "stage_key"
    if out_dir.exists() and (not key_file.is_file() or key_file.read_text() != stage.key):
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    key_file.write_text(stage.key)
    started = time.time()
    model, tokenizer = load_model(config.model)
    examples = training_examples(run, tokenizer, method)
    if not examples:
        raise UserError(f"train {method}: no training answers in {run.answers(method)}")
    train_config = dataclasses.replace(config.train, epochs=config.train.uft_epochs) if method == "uft" else config.train
    metrics = train_adapter(model, tokenizer.pad_token_id, examples, method, train_config, out_dir, config.seed,
                            teacher_cache=TeacherCache(run.teacher) if cached else None)
    stage.finish({"examples": len(examples), "final_loss": metrics["epochs"][-1]["loss"]}, started)


def adapter_of(method: str) -> str | None:
    """The trained adapter a method answers with: pd+rag is the pd student with retrieval."""
    return "pd" if method == "pd+rag" else method if method in TRAINED_METHODS else None


def build_retriever(config: RunConfig, passages: list[Passage]):
    from promptdistill.retrieval import BM25Retriever, DenseRetriever

    if config.eval.retriever == "dense":
        return DenseRetriever(passages, model=config.eval.dense_model)
    return BM25Retriever(passages)


def evaluate(run: RunDir, config: RunConfig, method: str) -> None:
    """Answer the test questions with one method, grade them, write eval/METHOD.jsonl."""
    inputs = [run.test_questions, run.passages]
    adapter = None
    if adapter_of(method):
        adapter = run.adapter_dir(adapter_of(method)) / "adapter"
        if not (adapter / "adapter_model.safetensors").is_file():
            raise UserError(f"evaluate {method}: no trained adapter in {adapter}; run `promptdistill train` first")
        inputs.append(adapter / "adapter_model.safetensors")
    stage = Stage(run.path, f"evaluate-{method}", stage_key(
        config.model.name, config.section_hash("eval"), method, file_digest(*inputs),
    ))
    if stage.done():
        log.info("evaluate %s: done, skipping", method)
        return
    started = time.time()
    tests = run.load_test_questions()
    passages = run.load_passages()
    contexts, retrieved = None, None
    if method == "open-book":
        contexts = [gold_context(test, passages) for test in tests]
    elif method in RAG_METHODS:
        retriever = build_retriever(config, passages)
        retrieved = [retriever.search(test.question, config.eval.rag_k) for test in tests]
        contexts = [join_passages(found) for found in retrieved]
    backend = _backend(config, adapter)
    replies = answer_test_questions(
        backend, backend.tokenizer, tests, contexts, config.eval.max_answer_tokens, config.eval.batch_size,
        f"evaluating {method}",
    )
    records = grade_all(tests, replies)
    counts = summarise(records)
    if retrieved is not None:
        for record, test, found in zip(records, tests, retrieved):
            record["retrieved"] = [passage.id for passage in found]
            record["retrieval_hit"] = any(passage.doc_id == test.doc_id for passage in found)
        counts["recall_at_k"] = 100 * sum(r["retrieval_hit"] for r in records) / len(records)
    write_jsonl(run.eval(method), records)
    stage.finish(counts, started)


def judge(run: RunDir, config: RunConfig, method: str) -> None:
    """The LLM judge's verdict on each reply, in eval/METHOD.judge.jsonl (eval.judge set)."""
    from promptdistill.judge import OpenAIJudgeBackend, judge_all

    settings = config.eval
    stage = Stage(run.path, f"judge-{method}", stage_key(
        settings.judge, settings.judge_url, settings.judge_max_tokens, file_digest(run.eval(method)),
    ))
    if stage.done():
        log.info("judge %s: done, skipping", method)
        return
    started = time.time()
    records = read_jsonl(run.eval(method))
    if settings.judge_url:
        backend, tokenizer = OpenAIJudgeBackend(settings.judge_url, settings.judge, settings.judge_api_key_env), None
    else:
        model, tokenizer = load_model(dataclasses.replace(config.model, name=settings.judge))
        backend = TransformersBackend(model, tokenizer)
    partial = PartialFile(run.judged(method), stage.key)
    verdicts = judge_all(backend, tokenizer, records, max_new_tokens=settings.judge_max_tokens,
                         batch_size=settings.batch_size, partial=partial)
    write_jsonl(run.judged(method), [{"id": r["id"], "judge": v} for r, v in zip(records, verdicts)])
    partial.remove()
    stage.finish({"judged": len(verdicts), "unparseable": sum(v is None for v in verdicts)}, started)


def method_results(run: RunDir, config: RunConfig, method: str) -> dict:
    """A method's scores for the report: metric means, a 95% interval, judge and retrieval."""
    from promptdistill.judge import agreement
    from promptdistill.stats import bootstrap_interval

    if not run.eval(method).is_file():
        raise UserError(f"report: {run.eval(method)} is missing; run `promptdistill evaluate` first")
    records = read_jsonl(run.eval(method))
    result: dict = summarise(records)
    low, high = bootstrap_interval([r["contains"] for r in records], resamples=config.eval.bootstrap_resamples,
                                   seed=config.seed)
    result["contains_interval"] = [100 * low, 100 * high]
    if "retrieval_hit" in records[0]:
        result["recall_at_k"] = 100 * sum(r["retrieval_hit"] for r in records) / len(records)
    if config.eval.judge and run.judged(method).is_file():
        verdicts = [entry["judge"] for entry in read_jsonl(run.judged(method))]
        result["judge"] = 100 * sum(v is True for v in verdicts) / len(verdicts)
        result["judge_agreement"] = agreement(verdicts, [r["contains"] for r in records])
    return result


def report(run: RunDir, config: RunConfig) -> str:
    results = {method: method_results(run, config, method) for method in config.methods}
    passages = run.load_passages()
    counts = {
        "test_questions": len(run.load_test_questions()),
        "documents": len({passage.doc_id for passage in passages}),
        "passages": len(passages),
        "questions": len(read_jsonl(run.questions)) if run.questions.is_file() else 0,
    }
    return write_report(run.path, results, config.to_dict(), counts, paper_reference(config.dataset.spec))


def adapters_needed(config: RunConfig) -> list[str]:
    """The adapters the chosen methods answer with, in training order."""
    return [method for method in TRAINED_METHODS if method in {adapter_of(m) for m in config.methods}]


def run_all(run: RunDir, config: RunConfig) -> str:
    """Every stage the chosen methods need, in order; finished ones are skipped."""
    trained = adapters_needed(config)
    answered = [method for method in trained if method in ANSWERED_METHODS]
    if answered:
        questions(run, config)
    for method in answered:
        answers(run, config, method)
    for method in trained:
        train(run, config, method)
    for method in config.methods:
        evaluate(run, config, method)
        if config.eval.judge:
            judge(run, config, method)
    return report(run, config)
