"""Exceptions that stop an item from outside: a time limit, not a fault of the item.

They must pass through every `except Exception` on the item path (model runner, pipeline, batch),
or a key that overran its soft limit inside the model would be reported `model_error`, not `timeout`.
They come from billiard, the pool library Celery runs tasks in, so plain code can name them without
importing the queue.
"""

from __future__ import annotations

from billiard.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

ItemTimeLimit = SoftTimeLimitExceeded
INTERRUPTS: tuple[type[BaseException], ...] = (SoftTimeLimitExceeded, TimeLimitExceeded)

__all__ = ["INTERRUPTS", "ItemTimeLimit", "SoftTimeLimitExceeded", "TimeLimitExceeded"]
