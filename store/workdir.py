"""The work folder, wherever it lives: a local (or shared, e.g. NFS) path, or an object-store URL such as
`s3://bucket/prefix`, reached through fsspec so that every Ray worker can write shards into it.

A local folder is a `Path` and keeps the rename-based writes of `store.shards`; a URL stays a `str`.
Object stores are configured the standard ways, nothing Microscope-specific: for S3, credentials and the
endpoint come from the AWS chain that botocore reads (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`,
`AWS_PROFILE`, an instance role; `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` for an S3-compatible server),
and any s3fs option from fsspec's `FSSPEC_S3_<OPTION>` variables (`FSSPEC_S3_ENDPOINT_URL`).
"""

from __future__ import annotations

import os
from pathlib import Path

from store.errors import MicroscopeError

Location = Path | str


def location(value: str | Path | None) -> Location | None:
    """A URL (`scheme://...`) stays a string: `Path` would fold its `//`. Anything else is a local path."""
    if value is None or isinstance(value, Path):
        return value
    return value.rstrip("/") if "://" in value else Path(value)


LEGACY = "work"  # the one work folder that every store of a folder shared before NAME.work/


def default_for(store) -> Path:
    """Where a store's shards are kept unless told otherwise: `NAME.work/` beside `NAME.duckdb`, so that two
    stores in one folder never build from each other's shards.

    A folder set up by an older Microscope has one `work/` beside its stores. Where this store is the only
    store there (or there is none yet), that folder can only be its own and is kept, so a rerun still resumes;
    beside other stores it may hold theirs, so the user is told how to move or share it instead."""
    store = Path(store)
    own = store.with_name(f"{store.stem}.work")
    legacy = store.parent / LEGACY
    if own.exists() or not legacy.is_dir():
        return own
    others = sorted(p.name for p in store.parent.glob("*.duckdb") if p.name != store.name)
    if not others:
        return legacy
    raise MicroscopeError(f"{legacy} is the work folder that older versions shared between the stores in "
                          f"{store.parent} ({', '.join(others)}): move it to the store whose shards it holds, e.g. "
                          f"`mv {legacy} {store.parent / Path(others[0]).stem}.work`, or share it on purpose with "
                          f"--work {legacy}")


def is_url(work: Location) -> bool:
    return isinstance(work, str) and "://" in work


def filesystem(url: str):
    """The fsspec filesystem of a URL and the URL's path inside it.

    Listings are not cached: other processes (workers, an earlier driver) add shards while this one runs, and
    a stale listing would make a finished shard look missing and run its job again. The instance is reused
    while the settings in the environment stay the same: making an S3 client costs about as much as a hundred
    small PUTs."""
    import fsspec

    protocol = url.split("://", 1)[0]
    settings = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(("AWS_", "FSSPEC_"))))
    key = (protocol, os.getpid(), settings)
    if key not in _FILESYSTEMS:
        _FILESYSTEMS.clear()
        try:
            _FILESYSTEMS[key] = fsspec.filesystem(protocol, use_listings_cache=False, skip_instance_cache=True)
        except ImportError as exc:  # fsspec imports the protocol's package here; s3fs is the `s3` extra
            if protocol in ("s3", "s3a"):
                raise MicroscopeError(f"{protocol}:// work folders need s3fs: pip install 'microscope[s3]'") from None
            raise MicroscopeError(f"cannot use {protocol}:// work folders here: {exc}") from None
    fs = _FILESYSTEMS[key]
    return fs, fs._strip_protocol(url)


_FILESYSTEMS: dict = {}  # one: the filesystem for the current settings (see filesystem())


def join(work: Location, rel: str) -> Location:
    return work / rel if isinstance(work, Path) else f"{work}/{rel}"


def exists(work: Location, rel: str) -> bool:
    if isinstance(work, Path):
        return (work / rel).exists()
    fs, root = filesystem(work)
    return fs.exists(f"{root}/{rel}")


def read_text(work: Location, rel: str) -> str | None:
    """The file's text, or None where there is none."""
    if isinstance(work, Path):
        path = work / rel
        return path.read_text() if path.is_file() else None
    fs, root = filesystem(work)
    try:
        return fs.cat_file(f"{root}/{rel}").decode()
    except FileNotFoundError:
        return None


def write_bytes(work: Location, rel: str, data: bytes) -> None:
    """Writes one file whole. Locally: a temporary name, then a rename over any file of the same name. On an
    object store one PUT is already all-or-nothing: readers see the old object or the new one, never a part."""
    if isinstance(work, Path):
        path = work / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return
    fs, root = filesystem(work)
    fs.pipe_file(f"{root}/{rel}", data)


def names_under(work: Location, rel: str) -> set[str]:
    """Relative paths of the files under a folder, found with one listing (not one request per file)."""
    if isinstance(work, Path):
        base = work / rel
        return {p.relative_to(work).as_posix() for p in base.rglob("*") if p.is_file()} if base.is_dir() else set()
    fs, root = filesystem(work)
    return {p[len(root) + 1:] for p in fs.find(f"{root}/{rel}")}
