import dataclasses

import pytest

from promptdistill.config import SynthConfig
from promptdistill.corpus import Passage
from promptdistill.errors import UserError
from promptdistill.generation import TransformersBackend
from promptdistill.synth import (
    answer_questions, clean_question, content_words, last_full_sentence, normalise_question, passage_names,
    ungrounded, write_questions,
)


@pytest.mark.parametrize("reply, question", [
    ("What year was Velmora founded?", "What year was Velmora founded?"),
    ("1. Who built the pier? And more text", "Who built the pier?"),
    ('Question: "How many steps are in the tower?"', "How many steps are in the tower?"),
    ("\n\nQ: Where is Gullet Head?\nA: on a point", "Where is Gullet Head?"),
    ("The lighthouse is yellow.", None),
    ("Why?", None),  # too short to be about anything
    ("", None),
])
def test_clean_question(reply, question):
    assert clean_question(reply) == question


def test_off_topic_and_duplicate_helpers():
    assert content_words("Who built the first stone pier?") == {"built", "first", "stone", "pier"}
    assert normalise_question("Who built the pier?") == normalise_question("who built the  pier")


def test_last_full_sentence():
    assert last_full_sentence("It is yellow. It has 96 steps and the") == "It is yellow."
    assert last_full_sentence("Founded in 1623 by Mr. Quarrel who") == "Founded in 1623 by Mr."
    assert last_full_sentence("no sentence end at all") == ""


class ChosenReplies:
    """A backend that replies with chosen strings, in order, whatever it is asked."""

    identity = "chosen"

    def __init__(self, replies):
        self.replies = list(replies)

    def count_tokens(self, text):
        return len(text.split())

    def generate_batch(self, prompts, sampling, seed):
        return [self.replies.pop(0) for _ in prompts]


PASSAGE = Passage("town#0", "town", "Velmora was founded in 1623 by Tobin Quarrel. Its lighthouse is yellow.")


def test_the_question_filters_keep_only_new_on_topic_questions():
    replies = [
        "Who founded Velmora?",  # kept
        "The lighthouse is yellow.",  # not a question
        "",  # empty: not a question
        "What is the capital of France?",  # off-topic: no content word of the passage
        "who founded  velmora",  # no question mark: not a question
        "Who founded Velmora ?",  # a duplicate of the first
        "When was Velmora founded?",  # kept
        "What colour is the lighthouse?",  # beyond the quota of 2: not kept
    ]
    config = SynthConfig(questions_per_passage=2, batch_size=8, max_attempts=1, question_style="single")
    records, stats = write_questions(ChosenReplies(replies), [PASSAGE], dataclasses.replace(
        config, questions_per_passage=8), seed=0)
    assert [r["question"] for r in records] == ["Who founded Velmora?", "When was Velmora founded?",
                                                "What colour is the lighthouse?"]
    assert (stats.generated, stats.not_a_question, stats.off_topic, stats.duplicate) == (8, 3, 1, 1)
    assert [r["id"] for r in records] == ["town#0/q0", "town#0/q1", "town#0/q2"]

    # A passage short of its quota gets another round, asking only for the missing questions.
    backend = ChosenReplies(["Who founded Velmora?", "not one", "When was Velmora founded?"])
    records, stats = write_questions(backend, [PASSAGE], dataclasses.replace(config, max_attempts=2), seed=0)
    assert [r["question"] for r in records] == ["Who founded Velmora?", "When was Velmora founded?"]
    assert stats.generated == 3 and backend.replies == []


def test_near_duplicates_are_dropped_from_the_overlap_asked_for():
    replies = [
        "Who founded Velmora?",  # {who, founded, velmora}
        "Who was it that founded Velmora?",  # the same words: overlap 1
        "Who founded Velmora in 1623?",  # 3 of the 4 words in either: 0.75
        "When was Velmora founded?",  # another question word: 2 of 4, 0.5
        "What colour is the lighthouse?",  # nothing in common
    ]
    config = SynthConfig(questions_per_passage=5, batch_size=8, max_attempts=1, question_style="single")
    kept = {overlap: [r["question"] for r in write_questions(ChosenReplies(replies), [PASSAGE], dataclasses.replace(
        config, near_duplicate_overlap=overlap), seed=0)[0]] for overlap in (0.0, 1.0, 0.75, 0.5)}
    assert kept[0.0] == replies
    assert kept[1.0] == [replies[0], replies[2], replies[3], replies[4]]
    assert kept[0.75] == [replies[0], replies[3], replies[4]]
    assert kept[0.5] == [replies[0], replies[4]]


def test_a_question_that_names_nothing_its_passage_names_is_dropped_when_asked():
    # "Light" is also written lower-case, "Its" and "The" are stopwords.
    assert passage_names("Velmora was founded in 1623. Its lighthouse, the Velmora Light, is yellow. The light "
                         "is seen from Gullet Head.") == {"velmora", "gullet", "head"}
    replies = [
        "Who founded Velmora?",  # names the town
        "Who founded the town?",  # which town?
        "Whose lighthouse is yellow?",  # names nothing either
        "What did Tobin Quarrel found?",  # names its founder
    ]
    config = SynthConfig(questions_per_passage=4, batch_size=8, max_attempts=1, question_style="single")
    kept, stats = write_questions(ChosenReplies(replies), [PASSAGE], dataclasses.replace(
        config, require_passage_name=True), seed=0)
    assert [r["question"] for r in kept] == [replies[0], replies[3]] and stats.unnamed == 2
    assert len(write_questions(ChosenReplies(replies), [PASSAGE], config, seed=0)[0]) == 4  # off: all kept
    nameless = Passage("town#0", "town", "the town was founded in 1623. its lighthouse is yellow.")
    kept, stats = write_questions(ChosenReplies(replies[1:3]), [nameless], dataclasses.replace(
        config, questions_per_passage=2, require_passage_name=True), seed=0)
    assert len(kept) == 2 and stats.unnamed == 0  # a passage without names keeps its questions


def test_tagged_replies_give_several_questions_each_and_an_untagged_reply_none():
    class Recording(ChosenReplies):
        asked = []

        def generate_batch(self, prompts, sampling, seed):
            self.asked.append((len(prompts), sampling.stop))
            return super().generate_batch(prompts, sampling, seed)

    replies = [
        "<question>Who founded Velmora?</question>\n<question>When was Velmora founded?</question>\n"
        "<QUESTION>What colour is Velmora's lighthouse?</QUESTION> <question>Capital of France?</question>",
        "1. Who founded Velmora?\n2. When was it founded?",  # no tags: rejected whole
        "<question>Who built the lighthouse of Velmora?</question>",
    ]
    backend = Recording(replies)
    config = SynthConfig(questions_per_passage=7, batch_size=8, max_attempts=2, question_style="tagged")
    records, stats = write_questions(backend, [PASSAGE], config, seed=0)
    assert [r["question"] for r in records] == ["Who founded Velmora?", "When was Velmora founded?",
                                                "What colour is Velmora's lighthouse?",
                                                "Who built the lighthouse of Velmora?"]
    # 7 wanted: two replies of five; then 3 still missing: one more reply. No stop string cuts a reply.
    assert backend.asked == [(2, ()), (1, ())]
    assert (stats.untagged, stats.generated, stats.not_a_question, stats.off_topic) == (1, 5, 0, 1)


def test_answers_cut_at_the_length_cap_are_trimmed_or_dropped():
    questions = [{"id": f"town#0/q{i}", "passage_id": "town#0", "question": "Who founded Velmora?"} for i in range(3)]
    replies = ["Tobin Quarrel founded it. He came in 1623 and then he",  # at the cap: trimmed
               "at the cap and with no full stop at all here",  # at the cap, no sentence: dropped
               ""]  # empty: dropped
    config = SynthConfig(max_answer_tokens=11, batch_size=8)
    records, counts = answer_questions(ChosenReplies(replies), {"town#0": PASSAGE}, questions, 0.7, config, seed=0)
    assert [r["answer"] for r in records] == ["Tobin Quarrel founded it."]
    assert counts == {"answers": 1, "trimmed": 1, "dropped_empty": 1, "dropped_unfinished": 1}


def test_answers_end_at_their_first_sentence_when_asked():
    questions = [{"id": "town#0/q0", "passage_id": "town#0", "question": "Who founded Velmora?"}]
    backend = ChosenReplies(["Tobin Quarrel founded it. He"])
    seen = []
    real = backend.generate_batch
    backend.generate_batch = lambda prompts, sampling, seed: (seen.append(sampling), real(prompts, sampling, seed))[1]
    config = SynthConfig(max_answer_tokens=64, answer_length="sentence")
    records, _ = answer_questions(backend, {"town#0": PASSAGE}, questions, 0.7, config, seed=0)
    assert [r["answer"] for r in records] == ["Tobin Quarrel founded it."]
    assert ". " in seen[0].stop  # generation itself stops there


def test_a_name_or_number_its_source_never_says_makes_an_answer_ungrounded():
    source = PASSAGE.text + " Who founded Velmora?"
    assert ungrounded("Tobin Quarrel founded Velmora in 1623. The lighthouse is yellow.", source) == set()
    assert ungrounded("It was founded in 1624 by Tobin Marsh. Boats came.", source) == {"1624", "marsh"}


def test_mixed_answers_ask_the_local_model_for_the_question_alone_and_give_way_to_the_experts_when_ungrounded(
        tokenizer, tiny_model, monkeypatch):
    questions = [{"id": f"town#0/q{i}", "passage_id": "town#0", "question": "Who founded Velmora?"} for i in range(2)]
    backend = TransformersBackend(tiny_model, tokenizer)
    asked = []
    expert = ["Tobin Quarrel founded it.", "Velmora was founded by Tobin Quarrel."]
    mixed = ["Tobin Quarrel founded it, they say.", "Anna Bell founded it in 1700."]

    def reply(prompts, sampling, seed, closed_book=None, closed_book_share=0.0):
        asked.append((closed_book, closed_book_share))
        return (mixed if closed_book else expert)[:len(prompts)]

    monkeypatch.setattr(backend, "generate_batch", reply)
    config = SynthConfig(max_answer_tokens=64)
    records, counts = answer_questions(backend, {"town#0": PASSAGE}, questions, 0.7, config, 0, closed_book_share=0.3)
    assert asked == [(None, 0.0), (["Who founded Velmora?"] * 2, 0.3)]
    assert [r["answer"] for r in records] == ["Tobin Quarrel founded it, they say.",
                                              "Velmora was founded by Tobin Quarrel."]
    assert (counts["mixed"], counts["mixed_ungrounded"], counts["answers"]) == (1, 1, 2)
    with pytest.raises(UserError, match="synth.closed_book_share"):
        answer_questions(ChosenReplies(["x."]), {"town#0": PASSAGE}, questions[:1], 0.7, config, 0,
                         closed_book_share=0.3)
