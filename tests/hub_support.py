"""A Hugging Face Hub on loopback for the real `huggingface_hub` client, and a Hub cache of our own per test.

`LoopbackHub` answers what `hf_hub_download`, `snapshot_download`, `HfFileSystem` (`hf://`) and timm's
`create_model("hf-hub:...")` ask of the Hub:
- GET  /api/{models,datasets}/ORG/NAME[/revision/REV]          repo info: id, sha (the commit), siblings
- GET  /api/{type}s/ORG/NAME/tree/REV[/PATH]?recursive=&expand=  the tree listing (files with git oid, size, lfs)
- POST /api/{type}s/ORG/NAME/paths-info/REV  (form: paths, expand)  the same entries for named paths
- HEAD/GET [/datasets]/ORG/NAME/resolve/REV/PATH  a file: X-Repo-Commit, ETag (the git blob oid), Content-Length
  and Range; a large ("LFS") file is a 302 to a second loopback origin, the CDN, with X-Linked-Etag (its
  SHA-256) and X-Linked-Size, as the Hub answers for LFS files. Unknown repo, revision or file: a 404 with the
  Hub's X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound), which `huggingface_hub` turns into its
  own errors.
Revisions are branches, tags or full commit hashes; every request is recorded in `seen` (method, path and
query, unquoted), so a test can check which revision reached the server.

`huggingface_hub` reads HF_ENDPOINT, HF_HUB_OFFLINE, HF_HOME and HF_HUB_CACHE once, when it is imported (its
`constants` module). In this process `use_hub` therefore patches those constants, as huggingface_hub's own tests
do, and sets the variables too, for any subprocess (which reads them at its import, as a user's shell would).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

TEXT_SUFFIXES = (".json", ".md", ".txt", ".csv", ".jsonl", ".gitattributes")  # kept in git; the rest is LFS
DATE = "2026-01-01T00:00:00.000Z"


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(path: str) -> bool:
    return not path.endswith(TEXT_SUFFIXES)


@dataclass
class Repo:
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit -> {path: bytes}

    def commit_of(self, revision: str) -> str | None:
        return self.refs.get(revision) or (revision if revision in self.commits else None)


class LoopbackHub:
    """Two threaded HTTP servers on 127.0.0.1: the Hub (`endpoint`) and the CDN its LFS files redirect to."""

    def __init__(self):
        self.repos: dict[tuple[str, str], Repo] = {}
        self.blobs: dict[str, bytes] = {}  # sha256 -> bytes, served by the CDN
        self.seen: list[tuple[str, str]] = []
        self._hub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, self._answer_hub))
        self._cdn = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, self._answer_cdn))
        self.endpoint = f"http://127.0.0.1:{self._hub.server_address[1]}"
        self.cdn = f"http://127.0.0.1:{self._cdn.server_address[1]}"

    def __enter__(self) -> LoopbackHub:
        for server in (self._hub, self._cdn):
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        for server in (self._hub, self._cdn):
            server.shutdown()
            server.server_close()

    # ---- what a test publishes ---------------------------------------------------------------------------------

    def publish(self, repo_id: str, files: dict[str, bytes], repo_type: str = "model", branch: str = "main",
                tags: tuple[str, ...] = ()) -> str:
        """A commit holding exactly `files`, on `branch` and `tags`; returns its 40-hex commit hash."""
        repo = self.repos.setdefault((repo_type, repo_id), Repo())
        parent = repo.refs.get(branch, "")
        listing = "".join(f"{path} {git_blob_oid(data)}\n" for path, data in sorted(files.items()))
        commit = hashlib.sha1(f"{parent}\n{listing}".encode()).hexdigest()
        repo.commits[commit] = dict(files)
        for ref in (branch, *tags):
            repo.refs[ref] = commit
        for path, data in files.items():
            if is_lfs(path):
                self.blobs[hashlib.sha256(data).hexdigest()] = data
        return commit

    def saw(self, fragment: str) -> bool:
        return any(fragment in path for _, path in self.seen)

    # ---- the Hub -----------------------------------------------------------------------------------------------

    def _answer_hub(self, method: str, path: str, query: dict, body: bytes, headers) -> tuple:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[0] == "api" and len(parts) >= 4 and parts[1] in ("models", "datasets"):
            repo_type, repo_id, rest = parts[1][:-1], "/".join(parts[2:4]), parts[4:]
            repo = self.repos.get((repo_type, repo_id))
            if repo is None:
                return _error(404, "RepoNotFound")
            if not rest or rest[0] == "revision":
                return self._info(repo, repo_id, rest[1] if rest else "main")
            if rest[0] == "tree" and len(rest) >= 2:
                return self._tree(repo, rest[1], "/".join(rest[2:]), query)
            if rest[0] == "paths-info" and len(rest) >= 2 and method == "POST":
                return self._paths_info(repo, rest[1], parse_qs(body.decode()))
            return _error(404, "")
        repo_type = "model"
        if parts[0] == "datasets":
            repo_type, parts = "dataset", parts[1:]
        if len(parts) >= 5 and parts[2] == "resolve":
            repo = self.repos.get((repo_type, "/".join(parts[:2])))
            if repo is None:
                return _error(404, "RepoNotFound")
            return self._resolve(repo, parts[3], "/".join(parts[4:]), method, headers)
        return _error(404, "")

    def _info(self, repo: Repo, repo_id: str, revision: str) -> tuple:
        commit = repo.commit_of(revision)
        if commit is None:
            return _error(404, "RevisionNotFound")
        files = repo.commits[commit]
        return _json({"id": repo_id, "sha": commit, "private": False, "lastModified": DATE, "tags": [],
                      "siblings": [{"rfilename": p} for p in sorted(files)]})

    def _entries(self, commit: str, files: dict[str, bytes], expand: bool) -> dict[str, dict]:
        """Every file and folder of a commit by path, as the tree and paths-info endpoints list them."""
        entries = {}
        for path, data in files.items():
            entry = {"type": "file", "oid": git_blob_oid(data), "size": len(data), "path": path}
            if is_lfs(path):
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            entries[path] = entry
            folders = path.split("/")[:-1]
            for depth in range(1, len(folders) + 1):
                folder = "/".join(folders[:depth])
                entries[folder] = {"type": "directory", "path": folder,
                                   "oid": hashlib.sha1(f"{commit}:{folder}".encode()).hexdigest(), "size": 0}
        if expand:
            for entry in entries.values():
                entry["lastCommit"] = {"id": commit, "title": "publish", "date": DATE}
        return entries

    def _tree(self, repo: Repo, revision: str, folder: str, query: dict) -> tuple:
        commit = repo.commit_of(revision)
        if commit is None:
            return _error(404, "RevisionNotFound")
        expand = query.get("expand", ["False"])[0].lower() == "true"
        recursive = query.get("recursive", ["False"])[0].lower() == "true"
        entries = self._entries(commit, repo.commits[commit], expand)
        prefix = f"{folder}/" if folder else ""
        if folder and entries.get(folder, {}).get("type") != "directory":
            return _error(404, "EntryNotFound", commit)
        listed = [e for p, e in sorted(entries.items()) if p.startswith(prefix)
                  and (recursive or "/" not in p[len(prefix):])]
        return _json(listed, commit)

    def _paths_info(self, repo: Repo, revision: str, form: dict) -> tuple:
        commit = repo.commit_of(revision)
        if commit is None:
            return _error(404, "RevisionNotFound")
        entries = self._entries(commit, repo.commits[commit], form.get("expand", ["False"])[0].lower() == "true")
        return _json([entries[p] for p in form.get("paths", []) if p in entries], commit)

    def _resolve(self, repo: Repo, revision: str, path: str, method: str, headers) -> tuple:
        commit = repo.commit_of(revision)
        if commit is None:
            return _error(404, "RevisionNotFound")
        data = repo.commits[commit].get(path)
        if data is None:
            return _error(404, "EntryNotFound", commit)
        common = {"X-Repo-Commit": commit, "Accept-Ranges": "bytes"}
        if is_lfs(path):
            sha = hashlib.sha256(data).hexdigest()
            return 302, {**common, "Location": f"{self.cdn}/blobs/{sha}", "X-Linked-Etag": f'"{sha}"',
                         "X-Linked-Size": str(len(data)), "ETag": f'"{git_blob_oid(data)}"'}, b""
        return _ranged(data, headers, {**common, "ETag": f'"{git_blob_oid(data)}"'})

    # ---- the CDN -----------------------------------------------------------------------------------------------

    def _answer_cdn(self, method: str, path: str, query: dict, body: bytes, headers) -> tuple:
        data = self.blobs.get(path.rpartition("/")[2]) if path.startswith("/blobs/") else None
        if data is None:
            return 404, {}, b""
        return _ranged(data, headers, {"ETag": f'"{hashlib.sha256(data).hexdigest()}"', "Accept-Ranges": "bytes"})


def _json(value, commit: str | None = None) -> tuple:
    return 200, {"Content-Type": "application/json", **({"X-Repo-Commit": commit} if commit else {})}, \
        json.dumps(value).encode()


def _error(status: int, code: str, commit: str | None = None) -> tuple:
    headers = {"X-Error-Code": code} if code else {}
    if commit:
        headers["X-Repo-Commit"] = commit
    return status, headers, json.dumps({"error": code or "not found"}).encode()


def _ranged(data: bytes, request_headers, headers: dict) -> tuple:
    """The whole file, or the one `bytes=a-b` range asked for (HfFileSystem reads in blocks)."""
    wanted = request_headers.get("Range", "")
    if wanted.startswith("bytes="):
        start_text, _, end_text = wanted.removeprefix("bytes=").partition("-")
        start = int(start_text or 0)
        end = min(int(end_text) if end_text else len(data) - 1, len(data) - 1)
        return 206, {**headers, "Content-Range": f"bytes {start}-{end}/{len(data)}"}, data[start:end + 1]
    return 200, headers, data


def _handler(hub: LoopbackHub, answer):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as huggingface_hub's client pools connections

        def _serve(self, method: str):
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            hub.seen.append((method, unquote(self.path)))
            status, headers, payload = answer(method, url.path, parse_qs(url.query), body, self.headers)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(payload)

        def do_GET(self):
            self._serve("GET")

        def do_HEAD(self):
            self._serve("HEAD")

        def do_POST(self):
            self._serve("POST")

        def log_message(self, *args):
            pass

    return Handler


# ---- a Hub cache of the test's own -----------------------------------------------------------------------------

def use_hub(monkeypatch, home: Path, endpoint: str | None = None, offline: bool = False) -> dict[str, str]:
    """Points huggingface_hub, in this process and in subprocesses, at `home` (its HF_HOME, with the Hub cache
    in home/hub) and at `endpoint` (a LoopbackHub) or at no server at all (`offline`). Returns the environment
    a subprocess needs."""
    from huggingface_hub import constants

    endpoint = endpoint or "http://127.0.0.1:9"  # offline never asks; a slip would hit a closed port, not the Hub
    env = {"HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"), "HF_ENDPOINT": endpoint,
           "HF_HUB_OFFLINE": "1" if offline else "0", "HF_HUB_DISABLE_TELEMETRY": "1",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_XET_CACHE": str(home / "xet")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    # Every path the constants derived from the HF_HOME of import time (token, xet cache, the agent registry
    # huggingface_hub caches after its first request...) moves under `home`, so nothing lands in the real home.
    imported_home = constants.HF_HOME
    for name, value in list(vars(constants).items()):
        if name.isupper() and isinstance(value, str) and value.startswith(imported_home):
            monkeypatch.setattr(constants, name, str(home) + value[len(imported_home):])
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    return env

