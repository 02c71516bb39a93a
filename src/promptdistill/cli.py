"""The `promptdistill` command.

    promptdistill demo                                   # the whole pipeline on bundled documents
    promptdistill run --docs DIR --test-questions Q.jsonl --out runs/NAME [--model M]
    promptdistill questions|answers|train|evaluate|report runs/NAME   # one stage on a run dir
    promptdistill ask|chat|export|serve runs/NAME        # use the trained model

Settings come from the paper's defaults, the model's preset, `--config FILE.yaml` and
`--set section.field=value` (repeatable), in that order; `runs/NAME/config.yaml` records them.
"""

from __future__ import annotations

import errno
import logging
import os
import shlex
import sys
import warnings
from contextlib import contextmanager, nullcontext
from importlib import resources
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.logging import RichHandler

from promptdistill import methods as method_table
from promptdistill.config import resolve_config
from promptdistill.errors import UserError

app = typer.Typer(
    add_completion=False, no_args_is_help=True,
    help="Inject the knowledge of your documents into an LLM's weights by prompt distillation.",
)
console = Console(stderr=True)

ConfigOption = typer.Option(None, "--config", help="YAML file of settings (see configs/)")
SetOption = typer.Option([], "--set", help="override one setting, e.g. --set train.epochs=3")
RunDirArgument = typer.Argument(..., help="run directory made by `promptdistill run`")
MethodOption = typer.Option(None, "--method", help="only this method (default: all in the config)")
DocsOption = typer.Option(..., help="folder of documents (PDF, Word, PowerPoint, EPUB, web pages, text, Markdown), "
                                   "or JSONL of {id, text}")
TestQuestionsOption = typer.Option(None, help='JSONL of {"question", "answers": [...], "doc_id"}; without it, the '
                                              "report's self-check estimates what was learned")
ModelOption = typer.Option(None, help="built-in name, hub id, local folder or .gguf file")
DryRunOption = typer.Option(False, "--dry-run", help="print the plan (generations, training steps, LoRA "
                            "parameters, files) and write config.yaml; load no model weights")
MethodsOption = typer.Option(None, help="comma-separated subset of " + ",".join(method_table.METHODS)
                             + " (open-book's alias: oracle)")


def _setup_logging() -> None:
    from promptdistill.files import is_main_process

    # The other processes of `accelerate launch` train in step with the main one: it alone reports.
    logging.basicConfig(level=logging.INFO if is_main_process() else logging.WARNING, format="%(message)s",
                        datefmt="[%X]", handlers=[RichHandler(console=console, show_path=False)])
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as transformers_logging

    for name in ("httpx", "httpx2"):  # the openai client's HTTP library: a line per request otherwise
        logging.getLogger(name).setLevel(logging.WARNING)
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()  # weight-loading bars; ours stay
    warnings.filterwarnings("ignore", category=FutureWarning)


def _methods_option(methods: Optional[str]) -> list[str]:
    return [f"methods={methods}"] if methods else []


@contextmanager
def _locked(run_dir: Path, several_processes: bool = False):
    """The run directory, held by this command alone. Ctrl-C stops the command with the line that
    resumes it: every finished stage, batch and epoch is kept.

    Under `accelerate launch`, only a command that allows `several_processes` runs; the main
    process holds the lock for all of them."""
    from promptdistill.files import is_main_process, process_count
    from promptdistill.rundir import RunDir

    if process_count() > 1 and not several_processes:
        raise UserError(f"only `promptdistill train` runs on several processes ({process_count()} were "
                        "launched); start this command without accelerate launch")
    try:
        with RunDir(run_dir).lock() if is_main_process() else nullcontext(RunDir(run_dir)) as run:
            yield run
    except KeyboardInterrupt:
        console.print(f"\ninterrupted; finished work in {run_dir} is kept. To resume: "
                      f"{shlex.join(['promptdistill', *sys.argv[1:]])}", soft_wrap=True)
        sys.exit(130)


def _serving(run_config, needed: bool = True):
    """The run's generation server (generation.server_command), up for the command's length when
    the command generates (`needed`)."""
    from promptdistill.generation import serving

    return serving(run_config.model, run_config.generation) if needed else nullcontext()


def _finish(table: str, run_dir: Path) -> None:
    from promptdistill.rundir import RunDir

    print(table)
    console.print(f"\nreport: {run_dir / 'report.md'}  chart: {run_dir / 'plots' / 'accuracy.png'}")
    if not RunDir(run_dir).has_questions("test"):
        console.print("no test questions: the self-check estimates what was learned. Add your own with "
                      "--test-questions: they are only evaluated, nothing is trained again.", soft_wrap=True)


def _default_methods(out: Path, test_questions: Optional[Path]) -> dict:
    """The methods unless --methods or a settings file says: the ones a run directory was made with,
    else, without test questions, methods.WITHOUT_TEST_QUESTIONS."""
    from promptdistill.config import read_yaml

    recorded = out / "config.yaml"
    if recorded.is_file() and read_yaml(recorded).get("methods"):
        return {"methods": read_yaml(recorded)["methods"]}
    return {} if test_questions else {"methods": list(method_table.WITHOUT_TEST_QUESTIONS)}


def _run(docs: Path, test_questions: Optional[Path], out: Path, model: Optional[str], methods: Optional[str],
         config: Optional[Path], overrides: list[str], preset: Optional[str] = None, dry_run: bool = False) -> None:
    from promptdistill import pipeline
    from promptdistill.plan import plan_documents

    if model:
        overrides = [f"model.name={model}", *overrides]
    run_config = resolve_config(config, [*_methods_option(methods), *overrides], preset,
                                defaults=_default_methods(out, test_questions))
    with _locked(out) as run:
        if dry_run:
            _print_plan(plan_documents(run, run_config, docs, test_questions), run)
            return
        with _serving(run_config):
            pipeline.prepare(run, run_config, docs, test_questions)
            _finish(pipeline.run_all(run, run_config), out)


def _print_plan(plan: str, run) -> None:
    print(plan)
    console.print(f"\ndry run: nothing generated or trained; settings in {run.config}. "
                  "Run the same command without --dry-run to start.", soft_wrap=True)


@app.command()
def demo(
    out: Optional[Path] = typer.Option(None, help="run directory (default runs/demo, or runs/demo-full)"),
    full: bool = typer.Option(False, "--full", help="the built-in model's full settings and every baseline "
                                                   "(25 to 50 minutes on 2 cores) instead of the quick demo"),
    methods: Optional[str] = MethodsOption,
    config: Optional[Path] = ConfigOption,
    overrides: list[str] = SetOption,
) -> None:
    """The whole pipeline on the bundled fictional documents with the built-in model.

    Quick by default (configs/demo.yaml: 10 to 20 minutes on a 2-core laptop, docs/speed.md); --full
    keeps the built-in model's own preset and runs every baseline.
    """
    demo_data = resources.files("promptdistill") / "demo"
    out = out or Path("runs/demo-full" if full else "runs/demo")
    _run(Path(str(demo_data / "docs")), Path(str(demo_data / "test_questions.jsonl")), out, None,
         methods, config, overrides, preset=None if full else "demo")


@app.command()
def run(
    docs: Path = DocsOption,
    test_questions: Optional[Path] = TestQuestionsOption,
    out: Path = typer.Option(..., help="run directory (created; rerun to resume)"),
    model: Optional[str] = ModelOption,
    methods: Optional[str] = MethodsOption,
    config: Optional[Path] = ConfigOption,
    overrides: list[str] = SetOption,
    update: bool = typer.Option(False, "--update", help="documents added or edited since the last training: "
                                                        "continue from the trained adapter on what changed, "
                                                        "rehearsing the rest (train.update)"),
    dry_run: bool = DryRunOption,
) -> None:
    """Documents to trained adapters and a report: every stage, resuming finished ones.

    Without --test-questions it trains pd and evaluates base, pd and open-book on the self-check;
    a run directory keeps the methods it was made with unless --methods says otherwise. After the
    documents change, --update trains on what changed instead of everything (update.py).
    """
    _run(docs, test_questions, out, model, methods, config, ["train.update=true"] * update + overrides,
         dry_run=dry_run)


@app.command()
def reproduce(
    dataset: str = typer.Argument(..., help="squadshifts:SUBSET (new_wiki, nyt, reddit, amazon), paper:SUBSET "
                                            "(the paper's CSVs, rewritten questions) or hotpotqa"),
    preset: str = typer.Option("cpu-smoke", help="settings preset: paper (GPUs) or cpu-smoke (2-core CPU)"),
    data_dir: Optional[Path] = typer.Option(None, help="folder with the dataset's files; default: the hub"),
    out: Optional[Path] = typer.Option(None, help="run directory (default runs/DATASET-PRESET)"),
    model: Optional[str] = ModelOption,
    methods: Optional[str] = MethodsOption,
    config: Optional[Path] = ConfigOption,
    overrides: list[str] = SetOption,
    dry_run: bool = DryRunOption,
) -> None:
    """The paper's experiment on its datasets, with its published numbers beside the run's."""
    from promptdistill import pipeline
    from promptdistill.plan import plan_dataset

    if model:
        overrides = [f"model.name={model}", *overrides]
    run_config = resolve_config(config, [f"dataset.spec={dataset}", *_methods_option(methods), *overrides], preset)
    out = out or Path("runs") / f"{dataset.replace(':', '-')}-{preset}"
    with _locked(out) as run:
        if dry_run:
            _print_plan(plan_dataset(run, run_config, data_dir), run)
            return
        with _serving(run_config):
            pipeline.prepare_dataset(run, run_config, data_dir)
            _finish(pipeline.run_all(run, run_config), out)


@app.command()
def prepare(
    docs: Path = DocsOption,
    test_questions: Optional[Path] = TestQuestionsOption,
    out: Path = typer.Option(..., help="run directory"),
    model: Optional[str] = ModelOption,
    config: Optional[Path] = ConfigOption,
    overrides: list[str] = SetOption,
) -> None:
    """Check the inputs and split documents into passages (first stage of `run`)."""
    from promptdistill import pipeline

    if model:
        overrides = [f"model.name={model}", *overrides]
    run_config = resolve_config(config, overrides)
    with _locked(out) as run:
        pipeline.prepare(run, run_config, docs, test_questions)


@contextmanager
def _stage(run_dir: Path, overrides: list[str], several_processes: bool = False):
    """The run, locked, and its config with `--set` applied; a change is recorded in config.yaml, and said."""
    from promptdistill.files import is_main_process
    from promptdistill.rundir import RunDir

    RunDir(run_dir).load_config()  # a run directory, before the lock would create one
    with _locked(run_dir, several_processes) as run:
        before = run.load_config()
        run_config = run.load_config(overrides)
        changed = _changed_settings(before.to_dict(), run_config.to_dict())
        if changed and is_main_process():
            run.save_config(run_config)
            console.print(f"recorded in {run.config}: " + "; ".join(
                f"{name} {old!r} -> {new!r}" for name, (old, new) in changed.items()))
        yield run, run_config


def _changed_settings(before: dict, after: dict, prefix: str = "") -> dict[str, tuple]:
    changed = {}
    for key, value in after.items():
        if isinstance(value, dict):
            changed.update(_changed_settings(before[key], value, f"{prefix}{key}."))
        elif before[key] != value:
            changed[f"{prefix}{key}"] = (before[key], value)
    return changed


def _chosen(method: Optional[str], allowed: list[method_table.Method]) -> list[method_table.Method]:
    """The methods a stage command works on: all of `allowed`, or the one --method names."""
    if method is None:
        return allowed
    chosen = [m for m in allowed if m.name == method_table.canonical_name(method, "--method")]
    if not chosen:
        raise UserError(f"--method {method}: choose from {', '.join(m.name for m in allowed)}")
    return chosen


@app.command()
def questions(run_dir: Path = RunDirArgument, overrides: list[str] = SetOption) -> None:
    """The expert writes training questions about each passage, and the self-check's."""
    from promptdistill import pipeline

    with _stage(run_dir, overrides) as (run, run_config), _serving(run_config):
        pipeline.questions(run, run_config)


@app.command()
def answers(run_dir: Path = RunDirArgument, method: Optional[str] = MethodOption,
            overrides: list[str] = SetOption) -> None:
    """The expert answers each question with its passage (pd: T=1.5, sft: T=0.25 in the paper)."""
    from promptdistill import pipeline

    with _stage(run_dir, overrides) as (run, run_config), _serving(run_config):
        trained = method_table.trained(run_config.methods)
        for chosen in _chosen(method, [m for m in trained if m.trains_on_answers]):
            pipeline.answers(run, run_config, chosen)


@app.command()
def teacher(run_dir: Path = RunDirArgument, overrides: list[str] = SetOption) -> None:
    """Cache the teacher's top-k distributions over the pd answers (train.teacher=cached, or server)."""
    from promptdistill import pipeline

    with _stage(run_dir, overrides) as (run, run_config), _serving(run_config, run_config.train.teacher == "server"):
        for chosen in [m for m in method_table.trained(run_config.methods) if m.distills]:
            pipeline.teacher_cache(run, run_config, chosen)


@app.command()
def train(run_dir: Path = RunDirArgument, method: Optional[str] = MethodOption,
          overrides: list[str] = SetOption) -> None:
    """Train the LoRA student (pd: distillation from the teacher; sft: cross-entropy).

    Also on several processes: `accelerate launch --multi_gpu --num_processes N -m promptdistill train RUN`.
    """
    from promptdistill import pipeline
    from promptdistill.files import is_main_process

    # Replay's replies and the teacher cache are written by the main process alone, before the others train.
    with _stage(run_dir, overrides, several_processes=True) as (run, run_config), \
            _serving(run_config, is_main_process() and (run_config.train.replay == "self"
                                                         or run_config.train.teacher == "server")):
        for chosen in _chosen(method, method_table.trained(run_config.methods)):
            pipeline.train(run, run_config, chosen)


@app.command()
def evaluate(run_dir: Path = RunDirArgument, method: Optional[str] = MethodOption,
             overrides: list[str] = SetOption) -> None:
    """Answer the test questions and the self-check's with each method, grade them (and ask the judge, if set)."""
    from promptdistill import pipeline
    from promptdistill.judge import judge_replies

    with _stage(run_dir, overrides) as (run, run_config), _serving(run_config):
        for question_set in pipeline.question_sets(run, run_config):
            for chosen in _chosen(method, [method_table.METHODS[name] for name in run_config.methods]):
                pipeline.evaluate(run, run_config, chosen, question_set)
                if run_config.eval.judge:
                    judge_replies(run, run_config, chosen.name, question_set)


@app.command()
def retention(run_dir: Path = RunDirArgument, method: Optional[str] = MethodOption,
              overrides: list[str] = SetOption) -> None:
    """What each trained method forgot: general questions the base model knew, and drift (KL) from it."""
    from functools import partial

    from promptdistill import pipeline
    from promptdistill.retention import check

    with _stage(run_dir, overrides) as (run, run_config), _serving(run_config):
        check(run, run_config, _chosen(method, method_table.trained(run_config.methods)),
              partial(pipeline.generation_backend, run_config))


@app.command()
def report(run_dir: Path = RunDirArgument) -> None:
    """Write report.md, report.json and the chart from the evaluations."""
    from promptdistill.report import report_run

    with _stage(run_dir, []) as (run, run_config):
        _finish(report_run(run, run_config), run_dir)


@app.command()
def compare(
    run_dir: Path = RunDirArgument,
    variant: list[str] = typer.Option(..., "--variant", help='NAME:SECTION.FIELD=VALUE,... (repeatable), e.g. '
                                      '"3 epochs:train.epochs=3"; each is compared with the run itself'),
    seeds: Optional[str] = typer.Option(None, help="comma-separated draws, e.g. 0,1,2 (default: the run's own seed)"),
    methods: Optional[str] = typer.Option(None, help="some of the run's methods (default: all of them)"),
    draws_from: Optional[list[Path]] = typer.Option(
        None, "--draws-from", metavar="FILE",
        help="a copy of an earlier compare.json of this run and variants: its draws pooled with these (repeatable)"),
) -> None:
    """Variants of a run's settings side by side over several draws: accuracy, paired differences,
    retention, drift and training seconds. Variants share every finished stage they leave alone."""
    from promptdistill.compare import compare as compare_variants
    from promptdistill.compare import parse_variant

    with _stage(run_dir, []) as (run, run_config), _serving(run_config):
        try:
            draws = [int(seed) for seed in seeds.split(",")] if seeds else [run_config.seed]
        except ValueError:
            raise UserError(f"--seeds {seeds}: expected comma-separated whole numbers, e.g. 0,1,2") from None
        chosen = [method_table.canonical_name(name, "--methods") for name in methods.split(",")] if methods else None
        unknown = [name for name in chosen or [] if name not in run_config.methods]
        if unknown:
            raise UserError(f"--methods: {', '.join(unknown)} not among the run's ({', '.join(run_config.methods)})")
        table = compare_variants(run, run_config, [parse_variant(text) for text in variant], draws, chosen,
                                 draws_from or ())
    print(table)
    console.print(f"\ncomparison: {run_dir / 'compare' / 'compare.json'}  plots: "
                  f"{run_dir / 'compare' / 'accuracy_vs_seconds.png'}, accuracy_vs_retention.png")


UseMethodOption = typer.Option("pd", "--method", help="base or a trained method (uft, sft, pd)")


def _run_config(run_dir: Path, overrides: list[str]):
    """A finished run's settings, with `--set` applied for this command only (nothing is recorded)."""
    from promptdistill.rundir import RunDir

    run = RunDir(run_dir)
    return run, run.load_config(overrides)


@app.command()
def ask(run_dir: Path = RunDirArgument, question: str = typer.Argument(..., help="the question"),
        method: str = UseMethodOption, rag: bool = typer.Option(False, "--rag", help="add the retrieved passages"),
        overrides: list[str] = SetOption) -> None:
    """One answer from the trained model, closed-book unless --rag, decoded as in evaluation."""
    from promptdistill.chat import ask as answer

    print(answer(*_run_config(run_dir, overrides), question, method, rag))


@app.command()
def chat(run_dir: Path = RunDirArgument, method: str = UseMethodOption,
         max_tokens: int = typer.Option(256, help="length cap of a reply"),
         temperature: float = typer.Option(0.0, help="0: greedy, the same reply every time"),
         overrides: list[str] = SetOption) -> None:
    """Talk to the trained model in the terminal (replies streamed; /method, /reset, /exit)."""
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:  # not on every platform; input() works without it
        pass

    from promptdistill.chat import ChatModel, chat_session

    model = ChatModel(*_run_config(run_dir, overrides), method, max_tokens, temperature)

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    chat_session(model, input, write)


@app.command()
def export(run_dir: Path = RunDirArgument, method: str = UseMethodOption,
           out: Path = typer.Option(..., help="folder to write (an earlier export there is replaced)"),
           adapter_only: bool = typer.Option(False, "--adapter-only", help="the PEFT adapter folder, unmerged")) -> None:
    """A folder that transformers and vLLM load: the adapter merged into the weights, with a model card."""
    from promptdistill.export import export_model

    written = export_model(*_run_config(run_dir, []), method, out, adapter_only)
    console.print(f"exported {method} to {written}")


@app.command()
def serve(target: Path = typer.Argument(..., help="a run directory, or a folder made by `promptdistill export`"),
          method: str = UseMethodOption,
          host: str = typer.Option("127.0.0.1", help="address to listen on"),
          port: int = typer.Option(8000, help="port to listen on"),
          server: str = typer.Option("auto", help="transformers, vllm, or auto (vllm on a GPU where installed)")) -> None:
    """An OpenAI-compatible endpoint of the trained model, through `transformers serve` or `vllm serve`."""
    from promptdistill.export import current_export, server_command

    if (target / "config.yaml").is_file():
        model_dir = current_export(*_run_config(target, []), method)
    elif (target / "config.json").is_file():
        model_dir = target
    else:
        raise UserError(f"{target}: neither a run directory (config.yaml) nor a model folder (config.json)")
    command = server_command(model_dir, host, port, server)
    console.print(f"serving {model_dir} at http://{host}:{port}/v1 (model name: {command[2]}); Ctrl-C stops it")
    sys.stdout.flush()
    sys.stderr.flush()
    try:  # the server takes this process's place: Ctrl-C and kill reach it, and nothing is left behind
        os.execvp(command[0], command)
    except OSError as error:
        raise UserError(f"cannot start {command[0]}: {error.strerror}") from None


SYSTEM_ERRORS = {
    errno.ENOSPC: "free some space and rerun the command; finished work is kept",
    errno.EDQUOT: "free some space and rerun the command; finished work is kept",
    errno.EACCES: "make the run directory writable, or choose another --out",
    errno.EROFS: "the run directory is on a read-only file system; choose another --out",
}


def main() -> None:
    from promptdistill import rundir

    _setup_logging()
    # Each stage in a process of its own; 0 keeps them in this one (tests call main() in a process
    # that has run tensor code: rundir.STAGE_PROCESSES says why that matters).
    rundir.STAGE_PROCESSES = os.environ.get("PROMPTDISTILL_STAGE_PROCESSES", "1") != "0"
    try:
        app()  # typer reports its own usage errors and exits
    except UserError as error:
        console.print(f"[bold red]error:[/] {error}", soft_wrap=True)
        sys.exit(2)
    except OSError as error:  # the machine, not the program: say which file and what to do
        if error.errno not in SYSTEM_ERRORS:
            raise
        where = f" ({error.filename})" if error.filename else ""
        console.print(f"[bold red]error:[/] {os.strerror(error.errno).lower()}{where}: {SYSTEM_ERRORS[error.errno]}",
                      soft_wrap=True)
        sys.exit(2)
