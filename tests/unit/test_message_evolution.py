"""Messages can evolve during a rolling upgrade (rule in cutout_fleet/messages.py's docstring)."""

from __future__ import annotations

import pytest

from cutout_fleet.messages import MESSAGE_VERSION, InvalidMessage, NewerMessage, TaskMessage, parse_message
from cutout_fleet.options import ImageOptions


def _payload(**changes: object) -> dict[str, object]:
    message = TaskMessage(
        job_id="j1", source="s3://in/p/", out="s3://out/o", options=ImageOptions(), keys=["p/a.jpg"]
    )
    return {**message.model_dump(mode="json", exclude_defaults=True), **changes}


def test_an_optional_field_this_worker_does_not_know_is_ignored() -> None:
    message = parse_message(_payload(workflow="catalog-v2", canvas={"size": [2000, 2000]}))

    assert message.keys == ["p/a.jpg"]
    assert "canvas" not in message.model_dump()


def test_an_option_this_worker_does_not_know_is_ignored_and_the_known_ones_kept() -> None:
    message = parse_message(_payload(options={"model": "u2netp", "background": "white", "sharpen": 0.5}))

    assert message.options.background == "#ffffff"
    assert not hasattr(message.options, "sharpen")


def test_a_message_for_a_newer_worker_is_handed_back_not_refused() -> None:
    with pytest.raises(NewerMessage, match="upgrade this worker") as raised:
        parse_message(_payload(v=MESSAGE_VERSION + 1))

    # Handing back is a retry, never the permanent refusal of a malformed message
    assert not isinstance(raised.value, InvalidMessage)


def test_todays_producer_writes_plain_messages_that_every_worker_since_version_1_reads() -> None:
    payload = _payload()

    assert payload.get("v", 1) == 1  # no catalog option: a v1 worker of a rolling upgrade takes it
    assert parse_message(payload) == parse_message({**payload, "v": 1})
    assert MESSAGE_VERSION == 2
