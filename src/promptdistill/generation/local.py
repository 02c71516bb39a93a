"""The in-process backend: transformers `generate`, batched, each batch's shared prompt prefix read once."""

from __future__ import annotations

import torch

from promptdistill.generation.core import Sampling
from promptdistill.models import chat_prompt, left_pad, shared_prefix_cache, shared_prefix_length


class NucleusDraw:
    """A logits processor for temperature, top-k and top-p sampling that draws the token itself:
    the scores it returns are 0 at the drawn token and -inf elsewhere, and `generate`, run greedy,
    takes that token.

    transformers' own top-p sorts the whole vocabulary at every step and draws over all of it:
    with SmolLM2's 49,152 tokens that was 29% of decoding time on a 2-core CPU (docs/speed.md).
    Here both work on the `candidates` likeliest tokens, which hold the nucleus unless a
    distribution is flat; then, and without top-k or top-p, on the whole vocabulary.
    """

    def __init__(self, temperature: float, top_p: float = 1.0, top_k: int = 0, candidates: int = 256):
        self.temperature, self.top_p, self.top_k, self.candidates = temperature, top_p, top_k, candidates

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.float() / self.temperature
        vocab = scores.shape[-1]
        if self.top_k:  # the top-k tokens are the whole distribution
            probs, tokens = self.nucleus(scores, min(self.top_k, vocab), normalise_over_kept=True)
        else:
            probs, tokens = self.nucleus(scores, min(self.candidates, vocab) if self.top_p < 1 else vocab)
            if (probs.sum(dim=-1) < self.top_p).any():  # a nucleus wider than the candidates
                probs, tokens = self.nucleus(scores, vocab)
        drawn = tokens.gather(-1, torch.multinomial(probs, 1))
        return torch.full_like(scores, -float("inf")).scatter_(-1, drawn, 0.0)

    def nucleus(self, scores: torch.Tensor, width: int, normalise_over_kept: bool = False):
        """(probabilities of the `width` likeliest tokens, zero outside the nucleus; their ids)."""
        values, tokens = scores.topk(width) if width < scores.shape[-1] else scores.sort(descending=True)
        probs = (values - (values if normalise_over_kept else scores).logsumexp(dim=-1, keepdim=True)).exp()
        if self.top_p < 1:  # keep a token while the mass ranked above it is below top_p
            kept = probs.cumsum(dim=-1) - probs < self.top_p
            return probs * kept, tokens
        return probs, tokens


class ClosedBookMix:
    """A logits processor for answers mixed as MixSD's (Liu et al. 2026, arXiv 2605.16865): the
    batch's second half holds the first half's prompts without their passage. At each step every
    row draws a token (by `draw`, or greedily without one); then each pair takes the closed-book
    row's token with probability `share`, else the open-book row's, and both rows read it, so each
    side conditions on the whole mixed answer so far. Its tokens stay close to what the model says
    unprompted while the open-book side keeps the facts in it.
    """

    def __init__(self, draw: NucleusDraw | None, share: float):
        self.draw, self.share = draw, share

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        drawn = (self.draw(input_ids, scores) if self.draw else scores).argmax(dim=-1)
        pairs = len(drawn) // 2
        closed_book = torch.rand(pairs, device=scores.device) < self.share
        chosen = torch.where(closed_book, drawn[pairs:], drawn[:pairs]).repeat(2)
        return torch.full_like(scores, -float("inf")).scatter_(-1, chosen[:, None], 0.0)


class TransformersBackend:
    """Batched `model.generate` on the model's own chat template; the model may carry a LoRA adapter.

    The rows of a batch often start alike: the expert's prompts about one passage all begin with
    the chat header and the passage. That shared prefix is read once and its KV cache copied to
    every row, instead of being read once per row; the rest of each row follows, left-padded.
    """

    def __init__(self, model, tokenizer, identity: str = "local", own_draw: bool = True):
        self.model = model
        self.tokenizer = tokenizer
        self.identity = identity
        self.own_draw = own_draw  # False: transformers' own sampling, kept for benchmarks/speed.py

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    @torch.no_grad()
    def generate_batch(self, prompts: list[str], sampling: Sampling, seed: int,
                       closed_book: list[str] | None = None, closed_book_share: float = 0.0) -> list[str]:
        """`closed_book`: each prompt without its passage; the replies then mix tokens of both (ClosedBookMix)."""
        rows = [self.tokenizer(chat_prompt(self.tokenizer, prompt), add_special_tokens=False).input_ids
                for prompt in prompts + (closed_book or [])]
        shared = shared_prefix_length(rows)
        input_ids, attention_mask = left_pad(rows, self.tokenizer.pad_token_id, shared)
        width = input_ids.shape[1]
        device = self.model.device
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        cache = {"cache": shared_prefix_cache(self.model, input_ids, shared)} if shared else {}
        torch.manual_seed(seed)
        if closed_book:
            own = NucleusDraw(sampling.temperature, sampling.top_p, sampling.top_k) if sampling.temperature else None
            draw = {"do_sample": False, "logits_processor": [ClosedBookMix(own, closed_book_share)]}
        elif sampling.temperature == 0:
            draw = {"do_sample": False}
        elif self.own_draw:
            draw = {"do_sample": False,
                    "logits_processor": [NucleusDraw(sampling.temperature, sampling.top_p, sampling.top_k)]}
        else:
            draw = {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p,
                    "top_k": sampling.top_k or None}
        output = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            **cache,
            max_new_tokens=sampling.max_new_tokens,
            # None overrides the model's generation_config, which may sample
            **{"temperature": None, "top_p": None, "top_k": None, **draw},
            pad_token_id=self.tokenizer.pad_token_id,
            # A row that met a stop string is finished; the batch ends when every row is.
            stop_strings=list(sampling.stop) or None,
            tokenizer=self.tokenizer if sampling.stop else None,
        )
        completions = output[:len(prompts), width:]
        return [text.strip() for text in self.tokenizer.batch_decode(completions, skip_special_tokens=True)]


class ClosedBookMixBackend:
    """The local backend answering as MixSD (ClosedBookMix): `closed_book` holds each open-book
    prompt's twin without its passage, and `share` is the chance that a token is the twin's."""

    def __init__(self, local: TransformersBackend, share: float, closed_book: dict[str, str]):
        self.local, self.share, self.closed_book = local, share, closed_book
        self.identity = f"{local.identity}|closed-book share {share}"

    def count_tokens(self, text: str) -> int:
        return self.local.count_tokens(text)

    def generate_batch(self, prompts: list[str], sampling: Sampling, seed: int) -> list[str]:
        return self.local.generate_batch(prompts, sampling, seed, [self.closed_book[p] for p in prompts], self.share)
