"""Model sessions per process: created after fork, reused for every task, a small LRU for extras."""

from __future__ import annotations

import logging
import os
from collections import OrderedDict

from cutout_fleet.catalog import Catalog, verify_checksum
from cutout_fleet.config.settings import Settings
from cutout_fleet.errors import ConfigError
from cutout_fleet.worker.models.runner import ModelSession, missing_model_message

log = logging.getLogger(__name__)


class SessionPool:
    """Owns this process's model sessions.  Models in `settings.worker.models` are never evicted."""

    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        self.settings = settings
        self.catalog = catalog
        self.pinned = set(settings.worker.models)
        self._sessions: OrderedDict[str, ModelSession] = OrderedDict()
        self._pid = os.getpid()

    def get(self, name: str) -> ModelSession:
        if os.getpid() != self._pid:
            # Sessions must never cross a fork: onnxruntime's thread pools do not survive it.
            self._sessions.clear()
            self._pid = os.getpid()
        session = self._sessions.get(name)
        if session is None:
            session = self._load(name)
        self._sessions.move_to_end(name)
        return session

    def _load(self, name: str) -> ModelSession:
        spec = self.catalog.get(name)
        worker = self.settings.worker
        session = ModelSession(
            spec,
            self.settings.model_dir,
            providers=worker.providers,
            intra_op_threads=worker.intra_op_threads,
        )
        self._sessions[name] = session
        extras = [n for n in self._sessions if n not in self.pinned]
        while extras and len(extras) > worker.max_sessions:
            evicted = extras.pop(0)
            del self._sessions[evicted]
            log.info("evicted model session %s", evicted)
        return session

    def warm_up(self) -> None:
        for name in self.settings.worker.models:
            self.get(name)


def check_models_installed(settings: Settings, catalog: Catalog) -> None:
    """Start-up check in the parent process: every pinned model exists and matches its checksum."""
    for name in settings.worker.models:
        spec = catalog.get(name)
        path = spec.path_in(settings.model_dir)
        if not path.is_file():
            raise ConfigError(missing_model_message(spec, path))
        verify_checksum(spec, path, str(path))
