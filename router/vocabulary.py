"""The built-in lexical evidence for common skills.

Each skill maps to words and phrases whose presence in a query suggests the skill is
needed. A pool file adds its own (``skill_keywords``); a declared skill with no keywords
at all is recognised by its own name. Router v1 is deliberately simple and transparent:
the router issue replaces it with classifiers trained on labelled data.
"""

from __future__ import annotations

BUILTIN_SKILL_KEYWORDS: dict[str, list[str]] = {
    "math": [
        "math", "calculate", "compute", "solve", "equation", "integral", "derivative", "sum", "product",
        "probability", "percent", "percentage", "average", "mean", "median", "algebra", "geometry",
        "arithmetic", "number", "numbers", "prime", "fraction", "square root", "multiply", "divide",
        "plus", "minus", "times", "how many", "how much", "theorem", "proof", "triangle", "area", "volume",
    ],
    "code": [
        "code", "program", "programming", "function", "python", "javascript", "typescript", "java", "rust",
        "golang", "c++", "sql", "query", "bug", "debug", "error", "exception", "compile", "script", "regex",
        "algorithm", "class", "method", "api", "json", "implement", "refactor", "unit test", "stack trace",
    ],
    "writing": [
        "write", "essay", "poem", "story", "haiku", "rewrite", "rephrase", "summarize", "summarise",
        "summary", "email", "letter", "paragraph", "tone", "draft", "edit", "proofread", "grammar",
        "slogan", "title", "blog", "translate", "style",
    ],
    "general_knowledge": [
        "who", "when", "where", "history", "capital", "country", "city", "president", "war", "invented",
        "discovered", "born", "famous", "geography", "population", "language", "science", "biology",
        "chemistry", "physics", "planet", "animal", "why", "what is", "explain", "define", "meaning",
    ],
}
