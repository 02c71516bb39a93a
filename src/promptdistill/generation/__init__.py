"""Text generation: one interface, an in-process backend and a server backend, made by one factory.

    core.py    Sampling, the Backend protocol, generate_all (batches, seeds, stored batches)
    local.py   TransformersBackend: transformers `generate` in this process; ClosedBookMixBackend: its
               answers mixing tokens drawn with and without the passage (MixSD)
    server.py  ServerBackend: any OpenAI-compatible chat-completions server
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Iterator

from promptdistill.config import GenerationConfig, ModelConfig
from promptdistill.errors import UserError
from promptdistill.generation.core import SENTENCE_ENDS, Backend, BatchStore, Sampling, cut_at_stop, generate_all
from promptdistill.generation.local import TransformersBackend
from promptdistill.generation.server import ServerBackend, started_server

log = logging.getLogger(__name__)

__all__ = ["SENTENCE_ENDS", "Backend", "BatchStore", "Sampling", "ServerBackend", "TransformersBackend",
           "cut_at_stop", "generate_all", "make_backend", "served", "serving"]


def make_backend(model: ModelConfig, adapter: Path | None = None, server_url: str = "",
                 api_key_env: str | None = "OPENAI_API_KEY", identity: str = "", server_model: str = "",
                 max_concurrency: int = 32, max_retries: int = 5, serves_model: bool = False) -> Backend:
    """The backend for a model spec: the server at `server_url` (asked for `server_model`, else
    `model.name`), else the model in this process; with the LoRA adapter in `adapter` on it when
    given, on the server if it takes the adapter (vLLM), else in this process (and the log says why).
    A server that `serves_model` counts its replies with the model's tokenizer."""
    from promptdistill.files import path_digest
    from promptdistill.models import load_adapter, load_model, load_tokenizer

    if server_url:
        server = ServerBackend(server_url, server_model or model.name, api_key_env, identity=identity,
                               max_concurrency=max_concurrency, max_retries=max_retries,
                               tokenizer=load_tokenizer(model) if serves_model else None)
        if adapter is None:
            return server
        digest = path_digest(adapter)
        refusal = server.load_adapter(f"adapter-{digest[:16]}", adapter)
        if refusal is None:
            server.identity += f"|adapter {digest}"
            return server
        log.info("the server cannot serve the adapter %s (%s); it answers in this process", adapter, refusal)

    loaded, tokenizer = load_model(model)
    identity = f"{model.name}|{model.dtype}"
    if adapter is not None:
        loaded = load_adapter(loaded, adapter).eval()
        identity += f"|adapter {path_digest(adapter)}"
    return TransformersBackend(loaded, tokenizer, identity)


# The server `serving` started for the current run: (base URL, the model name it serves).
_started: ContextVar[tuple[str, str] | None] = ContextVar("started_server", default=None)


def served(generation: GenerationConfig) -> dict:
    """make_backend's server options for a run's generations: the run's server, if it has one."""
    if not (generation.server_url or generation.server_command):
        return {}
    url, model = generation.server_url, generation.server_model
    if generation.server_command:
        started = _started.get()
        if started is None:
            raise RuntimeError("generation.server_command is set but no server was started (generation.serving)")
        url, model = started[0], model or started[1]
    return {"server_url": url, "server_model": model, "api_key_env": generation.api_key_env or None,
            "identity": generation.server_command,  # a started server's port changes from run to run
            "max_concurrency": generation.max_concurrency, "max_retries": generation.max_retries,
            "serves_model": True}  # the run's model: its tokenizer counts the replies


@contextmanager
def serving(model: ModelConfig, generation: GenerationConfig) -> Iterator[None]:
    """For `generation.server_command`, the server started for the block's length (its URL is what
    `served` hands out); nothing otherwise."""
    if not generation.server_command:
        yield
        return
    if generation.server_url:
        raise UserError("generation.server_url and generation.server_command: set one, not both")
    from promptdistill.models import local_model_path

    name = local_model_path(model.name)  # a hub id, or a local folder (a .gguf file converted once)
    with started_server(generation.server_command, name, generation.startup_seconds) as url:
        token = _started.set((url, name))
        try:
            yield
        finally:
            _started.reset(token)
