"""The completion notice: a signed JSON POST to a job's URL once its reports are written.

The body is a small summary (job id, state, counts, report keys).  It is signed with HMAC-SHA256 of the
shared secret (`CUTOUT_NOTIFY__SECRET`) over ``TIMESTAMP + "." + BODY``, sent as
``X-Cutout-Signature: sha256=<hex>`` with ``X-Cutout-Timestamp: TIMESTAMP`` (Unix seconds), so a
receiver can refuse a replayed notice by its age.  Failed sends are retried with exponential backoff,
a bounded number of times; the outcome is recorded in the job, and a notice never fails the report.
Delivery is at least once: receivers de-duplicate on the job id.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Protocol

from cutout_fleet.config.settings import NotifySettings, http_url_problem
from cutout_fleet.errors import InvalidOptions
from cutout_fleet.state import JobRecord
from cutout_fleet.state.records import Notice

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Cutout-Signature"
TIMESTAMP_HEADER = "X-Cutout-Timestamp"
EVENT_HEADER = "X-Cutout-Event"
SIGNATURE_SCHEME = "sha256="
EVENT_COMPLETED = "job.completed"
# A receiver accepts a notice this much older (or newer: clock skew) than its own clock.
DEFAULT_TOLERANCE_S = 300
DELIVERED, FAILED = "delivered", "failed"
# Answers worth trying again: the receiver is busy or down for a moment.  Any other non-2xx is final.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
ERROR_TEXT_MAX = 300


class InvalidNotifyUrl(InvalidOptions):
    code = "invalid_notify_url"


class NoticeStore(Protocol):
    def get(self, job_id: str) -> JobRecord | None: ...
    def set_notice(self, job_id: str, notice: Notice) -> None: ...


def check_notify_url(url: str) -> str:
    """`url` when it is an http(s) URL with a host; InvalidNotifyUrl saying what to give otherwise."""
    problem = http_url_problem(url)
    if problem:
        raise InvalidNotifyUrl(f"--notify {url!r}: {problem}")
    return url


def completion_body(job: JobRecord) -> bytes:
    """The notice's JSON: who finished, how, and where its reports are (keys in the output bucket)."""
    base = job.report_key.removesuffix(".jsonl") if job.report_key else None
    reports = {"jsonl": job.report_key, "csv": f"{base}.csv", "summary": f"{base}.summary.json"}
    summary = {
        "event": EVENT_COMPLETED,
        "job_id": job.job_id,
        "state": job.state,
        "stop_reason": job.stop_reason,
        "counts": job.counts(),
        "failures_by_code": job.failures_by_code,
        "source": job.source,
        "out": job.out,
        "finished_at": job.finished_at,
        "reports": reports if base else None,
    }
    return json.dumps(summary, sort_keys=True, separators=(",", ":")).encode()


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the HMAC-SHA256 hex of ``TIMESTAMP.BODY``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return SIGNATURE_SCHEME + digest


def verify(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    now: float | None = None,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> bool:
    """The receiver's check: the signature matches these exact bytes, and the timestamp is recent."""
    try:
        age_s = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        return False
    return age_s <= tolerance_s and hmac.compare_digest(sign(secret, timestamp, body), signature)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # urllib would turn the POST into a GET without its body; a moved receiver is an operator's fix.
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects())


def _post_once(url: str, body: bytes, secret: str, timeout_s: float) -> tuple[bool, str | None]:
    """(worth retrying, error): error None means the receiver answered 2xx."""
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "cutout-fleet",
        EVENT_HEADER: EVENT_COMPLETED,
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            response.read()
        return False, None
    except urllib.error.HTTPError as exc:
        return exc.code in RETRY_STATUSES, f"HTTP {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError) as exc:  # refused, reset, DNS, timeout: all may heal
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return True, f"{type(exc).__name__}: {reason}"[:ERROR_TEXT_MAX]


def deliver(
    url: str, body: bytes, policy: NotifySettings, *, sleep: Callable[[float], None] = time.sleep
) -> Notice:
    """POST `body` to `url`, signed, up to `policy.attempts` times with exponential backoff."""
    if policy.secret is None:
        unsigned = "CUTOUT_NOTIFY__SECRET is not set where the job finished; notices are always signed"
        return Notice(FAILED, 0, unsigned, time.time())
    secret = policy.secret.get_secret_value()
    attempt, error = 0, None
    for attempt in range(1, policy.attempts + 1):
        if attempt > 1:
            sleep(min(policy.backoff_s * 2 ** (attempt - 2), policy.backoff_max_s))
        again, error = _post_once(url, body, secret, policy.timeout_s)
        if error is None:
            return Notice(DELIVERED, attempt, None, time.time())
        if not again:
            break
    return Notice(FAILED, attempt, error, time.time())


def notify_job(
    store: NoticeStore, job_id: str, policy: NotifySettings, url: str | None = None
) -> Notice | None:
    """Send the job's completion notice and record how it went.

    The URL is `url`, else the job's own, else the policy's default.  None when there is no URL, no
    such job, or this completion was already notified (a redelivered report task); a retried job that
    completes again is notified again.
    """
    job = store.get(job_id)
    url = url or (job.notify_url if job else None) or policy.url
    if not url or job is None:
        return None
    if job.notify_at is not None and job.finished_at is not None and job.notify_at >= job.finished_at:
        return None
    if problem := http_url_problem(url):
        notice = Notice(FAILED, 0, f"not sent: {problem}", time.time())
    else:
        notice = deliver(url, completion_body(job), policy)
    store.set_notice(job_id, notice)
    log.info("job %s: completion notice %s after %d attempts", job_id, notice.status, notice.attempts)
    return notice
