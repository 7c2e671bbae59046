"""The LLM path of query understanding: a keyword expert names the skills a query needs.

Symbolic-MoE's recipe: ask the keyword model n times (sampled), keep the keywords that at
least ``min_count`` samples agree on (self-consistency), and map each onto the nearest skill
of the router's closed vocabulary. The result is a distribution over that vocabulary, which
the router blends with its fast-path estimate.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from dataclasses import dataclass

from experts.types import GenerationRequest, Message
from router._vocabulary import BUILTIN_SKILL_KEYWORDS

PROMPT = (
    "List the skills or knowledge areas needed to answer the question below, as 2 to 5 short keywords "
    "separated by commas. Reply with the keywords only.\n\nQuestion: {query}"
)
MIN_SIMILARITY = 0.6  # below this a keyword matches no vocabulary skill and is dropped
# a comma, semicolon or line break, or a list number "2."; a number only from its first digit, so a long run of
# digits is scanned once rather than from every digit in it
_SEPARATOR = re.compile(r"[,;\n]|(?<!\d)\d+\.")


@dataclass(frozen=True)
class KeywordResult:
    """Agreed keywords, what each maps to, and the resulting skill distribution."""

    keywords: list[str]
    mapping: dict[str, str | None]
    skills: dict[str, float]


class KeywordExtractor:
    """Builds the keyword requests and turns the sampled answers into skills of ``vocabulary``."""

    def __init__(self, vocabulary: list[str], samples: int = 3, min_count: int = 2, max_tokens: int = 48) -> None:
        if not 1 <= min_count <= samples:
            raise ValueError(f"min_count must be between 1 and samples ({samples}), got {min_count}")
        self.vocabulary = list(vocabulary)
        self.samples, self.min_count, self.max_tokens = samples, min_count, max_tokens

    def requests(self, query: str) -> list[GenerationRequest]:
        """``samples`` sampled requests (different seeds) for the keyword expert."""
        prompt = PROMPT.format(query=query[:4000])
        return [
            GenerationRequest([Message("user", prompt)], max_tokens=self.max_tokens, temperature=0.7, seed=seed)
            for seed in range(self.samples)
        ]

    def combine(self, answers: list[str]) -> KeywordResult:
        counts: Counter[str] = Counter()
        for answer in answers:
            counts.update(set(parse_keywords(answer)))  # a keyword counts once per sample
        agreed = sorted(keyword for keyword, count in counts.items() if count >= self.min_count)
        mapping = {keyword: self.nearest_skill(keyword) for keyword in agreed}
        mapped = Counter(skill for skill in mapping.values() if skill is not None)
        total = sum(mapped.values())
        skills = {skill: count / total for skill, count in mapped.most_common()} if total else {}
        return KeywordResult(agreed, mapping, skills)

    def nearest_skill(self, keyword: str) -> str | None:
        """The vocabulary skill whose name or lexical keywords best match ``keyword``."""
        best, best_score = None, 0.0
        for skill in self.vocabulary:
            names = [skill.replace("_", " "), *BUILTIN_SKILL_KEYWORDS.get(skill, [])]
            for name in names:
                score = 1.0 if name in keyword.split() or name == keyword else _similarity(keyword, name)
                if score > best_score:
                    best, best_score = skill, score
        return best if best_score >= MIN_SIMILARITY else None


def parse_keywords(answer: str) -> list[str]:
    """'Algebra, linear equations\\n- arithmetic' -> ['algebra', 'linear equations', 'arithmetic']."""
    pieces = _SEPARATOR.split(answer.lower())
    keywords = []
    for piece in pieces:
        cleaned = re.sub(r"[^a-z0-9+# ]", " ", piece)
        cleaned = re.sub(r"\s+", " ", cleaned).strip()
        if cleaned and len(cleaned) <= 40:
            keywords.append(cleaned)
    return keywords


def _similarity(left: str, right: str) -> float:
    return difflib.SequenceMatcher(None, left, right).ratio()
