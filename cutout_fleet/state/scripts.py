"""The job store's Lua scripts: one `.lua` file each, beside this module, registered once per client.

Each script is one atomic step of the accounting (claim, begin, record, finalize, unrecord, rebuild);
its header comment names its KEYS, ARGV and reply.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import redis
from redis.commands.core import Script

_PACKAGE = "cutout_fleet.state"  # the .lua files ship as its package data


def lua_source(name: str) -> str:
    """The text of `name.lua` from this package (works from a wheel as from a checkout)."""
    return resources.files(_PACKAGE).joinpath(f"{name}.lua").read_text(encoding="utf-8")


@dataclass(frozen=True)
class JobScripts:
    claim: Script
    begin_item: Script
    record: Script
    finalize: Script
    unrecord_failed: Script
    rebuild: Script

    @classmethod
    def register(cls, client: redis.Redis) -> JobScripts:
        # register_script sends nothing yet: each script is loaded by EVALSHA's first NOSCRIPT fallback.
        return cls(
            claim=client.register_script(lua_source("claim")),
            begin_item=client.register_script(lua_source("begin_item")),
            record=client.register_script(lua_source("record")),
            finalize=client.register_script(lua_source("finalize")),
            unrecord_failed=client.register_script(lua_source("unrecord_failed")),
            rebuild=client.register_script(lua_source("rebuild")),
        )
