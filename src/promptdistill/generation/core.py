"""Generation for every backend: batching, a seed per batch, and stored batches that make it resumable.

A backend turns a batch of user turns into replies (`generate_batch`); it owns its tokenizer and
chat template. `generate_all` does the rest for every backend: it cuts the prompts into batches
(within a group, shortest first, so rows of similar length share a batch), gives each batch its
own seed, and keeps each finished batch in a BatchStore under a key of everything that
determines it (the backend's identity, the prompts, the sampling settings, the seed). A killed
stage therefore resumes to exactly the replies of an uninterrupted one, and a stage rerun after
an input changed generates only the batches whose prompts changed: the questions about an
edited document, not the whole corpus, because each passage is its own group.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Callable, Iterator, Protocol, TypeVar

from tqdm.auto import tqdm

from promptdistill.files import BatchStore, content_key


@dataclass(frozen=True)
class Sampling:
    temperature: float  # 0 means greedy decoding
    max_new_tokens: int
    top_p: float = 1.0
    stop: tuple[str, ...] = ()  # a reply ends at the first of these (kept in it), or at the cap
    top_k: int = 0  # sample among the k likeliest tokens only; 0: no such cut


T = TypeVar("T")
R = TypeVar("R")

SENTENCE_ENDS = (". ", ".\n", "! ", "!\n", "? ", "?\n")  # a reply's first sentence is over


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """`text` up to the end of its first stop string, or all of it. A backend may run a token past
    the stop (". The" is one token after "it"); what follows the stop is no part of the reply."""
    ends = [text.index(s) + len(s) for s in stop if s in text]
    return text[:min(ends)].strip() if ends else text


class Backend(Protocol):
    identity: str  # the model (and adapter) that generates: part of every stored batch's key

    def generate_batch(self, prompts: list[str], sampling: Sampling, seed: int) -> list[str]:
        """One reply per user turn, in order."""
        ...

    def count_tokens(self, text: str) -> int: ...


def plan_batches(backend: Backend, prompts: list[str], batch_size: int, seed: int,
                 groups: list[str] | None = None) -> list[tuple[list[int], int]]:
    """(prompt indices, seed) of each batch: batches never mix groups; within a group, shortest first.

    A batch's seed depends on the run's seed, its group and its place in the group alone, so a
    group's replies do not change when other groups do.
    """
    members: dict[str, list[int]] = {}
    for index, group in enumerate(groups or [""] * len(prompts)):
        members.setdefault(group, []).append(index)
    batches = []
    for group, indices in members.items():
        order = sorted(indices, key=lambda i: (backend.count_tokens(prompts[i]), i))
        for number, start in enumerate(range(0, len(order), batch_size)):
            batches.append((order[start:start + batch_size], int(content_key(seed, group, number), 16) % 2**31))
    return batches


def generate_all(
    backend: Backend,
    prompts: list[str],
    sampling: Sampling,
    seed: int,
    batch_size: int,
    store: BatchStore | None = None,
    groups: list[str] | None = None,
    description: str = "generating",
) -> list[str]:
    """A reply to every user turn in `prompts`, in their order (a progress bar unless `description` is empty).

    A backend with `max_concurrency` (a server) gets that many batches at once; their replies,
    stored batch by batch, are the same as one batch at a time would give.
    """
    def finished(batch_plan: tuple[list[int], int]) -> tuple[list[int], list[str]]:
        indices, batch_seed = batch_plan
        batch = [prompts[i] for i in indices]
        key = content_key(backend.identity, batch, asdict(sampling), batch_seed)
        texts = store.get(key) if store else None
        if texts is None:
            texts = backend.generate_batch(batch, sampling, batch_seed)
            if store:
                store.put(key, texts)
        return indices, texts

    replies: list[str | None] = [None] * len(prompts)
    batches = plan_batches(backend, prompts, batch_size, seed, groups)
    with tqdm(total=len(prompts), desc=description, unit="prompt", leave=False, disable=not description) as progress:
        for indices, texts in side_by_side(finished, batches, getattr(backend, "max_concurrency", 1)):
            for i, text in zip(indices, texts):
                replies[i] = cut_at_stop(text, sampling.stop)
            progress.update(len(indices))
    return replies  # type: ignore[return-value]


def side_by_side(function: Callable[[T], R], items: list[T], workers: int) -> Iterator[R]:
    """function(item) for each item, in order, `workers` at a time on threads (1: in this thread).
    After an error or Ctrl-C the items not yet begun are dropped, not awaited."""
    if workers <= 1:
        yield from map(function, items)
        return
    pool = ThreadPoolExecutor(workers)
    try:
        yield from pool.map(function, items)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
