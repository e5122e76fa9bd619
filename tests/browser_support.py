"""What the real-browser tests share: Debian's chromium, a free loopback port, and a `streamlit run app.py`
server that is up (health check answered) before a test sees its address and always stopped after."""

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def require_chromium() -> None:
    """Skips the calling module without chromium, unless CI demands the browser tests run."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("MICROSCOPE_REQUIRE_BROWSER"):
            raise RuntimeError(f"MICROSCOPE_REQUIRE_BROWSER is set but {CHROMIUM} is missing (apt install chromium)")
        pytest.skip(f"{CHROMIUM} not installed", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(port: int, env: dict, folder: Path, extra_args: tuple[str, ...] = ()):
    """Runs the dashboard on 127.0.0.1:port with `env`, logging to folder/streamlit.log; yields its base URL."""
    base = f"http://127.0.0.1:{port}"
    log_path = folder / "streamlit.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port",
             str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false", *extra_args],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as reply:
                        if reply.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"streamlit did not come up: {log_path.read_text()[-2000:]}")
                time.sleep(0.3)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
