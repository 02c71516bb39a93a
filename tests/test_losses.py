import math

import pytest
import torch

from promptdistill.teacher import top_k_targets
from promptdistill.train.losses import (cross_entropy, distill_loss, hidden_state_distance, support_distill_loss,
                                       top_k_distill_loss)

# A 5-token vocabulary: teacher and student logits for one answer token.
TEACHER = [2.0, 0.5, 0.0, -1.0, 1.0]
STUDENT = [0.5, 1.0, 0.0, 0.3, -0.5]


def softmax(values):
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def by_hand(kind, p, q, beta=0.5):
    if kind == "forward":
        return kl(p, q)
    if kind == "reverse":
        return kl(q, p)
    m = [beta * pi + (1 - beta) * qi for pi, qi in zip(p, q)]
    return beta * kl(p, m) + (1 - beta) * kl(q, m)


@pytest.mark.parametrize("kind, beta", [("forward", 0.5), ("reverse", 0.5), ("jsd", 0.5), ("jsd", 0.2)])
def test_each_divergence_matches_hand_computation_at_temperature_two(kind, beta):
    p = softmax([t / 2 for t in TEACHER])
    q = softmax([s / 2 for s in STUDENT])
    expected = by_hand(kind, p, q, beta)
    loss = distill_loss(torch.tensor([STUDENT]), torch.tensor([TEACHER]), 2.0, kind, beta)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert expected > 0.01  # the example is not trivially zero


def test_divergences_differ_and_forward_is_teacher_weighted():
    student, teacher = torch.tensor([STUDENT]), torch.tensor([TEACHER])
    values = {kind: distill_loss(student, teacher, 1.0, kind).item() for kind in ("forward", "reverse", "jsd")}
    assert len({round(v, 6) for v in values.values()}) == 3
    # The arguments are (student, teacher): swapping them turns forward into reverse.
    assert distill_loss(teacher, student, 1.0, "forward").item() == pytest.approx(values["reverse"])
    with pytest.raises(ValueError, match="unknown divergence"):
        distill_loss(student, teacher, 1.0, "backward")


def test_loss_is_the_mean_over_tokens():
    teacher = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    student = torch.tensor([[0.0, 4.0, 0.0], [0.0, 0.0, 0.0]])
    first = distill_loss(student[:1], teacher[:1], 1.0).item()
    # The second token matches exactly (divergence 0), so the mean halves the first token's.
    assert distill_loss(student, teacher, 1.0).item() == pytest.approx(first / 2)


def test_cross_entropy_is_negative_log_probability_of_the_target():
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    expected = -math.log(softmax([1.0, 2.0, 3.0])[0])
    assert abs(cross_entropy(logits, torch.tensor([0])).item() - expected) < 1e-6


@pytest.mark.parametrize("kind", ["forward", "reverse", "jsd"])
def test_cached_loss_equals_online_loss_when_k_is_the_vocabulary(kind):
    torch.manual_seed(0)
    teacher, student = torch.randn(5, 11) * 3, torch.randn(5, 11)
    targets = top_k_targets(teacher, torch.zeros(5, dtype=torch.long), top_k=11, temperature=2.0)
    assert torch.equal(targets.tail_mass, torch.zeros(5))
    cached = top_k_distill_loss(student, targets.token_ids, targets.logprobs, targets.tail_mass, 2.0, kind, 0.3)
    assert cached.item() == pytest.approx(distill_loss(student, teacher, 2.0, kind, 0.3).item(), abs=1e-6)


@pytest.mark.parametrize("kind, beta", [("forward", 0.5), ("reverse", 0.5), ("jsd", 0.3)])
def test_top_k_tail_bucket_by_hand(kind, beta):
    # Teacher (already at temperature 1): p = [0.5, 0.3] on tokens 2 and 0, tail 0.2 on tokens 1, 3, 4.
    teacher_ids = torch.tensor([[2, 0]])
    teacher_logprobs = torch.tensor([[math.log(0.5), math.log(0.3)]])
    q = softmax(STUDENT)
    buckets_p = [0.5, 0.3, 0.2]
    buckets_q = [q[2], q[0], q[1] + q[3] + q[4]]
    loss = top_k_distill_loss(torch.tensor([STUDENT]), teacher_ids, teacher_logprobs, torch.tensor([0.2]), 1.0,
                              kind, beta)
    assert loss.item() == pytest.approx(by_hand(kind, buckets_p, buckets_q, beta), abs=1e-6)


@pytest.mark.parametrize("kind", ["forward", "reverse", "jsd"])
def test_top_k_loss_has_finite_gradients_with_an_empty_tail(kind):
    student = torch.randn(2, 3, requires_grad=True)
    ids = torch.tensor([[0, 1, 2], [2, 1, 0]])
    logprobs = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.25, 0.25]]))
    top_k_distill_loss(student, ids, logprobs, torch.zeros(2), 2.0, kind).backward()
    assert torch.isfinite(student.grad).all()


@pytest.mark.parametrize("support", ["teacher", "student"])
def test_a_support_as_wide_as_the_vocabulary_is_the_whole_divergence(support):
    torch.manual_seed(0)
    teacher, student = torch.randn(4, 7) * 3, torch.randn(4, 7)
    assert support_distill_loss(student, teacher, 2.0, 7, support, "jsd", 0.3).item() == pytest.approx(
        distill_loss(student, teacher, 2.0, "jsd", 0.3).item(), abs=1e-6)


@pytest.mark.parametrize("support, kept", [("teacher", [0, 4]), ("student", [1, 0])])
@pytest.mark.parametrize("kind", ["forward", "reverse"])
def test_a_top_two_support_by_hand(support, kept, kind):
    # At T=1 the teacher's two likeliest tokens are 0 and 4, the student's 1 and 0; the other three
    # tokens of each distribution are one bucket.
    p, q = softmax(TEACHER), softmax(STUDENT)
    rest = [token for token in range(5) if token not in kept]
    buckets_p = [p[token] for token in kept] + [sum(p[token] for token in rest)]
    buckets_q = [q[token] for token in kept] + [sum(q[token] for token in rest)]
    loss = support_distill_loss(torch.tensor([STUDENT]), torch.tensor([TEACHER]), 1.0, 2, support, kind)
    assert loss.item() == pytest.approx(by_hand(kind, buckets_p, buckets_q), abs=1e-6)
    assert loss.item() < distill_loss(torch.tensor([STUDENT]), torch.tensor([TEACHER]), 1.0, kind).item()


def test_sequence_reduction_weighs_each_answer_alike_whatever_its_length():
    from promptdistill.train.losses import token_weights

    mask = torch.tensor([[True, True, True, False], [False, False, False, True]])  # answers of 3 and 1 tokens
    assert token_weights(mask, "token") is None
    weights = token_weights(mask, "sequence")
    assert weights.tolist() == pytest.approx([1 / 6, 1 / 6, 1 / 6, 1 / 2])
    logits, targets = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    per_token = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    expected = (per_token[:3].mean() + per_token[3]) / 2  # mean per answer, then over the answers
    assert cross_entropy(logits, targets, weights).item() == pytest.approx(expected.item())
    assert cross_entropy(logits, targets).item() == pytest.approx(per_token.mean().item())
    student, teacher = torch.randn(4, 5), torch.randn(4, 5)
    per_token_kl = torch.stack([distill_loss(student[i:i + 1], teacher[i:i + 1], 2.0) for i in range(4)])
    assert distill_loss(student, teacher, 2.0, weights=weights).item() == pytest.approx(
        ((per_token_kl[:3].mean() + per_token_kl[3]) / 2).item(), rel=1e-5)


@pytest.mark.parametrize("reduction", ["token", "sequence"])
def test_a_loss_in_chunks_has_the_whole_loss_and_gradients(reduction):
    """in_chunks recomputes each chunk in the backward pass: the value and the gradients are those of
    the loss over every token at once, whatever the weighting; here 10 tokens in chunks of 3."""
    from functools import partial

    from promptdistill.train.losses import in_chunks, token_weights

    torch.manual_seed(0)
    mask = torch.tensor([[True] * 6 + [False] * 2, [False] * 4 + [True] * 4])
    weights = token_weights(mask, reduction)
    logits, teacher = torch.randn(10, 7, requires_grad=True), torch.randn(10, 7)
    answer_ids = torch.randint(0, 7, (10,))
    top = torch.log_softmax(teacher / 2.0, dim=-1).topk(3)

    def kl_and_ce(student, answers, token_ids, logprobs, tail, weights):
        return (top_k_distill_loss(student, token_ids, logprobs, tail, 2.0, "jsd", 0.3, weights)
                + cross_entropy(student, answers, weights))

    losses = [(cross_entropy, [answer_ids]),
              (partial(distill_loss, temperature=2.0, kind="reverse"), [teacher]),
              (kl_and_ce, [answer_ids, top.indices, top.values, 1 - top.values.exp().sum(-1)])]
    for loss, targets in losses:
        whole = loss(logits, *targets, weights=weights)
        (expected,) = torch.autograd.grad(whole, logits)
        chunked = in_chunks(loss, logits, targets, weights, chunk_tokens=3)
        (gradient,) = torch.autograd.grad(chunked, logits)
        assert chunked.item() == pytest.approx(whole.item(), rel=1e-6)
        assert torch.allclose(gradient, expected, atol=1e-7) and gradient.abs().max() > 1e-3


def test_hidden_state_distance_by_hand():
    """Per token, the L1 distance over the teacher's L1 norm, averaged over layers; then over tokens."""
    teacher = torch.tensor([[[1.0, -3.0], [2.0, 2.0]],     # layer 1: token 1, token 2
                            [[0.0, 4.0], [-1.0, 1.0]]])    # layer 2
    student = torch.tensor([[[2.0, -1.0], [2.0, 2.0]],
                            [[0.0, 2.0], [1.0, 1.0]]])
    # token 1: layer 1 |1| + |2| over 4 = 0.75, layer 2 2 over 4 = 0.5; token 2: 0 and 2 over 2 = 1.
    token_1, token_2 = (0.75 + 0.5) / 2, (0.0 + 1.0) / 2
    assert hidden_state_distance(student, teacher).item() == pytest.approx((token_1 + token_2) / 2)
    weights = torch.tensor([0.25, 0.75])
    assert hidden_state_distance(student, teacher, weights).item() == pytest.approx(0.25 * token_1 + 0.75 * token_2)
    assert hidden_state_distance(teacher, teacher).item() == 0
