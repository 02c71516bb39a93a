import pytest

from promptdistill.synth import clean_question, content_words, last_full_sentence, normalise_question


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
