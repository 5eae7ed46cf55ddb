"""A loopback HTTP server that answers like the Hugging Face Hub, for the calls huggingface_hub makes to
download a pinned commit (read from huggingface_hub 2.4's file_download.py and _snapshot_download.py):

- GET  /api/models/OWNER/NAME/tree/REV?recursive=True    the file list (snapshot_download, commit revision)
- GET  /api/models/OWNER/NAME/revision/REV               repo info (snapshot_download, branch or tag)
- HEAD /OWNER/NAME/resolve/REV/PATH                      X-Repo-Commit, ETag / X-Linked-Etag, sizes
- GET  /OWNER/NAME/resolve/REV/PATH                      the bytes (a `Range: bytes=N-` resumes)

Errors carry the Hub's X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound), which
huggingface_hub turns into its own exception classes.  No Xet headers: downloads stay plain HTTP.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".gguf", ".bin")  # served as LFS files: their ETag is their sha256
_LFS_POINTER_BYTES = 134
_POLL_INTERVAL_S = 0.05  # how soon serve_forever notices a shutdown
_TREE = re.compile(r"^/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?$")
_REVISION = re.compile(r"^/api/models/([^/]+/[^/]+)/revision/([^/]+)$")
_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_RANGE = re.compile(r"^bytes=(\d+)-$")


@dataclass(frozen=True)
class FakeRepo:
    repo_id: str  # OWNER/NAME
    commit: str  # 40 hex digits
    files: dict[str, bytes]  # path in the repo -> content

    def is_lfs(self, path: str) -> bool:
        return path.endswith(LFS_SUFFIXES)

    def etag(self, path: str) -> str:
        """What the Hub sends: an LFS file's sha256, else its git blob id."""
        data = self.files[path]
        if self.is_lfs(path):
            return hashlib.sha256(data).hexdigest()
        return git_blob_id(data)


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FakeHub:
    """Serves `repos` on 127.0.0.1 (a free port) while in a `with` block; `requests` lists "METHOD /path"."""

    repos: Iterable[FakeRepo]
    requests: list[str] = field(default_factory=list)
    _by_id: dict[str, FakeRepo] = field(init=False, default_factory=dict)
    _die_during: str | None = field(init=False, default=None)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = field(init=False, default=None)
    _thread: threading.Thread | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._by_id = {repo.repo_id: repo for repo in self.repos}

    @property
    def url(self) -> str:
        assert self._server is not None, "the fake hub is not running"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def die_during(self, path: str) -> None:
        """The next GET of `path` (in any repo) sends half its bytes, then the whole server stops."""
        self._die_during = path

    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    def __enter__(self) -> FakeHub:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": _POLL_INTERVAL_S}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop listening: from here on a connection is refused (safe to call twice, or from a handler)."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _log(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append(f"{method} {path}")


def _handler_for(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: one request per connection, so a stopped server refuses every later request.
        def do_GET(self) -> None:
            self._answer(send_body=True)

        def do_HEAD(self) -> None:
            self._answer(send_body=False)

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep pytest output clean

        def _answer(self, *, send_body: bool) -> None:
            hub._log(self.command, self.path)
            path = urlsplit(self.path).path
            if match := _TREE.match(path):
                self._tree(*match.groups())
            elif match := _REVISION.match(path):
                self._repo_info(*match.groups())
            elif match := _RESOLVE.match(path):
                self._resolve(*match.groups(), send_body=send_body)
            else:
                self._error(404, "RepoNotFound", "Repository not found")

        def _repo_at(self, repo_id: str, revision: str) -> FakeRepo | None:
            repo = hub._by_id.get(repo_id)
            if repo is None:
                self._error(404, "RepoNotFound", "Repository not found")
                return None
            if unquote(revision) not in (repo.commit, "main"):
                self._error(404, "RevisionNotFound", f"Invalid rev id: {unquote(revision)}")
                return None
            return repo

        def _tree(self, repo_id: str, revision: str, folder: str | None) -> None:
            repo = self._repo_at(repo_id, revision)
            if repo is None:
                return
            if folder:  # huggingface_hub asks for the root, recursively; sub-trees are not needed
                self._error(404, "EntryNotFound", f"{folder} does not exist", commit=repo.commit)
                return
            entries: list[dict[str, object]] = []
            folders = sorted(
                {"/".join(p.split("/")[:i]) for p in repo.files for i in range(1, p.count("/") + 1)}
            )
            for name in folders:
                entries.append(
                    {"type": "directory", "oid": git_blob_id(name.encode()), "size": 0, "path": name}
                )
            for name, data in sorted(repo.files.items()):
                entry: dict[str, object] = {
                    "type": "file",
                    "oid": git_blob_id(data),
                    "size": len(data),
                    "path": name,
                }
                if repo.is_lfs(name):
                    entry["lfs"] = {
                        "oid": repo.etag(name),
                        "size": len(data),
                        "pointerSize": _LFS_POINTER_BYTES,
                    }
                entries.append(entry)
            self._json(entries)

        def _repo_info(self, repo_id: str, revision: str) -> None:
            repo = self._repo_at(repo_id, revision)
            if repo is not None:
                siblings = [{"rfilename": name} for name in sorted(repo.files)]
                self._json(
                    {"id": repo.repo_id, "modelId": repo.repo_id, "sha": repo.commit, "siblings": siblings}
                )

        def _resolve(self, repo_id: str, revision: str, file: str, *, send_body: bool) -> None:
            repo = self._repo_at(repo_id, revision)
            if repo is None:
                return
            name = unquote(file)
            if name not in repo.files:
                self._error(404, "EntryNotFound", f"{name} does not exist", commit=repo.commit)
                return
            data = repo.files[name]
            start = 0
            if send_body and (wanted := _RANGE.match(self.headers.get("Range", ""))):
                start = min(int(wanted.group(1)), len(data))
            self.send_response(206 if start else 200)
            self.send_header("X-Repo-Commit", repo.commit)
            self.send_header("ETag", f'"{git_blob_id(data)}"')  # an LFS file's real one: its pointer's id
            if repo.is_lfs(name):
                self.send_header("X-Linked-Etag", f'"{repo.etag(name)}"')
                self.send_header("X-Linked-Size", str(len(data)))
            self.send_header("Accept-Ranges", "bytes")
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            if not send_body:
                return
            if hub._die_during == name:
                hub._die_during = None
                hub.stop()  # before the body breaks off, so that every retry finds the port closed
                self.wfile.write(data[start : start + (len(data) - start) // 2])
                self.wfile.flush()
                return
            self.wfile.write(data[start:])

        def _json(self, body: object) -> None:
            payload = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        def _error(self, status: int, code: str, message: str, *, commit: str | None = None) -> None:
            payload = json.dumps({"error": message}).encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            if commit is not None:
                self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

    return Handler
