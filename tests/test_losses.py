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


def test_top_k_loss_equals_full_loss_when_k_is_the_vocabulary():
    from promptdistill.teacher import top_k_targets
    from promptdistill.train.losses import top_k_forward_kl

    torch.manual_seed(0)
    teacher, student = torch.randn(5, 11) * 3, torch.randn(5, 11)
    targets = top_k_targets(teacher, torch.zeros(5, dtype=torch.long), top_k=11, temperature=2.0)
    assert torch.equal(targets.tail_mass, torch.zeros(5))
    cached = top_k_forward_kl(student, targets.token_ids, targets.logprobs, targets.tail_mass, 2.0)
    assert abs(cached.item() - forward_kl(teacher, student, 2.0).item()) < 1e-6


def test_top_k_tail_bucket_by_hand():
    from promptdistill.train.losses import top_k_forward_kl

    # Teacher (already at temperature 1): p = [0.5, 0.3] on tokens 2 and 0, tail 0.2 on tokens 1, 3.
    teacher_ids = torch.tensor([[2, 0]])
    teacher_logprobs = torch.tensor([[math.log(0.5), math.log(0.3)]])
    tail = torch.tensor([0.2])
    student = [0.0, 1.0, 2.0, -1.0]
    q = softmax(student)
    expected = 0.5 * math.log(0.5 / q[2]) + 0.3 * math.log(0.3 / q[0]) + 0.2 * math.log(0.2 / (q[1] + q[3]))
    loss = top_k_forward_kl(torch.tensor([student]), teacher_ids, teacher_logprobs, tail, temperature=1.0)
    assert abs(loss.item() - expected) < 1e-6


def test_top_k_loss_has_finite_gradients_with_an_empty_tail():
    from promptdistill.train.losses import top_k_forward_kl

    student = torch.randn(2, 3, requires_grad=True)
    ids = torch.tensor([[0, 1, 2], [2, 1, 0]])
    logprobs = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.25, 0.25]]))
    top_k_forward_kl(student, ids, logprobs, torch.zeros(2), 2.0).backward()
    assert torch.isfinite(student.grad).all()
