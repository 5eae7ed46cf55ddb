"""The structure ARCHITECTURE.md describes holds: no import cycles, nothing runs at import time.

The layer rules themselves are the import contract in pyproject.toml, checked by `lint-imports` in CI.
"""

from __future__ import annotations

import os
import subprocess
import sys

import grimp


def test_no_first_party_module_imports_itself_through_others() -> None:
    # Given the import graph of the whole package (worker, producer and config by their import names)
    graph = grimp.build_graph("cutout_fleet")

    # When every direct import is followed back
    cycles = [
        (module, imported)
        for module in sorted(graph.modules)
        for imported in graph.find_modules_directly_imported_by(module)
        if graph.find_shortest_chain(imported, module)
    ]

    # Then no chain leads back: there is no import loop anywhere
    assert cycles == []
    assert "cutout_fleet.worker.tasks" in graph.modules and "cutout_fleet.producer.enqueue" in graph.modules


def test_importing_the_worker_with_bad_settings_neither_exits_nor_reads_them() -> None:
    # Given settings that do not validate
    env = {**os.environ, "CUTOUT_ITEMS_PER_TASK": "not-a-number"}

    # When the worker's Celery app and tasks are imported (as `celery -A` and tools do)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import cutout_fleet.worker.tasks, cutout_fleet.worker.celery_app; print('ok')",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    # Then the import succeeds: settings are read when Celery first needs its configuration
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_the_worker_app_reports_bad_settings_by_name_when_it_needs_them() -> None:
    env = {**os.environ, "CUTOUT_ITEMS_PER_TASK": "not-a-number"}
    code = "from cutout_fleet.worker.celery_app import app\napp.conf.broker_url"

    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)

    assert result.returncode != 0
    assert "CUTOUT_ITEMS_PER_TASK" in result.stderr
