import json

import pytest
import torch

from promptdistill.generation import BatchStore, Sampling, TransformersBackend, generate_all
from promptdistill.generation.core import plan_batches
from promptdistill.generation.local import ClosedBookMix, ClosedBookMixBackend

PROMPTS = ["who founded velmora ?", "when was the town founded ?", "what is the river ?",
           "how many steps ?", "where is the lighthouse ?"]


def test_an_interrupted_generation_resumes_to_the_same_completions(tokenizer, tiny_model, tmp_path, monkeypatch):
    backend = TransformersBackend(tiny_model, tokenizer)
    sampling = Sampling(temperature=1.0, max_new_tokens=6)
    whole = generate_all(backend, PROMPTS, sampling, seed=3, batch_size=2)

    store = BatchStore(tmp_path / "batches.jsonl")
    real = backend.generate_batch
    calls = []

    def dies_on_third_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(backend, "generate_batch", dies_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        generate_all(backend, PROMPTS, sampling, seed=3, batch_size=2, store=store)
    assert len(BatchStore(store.path).batches) == 2  # two finished batches were kept on disk

    calls.clear()
    monkeypatch.setattr(backend, "generate_batch", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    resumed = generate_all(backend, PROMPTS, sampling, seed=3, batch_size=2, store=BatchStore(store.path))
    assert resumed == whole
    assert len(calls) == 1  # only the unfinished batch was generated again
    assert any(text for text in whole)


class EchoBackend:
    """Replies with the prompt and the batch's seed, so a test sees which batch made a reply."""

    identity = "echo"

    def __init__(self):
        self.batches: list[list[str]] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate_batch(self, prompts, sampling, seed):
        self.batches.append(list(prompts))
        return [f"{prompt} @{seed}" for prompt in prompts]


def test_a_group_is_generated_alike_whatever_the_other_groups_are(tmp_path):
    """Each passage is a group: editing one passage regenerates its batches and reuses the rest."""
    sampling = Sampling(1.0, 8)
    prompts = ["a one", "a two", "a three", "b one", "b two"]
    groups = ["A", "A", "A", "B", "B"]
    backend = EchoBackend()
    with BatchStore(tmp_path / "store.jsonl") as store:
        first = generate_all(backend, prompts, sampling, seed=1, batch_size=2, store=store, groups=groups)
    assert all(batch[0].split()[0] == batch[-1].split()[0] for batch in backend.batches)  # never mixed

    edited = ["a one", "a two", "a three", "b ONE", "b two"]
    backend.batches.clear()
    with BatchStore(tmp_path / "store.jsonl") as store:
        second = generate_all(backend, edited, sampling, seed=1, batch_size=2, store=store, groups=groups)
    assert backend.batches == [["b ONE", "b two"]]  # only group B's batch was generated again
    assert second[:3] == first[:3]
    assert second[3] != first[3] and second[3].split("@")[1] == first[3].split("@")[1]  # same seed, new prompt

    # Group A alone gets the same seeds as it did beside B.
    alone = generate_all(EchoBackend(), prompts[:3], sampling, seed=1, batch_size=2, groups=groups[:3])
    assert alone == first[:3]
    # Compacting kept only the batches the last pass used.
    lines = [json.loads(line) for line in (tmp_path / "store.jsonl").read_text().splitlines()]
    assert sorted(len(line["replies"]) for line in lines) == [1, 2, 2]


def test_a_torn_last_line_is_ignored_and_other_settings_are_not_reused(tmp_path):
    backend = EchoBackend()
    store = BatchStore(tmp_path / "store.jsonl")
    generate_all(backend, ["x"], Sampling(1.0, 8), seed=0, batch_size=1, store=store)
    with open(store.path, "a") as file:
        file.write('{"key": "abc", "repl')  # killed mid-write
    assert len(BatchStore(store.path).batches) == 1
    backend.batches.clear()
    generate_all(backend, ["x"], Sampling(0.5, 8), seed=0, batch_size=1, store=BatchStore(store.path))
    assert backend.batches == [["x"]]  # another temperature: generated again
    other = EchoBackend()
    other.identity = "another model"
    generate_all(other, ["x"], Sampling(1.0, 8), seed=0, batch_size=1, store=BatchStore(store.path))
    assert other.batches == [["x"]]  # another model: generated again


def test_batches_are_shortest_first_within_a_group():
    backend = EchoBackend()
    plan = plan_batches(backend, ["a b c", "a", "a b"], batch_size=2, seed=0)
    assert [indices for indices, _ in plan] == [[1, 2], [0]]
    assert len({seed for _, seed in plan}) == 2


def test_the_local_backend_renders_the_chat_template(tokenizer, tiny_model, monkeypatch):
    backend = TransformersBackend(tiny_model, tokenizer)
    seen = []
    real = tokenizer.__class__.__call__

    def spy(self, text, *args, **kwargs):
        seen.append(text)
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(tokenizer.__class__, "__call__", spy)
    backend.generate_batch(["who founded velmora ?"], Sampling(0.0, 2), seed=0)
    assert "<|im_start|>user who founded velmora ?<|im_end|> <|im_start|>assistant " in seen


def test_greedy_generation_is_deterministic_and_batch_order_is_restored(tokenizer, tiny_model):
    backend = TransformersBackend(tiny_model, tokenizer)
    together = generate_all(backend, PROMPTS, Sampling(0.0, 5), seed=0, batch_size=5)
    one_by_one = [generate_all(backend, [prompt], Sampling(0.0, 5), seed=0, batch_size=1)[0] for prompt in PROMPTS]
    assert together == one_by_one


def test_a_stop_string_ends_each_row_where_it_first_appears(tokenizer, tiny_model):
    backend = TransformersBackend(tiny_model, tokenizer)
    free = backend.generate_batch(PROMPTS[:2], Sampling(1.0, 6), seed=3)
    words = free[0].split()
    stop = words[1]  # the second word written for the first prompt
    assert len(words) > 2 and stop not in free[1].split()
    stopped = backend.generate_batch(PROMPTS[:2], Sampling(1.0, 6, stop=(stop,)), seed=3)
    assert stopped == [" ".join(words[:2]), free[1]]  # the other row, which never met it, runs on


def test_a_reply_is_cut_at_the_end_of_its_first_stop_string():
    from promptdistill.generation import SENTENCE_ENDS, cut_at_stop

    first_sentence = lambda text: cut_at_stop(text, SENTENCE_ENDS)  # noqa: E731
    assert first_sentence("It was 1623. Then it") == "It was 1623."
    assert first_sentence("Who? Me.") == "Who?"
    assert first_sentence("Version 3.5 of it") == "Version 3.5 of it"  # no white space after the dot
    assert first_sentence("No end at all") == "No end at all"
    assert cut_at_stop("Who built it? And", ()) == "Who built it? And"  # no stop: untouched


def test_generate_all_cuts_each_reply_at_its_stop():
    class RunsPastTheStop(EchoBackend):
        def generate_batch(self, prompts, sampling, seed):
            return ["Tobin built it. He", "Who built it? The"]

    replies = generate_all(RunsPastTheStop(), ["a", "b"], Sampling(0.0, 8, stop=(". ", "? ")), seed=0, batch_size=2)
    assert replies == ["Tobin built it.", "Who built it?"]


def test_a_shared_prompt_prefix_read_once_gives_the_same_replies(tokenizer, tiny_model, monkeypatch):
    from promptdistill.generation import local

    passage = "velmora was founded in 1623 by tobin quarrel . the lighthouse is yellow . " * 2
    prompts = [passage + question for question in PROMPTS[:3]]
    rows = [tokenizer(local.chat_prompt(tokenizer, p), add_special_tokens=False).input_ids for p in prompts]
    assert local.shared_prefix_length(rows) > 0  # the passage is shared
    backend = TransformersBackend(tiny_model, tokenizer)
    shared = backend.generate_batch(prompts, Sampling(1.0, 6), seed=5)
    monkeypatch.setattr(local, "shared_prefix_length", lambda rows: 0)  # every row read whole
    assert backend.generate_batch(prompts, Sampling(1.0, 6), seed=5) == shared
    assert len(set(shared)) == 3


def test_top_k_one_samples_the_greedy_reply_and_no_cut_samples_others(tokenizer, tiny_model):
    backend = TransformersBackend(tiny_model, tokenizer)
    prompts = ["who founded velmora ?", "what is the river ?"]
    greedy = backend.generate_batch(prompts, Sampling(0.0, 6), seed=0)
    assert backend.generate_batch(prompts, Sampling(1.0, 6, top_k=1), seed=3) == greedy
    assert backend.generate_batch(prompts, Sampling(1.0, 6, top_k=0), seed=3) != greedy


def test_side_by_side_keeps_the_order_and_drops_what_has_not_begun_after_an_error():
    import threading
    import time

    from promptdistill.generation.core import side_by_side

    assert list(side_by_side(lambda n: n * n, list(range(20)), 3)) == [n * n for n in range(20)]
    started, lock = [], threading.Lock()

    def work(n):
        with lock:
            started.append(n)
        time.sleep(0.02)
        if n == 3:
            raise RuntimeError("the server went away")
        return n

    with pytest.raises(RuntimeError, match="went away"):
        list(side_by_side(work, list(range(200)), 4))
    time.sleep(0.3)  # what had begun finishes; nothing more starts
    assert len(started) < 20


@pytest.mark.parametrize("top_p, top_k", [(0.9, 0), (0.5, 0), (0.9, 5), (1.0, 0)])
def test_nucleus_draw_keeps_transformers_nucleus_and_draws_by_its_probabilities(top_p, top_k):
    """The tokens NucleusDraw can draw are those transformers' temperature, top-k and top-p
    warpers keep, drawn with their renormalised probabilities; a flat row (whose nucleus is wider
    than the candidates) takes the whole-vocabulary path."""
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    from promptdistill.generation.local import NucleusDraw

    torch.manual_seed(0)
    logits = torch.cat([torch.randn(1, 40) * 4, torch.randn(1, 40) * 0.1])  # peaked, flat
    warped = TemperatureLogitsWarper(0.7)(None, logits)
    if top_k:
        warped = TopKLogitsWarper(top_k)(None, warped)
    if top_p < 1:
        warped = TopPLogitsWarper(top_p)(None, warped)
    expected = warped.softmax(dim=-1)

    draws = 20_000
    draw = NucleusDraw(0.7, top_p, top_k, candidates=8)
    for row in range(2):
        scores = draw(None, logits[row].repeat(draws, 1))
        assert ((scores == 0).sum(dim=1) == 1).all() and (scores[scores != 0] == -float("inf")).all()
        counts = torch.bincount(scores.argmax(dim=1), minlength=40).float() / draws
        assert set(counts.nonzero().flatten().tolist()) <= set(expected[row].nonzero().flatten().tolist())
        torch.testing.assert_close(counts, expected[row], atol=0.015, rtol=0)


def test_own_draw_and_transformers_sampling_answer_from_the_same_nucleus(tokenizer, tiny_model):
    """top_k=1 leaves one token a step: both ways of sampling give the greedy reply."""
    greedy = TransformersBackend(tiny_model, tokenizer).generate_batch(PROMPTS[:2], Sampling(0.0, 6), seed=0)
    for own_draw in (True, False):
        backend = TransformersBackend(tiny_model, tokenizer, own_draw=own_draw)
        assert backend.generate_batch(PROMPTS[:2], Sampling(1.0, 6, top_k=1), seed=3) == greedy


def test_decode_attention_gives_sdpas_logits_on_left_padded_rows_with_a_shared_prefix(tokenizer, tiny_model,
                                                                                      monkeypatch):
    from promptdistill import models

    passage = "velmora was founded in 1623 by tobin quarrel . the lighthouse is yellow . " * 2
    rows = [tokenizer(models.chat_prompt(tokenizer, passage + q), add_special_tokens=False).input_ids
            for q in PROMPTS[:3]]
    shared = models.shared_prefix_length(rows)
    input_ids, attention_mask = models.left_pad(rows, tokenizer.pad_token_id, shared)
    assert shared and not attention_mask.all()  # a prefix read once, rows of different lengths

    def generated_logits() -> torch.Tensor:
        output = tiny_model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                     cache=models.shared_prefix_cache(tiny_model, input_ids, shared),
                                     max_new_tokens=6, do_sample=False, output_logits=True,
                                     return_dict_in_generate=True, pad_token_id=tokenizer.pad_token_id)
        return torch.stack(output.logits)

    tiny_model.set_attn_implementation("sdpa")
    expected = generated_logits()
    original, query_lengths = models.decode_attention, []

    def counted(module, query, *args, **kwargs):
        query_lengths.append(query.shape[2])
        return original(module, query, *args, **kwargs)

    monkeypatch.setattr(models, "decode_attention", counted)
    models.use_decode_attention(tiny_model)
    torch.testing.assert_close(generated_logits(), expected)
    assert query_lengths.count(1) == 5 * tiny_model.config.num_hidden_layers  # every step after the first


def test_closed_book_mix_gives_both_rows_of_a_pair_the_token_of_the_side_drawn():
    # rows 0, 1: open-book; rows 2, 3: their closed-book twins; greedy, so each row's token is its argmax
    scores = torch.full((4, 6), -5.0)
    for row, token in enumerate([1, 2, 3, 4]):
        scores[row, token] = 5.0
    chosen = {share: ClosedBookMix(None, share)(None, scores).argmax(dim=-1).tolist() for share in (0.0, 1.0)}
    assert chosen == {0.0: [1, 2, 1, 2], 1.0: [3, 4, 3, 4]}
    torch.manual_seed(0)
    picks = torch.stack([ClosedBookMix(None, 0.3)(None, scores)[:2].argmax(dim=-1) for _ in range(2000)])
    assert 0.27 < (picks[:, 0] == 3).float().mean() < 0.33  # the closed-book side's token at its share
    assert ((picks[:, 0] == 3) != (picks[:, 1] == 4)).any()  # each pair draws its own side


def test_mixed_answers_are_the_open_book_replies_at_share_0_and_the_closed_book_replies_at_1(tokenizer, tiny_model):
    torch.manual_seed(2)  # an output layer of its own: the tied one repeats the last word whatever the prompt
    tiny_model.lm_head.weight = torch.nn.Parameter(torch.randn_like(tiny_model.lm_head.weight))
    backend = TransformersBackend(tiny_model, tokenizer)
    open_book = ["velmora was founded in 1623 . who founded velmora ?", "the river is saffron . what is the river ?"]
    closed_book = ["who founded velmora ?", "what is the river ?"]
    greedy, sampled = Sampling(0.0, 6), Sampling(1.0, 6)
    open_replies, closed_replies = (backend.generate_batch(prompts, greedy, 0) for prompts in (open_book, closed_book))
    assert open_replies[0] != closed_replies[0]
    assert backend.generate_batch(open_book, greedy, 0, closed_book, 0.0) == open_replies
    assert backend.generate_batch(open_book, greedy, 0, closed_book, 1.0) == closed_replies
    mixed = ClosedBookMixBackend(backend, 0.5, dict(zip(open_book, closed_book)))
    assert mixed.identity != backend.identity  # stored batches of mixed and pure answers never mix
    assert mixed.generate_batch(open_book, sampled, 3) == backend.generate_batch(open_book, sampled, 3, closed_book,
                                                                                  0.5)
