"""The safety classifier's question and answer, pure: the answer's JSON schema, the prompt, the parser.

The classifier (an instruction-tuned LLM, `cutout_fleet.worker.safety.classifier`) reads what the other
stages saw in the photo (the caption, the detector's labels) and scores every safety domain 0..1.  The
runner turns `answer_schema` into a grammar, so even a weak model can only write an answer of this shape,
and a short one: every string and array is bounded, strings admit only printable ASCII without quotes or
backslashes (one character, at most one token, never an escape), and a score is one of the values in
`SCORE_VALUES`.  `max_answer_tokens` is then a hard bound, and `parse_answer` checks what the gate relies
on, for answers that come from anywhere.

The caption and the labels are untrusted: text in a photo can be written to steer the model.  They reach it
only as one JSON document between `<data>` markers, with `<` and `>` escaped, so they can neither close the
block nor spell a chat-template control token such as `<|eot_id|>`.
"""

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
