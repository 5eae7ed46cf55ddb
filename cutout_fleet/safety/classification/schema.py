"""The classifier's answer, as a JSON schema: the domains, the bounds on every field, the token budget.

The runner turns `answer_schema` into a grammar, so even a weak model can only write an answer of this
shape, and a short one: every string and array is bounded, strings admit only printable ASCII without
quotes or backslashes (one character, at most one token, never an escape), and a score is one of the values
in `SCORE_VALUES`.  `max_answer_tokens` is then a hard bound.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

SAFETY_DOMAINS: tuple[str, ...] = (
    "sexual",
    "violence",
    "weapons",
    "drugs",
    "hate_symbols",
    "self_harm",
    "minors",
)
CATALOG_ATTRIBUTES: tuple[str, ...] = ("product_type", "colors", "material")
# The overall category: the photo is safe, belongs to one domain, or is unsafe for another reason.
CATEGORIES: tuple[str, ...] = ("safe", *SAFETY_DOMAINS, "other")

# What each domain covers, as the model is told (keep the order of SAFETY_DOMAINS).
DOMAIN_GUIDE: dict[str, str] = {
    "sexual": "nudity, sexual activity, or clothing or poses presented in a sexual way",
    "violence": "injury, blood, gore, fighting, or cruelty to people or animals",
    "weapons": "firearms, ammunition, explosives, or knives and other blades made to hurt people",
    "drugs": "illegal drugs, drug paraphernalia, or misuse of medicines",
    "hate_symbols": "symbols, gestures or text of hate groups or extremist ideologies",
    "self_harm": "self-injury, suicide, or content that encourages them",
    "minors": "a child or a teenager appears in the photo, whatever the context",
}

# Bounds on the answer: they bound the model's output in tokens, hence its time.
MAX_REASON_CHARS = 100  # one short sentence per domain
MAX_PRODUCT_TYPE_CHARS = 40
MAX_COLORS = 4
MAX_COLOR_CHARS = 20
MAX_MATERIAL_CHARS = 40

# What each catalog attribute asks for, as the model is told.
ATTRIBUTE_GUIDE: dict[str, str] = {
    "product_type": "what the product is, in one to three words (e.g. handbag, running shoe)",
    "colors": f"its main colors, at most {MAX_COLORS}, one word each",
    "material": "what it is mostly made of (e.g. leather, cotton, steel)",
}
EXAMPLE_ATTRIBUTES: dict[str, str | list[str]] = {
    "product_type": "...",
    "colors": ["..."],
    "material": "...",
}

# A score is one of these values, not a free number: llama.cpp's schema converter ignores minimum and
# maximum, but an enum becomes a grammar rule, so the model cannot write a score outside 0..1.  Steps of
# 0.05 are finer than the policy's thresholds (set in tenths); measured with a 128k-token vocabulary, the
# grammar costs the same per token as for a free number.
SCORE_STEPS = 20
SCORE_VALUES: tuple[float, ...] = tuple(
    int(step / SCORE_STEPS) if step % SCORE_STEPS == 0 else round(step / SCORE_STEPS, 2)
    for step in range(SCORE_STEPS + 1)
)
# Printable ASCII without `"` and `\`, so a character of an answer string is one byte (at most one token)
# and never a JSON escape.  A regex, because llama.cpp's schema converter bounds a string's characters
# only through `pattern`; `maxLength` is kept beside it for readers of the schema.
TEXT_CHARS = r"[A-Za-z0-9 ,.;:!?'()/&+%#-]"

# Bounds on the prompt: a long caption or a crowd of detections must not fill the model's context.
MAX_CAPTION_CHARS = 1000
MAX_PROMPT_DETECTIONS = 20
MAX_LABEL_CHARS = 40
DETECTION_SCORE_DECIMALS = 3  # a detector's confidence, as the prompt shows it

# A JSON grammar from llama.cpp's schema converter allows at most one space after each JSON token
# (`space ::= " "?`), and the model ends its turn with one more token.
SPACES_PER_JSON_TOKEN = 1
END_OF_TURN_TOKENS = 1


def _text(max_chars: int) -> dict[str, Any]:
    return {"type": "string", "maxLength": max_chars, "pattern": f"^{TEXT_CHARS}{{0,{max_chars}}}$"}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _attribute_schema(name: str) -> dict[str, Any]:
    if name == "colors":
        return {"type": "array", "items": _text(MAX_COLOR_CHARS), "maxItems": MAX_COLORS}
    return _text(MAX_PRODUCT_TYPE_CHARS if name == "product_type" else MAX_MATERIAL_CHARS)


def _domain_schema() -> dict[str, Any]:
    return _object(
        {
            "reason": _text(MAX_REASON_CHARS),
            "score": {"type": "number", "minimum": 0, "maximum": 1, "enum": list(SCORE_VALUES)},
        }
    )


def check_attributes(attributes: Sequence[str]) -> tuple[str, ...]:
    """`attributes` as a tuple, or ValueError naming one that is not in CATALOG_ATTRIBUTES."""
    for name in attributes:
        if name not in CATALOG_ATTRIBUTES:
            raise ValueError(
                f"unknown catalog attribute {name!r}; choose from {', '.join(CATALOG_ATTRIBUTES)}"
            )
    return tuple(dict.fromkeys(attributes))


def answer_schema(attributes: Sequence[str] = ()) -> dict[str, Any]:
    """The JSON schema of an answer; `attributes` (from CATALOG_ATTRIBUTES) adds an `attributes` object.

    Within a domain the reason comes before the score, and the category after every domain: the model
    writes its grounds before its number, which makes a small model's numbers steadier.
    """
    wanted = check_attributes(attributes)
    properties: dict[str, Any] = {
        "domains": _object({name: _domain_schema() for name in SAFETY_DOMAINS}),
        "category": {"type": "string", "enum": list(CATEGORIES)},
    }
    if wanted:
        properties["attributes"] = _object({name: _attribute_schema(name) for name in wanted})
    return _object(properties)


def _longest_answer(attributes: Sequence[str]) -> dict[str, Any]:
    longest_score = max(SCORE_VALUES, key=lambda value: len(json.dumps(value)))
    answer: dict[str, Any] = {
        "domains": {
            name: {"reason": "x" * MAX_REASON_CHARS, "score": longest_score} for name in SAFETY_DOMAINS
        },
        "category": max(CATEGORIES, key=len),
    }
    longest_attributes: dict[str, Any] = {
        "product_type": "x" * MAX_PRODUCT_TYPE_CHARS,
        "colors": ["x" * MAX_COLOR_CHARS] * MAX_COLORS,
        "material": "x" * MAX_MATERIAL_CHARS,
    }
    wanted = check_attributes(attributes)
    if wanted:
        answer["attributes"] = {name: longest_attributes[name] for name in wanted}
    return answer


def _json_tokens(value: Any) -> int:
    """How many JSON tokens (punctuation, keys, scalars) `value` serialises to."""
    if isinstance(value, dict):
        # braces, and per member: key, colon, value, and the comma before all but the first
        return 2 + sum(2 + _json_tokens(item) for item in value.values()) + max(len(value) - 1, 0)
    if isinstance(value, list):
        return 2 + sum(_json_tokens(item) for item in value) + max(len(value) - 1, 0)
    return 1


def max_answer_tokens(attributes: Sequence[str] = ()) -> int:
    """A `max_tokens` that always fits the longest answer `answer_schema(attributes)` allows.

    Derivation: the grammar admits only ASCII in answers (strings by `TEXT_CHARS`, numbers from
    `SCORE_VALUES`, names and punctuation from the schema), and a token is at least one byte, so an answer
    of n characters is at most n tokens.  The longest answer has every string at its maximum length, every
    array full and the longest score and category; compact, plus one space after each JSON token (all the
    whitespace the grammar allows), plus the end-of-turn token, which llama.cpp counts against the limit.
    """
    longest = _longest_answer(attributes)
    compact_chars = len(json.dumps(longest, separators=(",", ":")))
    return compact_chars + SPACES_PER_JSON_TOKEN * _json_tokens(longest) + END_OF_TURN_TOKENS
