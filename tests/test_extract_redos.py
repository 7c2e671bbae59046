"""Text a client or an expert controls cannot make answer extraction backtrack for seconds (issue 27).

Each pathological input below is sized so the patterns these replaced took many seconds on it (measured once,
on a 2-core machine: the time is in each test's comment); the bound asserted is generous.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from aggregator._extract import (
    MAX_EXTRACT_CHARS,
    OPTION_WINDOW_CHARS,
    extract_choice,
    extract_number,
    infer_answer_kind,
    option_letters,
    strip_reasoning,
)
from aggregator._synthesize import parse_rank
from experts.types import AnswerKind
from router._keywords import parse_keywords

QUICK_S = 1.0  # generous: each input below takes milliseconds now

Result = TypeVar("Result")


def timed(work: Callable[[], Result]) -> tuple[Result, float]:
    started = time.perf_counter()
    result = work()
    return result, time.perf_counter() - started


def test_a_question_of_blank_lines_is_read_in_linear_time() -> None:
    # the old line-start pattern's \s* crossed newlines, so every line start rescanned the rest: 11 s
    question = "\n " * 15_000 + "\nWhich one? (A) shark (B) whale"
    kind, seconds = timed(lambda: infer_answer_kind(question, ["a whale"]))
    assert kind == AnswerKind.CHOICE and seconds < QUICK_S


def test_an_answer_with_a_long_run_of_spaces_after_answer_is_read_in_linear_time() -> None:
    # three adjacent \s* around optional words: cubic in the spaces, 19 s
    text = "The answer is (C).\nanswer" + " " * 1_200 + "x"
    letter, seconds = timed(lambda: extract_choice(text))
    assert letter == "C" and seconds < QUICK_S


def test_many_unclosed_think_tags_are_stripped_in_linear_time() -> None:
    # <think>.*?</think> rescanned the rest of the text from every unclosed tag: 16 s
    text = "<think>" * 20_000
    stripped, seconds = timed(lambda: strip_reasoning(text))
    assert stripped == text and seconds < QUICK_S  # an unclosed trace is kept, as before


def test_closed_traces_are_stripped_around_unclosed_ones() -> None:
    text = "<think>a</think>keep <THINK>b</Think>this<think>" + "<think>" * 10_000 + " (B)"
    stripped, seconds = timed(lambda: strip_reasoning(text))
    assert stripped == "keep this" + "<think>" * 10_001 + " (B)" and seconds < QUICK_S


def test_a_judges_reply_with_a_long_run_of_spaces_is_parsed_in_linear_time() -> None:
    # four adjacent \s* around optional words: quartic in the spaces, 7 s for 250 of them
    reply = "best" + " " * 250 + "x. Best: 2"
    picked, seconds = timed(lambda: parse_rank(reply, 3))
    assert picked == 1 and seconds < QUICK_S


def test_a_keyword_answer_of_digits_is_split_in_linear_time() -> None:
    # \d+\. was tried from every digit of a run without a dot: quadratic, 12 s
    answer = "algebra, " + "9" * 50_000 + ", geometry"
    keywords, seconds = timed(lambda: parse_keywords(answer))
    assert keywords == ["algebra", "geometry"] and seconds < QUICK_S
    assert parse_keywords("1. algebra 2. geometry") == ["algebra", "geometry"]  # list numbers still split


def test_megabytes_of_pathological_text_are_still_quick() -> None:
    """Far past every bound: the patterns are linear, and the extractors read only an answer's end."""
    answer = "answer" + " " * 1_000_000 + "x\n" + "\n " * 500_000 + "The answer is (D)."
    letter, seconds = timed(lambda: extract_choice(answer))
    assert letter == "D" and seconds < QUICK_S
    question = "\n " * 500_000 + "\n(A) one\n(B) two"
    kind, seconds = timed(lambda: infer_answer_kind(question, [answer]))
    assert kind == AnswerKind.CHOICE and seconds < QUICK_S


def test_extractors_read_the_end_of_an_answer_only() -> None:
    filler = "More reasoning follows here. " * (MAX_EXTRACT_CHARS // 10)
    assert extract_choice("The answer is (C). " + filler) is None  # stated before the last MAX_EXTRACT_CHARS
    assert extract_choice("The answer is (C). " + filler[: MAX_EXTRACT_CHARS // 2]) == "C"
    assert extract_choice(filler + "The answer is (C).") == "C"
    # reasoning is stripped before the end is taken: a long trace cannot push the answer out
    assert extract_choice("<think>" + filler + "</think>The answer is (E).") == "E"


def test_the_cut_never_makes_part_of_a_number_a_number() -> None:
    short = "1234567 " + "z" * 100
    assert extract_number(short) == "1234567"
    cut = "1234567 " + "z" * (MAX_EXTRACT_CHARS - 4)  # the last MAX_EXTRACT_CHARS start inside the number
    assert extract_number(cut) is None  # not "567"


def test_options_are_found_at_the_start_and_at_the_end_of_a_long_question() -> None:
    passage = "A long passage, line after line.\n" * (OPTION_WINDOW_CHARS // 10)
    options = "Which is a mammal?\n(A) shark\n(B) whale\n"
    assert infer_answer_kind(options + passage, []) == AnswerKind.CHOICE
    assert infer_answer_kind(passage + options, []) == AnswerKind.CHOICE
    assert infer_answer_kind(passage + options + passage, []) == AnswerKind.TEXT  # beyond both windows


def test_a_window_that_starts_mid_line_does_not_make_a_line_start() -> None:
    end = "A. lost half of a line\nB. a real option line\n"
    end += "." * (OPTION_WINDOW_CHARS - len(end))
    question = "filler line\n" * OPTION_WINDOW_CHARS + "x" + end  # the end window starts right at "A."
    assert option_letters(question) == ["B"]  # "xA." is no option line, though the window starts at its "A"
    assert infer_answer_kind(question, []) == AnswerKind.TEXT


def test_option_lines_in_the_usual_layouts() -> None:
    for question in (
        "Q?\n(A) x\n(B) y",
        "Q?\nA. x\nB. y",
        "Q?\n  A) x\n\tB) y",
        "Q?\r\nA: x\r\nB: y\r\n",
        "Q?\nA.\nParis\nB.\nLondon",  # the option's text on the next line, as before
        "Q?\n\n\n   (A) x\n\n\n   (B) y",
    ):
        assert infer_answer_kind(question, []) == AnswerKind.CHOICE, question
    assert infer_answer_kind("Q?\nA x\nB y", ["1"]) == AnswerKind.TEXT
