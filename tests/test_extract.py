"""Final-answer extraction on tricky texts."""

from __future__ import annotations

import pytest

from aggregator.extract import extract_choice, extract_exact, extract_number, is_correct, strip_reasoning


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
