"""The stages of a run, in order; each reads the files of the ones before and writes its own.

    prepare    documents (+ test questions) -> documents/, passages.jsonl, test_questions.jsonl, config.yaml
    rewrite    (reproduce, optional) test questions -> stand-alone questions
    questions  passages -> questions.jsonl (the expert writes them)
    self-check passages, questions -> self_check/questions.jsonl (held out, with the teacher's answers; selfcheck.py)
    answers    questions -> answers/METHOD.jsonl (the expert answers open-book, per method)
    teacher    answers of the distilled method -> teacher/ (top-k targets; train.teacher=cached)
    replay     (train.replay=self) replay prompts -> replay.jsonl (the base model's replies; retention.py)
    train      answers or passages -> adapters/METHOD/ (LoRA, checkpoints per epoch; an update continues
               from the adapter on what changed, update.py)
    evaluate   test questions -> eval/METHOD.jsonl (replies and grades; rag methods retrieve first), and
               the self-check's -> self_check/METHOD.jsonl
    judge      eval/METHOD.jsonl -> eval/METHOD.judge.jsonl (when eval.judge is set), and self_check/
    retention  adapters -> retention/ (what each trained method forgot; eval.retention; retention.py)
    report     eval/ -> report.md, report.json, plots/accuracy.png (report.py)

Each stage is a `Stage` (rundir.py) naming the settings it reads and the files it reads and
writes, so a finished stage is skipped and a stage whose settings or inputs changed runs again.
What a method trains and how it answers comes from the method table (methods.py).
"""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path

from promptdistill import methods, retention, selfcheck, update
from promptdistill.config import RunConfig
from promptdistill.corpus import Document, TestQuestion, read_documents, read_test_questions, split_with_tokenizer
from promptdistill.errors import UserError
from promptdistill.evaluate import evaluate_method, summarise
from promptdistill.files import content_key, read_jsonl, write_jsonl
from promptdistill.generation import BatchStore, make_backend, served
from promptdistill.judge import judge_replies
from promptdistill.models import default_device, load_model, load_tokenizer, training_precision
from promptdistill.report import report_run
from promptdistill.rundir import RunDir, Stage

MODEL = ("model.name", "model.dtype")  # every stage that runs the model reads these


def generation_backend(config: RunConfig, adapter: Path | None = None):
    """The model (with `adapter`) that generates in a stage: on the run's server, if it has one."""
    return make_backend(config.model, adapter, **served(config.generation))


def prepare(run: RunDir, config: RunConfig, docs: Path, test_questions: Path | None) -> None:
    """Read and check every input before any model work, then write the corpus files."""
    with BatchStore(run.batches("documents")) as store:  # each file converted once, until it changes
        documents = read_documents(docs, exclude=run.path, store=store)
        tests = read_test_questions(test_questions, {d.id for d in documents}) if test_questions else []
        prepare_corpus(run, config, documents, tests)


def prepare_corpus(run: RunDir, config: RunConfig, documents: list[Document], tests: list[TestQuestion]) -> None:
    tokenizer = load_tokenizer(config.model)  # the model is checked before anything is written
    run.save_config(config)

    def work():
        passages = split_with_tokenizer(documents, tokenizer, config.corpus.passage_tokens)
        run.write_documents(documents)
        write_jsonl(run.passages, [passage.to_dict() for passage in passages])
        write_jsonl(run.test_questions, [test.to_dict() for test in tests])
        return {"documents": len(documents), "passages": len(passages), "test_questions": len(tests)}

    outputs = [run.documents, run.passages, run.test_questions]
    Stage("prepare", config.settings("model.name", "corpus.passage_tokens"), [], outputs,
          extra={"documents": content_key([(d.id, d.text) for d in documents]),
                 "test_questions": content_key([t.to_dict() for t in tests])}).run(run, work)


def prepare_dataset(run: RunDir, config: RunConfig, data_dir: Path | None) -> None:
    """A known dataset (config.dataset), cut as configured, written to inputs/, then prepared."""
    from promptdistill.datasets import carries_rewritten_questions, load_cut_dataset

    documents, tests = load_cut_dataset(config.dataset, data_dir)
    write_jsonl(run.inputs / "documents.jsonl", [{"id": d.id, "text": d.text} for d in documents])
    write_jsonl(run.inputs / "test_questions.jsonl", [test.to_dict() for test in tests])
    if config.dataset.rewrite_questions and not carries_rewritten_questions(config.dataset.spec):
        rewritten = rewrite_questions(run, config, documents, tests)
        tests = [dataclasses.replace(test, question=rewritten[test.id]) for test in tests]
    prepare_corpus(run, config, documents, tests)


def rewrite_questions(run: RunDir, config: RunConfig, documents: list[Document],
                      tests: list[TestQuestion]) -> dict[str, str]:
    """Each test question rewritten to stand alone, by id; the pairs kept in inputs/rewritten_questions.jsonl."""
    from promptdistill.synth import rewrite_test_questions

    pairs_path = run.inputs / "rewritten_questions.jsonl"

    def work():
        pairs = rewrite_test_questions(generation_backend(config), documents, tests, config.synth.max_question_tokens,
                                       config.eval.batch_size, config.seed)
        write_jsonl(pairs_path, pairs)
        return {"questions": len(pairs), "changed": sum(p["rewritten"] != p["original"] for p in pairs)}

    Stage("rewrite", config.settings(*MODEL, "synth.max_question_tokens"), [run.inputs / "test_questions.jsonl"],
          [pairs_path]).run(run, work)
    return {pair["id"]: pair["rewritten"] for pair in read_jsonl(pairs_path)}


def questions(run: RunDir, config: RunConfig) -> None:
    """The expert's training questions (questions.jsonl), then the self-check's (selfcheck.py)."""
    from promptdistill.synth import QUESTION_SETTINGS, write_questions

    def work():
        with BatchStore(run.batches("questions")) as store:
            backend = generation_backend(config)
            records, stats = write_questions(backend, run.load_passages(), config.synth, config.seed, store)
        if not records:
            raise UserError("the model wrote no usable question for any passage; see docs/sampling.md "
                            "(try a lower synth.question_temperature)")
        write_jsonl(run.questions, records)
        return {"questions": len(records), **vars(stats)}

    settings = config.settings(*MODEL, "seed", *QUESTION_SETTINGS)
    Stage("questions", settings, [run.passages], [run.questions]).run(run, work)
    if selfcheck.wanted(config):
        selfcheck.write(run, config, partial(generation_backend, config))


def answers(run: RunDir, config: RunConfig, method: methods.Method) -> None:
    """The expert's open-book answers that `method` trains on, sampled at its own temperature and seed."""
    from promptdistill.synth import answer_questions

    settings = config.settings(*MODEL, "seed", method.answer_temperature, method.answers_per_question, "synth.top_p",
                               "synth.top_k", "synth.max_answer_tokens", "synth.answer_length", "synth.batch_size",
                               "synth.teacher_instruction", "synth.closed_book_share")
    temperature, per_question = config.value(method.answer_temperature), config.value(method.answers_per_question)

    def work():
        passages = {passage.id: passage for passage in run.load_passages()}
        with BatchStore(run.batches(f"answers-{method.name}")) as store:
            backend = generation_backend(config)
            records, counts = answer_questions(backend, passages, read_jsonl(run.questions), temperature, config.synth,
                                               config.seed + method.answer_seed_offset, store, per_question,
                                               config.synth.closed_book_share)
        write_jsonl(run.answers(method.name), records)
        return counts

    Stage(f"answers-{method.name}", settings, [run.questions, run.passages], [run.answers(method.name)],
          extra={"seed_offset": method.answer_seed_offset}).run(run, work)


def training_examples(run: RunDir, config: RunConfig, tokenizer, method: methods.Method, open_book: bool = False) -> list:
    """A method's training examples; `open_book`: its answers with the passage in the student's prompt (replay)."""
    from promptdistill.train.data import answer_examples, first_per_passage, open_book_examples, passage_examples

    if method.training is methods.Training.PASSAGES:
        return passage_examples(tokenizer, run.load_passages())
    questions, answers = read_jsonl(run.questions), read_jsonl(run.answers(method.name))
    if config.train.questions_per_passage:
        questions, answers = first_per_passage(questions, answers, config.train.questions_per_passage)
    examples = answer_examples(tokenizer, run.load_passages(), questions, answers,
                               with_teacher=method.distills or open_book,
                               teacher_instruction=config.synth.teacher_instruction)
    return open_book_examples(examples) if open_book else examples


def teacher_cache(run: RunDir, config: RunConfig, method: methods.Method) -> None:
    """One teacher pass over a distilled method's answers: top-k targets per answer token, in teacher/."""
    from promptdistill.teacher import TeacherInput, build_teacher_cache, build_teacher_cache_from_server

    settings = config.settings(*MODEL, "train.teacher_top_k", "train.distill_temperature", "synth.teacher_instruction")
    from_server = config.train.teacher == "server"

    def work():
        tokenizer = load_tokenizer(config.model)
        items = [TeacherInput(e.key, e.teacher_ids[:e.teacher_prefix_length], e.teacher_ids[e.teacher_prefix_length:],
                              e.answer_ids) for e in training_examples(run, config, tokenizer, method)]
        counts = {"answers": len(items), "answer_tokens": sum(len(item.answer_ids) for item in items),
                  "passages": len({tuple(item.prefix_ids) for item in items})}
        top_k, temperature = config.train.teacher_top_k, config.train.distill_temperature
        if from_server and build_teacher_cache_from_server(generation_backend(config), items, top_k, temperature,
                                                           len(tokenizer), run.teacher, settings):
            return {**counts, "source": "server"}
        model, _ = load_model(config.model)
        build_teacher_cache(model, items, top_k, temperature, config.synth.batch_size, run.teacher, settings)
        return {**counts, "source": "local"}

    Stage("teacher", settings, [run.answers(method.name), run.questions, run.passages], [run.teacher],
          extra={"teacher": "server"} if from_server else {}).run(run, work)


def train(run: RunDir, config: RunConfig, method: methods.Method) -> None:
    from promptdistill.teacher import TeacherCache
    from promptdistill.train.loop import process_state, train_adapter

    cached = method.distills and config.train.teacher in ("cached", "server")
    replay = methods.replay_for(method, config.train.replay)
    with process_state().main_process_first():  # under accelerate launch the others find them done
        if cached:
            teacher_cache(run, config, method)
        if replay == "self":
            retention.replay_replies(run, config, partial(generation_backend, config))
    inputs = [run.passages] if not method.trains_on_answers else (
        [run.answers(method.name), run.questions, run.passages] + ([run.teacher] if cached else []))
    settings = [*MODEL, "seed", *method.train_settings(), *methods.REPLAY_SETTINGS[replay]]
    inputs += [run.replay] if replay == "self" else []
    stage = Stage(f"train-{method.name}", config.settings(*settings), inputs,
                  [run.adapter(method.name), run.adapter_dir(method.name) / "metrics.json"])

    def work():
        weights, mixed_precision = training_precision(config.model, config.train.mixed_precision, default_device())
        model, tokenizer = load_model(config.model, dtype=weights)
        examples = training_examples(run, config, tokenizer, method)
        if not examples:
            raise UserError(f"train {method.name}: no training examples in {inputs[0]}")
        plan = update.plan(run, config, method.name, stage.settings)  # everything, or what changed (an update)
        examples = plan.examples(examples, update.passages_of_examples(run), config)
        train_config = dataclasses.replace(config.train, epochs=plan.epochs(config, method.epochs_setting))
        replay_rows = (retention.replay_examples(run, tokenizer) if replay == "self" else
                       training_examples(run, config, tokenizer, method, open_book=True) if replay != "none" else None)
        metrics = train_adapter(model, tokenizer.pad_token_id, examples, method, train_config,
                                run.adapter_dir(method.name), config.seed, resume_key=stage.key(run) + plan.key(config),
                                teacher_cache=TeacherCache(run.teacher) if cached else None, logs=run.logs,
                                replay_examples=replay_rows, mixed_precision=mixed_precision, initial_adapter=plan.start)
        update.record(run, method.name, stage.settings, plan, len(examples))
        return {"examples": len(examples), "final_loss": metrics["epochs"][-1]["loss"], **plan.counts()}

    stage.run(run, work)


def evaluate(run: RunDir, config: RunConfig, method: methods.Method, question_set: str = "test") -> None:
    """Answer the test questions (or the self-check's, selfcheck.py) with one method, grade the
    replies, write them to eval/METHOD.jsonl (self_check/METHOD.jsonl)."""
    inputs = [run.questions_of(question_set), run.passages]
    settings = [*MODEL, "eval.max_answer_tokens", "eval.answer_temperature", "eval.answer_length", "eval.batch_size",
                "eval.match", *methods.CONTEXT_SETTINGS[method.context]]
    adapter = run.adapter(method.adapter) if method.adapter else None
    if adapter is not None:
        inputs.append(adapter)
    if method.context is methods.Context.RETRIEVED and config.eval.retriever == "dense":
        settings.append("eval.dense_model")
    name = f"{'evaluate' if question_set == 'test' else 'self-check'}-{method.name}"

    def work():
        with BatchStore(run.batches(name)) as store:
            backend = generation_backend(config, adapter)
            records = evaluate_method(backend, method, run.load_test_questions(question_set), run.load_passages(),
                                      config.eval, store, config.synth.teacher_instruction)
        write_jsonl(run.eval(method.name, question_set), records)
        return summarise(records)

    Stage(name, config.settings(*settings), inputs, [run.eval(method.name, question_set)]).run(run, work)


def question_sets(run: RunDir, config: RunConfig) -> list[str]:
    """What the methods are evaluated on: the test questions, where the run has some, and the self-check's."""
    sets = ["test", "self-check"] if selfcheck.wanted(config) else ["test"]
    return [question_set for question_set in sets if run.has_questions(question_set)]


def run_all(run: RunDir, config: RunConfig) -> str:
    """Every stage the chosen methods need, in order; finished ones are skipped."""
    trained = methods.trained(config.methods)
    if selfcheck.wanted(config) or any(method.trains_on_answers for method in trained):
        questions(run, config)
    for method in trained:
        if method.trains_on_answers:
            answers(run, config, method)
    for method in trained:
        train(run, config, method)
    for question_set in question_sets(run, config):
        for name in config.methods:
            evaluate(run, config, methods.METHODS[name], question_set)
            if config.eval.judge:
                judge_replies(run, config, name, question_set)
    if config.eval.retention and trained:
        retention.check(run, config, trained, partial(generation_backend, config))
    return report_run(run, config)
