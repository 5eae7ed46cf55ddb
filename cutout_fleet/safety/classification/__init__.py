"""The safety classifier's question and answer, pure: `schema` (the answer's JSON schema and token
budget), `prompt` (what the other stages saw, quoted as data) and `answer` (`parse_answer`).  The runner
is `cutout_fleet.worker.safety.classifier`."""

from cutout_fleet.safety.classification.answer import Classification, MalformedAnswer, parse_answer
from cutout_fleet.safety.classification.prompt import prompt_messages
from cutout_fleet.safety.classification.schema import (
    CATALOG_ATTRIBUTES,
    CATEGORIES,
    MAX_CAPTION_CHARS,
    MAX_COLORS,
    MAX_PROMPT_DETECTIONS,
    MAX_REASON_CHARS,
    SAFETY_DOMAINS,
    SCORE_VALUES,
    answer_schema,
    check_attributes,
    max_answer_tokens,
)

__all__ = [
    "CATALOG_ATTRIBUTES",
    "CATEGORIES",
    "MAX_CAPTION_CHARS",
    "MAX_COLORS",
    "MAX_PROMPT_DETECTIONS",
    "MAX_REASON_CHARS",
    "SAFETY_DOMAINS",
    "SCORE_VALUES",
    "Classification",
    "MalformedAnswer",
    "answer_schema",
    "check_attributes",
    "max_answer_tokens",
    "parse_answer",
    "prompt_messages",
]
