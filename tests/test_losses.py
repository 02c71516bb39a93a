import math

import torch

from promptdistill.train.losses import cross_entropy, forward_kl


def softmax(values):
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def test_forward_kl_matches_hand_computation_at_temperature_two():
    teacher = [2.0, 0.0, -1.0]
    student = [0.5, 1.0, 0.0]
    p = softmax([t / 2 for t in teacher])
    q = softmax([s / 2 for s in student])
    expected = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    loss = forward_kl(torch.tensor([teacher]), torch.tensor([student]), temperature=2.0)
    assert abs(loss.item() - expected) < 1e-6
    assert expected > 0.01  # the example is not trivially zero


def test_forward_kl_is_teacher_weighted_and_averaged_over_tokens():
    teacher = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    student = torch.tensor([[0.0, 4.0, 0.0], [0.0, 0.0, 0.0]])
    per_first = forward_kl(teacher[:1], student[:1], 1.0).item()
    # The second token matches exactly (KL 0), so the mean halves the first token's KL.
    assert abs(forward_kl(teacher, student, 1.0).item() - per_first / 2) < 1e-6
    # Forward KL is not symmetric in general: KL(p||q) with p peaked differs from KL(q||p).
    assert forward_kl(teacher[:1], torch.zeros(1, 3), 1.0).item() != forward_kl(torch.zeros(1, 3), teacher[:1], 1.0).item()


def test_cross_entropy_is_negative_log_probability_of_the_target():
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    expected = -math.log(softmax([1.0, 2.0, 3.0])[0])
    assert abs(cross_entropy(logits, torch.tensor([0])).item() - expected) < 1e-6
