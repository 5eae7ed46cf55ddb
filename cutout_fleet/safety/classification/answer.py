"""Reading the classifier's answer: `parse_answer` checks everything the gate relies on (types, ranges,
every domain, the attributes asked for), for answers that come from anywhere, grammar or not."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cutout_fleet.safety.classification.schema import (
    CATEGORIES,
    SAFETY_DOMAINS,
    check_attributes,
)


class MalformedAnswer(ValueError):
    """The model's answer does not fit the schema; the message says where, in a few words."""


@dataclass(frozen=True)
class Classification:
    """A checked answer: a score (0..1) and a reason per domain, the overall category, the attributes."""

    scores: dict[str, float]
    reasons: dict[str, str]
    category: str
    attributes: dict[str, str | list[str]]


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            # json keeps the last of two equal keys; an answer that says two things is not an answer
            raise MalformedAnswer(f"key {key!r} appears twice")
        found[key] = value
    return found


def _load(text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_object_pairs)
    except json.JSONDecodeError as exc:
        if exc.pos >= len(text.rstrip()):
            raise MalformedAnswer(f"not JSON: it ends early, at character {exc.pos}") from exc
        raise MalformedAnswer(f"not JSON: {exc.msg} at character {exc.pos}") from exc


def _member(parent: dict[str, Any], key: str, path: str) -> Any:
    if key not in parent:
        raise MalformedAnswer(f"{path} is missing")
    return parent[key]


def _as_object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedAnswer(f"{path} is {_type_name(value)}, not an object")
    return value


def _as_string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise MalformedAnswer(f"{path} is {_type_name(value)}, not a string")
    return value


def _as_score(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedAnswer(f"{path} is {_type_name(value)}, not a number")
    score = float(value)
    if not math.isfinite(score) or not 0.0 <= score <= 1.0:
        raise MalformedAnswer(f"{path} is {value!r}, not a number in 0..1")
    return score


def _attribute(value: Any, name: str) -> str | list[str]:
    path = f"attributes.{name}"
    if name != "colors":
        return _as_string(value, path)
    if not isinstance(value, list):
        raise MalformedAnswer(f"{path} is {_type_name(value)}, not an array")
    return [_as_string(item, f"{path}[{index}]") for index, item in enumerate(value)]


def parse_answer(text: str, attributes: Sequence[str] = ()) -> Classification:
    """The model's answer, checked, or MalformedAnswer naming the first problem.

    Checked: a JSON object (no key twice); every domain, with a finite score in 0..1 and a string
    reason; a known category; every requested attribute, typed.  Keys nobody asked for (extra domains,
    attributes not requested) are ignored: every key the gate reads is required and checked, so an extra
    one cannot change a decision, and refusing it would only turn a usable answer into a failed stage.
    Lengths and characters are not checked: they bound the model's time (the grammar enforces them), not
    the answer's meaning.
    """
    wanted = check_attributes(attributes)
    answer = _as_object(_load(text), "the answer")
    domains = _as_object(_member(answer, "domains", "domains"), "domains")
    scores: dict[str, float] = {}
    reasons: dict[str, str] = {}
    for name in SAFETY_DOMAINS:
        path = f"domains.{name}"
        domain = _as_object(_member(domains, name, path), path)
        reasons[name] = _as_string(_member(domain, "reason", f"{path}.reason"), f"{path}.reason")
        scores[name] = _as_score(_member(domain, "score", f"{path}.score"), f"{path}.score")
    category = _as_string(_member(answer, "category", "category"), "category")
    if category not in CATEGORIES:
        raise MalformedAnswer(f"category {category[:40]!r} is not one of {', '.join(CATEGORIES)}")
    found: dict[str, str | list[str]] = {}
    if wanted:
        given = _as_object(_member(answer, "attributes", "attributes"), "attributes")
        for name in wanted:
            found[name] = _attribute(_member(given, name, f"attributes.{name}"), name)
    return Classification(scores=scores, reasons=reasons, category=category, attributes=found)
