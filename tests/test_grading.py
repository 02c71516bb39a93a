import pytest

from promptdistill.evaluate import contains, grade, normalise_answer, summarise, token_f1


def test_squad_normalisation():
    assert normalise_answer("The  Velmora-Lighthouse!") == "velmoralighthouse"
    assert normalise_answer("An Apple, a day") == "apple day"


def test_containment_is_by_whole_words():
    assert contains("It was founded in 1623 by Tobin.", "1623")
    assert contains("Founded by Tobin Quarrel.", "tobin quarrel")
    assert not contains("It was built in 1846.", "6")
    assert not contains("A bowl of stew.", "owl")


def test_substring_containment_is_the_official_codes():
    assert contains("It was built in 1846.", "6", "substring")
    assert contains("A bowl of stew.", "owl", "substring")
    assert contains("The Velmora-Lighthouse!", "velmoralighthouse", "substring")
    assert not contains("It was built in 1846.", "1623", "substring")
    assert grade("built in 1846", ["6"], "substring")["contains"] == 1.0
    assert grade("built in 1846", ["6"])["contains"] == 0.0


def test_grade_takes_the_best_accepted_answer():
    grades = grade("Saffron yellow", ["yellow", "saffron yellow"])
    assert grades == {"contains": 1.0, "em": 1.0, "f1": 1.0}
    assert token_f1("painted saffron yellow", "yellow") == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))
    assert grade("no idea", ["1623"]) == {"contains": 0.0, "em": 0.0, "f1": 0.0}


def test_summary_in_percent():
    records = [{"contains": 1.0, "em": 0.0, "f1": 0.5}, {"contains": 0.0, "em": 0.0, "f1": 0.0}]
    assert summarise(records) == {"contains": 50.0, "em": 0.0, "f1": 25.0}
