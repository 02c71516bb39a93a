"""Ship a run's trained model: a model folder with a model card, and a server over it.

`export_model` writes what plain transformers loads with `from_pretrained(DIR)` and `vllm serve DIR`
accepts: the adapter merged into the weights (merging happens in float32; a tied output layer
that the adapter changes is untied first), safetensors, the tokenizer with its chat template,
and README.md saying what was injected, how, and how well. With `adapter_only` it writes the
PEFT adapter folder instead, naming its base model.

`server_command` is the command line of an existing OpenAI-compatible server over such a folder:
`transformers serve` (CPU or GPU) or `vllm serve` (GPU). promptdistill runs no server of its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sys
from pathlib import Path

import torch
import yaml

from promptdistill import __version__, methods
from promptdistill.config import RunConfig
from promptdistill.corpus import EXPORT_MARKER
from promptdistill.errors import UserError, check_choice
from promptdistill.files import folder_in_place, path_digest, write_atomic
from promptdistill.models import (BUILTIN_MODELS, load_adapter, load_model, load_tokenizer, local_model_path,
                                  merged_model)
from promptdistill.rundir import RunDir

MARKER = EXPORT_MARKER  # what the folder holds and which adapter it came from
SERVERS = ("auto", "transformers", "vllm")


def exported_method(run: RunDir, name: str) -> methods.Method:
    """The trained method `name` names; pd+rag and the untrained methods have no weights of their own."""
    method = methods.METHODS[methods.canonical_name(name, "--method")]
    if not method.training:
        trained = [m.name for m in methods.METHODS.values() if m.training]
        raise UserError(f"--method {name}: only a trained method has weights to export ({', '.join(trained)})")
    run.trained_adapter(method.name)
    return method


def export_model(run: RunDir, config: RunConfig, name: str, out: Path, adapter_only: bool = False) -> Path:
    """Write the export of method `name` to `out` (replacing an earlier export there) and return `out`."""
    method = exported_method(run, name)
    out = Path(out)
    if out.exists() and not (out / MARKER).is_file() and (out.is_file() or any(out.iterdir())):
        raise UserError(f"--out {out}: exists and is not a promptdistill export; choose a new folder")
    adapter = run.adapter(method.name)
    with folder_in_place(out) as staging:
        if adapter_only:
            shutil.copytree(adapter, staging, dirs_exist_ok=True)
            adapter_config = json.loads((adapter / "adapter_config.json").read_text())
            adapter_config["base_model_name_or_path"] = base_model_reference(config.model.name)
            write_atomic(staging / "adapter_config.json", json.dumps(adapter_config, indent=2))
            tokenizer = load_tokenizer(config.model)
        else:
            # Merge in float32 whatever the run trained in; save in the base model's own dtype.
            model, tokenizer = load_model(dataclasses.replace(config.model, dtype="float32"))
            model = merged_model(load_adapter(model, adapter))
            model.to(stored_dtype(config.model.name)).save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        write_atomic(staging / "README.md", model_card(run, config, method, adapter_only))
        write_atomic(staging / MARKER, json.dumps({
            "run": str(run.path.resolve()), "method": method.name, "adapter_only": adapter_only,
            "adapter_digest": path_digest(adapter), "promptdistill": __version__}, indent=2))
    return out


def current_export(run: RunDir, config: RunConfig, name: str) -> Path:
    """RUN/export/METHOD, made again only when the method's adapter changed since it was written."""
    method = exported_method(run, name)
    out = run.export(method.name)
    if (out / MARKER).is_file():
        recorded = json.loads((out / MARKER).read_text())
        if recorded["adapter_digest"] == path_digest(run.adapter(method.name)) and not recorded["adapter_only"]:
            return out
    return export_model(run, config, method.name, out)


def stored_dtype(model_name: str) -> torch.dtype:
    """The dtype the base model's weights are stored in (float32 when its config does not say)."""
    path = Path(local_model_path(model_name)) / "config.json"
    if not path.is_file():  # a hub id: transformers' cache holds it
        from transformers import AutoConfig

        stored = getattr(AutoConfig.from_pretrained(model_name), "dtype", None)
    else:
        settings = json.loads(path.read_text())
        stored = settings.get("dtype") or settings.get("torch_dtype")
    if isinstance(stored, torch.dtype):
        return stored
    return getattr(torch, stored) if isinstance(stored, str) and hasattr(torch, stored) else torch.float32


def base_model_reference(model_name: str) -> str:
    """What from_pretrained loads the base model from: a hub id as given, else an absolute path
    (for a .gguf file or a built-in model, the dequantized copy the run trained on)."""
    source = local_model_path(model_name)
    return source if not Path(source).exists() else str(Path(source).resolve())


def document_digests(run: RunDir) -> dict[str, tuple[int, str]]:
    """Each document's number of passages and the sha256 of its passages' text, joined."""
    texts: dict[str, list[str]] = {}
    for passage in run.load_passages():
        texts.setdefault(passage.doc_id, []).append(passage.text)
    return {doc: (len(parts), hashlib.sha256("\n\n".join(parts).encode()).hexdigest()) for doc, parts in texts.items()}


def model_card(run: RunDir, config: RunConfig, method: methods.Method, adapter_only: bool) -> str:
    """README.md of an export: base model, what was injected, the method and its settings, the report's scores."""
    model_name = config.model.name
    front = {"library_name": "peft" if adapter_only else "transformers", "tags": ["promptdistill", method.name]}
    reference = base_model_reference(model_name)
    if not Path(reference).exists():  # a hub id
        front["base_model"] = reference
    builtin = f" (built in: {BUILTIN_MODELS[model_name].filename}, dequantized)" if model_name in BUILTIN_MODELS else ""
    documents = document_digests(run)
    lines = [
        "---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
        f"# {run.path.name}: {method.name}", "",
        f"Base model `{model_name}`{builtin}, {method.note}, by promptdistill {__version__}. "
        + ("This folder is the LoRA adapter alone (PEFT)." if adapter_only else
           "The LoRA adapter is merged into the weights; load it with `AutoModelForCausalLM.from_pretrained`."),
        "", "The model answers questions about these documents without them in its prompt.", "",
        f"## What was injected: {len(documents)} documents", "",
        "| document | passages | sha256 of its passages |", "|---|---|---|",
        *[f"| {doc} | {count} | `{digest}` |" for doc, (count, digest) in sorted(documents.items())], "",
        "## How", "",
        "| setting | value |", "|---|---|",
        *[f"| {key} | {value} |" for key, value in config.settings("model.name", "seed", *method.train_settings()).items()],
    ]
    report = json.loads((run.path / "report.json").read_text()) if (run.path / "report.json").is_file() else {}
    self_check = report.get("self_check") or {}
    for title, results in (("containment on the run's test questions", report.get("methods")),
                           ("the self-check: containment on held-out questions the model wrote, an estimate",
                            self_check.get("methods"))):
        if results:
            lines += ["", f"## How well ({title}, from the run's report)", "",
                      "| method | contains % | 95% interval |", "|---|---|---|"]
            lines += [f"| {name}{' (this model)' if name == method.name else ''} | {r['contains']:.1f} | "
                      f"{r['contains_interval'][0]:.1f} to {r['contains_interval'][1]:.1f} |"
                      for name, r in results.items()]
    if not report:
        lines += ["", "The run has no report yet."]
    return "\n".join(lines) + "\n"


def server_command(model_dir: Path, host: str, port: int, server: str = "auto") -> list[str]:
    """The command line that serves `model_dir` on an OpenAI-compatible endpoint (model name: the folder's path)."""
    check_choice("--server", server, SERVERS)
    if server == "auto":
        server = "vllm" if shutil.which("vllm") and torch.cuda.is_available() else "transformers"
    model = str(Path(model_dir).resolve())
    if server == "vllm":
        return ["vllm", "serve", model, "--host", host, "--port", str(port)]
    transformers_cli = Path(sys.executable).with_name("transformers")
    program = str(transformers_cli) if transformers_cli.is_file() else (shutil.which("transformers") or "transformers")
    return [program, "serve", model, "--host", host, "--port", str(port)]
