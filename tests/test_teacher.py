import torch

from promptdistill.config import TrainConfig
from promptdistill.models import add_lora, answer_logits
from promptdistill.teacher import online_teacher
from promptdistill.train.data import Collator

from conftest import give_adapter_an_effect, make_model
from test_train_data import examples


def test_teacher_is_the_base_model_with_the_adapter_off(tokenizer):
    batch = Collator(tokenizer.pad_token_id)(examples(tokenizer))
    width = batch["answer_mask"].shape[1]
    base = make_model(len(tokenizer), seed=1)
    expected = answer_logits(base, batch["teacher_input_ids"], batch["teacher_attention_mask"], width)

    student = add_lora(make_model(len(tokenizer), seed=1), TrainConfig(lora_rank=4, lora_alpha=8))
    give_adapter_an_effect(student)
    with_adapter = answer_logits(student, batch["teacher_input_ids"], batch["teacher_attention_mask"], width)
    assert not torch.allclose(with_adapter, expected, atol=1e-3)  # the adapter does change the model

    teacher = online_teacher(student, batch)[0]
    torch.testing.assert_close(teacher, expected, atol=1e-6, rtol=1e-5)
    assert not teacher.requires_grad
