"""Concurrent browser sessions on one dashboard server: page times (p50, p95), errors and the server's memory.

One `streamlit run app.py` on a store, one headless Chromium with SESSIONS contexts browsing at once. Each session
opens a unit deep link (a full page load: a new Streamlit session) and then follows "Next unit" STEPS times (a
rerun on the open websocket). A page counts as shown when its heading names the unit and every dataset example
image is in the page; an exception, an error box, a page error or a timeout counts as an error. ROUNDS repeat
the whole load with new sessions, so that the server's resident memory after each round shows whether it keeps
growing (the caches in dashboard/data.py and dashboard/examples.py have max_entries and a ttl).

    python benchmarks/bench_load.py --store /tmp/load/microscope.duckdb [--sessions 20] [--steps 5] [--rounds 2]

Build a store for it with, e.g.:
    microscope precompute efficientnet_lite0.bundled --store /tmp/load/microscope.duckdb \
        --layers blocks.2,blocks.4 --max-images 300
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from store import config  # noqa: E402 - importable once the root is on the path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]
TIMEOUT_MS = 120_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(proc: psutil.Process) -> float:
    return proc.memory_info().rss / 2**20


class Peak(threading.Thread):
    """Samples the server's RSS while the load runs."""

    def __init__(self, proc: psutil.Process):
        super().__init__(daemon=True)
        self.proc, self.peak, self.stop = proc, 0.0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_mb(self.proc))
            time.sleep(0.2)


async def shown(page, unit_id: str, examples: int) -> None:
    await page.get_by_role("heading", name=unit_id).wait_for(timeout=TIMEOUT_MS)
    await page.wait_for_function(
        "n => document.querySelectorAll('.ms-ex-grid img').length >= n", arg=examples, timeout=TIMEOUT_MS)
    if await page.locator('[data-testid="stException"]').count():
        raise RuntimeError(f"exception on {unit_id}")


async def session(browser, base: str, model: str, layers: dict, steps: int, seed: int, examples: int,
                  times: dict, errors: list, ramp: float) -> None:
    rng = random.Random(seed)
    await asyncio.sleep(ramp)  # a team arrives over a few seconds, not in one instant
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    layer = rng.choice(sorted(layers))
    unit = rng.randrange(layers[layer] - steps)
    try:
        start = time.perf_counter()
        # The page counts from the request to the last example image: the browser's load event is no milestone
        # of a Streamlit page (its content comes later, over the websocket).
        await page.goto(f"{base}/unit?{urlencode({'model': model, 'layer': layer, 'unit': unit})}",
                        wait_until="commit", timeout=TIMEOUT_MS)
        await shown(page, f"{model}@{layer}:{unit}", examples)
        times["open"].append(time.perf_counter() - start)
        for _ in range(steps):
            unit += 1
            start = time.perf_counter()
            await page.get_by_role("link", name="Next unit").click()
            await shown(page, f"{model}@{layer}:{unit}", examples)
            times["next"].append(time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - every failure is counted and reported, the others go on
        errors.append(f"{model}@{layer}:{unit}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    finally:
        await context.close()


async def load(base: str, model: str, layers: dict, sessions: int, steps: int, round_: int, examples: int,
               ramp: float = 0.0):
    from playwright.async_api import async_playwright

    times, errors = {"open": [], "next": []}, []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            await asyncio.gather(*(session(browser, base, model, layers, steps, 1000 * round_ + i, examples, times,
                                           errors, ramp * i / sessions) for i in range(sessions)))
        finally:
            await browser.close()
    return times, errors


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=config.DEFAULT_STORE, help="store file or remote store URL")
    ap.add_argument("--model", default="efficientnet_lite0.bundled")
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--steps", type=int, default=5, help="'Next unit' clicks per session after the deep link")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ramp", type=float, default=5.0, help="seconds over which the sessions start")
    ap.add_argument("--examples", type=int, default=43, help="dataset images a unit page shows (16+16+11 at k=16)")
    args = ap.parse_args()

    from store.queries import Store

    location = args.store if "://" in args.store else str(Path(args.store).resolve())
    if "://" not in location:
        with_layers = Store(location)
        layers = {layer["layer"]: layer["units"] for layer in with_layers.layers(args.model) if layer["dataset_units"]}
        with_layers.close()
    else:
        from store import remote

        held = remote.mirror(location)
        with_layers = Store(held.current())
        layers = {layer["layer"]: layer["units"] for layer in with_layers.layers(args.model) if layer["dataset_units"]}
        with_layers.close()
    if not layers:
        raise SystemExit(f"{args.store} has no dataset examples for {args.model}")

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=ROOT, env={**os.environ, "MICROSCOPE_STORE": location}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{base}/_stcore/health", timeout=2).close()
                break
            except OSError:
                time.sleep(0.2)
        proc = psutil.Process(server.pid)
        print(f"store {args.store}: {args.model}, layers {layers}; {args.sessions} concurrent browser sessions, "
              f"each a deep link then {args.steps} x 'Next unit', starting over {args.ramp:g} s; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        print(f"server RSS idle: {rss_mb(proc):.0f} MB")
        asyncio.run(load(base, args.model, layers, 1, 1, 99, args.examples))  # warm-up: imports, store, caches
        print(f"server RSS after one warm-up session: {rss_mb(proc):.0f} MB")
        total_errors = 0
        for round_ in range(1, args.rounds + 1):
            peak = Peak(proc)
            peak.start()
            cpu = sum(proc.cpu_times()[:2])
            start = time.perf_counter()
            times, errors = asyncio.run(load(base, args.model, layers, args.sessions, args.steps, round_,
                                             args.examples, args.ramp))
            wall = time.perf_counter() - start
            peak.stop.set()
            peak.join()
            time.sleep(2)
            every = times["open"] + times["next"]
            total_errors += len(errors)
            print(f"round {round_}: {len(every)} pages in {wall:.1f} s, {len(errors)} errors")
            for name, values in (("deep link (new session)", times["open"]), ("next unit (rerun)", times["next"]),
                                 ("all pages", every)):
                if values:
                    print(f"  {name:24s} n={len(values):3d}  p50 {pct(values, 50):6.2f} s  "
                          f"p95 {pct(values, 95):6.2f} s  max {max(values):6.2f} s")
            # Server CPU per page separates the server's cost from the browsers' on a machine they share.
            cpu = sum(proc.cpu_times()[:2]) - cpu
            print(f"  server CPU {cpu:.1f} s in all, {cpu / max(1, len(every)):.2f} s per page; "
                  f"load average {os.getloadavg()[0]:.1f}")
            print(f"  server RSS peak {peak.peak:.0f} MB, after the round {rss_mb(proc):.0f} MB")
            for line in errors[:10]:
                print(f"  error: {line}")
        return 1 if total_errors else 0
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    sys.exit(main())
