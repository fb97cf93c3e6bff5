"""A stand-in for the Hugging Face Hub, so the online path can be tested without a network.

`FakeHub` is a small HTTP server bound to 127.0.0.1 that answers the requests the pinned
`huggingface_hub` makes for what the course does: the front page (the course's quick check),
repository info (`/api/<kind>s/<id>/revision/<rev>`), folder listings (`/tree/`), paths-info,
and file downloads with byte ranges (`/resolve/`). Local folders are served as repositories at a
revision (for example a folder laid out like the Parquet export, `<config>/<split>/0000.parquet`,
at `refs/convert/parquet`); plain files (a zip archive) are served under `/files/`.

Failures, for the fallback tests: `hub.mode = 407` (or any status) answers every request with
that status, `hub.mode = "hang"` accepts connections and never answers, and `hub.api_status`
answers only the repository requests with that status, the front page staying healthy.

`point_libraries_at(hub, monkeypatch, tmp_path)` points huggingface_hub, datasets and
transformers at the fake hub, with an empty Hugging Face cache in `tmp_path` and no token,
exactly as a fresh process started with `HF_ENDPOINT` and `HF_HOME` would be.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

COMMIT = "c0ffee" + "0" * 34
# Settings that would make a test depend on the machine it runs on.
UNSET = (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "COURSE_DATASET",
    "COURSE_MODEL",
    "COURSE_DATA_DIR",
    "COURSE_DATASET_FALLBACKS",
    "COURSE_HUB_TIMEOUT",
    "COURSE_CACHE_DIR",
)


class FakeHub:
    """A local HTTP server that behaves like the parts of the Hub the course uses."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str, str], Path] = {}
        self.files: dict[str, bytes] = {}
        self.mode: str | int = "ok"
        self.api_status: int | None = None
        self.requests: list[str] = []
        self.bytes_sent = 0
        self._release = threading.Event()
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def serve_repo(self, kind: str, repo_id: str, revision: str, folder: Path) -> None:
        """Serve `folder` as repository `repo_id` ("model" or "dataset") at `revision`."""
        self.repos[(kind, repo_id, revision)] = Path(folder)

    def serve_file(self, name: str, data: bytes) -> str:
        """Serve `data` at `/files/<name>`; returns its URL."""
        self.files[name] = data
        return f"{self.url}/files/{name}"

    def close(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()


def refused_url() -> str:
    """The URL of a port on 127.0.0.1 where nothing listens: connecting is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet tests

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_POST(self) -> None:
        self._answer(body=True)

    # --- dispatch ---------------------------------------------------------------------------

    def _answer(self, body: bool) -> None:
        fake = self.fake
        fake.requests.append(f"{self.command} {self.path}")
        if fake.mode == "hang":
            fake._release.wait(30)
            self.close_connection = True
            return
        if isinstance(fake.mode, int):
            self._status(fake.mode, body)
            return
        raw_path = urlsplit(self.path).path
        parts = raw_path.split("/")[1:]
        if raw_path == "/":
            self._send(200, b"fake hub", "text/plain", body)
        elif parts[0] == "files" and len(parts) == 2:
            data = fake.files.get(unquote(parts[1]))
            if data is None:
                self._send(404, b"no such file", "text/plain", body)
            else:
                self._send(200, data, "application/octet-stream", body)
        elif fake.api_status is not None:
            self._status(fake.api_status, body)
        elif parts[0] == "api" and len(parts) >= 4:
            self._api(parts, body)
        else:
            self._resolve(parts, body)

    def _api(self, parts: list[str], body: bool) -> None:
        kind = {"models": "model", "datasets": "dataset"}.get(parts[1])
        repo_id = f"{parts[2]}/{parts[3]}"
        action = parts[4] if len(parts) > 4 else "revision"
        revision = unquote(parts[5]) if len(parts) > 5 else "main"
        folder = self._repo(kind, repo_id, revision, body)
        if folder is None:
            return
        if action == "revision":
            info = {"id": repo_id, "sha": COMMIT, "private": False}
            self._send(200, json.dumps(info).encode(), "application/json", body)
        elif action == "tree":
            inside = unquote("/".join(parts[6:]))
            target = folder / inside if inside else folder
            if not target.is_dir():
                self._not_found("EntryNotFound", body)
                return
            recursive = parse_qs(urlsplit(self.path).query).get("recursive", ["False"])[0]
            entries = target.rglob("*") if recursive.lower() == "true" else target.iterdir()
            listing = [_entry(folder, path) for path in sorted(entries)]
            self._send(200, json.dumps(listing).encode(), "application/json", body)
        elif action == "paths-info":
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode())
            found = [
                _entry(folder, folder / path)
                for path in form.get("paths", [])
                if (folder / path).exists()
            ]
            self._send(200, json.dumps(found).encode(), "application/json", body)
        else:
            self._send(404, b"unknown api", "text/plain", body)

    def _resolve(self, parts: list[str], body: bool) -> None:
        kind = "model"
        if parts[0] == "datasets":
            kind, parts = "dataset", parts[1:]
        if len(parts) < 5 or parts[2] != "resolve":
            self._send(404, b"unknown route", "text/plain", body)
            return
        repo_id, revision = f"{parts[0]}/{parts[1]}", unquote(parts[3])
        folder = self._repo(kind, repo_id, revision, body)
        if folder is None:
            return
        path = folder / unquote("/".join(parts[4:]))
        if not path.is_file():
            self._not_found("EntryNotFound", body)
            return
        data = path.read_bytes()
        headers = {
            "ETag": f'"{len(data)}-{path.name}"',
            "X-Repo-Commit": COMMIT,
            "Accept-Ranges": "bytes",
        }
        wanted = self.headers.get("Range", "")
        if wanted.startswith("bytes="):
            first, _, last = wanted.removeprefix("bytes=").partition("-")
            start = int(first)
            end = min(int(last) + 1 if last else len(data), len(data))
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
            self._send(206, data[start:end], "application/octet-stream", body, headers)
        else:
            self._send(200, data, "application/octet-stream", body, headers)

    # --- helpers ----------------------------------------------------------------------------

    def _repo(self, kind: str | None, repo_id: str, revision: str, body: bool) -> Path | None:
        repos = self.fake.repos
        if revision == COMMIT:
            revision = "main"  # the commit every served repository claims to be at
        if (kind, repo_id, revision) in repos:
            return repos[(kind, repo_id, revision)]
        known = any(k == kind and r == repo_id for k, r, _ in repos)
        self._not_found("RevisionNotFound" if known else "RepoNotFound", body)
        return None

    def _not_found(self, code: str, body: bool) -> None:
        self._send(404, f"{code}".encode(), "text/plain", body, {"X-Error-Code": code})

    def _status(self, status: int, body: bool) -> None:
        headers = {"Proxy-Authenticate": 'Basic realm="proxy"'} if status == 407 else {}
        self._send(status, f"status {status}".encode(), "text/plain", body, headers)

    def _send(
        self,
        status: int,
        data: bytes,
        content_type: str,
        body: bool,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(data)
            self.fake.bytes_sent += len(data)


def _entry(root: Path, path: Path) -> dict[str, object]:
    relative = path.relative_to(root).as_posix()
    if path.is_dir():
        return {"type": "directory", "oid": "0" * 40, "path": relative}
    return {"type": "file", "oid": "0" * 40, "size": path.stat().st_size, "path": relative}


def point_libraries_at(hub: FakeHub, monkeypatch, tmp_path: Path) -> Path:
    """Make huggingface_hub, datasets and transformers talk to `hub`, with an empty cache.

    These libraries read `HF_ENDPOINT`, `HF_HOME` and the offline settings once, when they are
    imported; setting the variables alone would not reach them in this process. Returns the
    Hugging Face cache folder (`<tmp_path>/hf-home/hub`).
    """
    import datasets
    from huggingface_hub import constants

    home = tmp_path / "hf-home"
    cache = home / "hub"
    cache.mkdir(parents=True)
    for name in UNSET:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    template = hub.url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", hub.url)
    template = hub.url + "/datasets/{repo_id}/resolve/{revision}/{path}"
    monkeypatch.setattr(datasets.config, "HUB_DATASETS_URL", template)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    return cache
