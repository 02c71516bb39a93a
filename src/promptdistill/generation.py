"""Text generation behind one small interface.

A backend turns a batch of rendered prompts into completions (`generate_batch`). `generate_all`
does the rest for every backend: batching by length (less padding), a seed per batch (a run is
repeatable, and a resumed run equals an uninterrupted one), a progress bar, and saving each
finished batch to a PartialFile so an interrupted stage resumes where it stopped.

Backends: transformers (here). vLLM and OpenAI-compatible servers fit the same two methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from tqdm.auto import tqdm

from promptdistill.rundir import PartialFile


@dataclass(frozen=True)
class Sampling:
    temperature: float  # 0 means greedy decoding
    max_new_tokens: int
    top_p: float = 1.0


class Backend(Protocol):
    def generate_batch(self, prompts: list[str], sampling: Sampling, seed: int) -> list[str]: ...

    def count_tokens(self, text: str) -> int: ...


class TransformersBackend:
    """Batched `model.generate` with left padding; the model may carry a LoRA adapter."""

    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    @torch.no_grad()
    def generate_batch(self, prompts: list[str], sampling: Sampling, seed: int) -> list[str]:
        self.tokenizer.padding_side = "left"
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        batch = batch.to(self.model.device)
        torch.manual_seed(seed)
        greedy = sampling.temperature == 0
        output = self.model.generate(
            **batch,
            max_new_tokens=sampling.max_new_tokens,
            do_sample=not greedy,
            temperature=None if greedy else sampling.temperature,
            top_p=None if greedy else sampling.top_p,
            top_k=None,  # the model's generation_config may set one; the paper samples from all
            pad_token_id=self.tokenizer.pad_token_id,
        )
        completions = output[:, batch.input_ids.shape[1]:]
        return [text.strip() for text in self.tokenizer.batch_decode(completions, skip_special_tokens=True)]


def generate_all(
    backend: Backend,
    prompts: list[str],
    sampling: Sampling,
    seed: int,
    batch_size: int,
    partial: PartialFile | None = None,
    description: str = "generating",
) -> list[str]:
    """Complete every prompt; results come back in the order of `prompts`."""
    order = sorted(range(len(prompts)), key=lambda i: (backend.count_tokens(prompts[i]), i))
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    finished = partial.resume() if partial else {}
    completions: list[str | None] = [None] * len(prompts)
    with tqdm(total=len(prompts), desc=description, unit="prompt", leave=False) as progress:
        for batch_index, indices in enumerate(batches):
            if batch_index in finished:
                texts = [record["text"] for record in finished[batch_index]]
            else:
                texts = backend.generate_batch(
                    [prompts[i] for i in indices], sampling, seed=seed * 1_000_003 + batch_index
                )
                if partial:
                    partial.append(batch_index, [{"text": text} for text in texts])
            for i, text in zip(indices, texts):
                completions[i] = text
            progress.update(len(indices))
    return completions  # type: ignore[return-value]
