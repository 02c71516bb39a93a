import pytest

from promptdistill.generation import Sampling, TransformersBackend, generate_all
from promptdistill.models import chat_prompt
from promptdistill.rundir import PartialFile

PROMPTS = ["who founded velmora ?", "when was the town founded ?", "what is the river ?",
           "how many steps ?", "where is the lighthouse ?"]


def test_an_interrupted_generation_resumes_to_the_same_completions(tokenizer, tiny_model, tmp_path, monkeypatch):
    backend = TransformersBackend(tiny_model, tokenizer)
    prompts = [chat_prompt(tokenizer, text) for text in PROMPTS]
    sampling = Sampling(temperature=1.0, max_new_tokens=6)
    whole = generate_all(backend, prompts, sampling, seed=3, batch_size=2)

    partial = PartialFile(tmp_path / "out.jsonl", key="k")
    real = backend.generate_batch
    calls = []

    def dies_on_third_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(backend, "generate_batch", dies_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        generate_all(backend, prompts, sampling, seed=3, batch_size=2, partial=partial)
    assert len(partial.load()) == 2  # two finished batches were kept

    calls.clear()
    monkeypatch.setattr(backend, "generate_batch", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    resumed = generate_all(backend, prompts, sampling, seed=3, batch_size=2, partial=partial)
    assert resumed == whole
    assert len(calls) == 1  # only the unfinished batch was generated again
    assert any(text for text in whole)


def test_partial_file_of_other_settings_or_torn_line_is_not_reused(tmp_path):
    partial = PartialFile(tmp_path / "out.jsonl", key="a")
    partial.resume()
    partial.append(0, [{"text": "x"}])
    with open(partial.path, "a") as file:
        file.write('{"batch": 1, "rec')  # killed mid-write
    assert partial.resume() == {0: [{"text": "x"}]}
    partial.append(1, [{"text": "y"}])
    assert partial.load() == {0: [{"text": "x"}], 1: [{"text": "y"}]}
    assert PartialFile(tmp_path / "out.jsonl", key="b").resume() == {}


def test_greedy_generation_is_deterministic_and_batch_order_is_restored(tokenizer, tiny_model):
    backend = TransformersBackend(tiny_model, tokenizer)
    prompts = [chat_prompt(tokenizer, text) for text in PROMPTS]
    together = generate_all(backend, prompts, Sampling(0.0, 5), seed=0, batch_size=5)
    one_by_one = [generate_all(backend, [prompt], Sampling(0.0, 5), seed=0, batch_size=1)[0] for prompt in prompts]
    assert together == one_by_one
