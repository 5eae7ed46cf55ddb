"""The image pipeline in a child process, so that an item stuck in native code can be stopped.

`cutout run` has no Celery pool to enforce the fleet's time limits, and Python cannot interrupt
onnxruntime or an image decoder inside the process that runs them: only ending that process stops
them.  `IsolatedCutter` keeps one child process, which holds the model sessions (loaded once, reused
by every item), and sends it each item's bytes.  An item still running at its hard time limit has its
child killed and fails with `timeout`; one that kills the child fails with `poison`.  The next item
starts a new child.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import pickle
import signal
import sys
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkContext, SpawnContext
from multiprocessing.process import BaseProcess
from types import TracebackType

from cutout_fleet.catalog import load_catalog
from cutout_fleet.config.settings import ImageLimits, Settings
from cutout_fleet.errors import ConfigError, ModelError, PermanentError
from cutout_fleet.options import ImageOptions
from cutout_fleet.safety import NO_SAFETY
from cutout_fleet.worker.pipeline import Cutout, Timings, make_cutout
from cutout_fleet.worker.safety.stages import SafetyStages
from cutout_fleet.worker.sessions import SessionPool

log = logging.getLogger(__name__)

# How long a child that was asked to leave may take before it is killed.
CHILD_EXIT_S = 5.0
PR_SET_PDEATHSIG = 1  # prctl(2): the signal the kernel sends this process when its parent dies


class ItemTimedOut(PermanentError):
    """The item ran past its hard time limit: its process was killed."""

    code = "timeout"


class CutterDied(PermanentError):
    """Processing the item killed the process (a crash in native code, or the kernel's OOM killer)."""

    code = "poison"


@dataclass
class _Child:
    process: BaseProcess
    conn: Connection


class IsolatedCutter:
    """A `Cutter` (worker/pipeline.py) that runs `make_cutout` in one reused child process.

    `hard_limit_s` bounds each item, from the moment its bytes are handed over until its cutout comes
    back; loading the model when a child starts does not count.  Use it as a context manager: leaving
    it ends the child.
    """

    def __init__(self, settings: Settings, hard_limit_s: float) -> None:
        self.settings = settings
        self.hard_limit_s = hard_limit_s
        self._context = _process_context()
        self._child: _Child | None = None
        self._load_error: ModelError | None = None

    def __call__(
        self, data: bytes, options: ImageOptions, limits: ImageLimits, timings: Timings, *, name: str
    ) -> Cutout:
        child = self._running_child()
        if self._load_error is not None:
            raise ModelError(str(self._load_error), code=self._load_error.code)
        ready: Sequence[object]
        try:
            child.conn.send((data, options, limits, name))
        except OSError:
            ready = [child.process.sentinel]  # it died between two items
        else:
            ready = wait([child.conn, child.process.sentinel], timeout=self.hard_limit_s)
        if child.conn in ready:
            try:
                status, value, stage_ms = child.conn.recv()
            except EOFError:
                pass  # it died while answering: the same as dying
            else:
                timings.ms.update(stage_ms)
                if status == "error":
                    raise value
                assert isinstance(value, Cutout)
                return value
        if not ready:
            self._end(ask=False)
            raise ItemTimedOut(
                f"{name}: still running after {self.hard_limit_s:g} s, its hard time limit "
                "(CUTOUT_WORKER__ITEM_TIME_LIMIT_S + CUTOUT_WORKER__HARD_LIMIT_GRACE_S); its process "
                "was killed"
            )
        exitcode = child.process.exitcode
        self._end(ask=False)
        raise CutterDied(
            f"{name}: processing it killed the process that cuts out images (exit code {exitcode}: a "
            "crash in native code, or out of memory)"
        )

    def _running_child(self) -> _Child:
        if self._child is not None and self._child.process.is_alive():
            return self._child
        self._end(ask=False)
        parent_end, child_end = self._context.Pipe()
        process = self._context.Process(
            target=_serve, args=(child_end, self.settings, os.getpid()), name="cutout-item", daemon=True
        )
        process.start()
        child_end.close()
        self._child = _Child(process, parent_end)
        # The child loads the model first and says how that went; loading has no time limit.
        try:
            self._load_error = parent_end.recv()
        except EOFError as exc:
            self._end(ask=False)
            raise ModelError(
                f"the process that cuts out images died while loading the model (exit code "
                f"{process.exitcode})"
            ) from exc
        return self._child

    def close(self) -> None:
        """End the child, if there is one: asked to leave, killed if it has not within CHILD_EXIT_S."""
        self._end(ask=True)

    def _end(self, *, ask: bool) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        if ask and child.process.is_alive():
            with suppress(OSError):
                child.conn.send(None)
            child.process.join(CHILD_EXIT_S)
        if child.process.is_alive():
            child.process.kill()  # stuck in native code: nothing short of this stops it
        child.process.join()
        child.conn.close()

    def __enter__(self) -> IsolatedCutter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._end(ask=kind is None)  # after an error or Ctrl-C the child may be mid-item: kill it now


def _process_context() -> ForkContext | SpawnContext:
    # Fork shares the parent's imports (numpy, onnxruntime, PIL) instead of importing them again; the
    # parent has created no model session, so nothing that dislikes a fork crosses it.
    if sys.platform == "linux":
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _serve(conn: Connection, settings: Settings, parent_pid: int) -> None:
    """The child: load the job's models, then answer each item until the parent says goodbye or leaves."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it ends this process
    _die_with(parent_pid)
    sessions = SessionPool(settings, load_catalog(settings))
    safety_stages = SafetyStages(settings)  # loads NudeNet on the first item that asks for it
    try:
        sessions.warm_up()
        conn.send(None)
    except ConfigError as exc:
        conn.send(ModelError(str(exc), code="model_error"))
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        data, options, limits, name = request
        timings = Timings()
        try:
            predictor = sessions.get(options.model)
            inspect = (
                None
                if options.safety == NO_SAFETY
                else partial(safety_stages.run, options.safety, attributes=options.attributes)
            )
            cutout = make_cutout(data, predictor, options, limits, timings, name=name, inspect=inspect)
        except ConfigError as exc:
            conn.send(("error", ModelError(str(exc), code="model_error"), timings.ms))
        except Exception as exc:  # the parent's process_item turns it into the item's outcome
            conn.send(("error", _sendable(exc), timings.ms))
        else:
            conn.send(("ok", cutout, timings.ms))


def _die_with(parent_pid: int) -> None:
    """Have the kernel kill this process when the parent dies, even by SIGKILL while an item spins in
    native code (Linux); elsewhere a child blocked on the pipe still ends when the pipe closes."""
    if sys.platform != "linux":
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)


def _sendable(exc: Exception) -> Exception:
    """`exc` if it survives pickling, else a RuntimeError that names it."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc
