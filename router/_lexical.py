"""Fast lexical skill scoring: which of the pool's skills does a query need?

The scorer counts keyword and phrase hits per skill (phrases count more, a visible
arithmetic expression counts as math) and normalises the counts into a distribution over
the pool's skills. It runs in microseconds and explains itself: every score comes with the
words that produced it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from router._vocabulary import BUILTIN_SKILL_KEYWORDS

_WORD = re.compile(r"[a-z0-9+#]+(?:'[a-z]+)?")
_ARITHMETIC = re.compile(r"\d\s*[-+*/^=×÷]\s*\d|\\frac|\\sqrt|\$[^$]+\$")


@dataclass(frozen=True)
class SkillEstimate:
    """The query's need per skill (sums to 1 when any evidence was found) and the evidence."""

    scores: dict[str, float]
    evidence: dict[str, list[str]] = field(default_factory=dict)

    @property
    def found_any(self) -> bool:
        return bool(self.scores)

    def top(self) -> str | None:
        return max(self.scores, key=self.scores.__getitem__) if self.scores else None

    def blended(self, hint: dict[str, float], label: str, weight: float = 0.5) -> SkillEstimate:
        """Mix in another estimate of the skills (e.g. the keyword expert's); evidence keeps both."""
        if not hint:
            return self
        own = weight if self.scores else 0.0
        skills = set(self.scores) | set(hint)
        scores = {s: (1 - own) * hint.get(s, 0.0) + own * self.scores.get(s, 0.0) for s in skills}
        total = sum(scores.values())
        evidence = {**self.evidence}
        for skill in hint:
            evidence[skill] = [*evidence.get(skill, []), label]
        return SkillEstimate({s: v / total for s, v in scores.items() if v > 0}, evidence)


class LexicalSkillScorer:
    """Scores queries against a closed vocabulary of skills."""

    def __init__(self, skills: list[str], extra_keywords: dict[str, list[str]] | None = None) -> None:
        self.keywords: dict[str, list[str]] = {}
        extra = extra_keywords or {}
        for skill in dict.fromkeys(skills):  # keep order, drop repeats
            words = BUILTIN_SKILL_KEYWORDS.get(skill, []) + extra.get(skill, [])
            if not words:
                words = [skill.replace("_", " ")]
            self.keywords[skill] = [word.lower() for word in words]

    @property
    def skills(self) -> list[str]:
        return list(self.keywords)

    def score(self, text: str) -> SkillEstimate:
        lowered = text.lower()
        words = set(_WORD.findall(lowered))
        raw: dict[str, float] = {}
        evidence: dict[str, list[str]] = {}
        for skill, keywords in self.keywords.items():
            hits = [kw for kw in keywords if (kw in words if " " not in kw else _has_phrase(lowered, kw))]
            weight = sum(1.5 if " " in kw else 1.0 for kw in hits)
            if skill == "math" and _ARITHMETIC.search(text):
                hits.append("<arithmetic expression>")
                weight += 2.0
            if weight > 0:
                raw[skill] = weight
                evidence[skill] = hits
        total = sum(raw.values())
        return SkillEstimate({skill: weight / total for skill, weight in raw.items()} if total else {}, evidence)


def _has_phrase(text: str, phrase: str) -> bool:
    return re.search(r"(?<![a-z0-9])" + re.escape(phrase) + r"(?![a-z0-9])", text) is not None
