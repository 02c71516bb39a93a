"""`promptdistill compare`: variants of a run's settings side by side, over several draws.

    promptdistill compare RUN --variant "3 epochs:train.epochs=3" --variant "T=2:train.distill_temperature=2" \
        --seeds 0,1,2

The run itself is the reference. For each draw (seed) and variant, a run directory under
RUN/compare/seed-N/ starts as hard links to the files of the draw's reference (RUN itself for
the run's own seed; for another, RUN/compare/seed-N/run, linked from RUN), and its config.yaml
records the variant's settings. A stage whose key those settings leave alone is then already done
there: a variant that changes a training setting trains, evaluates and checks retention, and
writes and answers no question again. Nothing that can be shared is copied (a copy only where a
link cannot reach, across file systems), and every file of a run is replaced when a stage writes
it, never written in place, so a variant's outputs leave its reference's alone. Each variant is a
run like any other (resumable, with its own report); a second call with one more variant runs
that variant's stages alone.

Methods are evaluated on the run's test questions or, without them, on the self-check's (paired
only where a variant's held-out question is the reference's own). Per variant and method, over
every draw's questions at once: accuracy with a 95% interval (and each draw's own), the paired
difference to the run with its interval, retention (retention.py) with its paired difference to
the run's, drift, and training seconds; within each variant, the report's differences between
methods (pd - sft, ...) and between trained methods' retention, paired; and a variant's method
against the run's other one where that is not the variant's own ("pd - sft of the run": a variant
that retrains sft too).
RUN/compare/compare.json holds the table, and under "draws" what each draw of each variant and
method gave (graded replies, retention and drift per general question, seconds): enough to pool
those draws with later ones once their run folders are gone (`earlier`: `--draws-from FILE`, a
copy of an earlier compare.json of the same run and variants; a draw run now replaces the file's
of the same seed). RUN/compare/accuracy_vs_seconds.png and accuracy_vs_retention.png plot it.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from promptdistill import methods, pipeline, retention
from promptdistill.config import RunConfig
from promptdistill.errors import UserError
from promptdistill.files import read_jsonl, write_atomic
from promptdistill.report import PAIRS, paired
from promptdistill.rundir import RunDir
from promptdistill.stats import bootstrap_interval

REFERENCE = "run"  # the run's own settings: every variant is compared with it
NOT_LINKED = {"compare", "cache", "export", ".lock"}  # cache/ is appended to in place: each run keeps its own


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: tuple[str, ...]  # SECTION.FIELD=VALUE, as --set takes them

    @property
    def folder(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-") or "variant"


def parse_variant(text: str) -> Variant:
    """NAME:SECTION.FIELD=VALUE,... ("40 questions:synth.questions_per_passage=40")."""
    name, _, settings = text.partition(":")
    if not name.strip() or name.strip() == REFERENCE:
        raise UserError(f"--variant {text!r}: expected NAME:SECTION.FIELD=VALUE,... with a name other than "
                        f"{REFERENCE!r} (the run itself)")
    return Variant(name.strip(), tuple(setting.strip() for setting in settings.split(",") if setting.strip()))


def link_run(source: Path, target: Path) -> None:
    """Make `target` a run directory whose files are hard links to `source`'s (copies across file
    systems), leaving out its comparisons, generation caches, exports and lock."""
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    for folder, subfolders, names in os.walk(source):
        here = Path(folder)
        if here == source:
            subfolders[:] = [name for name in subfolders if name not in NOT_LINKED]
            names = [name for name in names if name not in NOT_LINKED]
        destination = staging / here.relative_to(source)
        destination.mkdir(parents=True, exist_ok=True)
        for name in names:
            try:
                os.link(here / name, destination / name)
            except OSError:  # another file system
                shutil.copy2(here / name, destination / name)
    os.replace(staging, target)


def draws(run: RunDir, config: RunConfig, variants: list[Variant], seeds: list[int], chosen_methods: list[str]):
    """(seed, variant name, RunDir, RunConfig) of every draw and variant, the reference first in each
    draw; the run directories made as the module says, every variant's settings checked first."""
    names = [variant.name for variant in variants]
    if len({variant.folder for variant in variants}) < len(variants):
        raise UserError(f"--variant: give each variant a name of its own, got {', '.join(names)}")
    everyone = [Variant(REFERENCE, ()), *variants]
    configs = {(seed, variant.name): run.load_config([*variant.overrides, f"seed={seed}",
                                                       f"methods={','.join(chosen_methods)}"])
               for seed in seeds for variant in everyone}
    configs[config.seed, REFERENCE] = config  # the run itself keeps its methods: its report lists them all
    for seed in seeds:
        draw = run.path / "compare" / f"seed-{seed}"
        reference = run if seed == config.seed else RunDir(draw / REFERENCE)
        for variant in everyone:
            target = reference if variant.name == REFERENCE else RunDir(draw / variant.folder)
            if target.path != run.path:
                if not target.config.is_file():
                    link_run(run.path if target is reference else reference.path, target.path)
                target.save_config(configs[seed, variant.name])
            yield seed, variant.name, target, configs[seed, variant.name]


def compare(run: RunDir, config: RunConfig, variants: list[Variant], seeds: list[int],
            chosen_methods: list[str] | None = None, earlier: Sequence[Path] = ()) -> str:
    """Run every draw of every variant (finished stages are skipped), pool them with the draws of
    `earlier` compare.json files, then write the comparison; returns its table. `chosen_methods`:
    the run's methods, or some of them."""
    chosen_methods = chosen_methods or config.methods
    question_set = "test" if run.has_questions("test") else "self-check"
    settings = {REFERENCE: [], **{variant.name: list(variant.overrides) for variant in variants}}
    found = {name: {method: {} for method in chosen_methods} for name in settings}  # variant -> method -> seed -> draw
    for path in earlier:  # checked before any work
        for name, by_method in earlier_draws(path, settings, question_set, chosen_methods, run).items():
            for method, by_seed in by_method.items():
                found[name][method].update(by_seed)
    for seed, name, variant_run, variant_config in draws(run, config, variants, seeds, chosen_methods):
        pipeline.run_all(variant_run, variant_config)
        for method in chosen_methods:
            found[name][method][str(seed)] = draw_record(variant_run, method, question_set)
    every_seed = sorted({int(seed) for seed in found[REFERENCE][chosen_methods[0]]})
    found = {name: {method: {str(seed): by_seed[str(seed)] for seed in every_seed}
                    for method, by_seed in by_method.items()} for name, by_method in found.items()}
    # every variant's graded replies, pooled once: the run's are paired with each variant's
    graded = {name: {method: pooled(by_seed) for method, by_seed in by_method.items()}
              for name, by_method in found.items()}
    kept = {name: {method: pooled_kept(by_seed) for method, by_seed in by_method.items()
                   if methods.METHODS[method].training} for name, by_method in found.items()}
    results = {name: {method: summary(by_seed, graded[name][method], kept[name].get(method),
                                      None if name == REFERENCE else graded[REFERENCE][method],
                                      None if name == REFERENCE else kept[REFERENCE].get(method), method, config)
                      for method, by_seed in by_method.items()}
               for name, by_method in found.items()}
    pairs = {name: method_pairs(graded[name], kept[name], config) for name in found}
    for name in (name for name in found if name != REFERENCE):
        pairs[name].update(pairs_with_run(graded[name], kept[name], graded[REFERENCE], kept[REFERENCE], pairs[name],
                                          config))
    out = run.path / "compare"
    write_atomic(out / "compare.json", json.dumps({"seeds": every_seed, "question_set": question_set,
                                                    "settings": settings, "results": results, "pairs": pairs,
                                                    "draws": found}, indent=2) + "\n")
    plot(results, out)
    return table(results, every_seed, question_set) + pairs_text(pairs)


def draw_record(run: RunDir, method: str, question_set: str) -> dict:
    """What compare.json keeps of one draw of one method: its graded replies by question id and,
    for a trained method, its training (and sampling) seconds, its retention (1/0 per general
    question) and drift (per general prompt), both None until the retention stage has run."""
    record: dict = {"replies": {reply["id"]: {"question": reply["question"], "contains": reply["contains"]}
                                for reply in read_jsonl(run.eval(method, question_set))}}
    if methods.METHODS[method].training:
        record["train_seconds"] = json.loads(run.manifest(f"train-{method}").read_text())["seconds"]
        record["sampling_seconds"] = sum(epoch.get("sampling_seconds", 0.0) for epoch in json.loads(
            (run.adapter_dir(method) / "metrics.json").read_text())["epochs"])
        checked = run.retention(method).is_file()
        record["kept"] = retention.kept_by_question(run, method) if checked else None
        record["drift"] = [line["kl"] for line in read_jsonl(run.retention(f"{method}.drift"))] if checked else None
    return record


def earlier_draws(path: Path, settings: dict[str, list[str]], question_set: str, chosen_methods: list[str],
                  run: RunDir) -> dict[str, dict[str, dict[str, dict]]]:
    """The draws an earlier compare.json kept, of the run and every variant asked for now: each must
    be there with the same settings, on the same question set (the run's own test questions)."""
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"--draws-from {path}: cannot read it as JSON ({error})") from None
    if not isinstance(earlier, dict) or not isinstance(earlier.get("draws"), dict):
        raise UserError(f"--draws-from {path}: it keeps no draws (not a compare.json, or one from before they were "
                        "kept)")
    if earlier.get("question_set") != question_set:
        raise UserError(f"--draws-from {path}: its draws answered the {earlier.get('question_set')} questions, "
                        f"this run's are {question_set}")
    for name, overrides in settings.items():
        if earlier.get("settings", {}).get(name) != overrides or any(method not in earlier["draws"].get(name, {})
                                                             for method in chosen_methods):
            raise UserError(f"--draws-from {path}: it has no {name!r} with {overrides or 'the run settings'} "
                            f"and methods {', '.join(chosen_methods)}")
    if question_set == "test":
        questions = {record["id"]: record["question"] for record in read_jsonl(run.test_questions)}
        for by_seed in earlier["draws"][REFERENCE].values():
            if any(questions.get(key) != reply["question"] for draw in by_seed.values()
                   for key, reply in draw["replies"].items()):
                raise UserError(f"--draws-from {path}: its test questions are not this run's")
    return {name: {method: earlier["draws"][name][method] for method in chosen_methods} for name in settings}


def method_pairs(graded: dict[str, dict[str, dict]], kept: dict[str, dict | None], config: RunConfig) -> dict:
    """The report's differences between methods (pd - sft, ...) within one variant, paired over
    every draw's questions (`graded`: each method's pooled replies), and between trained methods
    their retention's ("retention: pd - sft", over the general questions; `kept`: pooled_kept's)."""
    resamples = config.eval.bootstrap_resamples
    grades = {method: {key: record["contains"] for key, record in records.items()}
              for method, records in graded.items()}
    differences = {f"{first} - {second}": paired(grades[first], grades[second], resamples, config.seed)
                   for first, second in PAIRS if first in grades and second in grades}
    differences.update({f"retention: {first} - {second}": paired(kept[first], kept[second], resamples, config.seed)
                        for first, second in PAIRS if kept.get(first) and kept.get(second)})
    return differences


def pairs_with_run(graded: dict[str, dict[str, dict]], kept: dict[str, dict | None],
                   reference_graded: dict[str, dict[str, dict]], reference_kept: dict[str, dict | None],
                   own_pairs: dict[str, dict], config: RunConfig) -> dict:
    """A variant's methods against the run's other methods ("pd - sft of the run": pd trained 30
    epochs against the sft the run trained in 5), paired over the questions both replied to, and
    their retention's; a pair equal to the variant's own (its sft is the run's) is not repeated."""
    resamples = config.eval.bootstrap_resamples
    found = {}
    for first, second in PAIRS:
        if first in graded and second in reference_graded:
            shared = same_questions(graded[first], reference_graded[second])
            if shared:
                found[f"{first} - {second} of the run"] = paired(
                    {key: graded[first][key]["contains"] for key in shared},
                    {key: reference_graded[second][key]["contains"] for key in shared}, resamples, config.seed)
        if kept.get(first) and reference_kept.get(second):
            shared = [key for key in kept[first] if key in reference_kept[second]]
            found[f"retention: {first} - {second} of the run"] = paired(
                {key: kept[first][key] for key in shared}, {key: reference_kept[second][key] for key in shared},
                resamples, config.seed)
    return {name: value for name, value in found.items() if value != own_pairs.get(name.removesuffix(" of the run"))}


def same_questions(graded: dict[str, dict], reference: dict[str, dict]) -> list[str]:
    """The keys of `graded` that `reference` replied to with the same question (a variant's
    self-check question can differ from the run's)."""
    return [key for key in graded if key in reference and reference[key]["question"] == graded[key]["question"]]


def pairs_text(pairs: dict[str, dict]) -> str:
    lines = [f"{name}: " + "; ".join(f"{pair} {interval_text(value, '+')}" for pair, value in found.items())
             for name, found in pairs.items() if found]
    return "\n\nwithin each variant, and against the run's methods, paired:\n" + "\n".join(lines) if lines else ""


def summary(by_seed: dict[str, dict], graded: dict[str, dict], kept: dict[str, float] | None,
            reference: dict[str, dict] | None, reference_kept: dict[str, float] | None, method: str,
            config: RunConfig) -> dict:
    """One method of one variant over every draw (`by_seed`: draw_record's; `graded`: their pooled
    replies; `kept`: their pooled retention): accuracy (pooled, and each draw's), the paired
    difference to the run's replies (`reference`; None for the run itself), retention with its
    paired difference to the run's (`reference_kept`), drift and training seconds (on-policy: and
    the sampling's among them)."""
    resamples = config.eval.bootstrap_resamples
    grades = {key: record["contains"] for key, record in graded.items()}
    result: dict = {"accuracy": mean_interval([100 * value for value in grades.values()], resamples),
                    "questions": len(grades), "by_draw": {}}
    for seed in by_seed:  # each draw's own accuracy: how far the draws spread
        own = [100 * value for key, value in grades.items() if key.startswith(f"{seed}/")]
        result["by_draw"][str(seed)] = sum(own) / len(own)
    if reference is not None:
        shared = same_questions(graded, reference)
        if shared:
            result["vs_run"] = paired({key: grades[key] for key in shared},
                                      {key: reference[key]["contains"] for key in shared}, resamples, config.seed)
    if methods.METHODS[method].training:
        result["train_seconds"] = sum(draw["train_seconds"] for draw in by_seed.values()) / len(by_seed)
        sampling = [draw["sampling_seconds"] for draw in by_seed.values()]
        if any(sampling):  # on-policy training: of its seconds, those spent sampling the student's answers
            result["sampling_seconds"] = sum(sampling) / len(by_seed)
        if kept is not None:
            drift = [value for draw in by_seed.values() for value in draw["drift"]]
            result["retention"] = mean_interval([100 * value for value in kept.values()], resamples) if kept else None
            result["drift"] = mean_interval(drift, resamples)
            shared = [key for key in kept if key in (reference_kept or {})]
            if shared:
                result["retention_vs_run"] = paired({key: kept[key] for key in shared}, {
                    key: reference_kept[key] for key in shared}, resamples, config.seed)
    return result


def pooled(by_seed: dict[str, dict]) -> dict[str, dict]:
    """Every draw's graded replies of a method (`by_seed`: draw_record's), keyed SEED/QUESTION_ID."""
    return {f"{seed}/{key}": reply for seed, draw in by_seed.items() for key, reply in draw["replies"].items()}


def pooled_kept(by_seed: dict[str, dict]) -> dict[str, float] | None:
    """Every draw's retention of a trained method, 1/0 per general question keyed SEED/QUESTION_ID;
    None until every draw has checked it."""
    if any(draw["kept"] is None for draw in by_seed.values()):
        return None
    return {f"{seed}/{key}": value for seed, draw in by_seed.items() for key, value in draw["kept"].items()}


def mean_interval(values: list[float], resamples: int) -> dict:
    low, high = bootstrap_interval(values, resamples=resamples)
    return {"mean": sum(values) / len(values), "interval": [low, high]}


def table(results: dict[str, dict[str, dict]], seeds: list[int], question_set: str) -> str:
    questions = next(iter(next(iter(results.values())).values()))["questions"]
    kind = "test questions" if question_set == "test" else "self-check questions (an estimate)"
    lines = [f"compare: containment on {questions} {kind}, over {len(seeds)} draw(s) (seeds "
             f"{', '.join(map(str, seeds))}); differences paired over the same questions",
             f"{'variant':<24} {'method':<10} {'accuracy [95%]':>16} {'by draw':>12} {'vs run [95%]':>18} "
             f"{'retention [95%]':>16} {'kept vs run [95%]':>18} {'drift':>7} {'train s':>8}"]
    for name, by_method in results.items():
        for method, result in by_method.items():
            retention_cell, kept_cell = result.get("retention"), result.get("retention_vs_run")
            by_draw = "/".join(f"{value:.0f}" for value in result["by_draw"].values())
            lines.append(f"{name[:24]:<24} {method:<10} {interval_text(result['accuracy'], ''):>16} {by_draw:>12} "
                         f"{interval_text(result['vs_run'], '+') if 'vs_run' in result else '':>18} "
                         f"{interval_text(retention_cell, '') if retention_cell else '':>16} "
                         f"{interval_text(kept_cell, '+') if kept_cell else '':>18} "
                         f"{format(result['drift']['mean'], '.3f') if 'drift' in result else '':>7} "
                         f"{format(result['train_seconds'], '.0f') if 'train_seconds' in result else '':>8}")
    return "\n".join(lines)


def interval_text(value: dict, sign: str) -> str:
    """{"mean"|"difference", "interval"} as "37 [30, 45]", or with sign "+" as "+6 [-1, +12]"."""
    middle = value.get("mean", value.get("difference"))
    low, high = value["interval"]
    return f"{middle:{sign}.0f} [{low:{sign}.0f}, {high:{sign}.0f}]"


def points(results: dict[str, dict[str, dict]], x_key: str) -> list[tuple[str, str, float, dict]]:
    """(variant, method, x, accuracy) of every trained method with an `x_key` ("train_seconds" or
    "retention"); a variant's point that is the run's own (its training reused) is left to the run."""
    found = []
    for variant, by_method in results.items():
        for method, result in by_method.items():
            run_own = results[REFERENCE].get(method, {})
            if result.get(x_key) is None or variant != REFERENCE and all(
                    result.get(key) == run_own.get(key) for key in (x_key, "accuracy")):
                continue
            x = result[x_key] if x_key == "train_seconds" else result[x_key]["mean"]
            found.append((variant, method, x, result["accuracy"]))
    return found


def plot(results: dict[str, dict[str, dict]], out: Path) -> None:
    """Accuracy against training seconds, and against retention: a point for each of `points`, a
    colour per variant and a marker per method, named in a legend beside the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = dict(zip(results, itertools.cycle(plt.get_cmap("tab10").colors)))  # any number of variants
    markers = dict(zip(sorted({method for by_method in results.values() for method in by_method}), "osD^vP*X"))
    for x_key, label, name in (("train_seconds", "training seconds (mean over draws)", "accuracy_vs_seconds"),
                               ("retention", "retention: general questions kept, %", "accuracy_vs_retention")):
        figure, axis = plt.subplots(figsize=(9, 4.2))
        for variant, method, x, accuracy in points(results, x_key):
            y, (low, high) = accuracy["mean"], accuracy["interval"]
            axis.errorbar([x], [y], yerr=[[y - low], [high - y]], fmt=markers.get(method, "o"), capsize=3,
                          color=colours[variant], label=f"{variant}, {method}")
        axis.set_xlabel(label)
        axis.set_ylabel("accuracy (contains), %")
        axis.set_title("Each variant and method, with 95% intervals")
        axis.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, frameon=False)
        figure.tight_layout()
        temporary = out / f".{name}.tmp.png"
        figure.savefig(temporary, dpi=120)
        plt.close(figure)
        temporary.replace(out / f"{name}.png")
