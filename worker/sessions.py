"""Model sessions per process: created after fork, reused for every task, a small LRU for extras."""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Collection

from cutout_fleet.catalog import Catalog, verify_checksum
from cutout_fleet.config.settings import Settings
from cutout_fleet.errors import ConfigError
from cutout_fleet.worker.models.providers import check_gpu_providers, probe_providers, providers_for
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
            providers=providers_for(spec, worker),
            intra_op_threads=worker.intra_op_threads,
        )
        warning = check_gpu_providers(spec, session.providers, allow_cpu=worker.allow_cpu)
        if warning:
            log.warning("%s", warning)
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


def check_gpu_models(settings: Settings, catalog: Catalog, queues: Collection[str]) -> None:
    """Start-up check in the parent process, before any task: every pinned gpu model gets CUDA, unless
    CUTOUT_WORKER__ALLOW_CPU=true.  Each is loaded once in a child process to see what it really gets."""
    worker = settings.worker
    gpu_models = [catalog.get(name) for name in worker.models if catalog.get(name).queue == "gpu"]
    if settings.queues.gpu in queues and not gpu_models:
        log.warning(
            "this worker consumes the %s queue but CUTOUT_WORKER__MODELS names no gpu model: whether it gets "
            "CUDA is known only when a task first loads one",
            settings.queues.gpu,
        )
    if worker.allow_cpu:
        return  # each process logs the providers its sessions got, and a warning for a gpu model without CUDA
    for spec in gpu_models:
        got = probe_providers(
            spec,
            settings.model_dir,
            providers_for(spec, worker),
            intra_op_threads=worker.intra_op_threads,
        )
        check_gpu_providers(spec, got, allow_cpu=False)
        log.info("model %s gets providers %s", spec.name, got)
