"""Redis connections made from the settings: password or ACL user from the URL, TLS, timeouts, retries.

Every Redis client of the fleet (job store, publisher) comes from `redis_client`, and every Celery app
takes `celery_broker_options`, so a ``rediss://`` URL means certificate checking everywhere.  Without
them kombu would accept a ``rediss://`` URL with verification off (it only logs a warning).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.backoff import EqualJitterBackoff
from redis.exceptions import AuthenticationError, AuthorizationError
from redis.retry import Retry

from cutout_fleet.config.settings import RedisTLSSettings, Settings, redacted_url

__all__ = [
    "celery_broker_options",
    "redacted_url",
    "redis_client",
    "redis_retry",
    "redis_ssl_options",
    "uses_tls",
]

REDIS_CONNECT_TIMEOUT_S = 5.0
# Longest wait for one reply; the fleet sends no blocking commands, so only a hung server hits it.
REDIS_SOCKET_TIMEOUT_S = 30.0
# A pooled connection idle this long is PINGed before use, so one cut by a proxy or restart is replaced.
REDIS_HEALTH_CHECK_INTERVAL_S = 30
# A command that meets a dropped connection is retried this many times, backing off 0.2 s, 0.4 s, ...
# up to 2 s (half to all of each, jittered so a fleet does not reconnect in step): a restart of
# roughly 8 to 15 s is absorbed; beyond that the caller sees redis.ConnectionError.
REDIS_RETRIES = 10
REDIS_BACKOFF_BASE_S = 0.1
REDIS_BACKOFF_CAP_S = 2.0

T = TypeVar("T")


# OpenSSL reasons (either side's verdict) that a certificate is not accepted: untrusted, expired,
# wrong name, or a client certificate missing where the server requires one.
_CERTIFICATE_REASONS = ("CERTIFICATE", "UNKNOWN_CA")


def is_refusal(error: BaseException) -> bool:
    """A wrong password, a forbidden user or a refused certificate: asking again cannot help."""
    if isinstance(error, AuthenticationError | AuthorizationError):
        return True
    cause = error.__cause__ or error.__context__  # redis-py wraps the ssl error in its ConnectionError
    reason = getattr(cause, "reason", None) or ""
    return isinstance(cause, ssl.SSLError) and any(word in reason for word in _CERTIFICATE_REASONS)


class DropRetry(Retry):
    """redis-py's Retry for dropped connections that gives up at once on a refusal (see `is_refusal`).

    redis-py files refusals under ConnectionError, so a plain Retry would wait out all its backoff
    (some 10 s) before reporting a wrong password, and hammer the server meanwhile.
    """

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        def retryable(error: Exception) -> bool:
            return not is_refusal(error) and (is_retryable is None or is_retryable(error))

        return super().call_with_retry(do, fail, retryable, with_failure_count)


def uses_tls(url: str) -> bool:
    return url.startswith("rediss://")


def redis_retry() -> Retry:
    """The fleet's retry policy for Redis commands: jittered exponential backoff, refusals not retried."""
    return DropRetry(EqualJitterBackoff(cap=REDIS_BACKOFF_CAP_S, base=REDIS_BACKOFF_BASE_S), REDIS_RETRIES)


def redis_ssl_options(tls: RedisTLSSettings) -> dict[str, Any]:
    """The TLS keyword arguments, under the names both redis-py and kombu's broker_use_ssl take."""
    options: dict[str, Any] = {
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        "ssl_check_hostname": tls.check_hostname,
    }
    if tls.ca_file is not None:
        options["ssl_ca_certs"] = str(tls.ca_file)
    if tls.cert_file is not None:
        options["ssl_certfile"] = str(tls.cert_file)
    if tls.key_file is not None:
        options["ssl_keyfile"] = str(tls.key_file)
    return options


def redis_client(settings: Settings, *, decode_responses: bool = False) -> redis.Redis:
    """A client for `settings.redis_url` that verifies TLS and rides out a Redis restart."""
    url = settings.redis_url
    options: dict[str, Any] = {
        "decode_responses": decode_responses,
        "socket_timeout": REDIS_SOCKET_TIMEOUT_S,
        "health_check_interval": REDIS_HEALTH_CHECK_INTERVAL_S,
        "retry": redis_retry(),
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
    }
    if not url.startswith("unix://"):  # a Unix socket takes no TCP options
        options.update(socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S, socket_keepalive=True)
    if uses_tls(url):
        options.update(redis_ssl_options(settings.redis_tls))
    return redis.Redis.from_url(url, **options)


def celery_broker_options(settings: Settings) -> dict[str, Any]:
    """Celery settings for a ``rediss://`` broker (empty for redis:// and unix://): merge into app.conf.

    Only `broker_use_ssl`: the fleet keeps no result backend (task_ignore_result), so
    `redis_backend_use_ssl` has nothing to apply to.
    """
    if not uses_tls(settings.redis_url):
        return {}
    return {"broker_use_ssl": redis_ssl_options(settings.redis_tls)}
