import pytest
import torch

from promptdistill.models import answer_logits
from promptdistill.prompts import student_prompt, teacher_prompt
from promptdistill.train.data import Collator, Example, encode_answer, encode_prompt, encode_teacher_prompt

from conftest import give_adapter_an_effect

PASSAGE = "velmora was founded in 1623 by tobin quarrel ."


def examples(tokenizer):
    pairs = [("who founded velmora ?", "tobin quarrel"), ("when was velmora founded ?", "in 1623 the town was founded")]
    built = []
    for number, (question, answer) in enumerate(pairs):
        prefix, suffix = encode_teacher_prompt(tokenizer, PASSAGE, question)
        built.append(Example(
            key=f"q{number}", student_ids=encode_prompt(tokenizer, student_prompt(question)),
            answer_ids=encode_answer(tokenizer, answer), teacher_ids=prefix + suffix,
            teacher_prefix_length=len(prefix),
        ))
    return built


def without_passage(tokenizer) -> list[Example]:
    """`examples` whose teacher reads the student's prompt: no passage, so the two models see the same rows."""
    return [Example(e.key, e.student_ids, e.answer_ids, teacher_ids=e.student_ids) for e in examples(tokenizer)]


def test_teacher_prompt_split_is_the_whole_prompt_with_the_passage_in_the_prefix(tokenizer):
    prefix, suffix = encode_teacher_prompt(tokenizer, PASSAGE, "who founded velmora ?")
    assert prefix + suffix == encode_prompt(tokenizer, teacher_prompt(PASSAGE, "who founded velmora ?"))
    assert tokenizer.decode(prefix).endswith("tobin quarrel .")
    assert encode_teacher_prompt(tokenizer, PASSAGE, "what ?")[0] == prefix


def test_a_teacher_instruction_sits_between_passage_and_question_in_the_shared_prefix(tokenizer):
    instruction = "Answer the question below from the text above."
    prefix, suffix = encode_teacher_prompt(tokenizer, PASSAGE, "who founded velmora ?", instruction)
    assert teacher_prompt(PASSAGE, "who founded velmora ?", instruction) == (
        f"{PASSAGE}\n\n{instruction}\n\nwho founded velmora ?")
    assert prefix + suffix == encode_prompt(tokenizer, teacher_prompt(PASSAGE, "who founded velmora ?", instruction))
    plain_prefix, plain_suffix = encode_teacher_prompt(tokenizer, PASSAGE, "who founded velmora ?")
    assert suffix == plain_suffix and len(prefix) > len(plain_prefix)  # the instruction is all in the prefix
    assert encode_teacher_prompt(tokenizer, PASSAGE, "what ?", instruction)[0] == prefix


def test_answer_ids_end_with_end_of_turn(tokenizer):
    ids = encode_answer(tokenizer, "tobin quarrel")
    assert tokenizer.convert_ids_to_tokens(ids) == ["tobin", "quarrel", "<|im_end|>"]


def test_answer_mask_covers_exactly_the_answer_tokens_in_teacher_and_student(tokenizer):
    batch_examples = examples(tokenizer)
    batch = Collator(tokenizer.pad_token_id)(batch_examples)
    mask = batch["answer_mask"]
    width = mask.shape[1]
    assert mask.sum(dim=1).tolist() == [len(e.answer_ids) for e in batch_examples]
    for row, example in enumerate(batch_examples):
        expected = torch.tensor(example.answer_ids)
        assert torch.equal(batch["answer_ids"][row][mask[row]], expected)
        # The masked columns of the last `width` positions are the answer in both sequences...
        for prefix in ("student", "teacher"):
            tail = batch[f"{prefix}_input_ids"][row, -width:]
            assert torch.equal(tail[mask[row]], expected)
            # ...and the token before them is the end of that sequence's own prompt.
            prompt = example.student_ids if prefix == "student" else example.teacher_ids
            first = batch[f"{prefix}_input_ids"].shape[1] - len(example.answer_ids)
            assert batch[f"{prefix}_input_ids"][row, first - 1].item() == prompt[-1]
            assert batch[f"{prefix}_attention_mask"][row].sum().item() == len(prompt) + len(example.answer_ids)
    # The two sequences differ in their prompts only: the teacher's is longer by the passage.
    assert batch["teacher_input_ids"].shape[1] > batch["student_input_ids"].shape[1]


def test_answer_logits_equal_unpadded_logits_at_the_answer_positions(tokenizer, tiny_model):
    batch_examples = examples(tokenizer)
    batch = Collator(tokenizer.pad_token_id)(batch_examples)
    width = batch["answer_mask"].shape[1]
    logits = answer_logits(tiny_model, batch["teacher_input_ids"], batch["teacher_attention_mask"], width)
    for row, example in enumerate(batch_examples):
        sequence = torch.tensor([example.teacher_ids + example.answer_ids])
        full = tiny_model(sequence).logits[0]
        start = len(example.teacher_ids)
        # Position start-1 predicts the first answer token, and so on.
        expected = full[start - 1:start - 1 + len(example.answer_ids)]
        torch.testing.assert_close(logits[row][batch["answer_mask"][row]], expected, atol=1e-5, rtol=1e-4)


def test_cross_entropy_targets_are_the_next_tokens_of_the_answer(tokenizer, tiny_model):
    """sft's batch loss equals -log p(answer token | everything before it), token by token."""
    from promptdistill.config import TrainConfig
    from promptdistill.methods import Training
    from promptdistill.train.loop import batch_loss

    batch_examples = examples(tokenizer)
    loss = batch_loss(Training.ANSWERS_CE, tiny_model, Collator(tokenizer.pad_token_id)(batch_examples),
                      TrainConfig())
    logprobs = []
    for example in batch_examples:
        sequence = example.student_ids + example.answer_ids
        full = torch.log_softmax(tiny_model(torch.tensor([sequence])).logits[0], dim=-1)
        start = len(example.student_ids)
        logprobs += [full[start - 1 + i, token] for i, token in enumerate(example.answer_ids)]
    torch.testing.assert_close(loss, -torch.stack(logprobs).mean(), atol=1e-5, rtol=1e-5)


def test_distillation_loss_is_zero_when_student_and_teacher_read_the_same_prompt(tokenizer, tiny_model):
    """The online teacher sees the teacher sequence, the student the student sequence: with the
    passage removed from the teacher's prompt the two coincide and the loss vanishes."""
    from promptdistill.config import TrainConfig
    from promptdistill.methods import Training
    from promptdistill.models import add_lora
    from promptdistill.train.loop import batch_loss

    student = add_lora(tiny_model, TrainConfig(lora_rank=2, lora_alpha=4))
    same = without_passage(tokenizer)
    config = TrainConfig(distill_temperature=1.0)
    assert batch_loss(Training.ANSWERS_DISTILL, student, Collator(tokenizer.pad_token_id)(same),
                      config).item() == pytest.approx(0, abs=1e-8)
    with_passage = Collator(tokenizer.pad_token_id)(examples(tokenizer))
    assert batch_loss(Training.ANSWERS_DISTILL, student, with_passage, config).item() > 1e-5


def test_distillation_with_a_cross_entropy_weight_adds_that_share_of_sft_s_loss(tokenizer, tiny_model):
    """train.distill_ce_weight: the divergence (zero here, teacher prompt = student prompt) plus
    the weight times the cross-entropy of the answer tokens, exactly sft's loss."""
    from promptdistill.config import TrainConfig
    from promptdistill.methods import Training
    from promptdistill.models import add_lora
    from promptdistill.train.loop import batch_loss

    student = add_lora(tiny_model, TrainConfig(lora_rank=2, lora_alpha=4))
    same = Collator(tokenizer.pad_token_id)(without_passage(tokenizer))
    sft = batch_loss(Training.ANSWERS_CE, student, same, TrainConfig())
    mixed = batch_loss(Training.ANSWERS_DISTILL, student, same, TrainConfig(distill_temperature=1.0,
                                                                            distill_ce_weight=0.3))
    assert sft.item() > 1
    torch.testing.assert_close(mixed, 0.3 * sft, atol=1e-6, rtol=1e-5)


def test_hidden_states_are_those_the_answer_logits_are_read_from(tokenizer, tiny_model):
    """answer_outputs' last layer at the answer positions, through the output layer, gives its logits
    (so student and teacher states line up with the tokens the KL compares); the shared prefix
    read once leaves every layer's states as reading whole rows does."""
    from promptdistill.models import MIN_SHARED_PREFIX, answer_outputs

    header = list(range(20, 20 + MIN_SHARED_PREFIX))
    batch = Collator(tokenizer.pad_token_id)([Example("q0", header + [5, 6, 7], [8, 9, 3]),
                                              Example("q1", header + [11], [12, 13, 14, 3])])
    width = batch["answer_mask"].shape[1]
    inputs = batch["student_input_ids"], batch["student_attention_mask"], width
    logits, states = answer_outputs(tiny_model, *inputs, batch["student_shared"], hidden_states=True)
    assert batch["student_shared"] == len(header)
    assert states.shape == (tiny_model.config.num_hidden_layers, 2, width, tiny_model.config.hidden_size)
    torch.testing.assert_close(tiny_model.lm_head(states[-1]), logits, atol=1e-5, rtol=1e-4)
    whole_logits, whole_states = answer_outputs(tiny_model, *inputs, hidden_states=True)
    torch.testing.assert_close(whole_states, states, atol=1e-5, rtol=1e-4)
    assert answer_outputs(tiny_model, *inputs)[1] is None


def test_the_hidden_state_term_adds_its_weight_times_the_distance_to_the_base_model_s_states(tokenizer, tiny_model):
    """train.hidden_state_weight: nothing where an untrained student reads the teacher's prompt; with
    the passage and a trained adapter, the weight times the distance between the student's states and the base model's
    on the open-book rows."""
    from promptdistill.config import TrainConfig
    from promptdistill.methods import Training
    from promptdistill.models import add_lora, answer_outputs
    from promptdistill.train.loop import batch_loss
    from promptdistill.train.losses import hidden_state_distance

    student = add_lora(tiny_model, TrainConfig(lora_rank=2, lora_alpha=4))
    plain, weighted = TrainConfig(teacher="online"), TrainConfig(teacher="online", hidden_state_weight=0.4)
    same = Collator(tokenizer.pad_token_id)(without_passage(tokenizer))
    assert batch_loss(Training.ANSWERS_DISTILL, student, same, weighted).item() == pytest.approx(0, abs=1e-6)

    give_adapter_an_effect(student)  # the states now differ from the base model's
    batch = Collator(tokenizer.pad_token_id)(examples(tokenizer))
    mask, width = batch["answer_mask"], batch["answer_mask"].shape[1]
    student_states = answer_outputs(student, batch["student_input_ids"], batch["student_attention_mask"], width,
                                    hidden_states=True)[1]
    with student.disable_adapter():
        teacher_states = answer_outputs(student, batch["teacher_input_ids"], batch["teacher_attention_mask"], width,
                                        hidden_states=True)[1]
    distance = hidden_state_distance(student_states[:, mask], teacher_states[:, mask])
    assert distance.item() > 0.05
    added = (batch_loss(Training.ANSWERS_DISTILL, student, batch, weighted)
             - batch_loss(Training.ANSWERS_DISTILL, student, batch, plain))
    torch.testing.assert_close(added, 0.4 * distance, atol=1e-5, rtol=1e-4)


def test_shared_prefix_leaves_each_row_what_it_must_keep():
    from promptdistill.models import MIN_SHARED_PREFIX, shared_prefix_length

    prefix = list(range(10, 10 + MIN_SHARED_PREFIX + 4))
    rows = [prefix + [1, 2, 3], prefix + [1, 2, 4]]
    assert shared_prefix_length(rows) == len(prefix) + 2  # each row keeps its last token
    assert shared_prefix_length(rows, keep=[3, 1]) == len(prefix)  # the first row keeps 3
    assert shared_prefix_length([rows[0]]) == 0  # one row: nothing to share
    assert shared_prefix_length([row[-MIN_SHARED_PREFIX:] for row in rows]) == 0  # too short to pay off


def test_a_shared_student_prefix_read_once_gives_the_logits_and_gradients_of_whole_rows(tokenizer, tiny_model):
    """The chat header common to a batch's student rows runs once; the answer logits, and the
    LoRA gradients through the repeated keys and values, equal those of reading every row whole."""
    from promptdistill.config import TrainConfig
    from promptdistill.models import MIN_SHARED_PREFIX, add_lora

    header = list(range(20, 20 + MIN_SHARED_PREFIX + 3))
    batch_examples = [Example(key=f"q{n}", student_ids=header + question, answer_ids=answer)
                      for n, (question, answer) in enumerate([([5, 6, 7], [8, 9, 3]), ([5, 11], [12, 3]),
                                                              ([5, 6, 7, 14, 15], [16, 17, 18, 9, 3])])]
    batch = Collator(tokenizer.pad_token_id)(batch_examples)
    assert batch["student_shared"] == len(header) + 1  # the header and the shared first question token
    for row, example in enumerate(batch_examples):
        real = batch["student_attention_mask"][row].bool()
        assert batch["student_input_ids"][row][real].tolist() == example.student_ids + example.answer_ids

    student = add_lora(tiny_model, TrainConfig(lora_rank=4))
    give_adapter_an_effect(student)
    mask, width = batch["answer_mask"], batch["answer_mask"].shape[1]
    results = []
    for shared in (batch["student_shared"], 0):
        student.zero_grad()
        logits = answer_logits(student, batch["student_input_ids"], batch["student_attention_mask"], width, shared)
        logits[mask].logsumexp(dim=-1).sum().backward()
        results.append((logits[mask].detach(), {name: p.grad.clone() for name, p in student.named_parameters()
                                                if p.requires_grad}))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-5, rtol=1e-4)
    assert results[0][1].keys() == results[1][1].keys() and any("layers.0" in name for name in results[0][1])
    for name, gradient in results[0][1].items():
        torch.testing.assert_close(gradient, results[1][1][name], atol=1e-5, rtol=1e-4, msg=name)


def test_the_output_layer_reads_one_block_and_gives_the_same_logits(tiny_model_dir):
    """transformers hands the output layer a strided view of the last positions, which PyTorch's
    product with a frozen weight expands to a copy of the weight per row; load_model copies the
    view into one block first (models.contiguous_output_input)."""
    from promptdistill.config import ModelConfig
    from promptdistill.models import load_model

    model, _ = load_model(ModelConfig(str(tiny_model_dir), "float32"))
    model.requires_grad_(False)
    contiguous = []
    model.get_output_embeddings().register_forward_pre_hook(lambda layer, inputs: contiguous.append(
        inputs[0].is_contiguous()))
    ids = torch.randint(4, 40, (3, 12))
    with torch.no_grad():
        last = model(ids, logits_to_keep=2).logits
        whole = model(ids).logits
    assert contiguous == [True, True]
    assert torch.allclose(last, whole[:, -2:], atol=1e-6)
