"""Final-answer extraction on tricky texts."""

from __future__ import annotations

import pytest

from aggregator._extract import extract_choice, extract_exact, extract_number, is_correct, strip_reasoning


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("The answer is (C).", "C"),
        ("Answer: D", "D"),
        ("The answer is **E**", "E"),
        ("Because of this, A. Then again (B)", "B"),  # the parenthesised letter is the commitment
        ("the answer is a fraction", None),  # 'a' is an article, not option A
        ("Absolutely, Bob Dylan", None),  # letters inside words never count
        ("I think so", None),  # 'I' alone is the pronoun
        ("<think>maybe A</think> The answer is (F)", "F"),
        ("", None),
    ],
)
def test_choice(text: str, letter: str | None) -> None:
    assert extract_choice(text) == letter


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("so the total is 1,234.50 dollars", "1234.5"),
        ("First 3, then \\boxed{42}, then 7", "42"),
        ("The answer is 3/4", "3/4"),
        ("It is -12.0 degrees", "-12"),
        ("Answer: 15 apples, from 3 baskets", "15"),
        ("no digits here", None),
    ],
)
def test_number(text: str, number: str | None) -> None:
    assert extract_number(text) == number


def test_exact_and_grading() -> None:
    assert extract_exact("Let me think.\nAnswer: Paris.") == "paris"
    assert extract_exact("Rome\n\n") == "rome"
    assert extract_exact("   ") is None
    assert is_correct("exact", "paris", " Paris ")
    assert is_correct("exact", extract_exact("The capital of France is Paris."), "Paris")
    assert not is_correct("exact", extract_exact("Parisian cafes are lovely."), "Paris")  # whole words only
    assert not is_correct("exact", extract_exact("It is not Rome, " + "and so on " * 5 + "but Paris"), "Paris")
    assert is_correct("number", "1234.5", "1,234.50")
    assert is_correct("choice", "C", "c")
    assert not is_correct("choice", None, "C")
    assert strip_reasoning("<THINK>x</THINK>y") == "y"


def test_free_text_and_every_answer_kind_has_one_extractor() -> None:
    from aggregator._extract import EXTRACTORS, extract_text
    from experts.types import AnswerKind

    assert extract_text("<think>hmm</think> Blue whales.") == extract_text("blue whales") == "blue whales"
    assert extract_text("<think>only thinking</think>") is None
    assert set(EXTRACTORS) == set(AnswerKind)
    assert EXTRACTORS["choice"] is EXTRACTORS[AnswerKind.CHOICE]  # pool files and data sets name kinds as text
    with pytest.raises(TypeError):
        EXTRACTORS["yesno"] = extract_text  # type: ignore[index]  # a closed set: no process-wide registry


def test_a_pool_file_names_an_unknown_answer_kind() -> None:
    from experts.config import PoolFileError, parse_pool

    document = {
        "name": "p",
        "experts": [{"name": "e", "backend": "echo", "model": "m"}],
        "aggregation": {"answer_kind": "colour"},
    }
    with pytest.raises(PoolFileError, match="aggregation.answer_kind") as raised:
        parse_pool(document, "pool.yaml")
    assert "choice" in str(raised.value) and "auto" in str(raised.value)


@pytest.mark.parametrize(
    ("question", "answers", "kind"),
    [
        ("Which is a mammal?\n(A) shark\n(B) whale", ["b", "c"], "choice"),
        ("Which is a mammal?\nA. shark\nB. whale\nC. trout", ["x", "y"], "choice"),
        ("How many legs do 3 cats have?", ["So \\boxed{12}", "The answer is 12."], "number"),
        ("How many legs do 3 cats have?", ["So \\boxed{12}", "Twelve, I think"], "text"),
        ("Capital of France?", ["Answer: Paris", "Final answer: paris"], "exact"),
        ("Write a haiku about rain.", ["Rain on the roof...", "Grey sky weeps"], "text"),
        ("A. Lincoln was president when?", ["1861", "1861"], "text"),  # one 'A.' is not a list of options
    ],
)
def test_answer_kind_is_inferred(question: str, answers: list[str], kind: str) -> None:
    from aggregator._extract import infer_answer_kind

    assert infer_answer_kind(question, answers) == kind
