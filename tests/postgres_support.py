"""A real PostgreSQL server for the notes tests: Debian's `postgresql` package (initdb and pg_ctl from
/usr/lib/postgresql/*/bin), a fresh cluster in a temp folder, listening on a free loopback port with its unix
socket in that folder, stopped at the end. PostgreSQL refuses to run as root, so as root the cluster belongs to
the `postgres` user and the commands run through `runuser`."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.browser_support import free_port


def pg_bin() -> Path | None:
    """The newest installed server's bin folder, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def require_postgres() -> Path:
    """The bin folder; without one, a skip, unless MICROSCOPE_REQUIRE_POSTGRES (set by .ci/run) makes it a failure."""
    found = pg_bin()
    if found is None:
        if os.environ.get("MICROSCOPE_REQUIRE_POSTGRES"):
            raise RuntimeError("MICROSCOPE_REQUIRE_POSTGRES is set but no PostgreSQL server is installed "
                               "(apt-get install postgresql)")
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    return found


@contextlib.contextmanager
def postgres_server(folder: Path):
    """Yields the SQLAlchemy URL of a database `microscope` on a fresh cluster; always stops the server."""
    bin_dir = require_postgres()
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    user = "postgres" if as_root else pwd.getpwuid(os.geteuid()).pw_name
    data, sock = folder / "data", folder / "sock"
    sock.mkdir(parents=True)
    if as_root:
        shutil.chown(folder, "postgres")
        shutil.chown(sock, "postgres")
    port = free_port()

    def run(*argv: str) -> None:
        done = subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"{argv[0]} failed: {(done.stderr or done.stdout)[-2000:]}")

    run(str(bin_dir / "initdb"), "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8", "--no-sync")
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w", "-t", "60", "-o",
        f"-h 127.0.0.1 -p {port} -k {sock} -c fsync=off", "start")
    try:
        run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", user, "microscope")
        yield f"postgresql+psycopg://{user}@127.0.0.1:{port}/microscope"
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
