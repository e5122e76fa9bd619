"""A remote store (`https://`, `s3://`, `hf://datasets/ORG/NAME/FILE`, any fsspec URL) mirrored into a local cache.

DuckDB extensions cannot be downloaded in many deployments, so the dashboard never reads a remote file in place:
the file is fetched whole into a cache folder, checked (size, a checksum where the source publishes one, and
the schema version), and only then moved over the cached copy with an atomic rename. A newer published file
replaces the copy the same way, so the dashboard always reads a complete store that passed the checks; a remote
that is unreachable, corrupt or of another schema version leaves the previous good copy in place and an error
message for the page to show.

HTTP(S) goes through the standard library (no extra dependency in a serving image); every other scheme through
fsspec (`s3fs` for S3; `huggingface_hub` registers `hf://`). Never imports streamlit or torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from store import StoreError, config
from store.errors import first_line

CHUNK = 1 << 20
HTTP_TIMEOUT = 30.0
RETRY_FLOOR = 5.0  # seconds between fetch attempts while there is no good copy at all
# fsspec `info()` fields that change when a file is republished (S3: ETag/LastModified; hf: blob_id; local: mtime).
FINGERPRINT_FIELDS = ("ETag", "etag", "LastModified", "last_modified", "mtime", "created", "blob_id", "size")


def is_remote(location: str | os.PathLike) -> bool:
    """A URL with a scheme other than file:// (a Windows drive letter is not a scheme)."""
    text = str(location)
    scheme, sep, _ = text.partition("://")
    return bool(sep) and len(scheme) > 1 and scheme != "file"


def redact(location: str) -> str:
    """The location without a query string: presigned URLs carry credentials there."""
    return location.split("?", 1)[0] + ("?…" if "?" in location else "")


@dataclass
class Fetched:
    """What the source said about the file we downloaded: validators for the next check, and checks to run."""

    fingerprint: dict
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None


@dataclass
class Mirror:
    """The local copy of one remote store, refreshed at most every `interval` seconds in a background thread."""

    location: str
    cache: Path = field(default_factory=config.cache_dir)
    interval: float = field(default_factory=config.refresh_seconds)

    def __post_init__(self):
        self.cache = Path(self.cache)
        self.folder = self.cache / hashlib.sha256(self.location.encode()).hexdigest()[:16]
        self.path = self.folder / "store.duckdb"
        self._record = self.folder / "source.json"
        self._lock = threading.Lock()  # one fetch at a time, foreground or background
        self._busy = False
        self._checked = float("-inf")
        self.error: str | None = None  # why the last check did not give a usable store; None after a good one
        self._seen: dict | None = None  # validators of the newest version downloaded whole, good or rejected
        self._seen_error: str | None = None  # why that version was rejected; None if it is the good copy
        self._trusted = False  # the cached copy passed the checks in this process

    # ---- what the dashboard calls ----------------------------------------------------------------------------

    def current(self) -> Path:
        """The good local copy, fetching it first if there is none; a due check runs in the background."""
        if not self._trusted:
            with self._lock:
                if not self._trusted:
                    self._adopt_cache()
                # Without a good copy every page load asks again, but a failing remote at most every few seconds.
                if not self._trusted and time.monotonic() - self._checked >= min(self.interval, RETRY_FLOOR):
                    self._refresh_locked()
            if not self._trusted:
                raise StoreError(self.error or f"no usable store at {redact(self.location)}")
        elif time.monotonic() - self._checked >= self.interval:
            self._refresh_in_background()
        return self.path

    @property
    def ready(self) -> bool:
        return self._trusted

    def fetched_at(self) -> str | None:
        try:
            return json.loads(self._record.read_text()).get("fetched_at")
        except (OSError, ValueError):
            return None

    def refresh(self) -> bool:
        """Check the remote now and swap in a newer good file; True if the local copy changed."""
        with self._lock:
            return self._refresh_locked()

    def wait(self, timeout: float = 60.0) -> None:
        """Until no background check is running (tests, and the CLI before it exits)."""
        deadline = time.monotonic() + timeout
        while self._busy and time.monotonic() < deadline:
            time.sleep(0.02)

    # ---- checking and fetching ---------------------------------------------------------------------------------

    def _refresh_in_background(self) -> None:
        with self._lock:
            if self._busy:
                return
            self._busy = True
            self._checked = time.monotonic()

        def run():
            try:
                self.refresh()
            finally:
                self._busy = False

        threading.Thread(target=run, name="microscope-store-refresh", daemon=True).start()

    def _adopt_cache(self) -> None:
        """A copy left by an earlier process is used if it still passes the checks (Microscope may have been
        upgraded to another schema version since); then it is refreshed like any other."""
        try:
            record = json.loads(self._record.read_text())
            if record.get("location") == self.location and self.path.stat().st_size == record.get("size"):
                validate(self.path)
                self._seen, self._trusted = record.get("fingerprint"), True
        except (OSError, ValueError, StoreError):
            pass
        for stale in self.folder.glob("*.part"):
            stale.unlink(missing_ok=True)

    def _refresh_locked(self) -> bool:
        self._checked = time.monotonic()
        self.folder.mkdir(parents=True, exist_ok=True)
        part = self.folder / f"store.{os.getpid()}.{threading.get_ident()}.part"
        try:
            fetched = self._download(part)
            if fetched is None:  # unchanged since the version last seen: its verdict stands
                self.error = self._seen_error
                return False
            check_download(part, fetched)  # a failure here may be a cut connection: try this version again
            self._seen, self._seen_error = fetched.fingerprint, None
            try:
                validate(part)
            except StoreError as exc:
                self._seen_error = str(exc).replace(str(part), redact(self.location))
                raise StoreError(self._seen_error) from None
            os.replace(part, self.path)
            self._write_record(fetched)
            self._trusted, self.error = True, None
            return True
        except StoreError as exc:
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - a network stack raises many kinds; the page needs one line
            self.error = f"cannot fetch store {redact(self.location)}: {first_line(exc)}"
        finally:
            part.unlink(missing_ok=True)
        return False

    def _write_record(self, fetched: Fetched) -> None:
        record = {"location": self.location, "fingerprint": fetched.fingerprint, "size": self.path.stat().st_size,
                  "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        tmp = self._record.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self._record)

    def _download(self, part: Path) -> Fetched | None:
        if self.location.startswith(("http://", "https://")):
            return _download_http(self.location, part, self._seen)
        return _download_fsspec(self.location, part, self._seen)


def _download_http(url: str, part: Path, seen: dict | None) -> Fetched | None:
    """One conditional GET (works with presigned URLs, which refuse HEAD): 304 means nothing new."""
    request = urllib.request.Request(url, headers={"User-Agent": "microscope"})
    if seen and seen.get("etag"):
        request.add_header("If-None-Match", seen["etag"])
    if seen and seen.get("last_modified"):
        request.add_header("If-Modified-Since", seen["last_modified"])
    try:
        reply = urllib.request.urlopen(request, timeout=HTTP_TIMEOUT)
    except urllib.error.HTTPError as exc:
        if exc.code == 304:
            return None
        raise StoreError(f"cannot fetch store {redact(url)}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise StoreError(f"cannot reach store {redact(url)}: {exc.reason}") from None
    with reply:
        headers = reply.headers
        fingerprint = {"etag": headers.get("ETag"), "last_modified": headers.get("Last-Modified"),
                       "size": headers.get("Content-Length")}
        if seen and fingerprint == seen and any(fingerprint.values()):
            return None  # a server that ignores conditional requests but reports the same version
        length = headers.get("Content-Length")
        with open(part, "wb") as out:
            shutil.copyfileobj(reply, out, CHUNK)
    return Fetched(fingerprint, size=int(length) if length and length.isdigit() else None)


def _download_fsspec(location: str, part: Path, seen: dict | None) -> Fetched | None:
    try:
        from fsspec.core import url_to_fs

        fs, path = url_to_fs(location)
    except (ImportError, ValueError) as exc:
        scheme = location.split("://", 1)[0]
        if scheme in ("s3", "s3a") and isinstance(exc, ImportError):  # s3fs is the `s3` extra
            raise StoreError(f"{scheme}:// stores need s3fs: pip install 'microscope[s3]'") from None
        raise StoreError(f"cannot read {scheme}:// stores here: {exc}") from None
    # HfFileSystem's plain info() is name, size and type; expanded it has the git blob id, which changes with
    # every republish (a store of the same size too), and the LFS SHA-256 to check the download against.
    expand = {"expand_info": True} if "hf" in _protocols(fs) else {}
    try:
        fs.invalidate_cache(path)  # fsspec file systems may answer from a listing made before the republish
        info = fs.info(path, **expand)
    except FileNotFoundError:
        raise StoreError(f"no store at {redact(location)}") from None
    fingerprint = {k: str(info[k]) for k in FINGERPRINT_FIELDS if info.get(k) is not None}
    if seen and fingerprint == seen:
        return None
    etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
    lfs = info.get("lfs") or {}
    with fs.open(path, "rb") as src, open(part, "wb") as out:
        shutil.copyfileobj(src, out, CHUNK)
    return Fetched(fingerprint, size=info.get("size"),
                   # An S3 ETag is the MD5 of the body unless the object was a multipart upload ("...-N").
                   md5=etag if len(etag) == 32 and all(c in "0123456789abcdef" for c in etag) else None,
                   sha256=lfs.get("sha256") if isinstance(lfs, dict) else None)


def _protocols(fs) -> tuple[str, ...]:
    return (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)


def check_download(part: Path, fetched: Fetched) -> None:
    """The bytes on disk are the bytes the source announced: a cut connection or a mid-download replace fails."""
    size = part.stat().st_size
    if fetched.size is not None and size != int(fetched.size):
        raise StoreError(f"store download incomplete: {size} of {fetched.size} bytes")
    for name, expected in (("md5", fetched.md5), ("sha256", fetched.sha256)):
        if expected:
            digest = hashlib.new(name)
            with open(part, "rb") as f:
                while block := f.read(CHUNK):
                    digest.update(block)
            if digest.hexdigest() != expected:
                raise StoreError(f"store download corrupt: {name} {digest.hexdigest()} does not match the "
                                 f"source's {expected}")


def validate(path: Path) -> None:
    """Opens it as the dashboard will (read-only, schema version checked) and reads the model list."""
    from store.queries import Store

    store = Store(path)
    try:
        store.built_at()
        store.models()
    except Exception as exc:  # noqa: BLE001 - any failure here means the file is not a store we can serve
        raise StoreError(f"store {path} is not a readable Microscope store: {exc}") from None
    finally:
        store.close()


_MIRRORS: dict[tuple[str, str], Mirror] = {}
_MIRRORS_LOCK = threading.Lock()


def mirror(location: str, cache: Path | None = None, interval: float | None = None) -> Mirror:
    """The process's one mirror per (location, cache folder), so that every session shares one download."""
    cache = Path(cache) if cache else config.cache_dir()
    with _MIRRORS_LOCK:
        key = (location, str(cache))
        if key not in _MIRRORS:
            _MIRRORS[key] = Mirror(location, cache, config.refresh_seconds() if interval is None else interval)
        elif interval is not None:
            _MIRRORS[key].interval = interval
        return _MIRRORS[key]
