"""Text generation: one interface, an in-process backend and a server backend, made by one factory.

    core.py    Sampling, the Backend protocol, generate_all (batches, seeds, stored batches)
    local.py   TransformersBackend: transformers `generate` in this process
    server.py  ServerBackend: any OpenAI-compatible chat-completions server
"""

from __future__ import annotations

from pathlib import Path

from promptdistill.config import ModelConfig
from promptdistill.generation.core import SENTENCE_ENDS, Backend, BatchStore, Sampling, cut_at_stop, generate_all
from promptdistill.generation.local import TransformersBackend
from promptdistill.generation.server import ServerBackend

__all__ = ["SENTENCE_ENDS", "Backend", "BatchStore", "Sampling", "ServerBackend", "TransformersBackend",
           "cut_at_stop", "generate_all", "make_backend"]


def make_backend(model: ModelConfig, adapter: Path | None = None, server_url: str = "",
                 api_key_env: str | None = "OPENAI_API_KEY") -> Backend:
    """The backend for a model spec: the server at `server_url`, else the model in this process,
    with the LoRA adapter in `adapter` on it when given."""
    if server_url:
        return ServerBackend(server_url, model.name, api_key_env)
    from promptdistill.files import path_digest
    from promptdistill.models import load_adapter, load_model

    loaded, tokenizer = load_model(model)
    identity = f"{model.name}|{model.dtype}"
    if adapter is not None:
        loaded = load_adapter(loaded, adapter).eval()
        identity += f"|adapter {path_digest(adapter)}"
    return TransformersBackend(loaded, tokenizer, identity)
