"""Job state's fixed parts: its Redis key names and its Lua scripts shipped as package data."""

from __future__ import annotations

import pytest

from cutout_fleet.state.redis_keys import envelope_probe_keys, job_keys
from cutout_fleet.state.scripts import lua_source

SCRIPTS = ["claim", "begin_item", "record", "finalize", "unrecord_failed", "rebuild"]


def test_every_key_of_a_job_shares_its_cluster_hash_tag() -> None:
    # Given the keys of one job
    keys = job_keys("20260101-000000-abc123")

    # Then each carries the job id as its hash tag, so one script may touch them all on a cluster
    assert all("{20260101-000000-abc123}" in key for key in keys)
    assert len(set(keys)) == len(keys)


def test_the_envelope_probe_removes_its_queue_and_kombus_bindings() -> None:
    # Given a probe queue
    keys = envelope_probe_keys("cf:envelope-probe:1")

    # Then the cleanup names the queue and both binding sets kombu makes for it
    assert keys == [
        "cf:envelope-probe:1",
        "_kombu.binding.cf:envelope-probe:1",
        "_kombu.binding_permanent.cf:envelope-probe:1",
    ]


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_lua_script_loads_from_the_package(name: str) -> None:
    # When a script is read from the package
    source = lua_source(name)

    # Then it is Lua that returns a reply
    assert "return" in source and "KEYS[1]" in source
