"""NudeNet's class labels, as its 3.4.2 detector names them (index = the model's class id).

The policy is checked against this list, so a misspelt label is refused at load instead of never
matching; a worker test checks that the installed `nudenet` has exactly these.
"""

from __future__ import annotations

NUDENET_LABELS: tuple[str, ...] = (
    "FEMALE_GENITALIA_COVERED",
    "FACE_FEMALE",
    "BUTTOCKS_EXPOSED",
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_BREAST_EXPOSED",
    "ANUS_EXPOSED",
    "FEET_EXPOSED",
    "BELLY_COVERED",
    "FEET_COVERED",
    "ARMPITS_COVERED",
    "ARMPITS_EXPOSED",
    "FACE_MALE",
    "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "ANUS_COVERED",
    "FEMALE_BREAST_COVERED",
    "BUTTOCKS_COVERED",
)

# The labels each stage can emit, where the set is closed; the policy refuses others for that stage.
STAGE_LABELS: dict[str, frozenset[str]] = {"nudenet": frozenset(NUDENET_LABELS)}
