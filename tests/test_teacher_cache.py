import pytest
import torch
import torch.nn.functional as F

from promptdistill.models import answer_logits
from promptdistill.teacher import (
    TeacherCache, TeacherInput, build_teacher_cache, prefix_shared_teacher_targets, top_k_targets,
    write_teacher_cache,
)
from promptdistill.train.data import Collator

from test_train_data import examples

TOLERANCE = 1e-4  # float32 log-probabilities; the two passes differ only in summation order


def test_prefix_shared_pass_equals_the_plain_pass(tokenizer, tiny_model):
    batch_examples = examples(tokenizer)
    batch = Collator(tokenizer.pad_token_id)(batch_examples)
    width = batch["answer_mask"].shape[1]
    plain = answer_logits(tiny_model, batch["teacher_input_ids"], batch["teacher_attention_mask"], width)
    first = batch_examples[0]
    prefix = first.teacher_ids[:first.teacher_prefix_length]
    assert all(e.teacher_ids[:e.teacher_prefix_length] == prefix for e in batch_examples)  # one passage
    vocabulary = plain.shape[-1]
    shared = prefix_shared_teacher_targets(
        tiny_model, prefix, [(e.teacher_ids[e.teacher_prefix_length:], e.answer_ids) for e in batch_examples],
        top_k=vocabulary, temperature=2.0, batch_size=2,
    )
    for row, (example, targets) in enumerate(zip(batch_examples, shared)):
        expected = F.log_softmax(plain[row][batch["answer_mask"][row]] / 2.0, dim=-1)
        actual = torch.full_like(expected, float("nan")).scatter(-1, targets.token_ids.long(), targets.logprobs)
        torch.testing.assert_close(actual, expected, atol=TOLERANCE, rtol=0)
        assert targets.answer_ids.tolist() == example.answer_ids


def test_cache_reader_returns_what_was_written_aligned_with_the_answers(tokenizer, tiny_model, tmp_path):
    batch_examples = examples(tokenizer) * 2
    inputs = [TeacherInput(f"q{n}", e.teacher_ids[:e.teacher_prefix_length], e.teacher_ids[e.teacher_prefix_length:],
                           e.answer_ids) for n, e in enumerate(batch_examples)]
    build_teacher_cache(tiny_model, inputs, top_k=5, temperature=2.0, batch_size=3, out_dir=tmp_path,
                        settings={"top_k": 5})
    cache = TeacherCache(tmp_path)
    assert cache.settings == {"top_k": 5}
    for item in inputs:
        (expected,) = prefix_shared_teacher_targets(tiny_model, item.prefix_ids, [(item.suffix_ids, item.answer_ids)],
                                                    top_k=5, temperature=2.0, batch_size=1)
        actual = cache[item.key]
        assert actual.answer_ids.tolist() == item.answer_ids
        assert torch.equal(actual.token_ids, expected.token_ids)
        torch.testing.assert_close(actual.logprobs, expected.logprobs, atol=TOLERANCE, rtol=0)
        torch.testing.assert_close(actual.tail_mass, expected.tail_mass, atol=TOLERANCE, rtol=0)
        assert actual.token_ids.shape == (len(item.answer_ids), 5)


def test_collated_cache_targets_sit_under_the_answer_mask(tokenizer, tmp_path):
    batch_examples = examples(tokenizer)
    written = [top_k_targets(torch.randn(len(e.answer_ids), 9), torch.tensor(e.answer_ids), 3, 2.0)
               for e in batch_examples]
    write_teacher_cache(tmp_path, [e.key for e in batch_examples], written, settings={})
    batch = Collator(tokenizer.pad_token_id, TeacherCache(tmp_path))(batch_examples)
    mask = batch["answer_mask"]
    assert "teacher_input_ids" not in batch  # the cached path never reads the passage
    for row, target in enumerate(written):
        assert torch.equal(batch["teacher_token_ids"][row][mask[row]], target.token_ids)
        assert torch.equal(batch["teacher_logprobs"][row][mask[row]], target.logprobs)
        assert torch.equal(batch["teacher_tail_mass"][row][mask[row]], target.tail_mass)
    stale = batch_examples[0]
    stale.answer_ids = stale.answer_ids[:-1]
    with pytest.raises(ValueError, match="other answer tokens"):
        Collator(tokenizer.pad_token_id, TeacherCache(tmp_path))([stale])


def test_many_shards_read_back(tokenizer, tmp_path, monkeypatch):
    import promptdistill.teacher as teacher

    monkeypatch.setattr(teacher, "SHARD_TOKENS", 4)
    written = [top_k_targets(torch.randn(3, 7), torch.tensor([1, 2, 3]), 2, 1.0) for _ in range(5)]
    write_teacher_cache(tmp_path, [f"k{n}" for n in range(5)], written, settings={})
    assert len(list(tmp_path.glob("shard-*.safetensors"))) == 5
    cache = TeacherCache(tmp_path)
    for n, target in enumerate(written):
        assert torch.equal(cache[f"k{n}"].logprobs, target.logprobs)
