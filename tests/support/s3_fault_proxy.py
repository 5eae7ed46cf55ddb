"""An HTTP reverse proxy in front of the test S3 server that injects the faults real S3 produces.

It listens on 127.0.0.1 only and forwards only to the one loopback upstream it was given.  The
Host header goes upstream unchanged, so SigV4 signatures (which cover Host) stay valid; clients
must use path-style addressing.  Fault kinds:

- "500": InternalError, "503": SlowDown (throttling), as S3 sends them (XML body, x-amz-request-id);
- "reset": the request is read, then the connection is reset (RST) with no response;
- "delay": the request is read, nothing is sent for `delay_s` (set it above the client's read
  timeout), then the connection is closed;
- `latency_s` delays every forwarded request, as a store across a network would (benchmarks);
- "truncate": the request is forwarded (it takes effect upstream), then the status, the headers and
  half of the body go back before a reset: a failure in the middle of reading a GET body.  A
  response without a body (PUT, HEAD) is dropped whole: the write happened, the answer was lost.

`permanent_status` maps a fragment of the unquoted path to a fixed answer for every matching
request: a status (403 AccessDenied, 404 NoSuchKey, 503 SlowDown, ...) or a (status, S3 error code)
pair, as a wrong IAM policy or a hot key would give; those answers are counted apart from the random
faults.  A fragment may start with a method (`PUT /bucket/out/a.png`) to match only that method.
`fail_path` / `heal_path` change them while the proxy runs.
"""

from __future__ import annotations

import contextlib
import http.client
import random
import socket
import struct
import threading
import time
import uuid
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Literal
from urllib.parse import unquote, urlsplit

FaultKind = Literal["500", "503", "reset", "delay", "truncate"]
FAULT_KINDS: tuple[FaultKind, ...] = ("500", "503", "reset", "delay", "truncate")
DEFAULT_FAULTS: tuple[FaultKind, ...] = ("500", "503", "reset")
# A fixed answer: an HTTP status (with its usual S3 code) or (status, S3 error code).
ErrorReply = int | tuple[int, str]

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# Headers that describe one hop, not the message (RFC 9110 7.6.1); Expect is answered here.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
    }
)
COPY_CHUNK_BYTES = 64 * 1024
UPSTREAM_TIMEOUT_S = 30.0
# A client connection idle this long is closed, so no handler thread outlives its use for long.
IDLE_CONNECTION_TIMEOUT_S = 30.0
STOP_JOIN_TIMEOUT_S = 5.0

# (S3 error code, message) for the statuses the proxy can answer itself.
S3_ERRORS: dict[int, tuple[str, str]] = {
    400: ("InvalidRequest", "Invalid Request"),
    403: ("AccessDenied", "Access Denied"),
    404: ("NoSuchKey", "The specified key does not exist."),
    500: ("InternalError", "We encountered an internal error. Please try again."),
    503: ("SlowDown", "Please reduce your request rate."),
}


def s3_error_body(code: str, message: str, request_id: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{request_id}</RequestId><HostId>fault-proxy</HostId></Error>"
    ).encode()


class S3FaultProxy:
    """`with S3FaultProxy(moto_url, fault_rate=0.3, seed=1) as proxy:` point clients at `proxy.url`."""

    def __init__(
        self,
        upstream_url: str,
        *,
        fault_rate: float = 0.0,
        faults: Mapping[FaultKind, float] | Sequence[FaultKind] = DEFAULT_FAULTS,
        seed: int = 0,
        only_methods: Collection[str] | None = None,
        max_faults: int | None = None,
        delay_s: float = 3.0,
        permanent_status: Mapping[str, ErrorReply] | None = None,
        latency_s: float = 0.0,
    ) -> None:
        upstream = urlsplit(upstream_url)
        if upstream.scheme != "http" or upstream.hostname not in LOOPBACK_HOSTS or upstream.port is None:
            raise ValueError(f"{upstream_url!r}: the fault proxy forwards only to http://<loopback>:<port>")
        weights = dict(faults) if isinstance(faults, Mapping) else dict.fromkeys(faults, 1.0)
        unknown = set(weights) - set(FAULT_KINDS)
        if unknown or not weights:
            raise ValueError(f"fault kinds must be some of {FAULT_KINDS}, got {sorted(weights)}")
        for reply in (permanent_status or {}).values():
            if isinstance(reply, int) and reply not in S3_ERRORS:
                raise ValueError(
                    f"permanent_status: no default S3 error code for HTTP {reply}; give (status, code)"
                )
        self.upstream_host: str = upstream.hostname
        self.upstream_port: int = upstream.port
        self.fault_rate = fault_rate
        self.fault_kinds: list[FaultKind] = list(weights)
        self.fault_weights: list[float] = list(weights.values())
        self.only_methods = {method.upper() for method in only_methods} if only_methods else None
        self.max_faults = max_faults
        self.delay_s = delay_s
        self.permanent_status = dict(permanent_status or {})
        self.latency_s = latency_s  # waited before forwarding each request: a remote store's round trip
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._requests = 0
        self._forwarded = 0
        self._injected: Counter[str] = Counter()
        self._permanent = 0
        self._by_path: Counter[str] = Counter()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- counters -------------------------------------------------------------------------------------

    @property
    def requests(self) -> int:
        with self._lock:
            return self._requests

    @property
    def forwarded(self) -> int:
        with self._lock:
            return self._forwarded

    @property
    def injected(self) -> Counter[str]:
        """Faults injected so far, per kind (a copy)."""
        with self._lock:
            return Counter(self._injected)

    @property
    def injected_total(self) -> int:
        with self._lock:
            return sum(self._injected.values())

    @property
    def permanent(self) -> int:
        """Requests answered from `permanent_status`."""
        with self._lock:
            return self._permanent

    def requests_for(self, key: str) -> int:
        """Requests whose unquoted path ends with `/key` (any bucket, any method)."""
        suffix = "/" + key
        with self._lock:
            return sum(n for path, n in self._by_path.items() if path.endswith(suffix))

    def fail_path(self, fragment: str, reply: ErrorReply) -> None:
        """From now on, answer every request whose path contains `fragment` with `reply`."""
        with self._lock:
            self.permanent_status[fragment] = reply

    def heal_path(self, fragment: str) -> None:
        """Stop answering `fragment` with a fixed reply: requests are forwarded again."""
        with self._lock:
            self.permanent_status.pop(fragment, None)

    def reset_counters(self) -> None:
        with self._lock:
            self._requests = self._forwarded = self._permanent = 0
            self._injected.clear()
            self._by_path.clear()

    def stats(self) -> dict[str, object]:
        with self._lock:
            return {
                "requests": self._requests,
                "forwarded": self._forwarded,
                "injected": dict(self._injected),
                "permanent": self._permanent,
            }

    # -- life cycle -----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the proxy is not running; use it as a context manager")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> S3FaultProxy:
        handler = type("BoundHandler", (_ProxyHandler,), {"proxy": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3-fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, wake delayed handlers and cut every open client connection."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with self._lock:
            open_sockets = list(self._sockets)
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(STOP_JOIN_TIMEOUT_S)
        self._server = None

    def __enter__(self) -> S3FaultProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- used by the handler --------------------------------------------------------------------------

    def _track(self, sock: socket.socket, *, add: bool) -> None:
        with self._lock:
            (self._sockets.add if add else self._sockets.discard)(sock)

    def _decide(self, method: str, path: str) -> FaultKind | ErrorReply | None:
        """Count the request and choose its fate: a fault kind, a permanent status, or None (forward)."""
        with self._lock:
            self._requests += 1
            self._by_path[path] += 1
            for fragment, reply in self.permanent_status.items():
                if fragment in path or fragment in f"{method} {path}":
                    self._permanent += 1
                    return reply
            if self.only_methods is not None and method not in self.only_methods:
                return None
            if self.max_faults is not None and sum(self._injected.values()) >= self.max_faults:
                return None
            if self._rng.random() >= self.fault_rate:
                return None
            kind = self._rng.choices(self.fault_kinds, weights=self.fault_weights)[0]
            self._injected[kind] += 1
            return kind

    def _count_forwarded(self) -> None:
        with self._lock:
            self._forwarded += 1


class _ProxyHandler(BaseHTTPRequestHandler):
    proxy: S3FaultProxy  # set on the per-proxy subclass
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's pool expects; also answers Expect: 100-continue
    timeout = IDLE_CONNECTION_TIMEOUT_S

    def setup(self) -> None:
        super().setup()
        self.proxy._track(self.connection, add=True)

    def finish(self) -> None:
        self.proxy._track(self.connection, add=False)
        with contextlib.suppress(OSError):  # the connection may have been reset on purpose
            super().finish()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

    def _handle(self) -> None:
        if not self.path.startswith("/"):
            # Absolute-form targets would name another host: never forward those.
            self._reply_error(400, "the fault proxy accepts origin-form paths only")
            return
        body = self._read_body()
        fate = self.proxy._decide(self.command, unquote(self.path.split("?", 1)[0]))
        if fate is None:
            if self.proxy.latency_s:
                time.sleep(self.proxy.latency_s)
            self._forward(body)
        elif isinstance(fate, int | tuple):
            self._reply_error(fate)
        elif fate in ("500", "503"):
            self._reply_error(int(fate))
        elif fate == "reset":
            self._reset()
        elif fate == "delay":
            self.proxy._stopping.wait(self.proxy.delay_s)
            self.close_connection = True
        else:  # truncate
            self._forward(body, truncate=True)

    def _read_body(self) -> bytes:
        """The whole request body (S3 PUTs of a few MB): with Content-Length, or chunked."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _forward(self, body: bytes, *, truncate: bool = False) -> None:
        proxy = self.proxy
        upstream = http.client.HTTPConnection(
            proxy.upstream_host, proxy.upstream_port, timeout=UPSTREAM_TIMEOUT_S
        )
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                    upstream.putheader(name, value)  # Host included, unchanged: it is signed
            if body or self.command in ("PUT", "POST"):
                upstream.putheader("Content-Length", str(len(body)))
            upstream.endheaders(body or None)
            response = upstream.getresponse()
            proxy._count_forwarded()
            self._relay(response, truncate=truncate)
        finally:
            upstream.close()

    def _relay(self, response: http.client.HTTPResponse, *, truncate: bool) -> None:
        headers = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
        has_body = self.command != "HEAD" and response.status not in (204, 304) and response.status >= 200
        length_header = response.getheader("Content-Length")
        if has_body and length_header is None:
            # Chunked upstream: buffer it (test objects are small) so the client gets a length.
            data = response.read()
            headers = [*headers, ("Content-Length", str(len(data)))]
            chunks: list[bytes] | None = [data]
            remaining = len(data)
        else:
            chunks = None
            remaining = int(length_header or 0) if has_body else 0
        if truncate and remaining == 0:
            # Nothing to cut short: the response is lost although the request took effect upstream.
            self._reset()
            return
        if truncate:
            # Send half of the body, then cut: the client sees a short read mid-body.
            remaining //= 2
        self.send_response_only(response.status, response.reason)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if chunks is not None:
            self.wfile.write(chunks[0][:remaining])
        else:
            while remaining > 0:
                data = response.read(min(COPY_CHUNK_BYTES, remaining))
                if not data:
                    break
                self.wfile.write(data)
                remaining -= len(data)
        self.wfile.flush()
        if truncate:
            self._reset()

    def _reply_error(self, reply: ErrorReply, message: str | None = None) -> None:
        status, code = reply if isinstance(reply, tuple) else (reply, S3_ERRORS[reply][0])
        usual_code, usual_message = S3_ERRORS.get(status, ("", ""))
        default_message = usual_message if code == usual_code else f"{code} (from the fault proxy)"
        request_id = uuid.uuid4().hex.upper()
        body = s3_error_body(code, message or default_message, request_id)
        self.send_response_only(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("x-amz-request-id", request_id)
        self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def _reset(self) -> None:
        """Abort the connection with an RST (SO_LINGER 0), as a crashed load balancer would."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
