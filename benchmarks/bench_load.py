"""Concurrent browser sessions on one dashboard server: page times (p50, p95), errors and the server's memory.

One `streamlit run app.py` on a store, one headless Chromium with SESSIONS contexts browsing at once. Each session
opens a unit deep link (a full page load: a new Streamlit session) and then follows "Next unit" STEPS times (a
rerun on the open websocket). A page counts as shown when its heading names the unit and every dataset example
image is in the page; an exception, an error box, a page error or a timeout counts as an error. ROUNDS repeat
the whole load with new sessions, so that the server's resident memory after each round shows whether it keeps
growing (the caches in dashboard/data.py and dashboard/examples.py have max_entries and a ttl).

The server's CPU is read from its own process (user + system time of `streamlit run`, not of its children; the
browsers are children of this script), so the browsers' CPU on the same cores stays apart from it; its main
thread (Tornado: HTTP, websockets) is also shown on its own. Pages per second at that CPU cost on a 2-core server
is printed beside the target of 12 (issue 14).

    python benchmarks/bench_load.py --store /tmp/load/microscope.duckdb [--sessions 20] [--steps 5] [--rounds 2]

With `--notes SAVES`, each session instead saves SAVES labels on one of the first `--units` units of a layer, as
a person does on the unit page: it types a label of its own, presses Save, and on a stale save ("Not saved",
both versions shown) presses "Save mine on top of it" and Save again. Afterwards every save the page confirmed
("Saved (revision N)") must be a history row with its label in the notes database (a fresh SQLite file unless
MICROSCOPE_NOTES names one); a confirmed save missing there is a lost edit. It prints saves per second.

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
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
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
SERVER_CORES, TARGET_PAGES_PER_S = 2, 12  # issue 14: one 2-core server serves 12 or more pages a second


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_server(env: dict, extra: tuple[str, ...] = ()) -> Iterator[tuple[int, psutil.Process]]:
    """The dashboard served on a free loopback port, once healthy: (port, its process); stopped on exit."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
         *extra], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).close()
                break
            except OSError:
                time.sleep(0.2)
        yield port, psutil.Process(server.pid)
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()


def event_loop_cpu(proc: psutil.Process) -> float:
    """CPU seconds of the server's main thread, where Tornado serves HTTP and the websockets (script runs have
    threads of their own, which end with the run, so their time is the process's total less this)."""
    main = next((t for t in proc.threads() if t.id == proc.pid), None)
    return main.user_time + main.system_time if main else 0.0


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


async def _alert_after(page, before: str) -> str:
    """The text of the page's first alert once it differs from `before` (the one shown before the click)."""
    handle = await page.wait_for_function(
        """old => { const a = document.querySelector('[data-testid="stAlert"]');
                    return a && a.innerText.trim() !== old ? a.innerText.trim() : null; }""",
        arg=before, timeout=TIMEOUT_MS)
    return await handle.json_value()


async def _alert_text(page) -> str:
    alert = page.locator('[data-testid="stAlert"]').first
    return (await alert.inner_text()).strip() if await alert.count() else ""


async def notes_session(browser, base: str, model: str, layer: str, unit: int, saves: int, name: str,
                        done: list, counts: dict, errors: list, ramp: float) -> None:
    await asyncio.sleep(ramp)
    context = await browser.new_context(viewport={"width": 1280, "height": 1400})
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    try:
        await page.goto(f"{base}/unit?{urlencode({'model': model, 'layer': layer, 'unit': unit})}",
                        wait_until="commit", timeout=TIMEOUT_MS)
        label = page.get_by_label("Label", exact=True)
        await label.wait_for(timeout=TIMEOUT_MS)
        for i in range(saves):
            text = f"{name}-{i}"
            await label.fill(text)
            for _attempt in range(20):
                before = await _alert_text(page)
                started = time.perf_counter()
                # While a rerun replaces the page, Streamlit can show the old form beside the new one for a moment.
                await page.get_by_role("button", name="Save", exact=True).first.click()
                shown = await _alert_after(page, before)
                if shown.startswith("Saved (revision"):
                    done.append((unit, text))
                    counts["times"].append(time.perf_counter() - started)
                    break
                if "Both versions are below" not in shown:
                    raise RuntimeError(shown.splitlines()[0][:200])
                counts["stale"] += 1  # someone saved since the form was loaded: keep mine, on top of theirs
                await page.get_by_role("button", name="Save mine on top of it").first.click()
                await page.get_by_role("button", name="Save mine on top of it").first.wait_for(state="detached")
            else:
                raise RuntimeError(f"{text}: still stale after 20 tries")
    except Exception as exc:  # noqa: BLE001 - every failure is counted and reported, the others go on
        errors.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    finally:
        await context.close()


async def notes_load(base: str, model: str, layer: str, units: int, sessions: int, saves: int, ramp: float):
    from playwright.async_api import async_playwright

    done, counts, errors = [], {"stale": 0, "times": []}, []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            await asyncio.gather(*(notes_session(browser, base, model, layer, i % units, saves, f"s{i}", done,
                                                 counts, errors, ramp * i / sessions) for i in range(sessions)))
        finally:
            await browser.close()
    return done, counts, errors


def lost_edits(notes_url: str, model: str, layer: str, done: list) -> list[tuple[int, str]]:
    """The confirmed saves that have no history row with their label."""
    from store.notes import Notes

    held = Notes.open(notes_url, readonly=True)
    try:
        logged = {(unit, row["new_value"]) for unit in {u for u, _ in done}
                  for row in held.history(model, layer, unit) if row["field"] == "label"}
    finally:
        held.close()
    return [save for save in done if save not in logged]


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
    ap.add_argument("--notes", type=int, metavar="SAVES", help="save SAVES labels per session instead of browsing")
    ap.add_argument("--units", type=int, default=3, help="with --notes: the units the sessions share")
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

    env = {**os.environ, "MICROSCOPE_STORE": location}
    if args.notes:
        env.setdefault("MICROSCOPE_NOTES", f"sqlite:///{tempfile.mkdtemp(prefix='bench-notes-')}/notes.sqlite")
        env.pop("MICROSCOPE_NOTES_READONLY", None)
    with streamlit_server(env) as (port, proc):
        base = f"http://127.0.0.1:{port}"
        if args.notes:
            return notes_main(args, base, proc, env["MICROSCOPE_NOTES"], sorted(layers)[0])
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
            cpu, loop = sum(proc.cpu_times()[:2]), event_loop_cpu(proc)
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
            cpu, loop = sum(proc.cpu_times()[:2]) - cpu, event_loop_cpu(proc) - loop
            per_page, serves = cpu / max(1, len(every)), SERVER_CORES / max(cpu / max(1, len(every)), 1e-9)
            print(f"  server CPU {cpu:.1f} s in all, {per_page:.3f} s per page ({loop / max(1, len(every)):.3f} s "
                  f"of it in the event loop: HTTP, websockets; the rest in script runs and queries); "
                  f"load average {os.getloadavg()[0]:.1f}")
            print(f"  at this CPU cost a {SERVER_CORES}-core server serves {serves:.1f} pages/s (target "
                  f"{TARGET_PAGES_PER_S}: {serves / TARGET_PAGES_PER_S:.2f} x); measured here, with the browsers on "
                  f"the same cores: {len(every) / wall:.1f} pages/s")
            print(f"  server RSS peak {peak.peak:.0f} MB, after the round {rss_mb(proc):.0f} MB")
            for line in errors[:10]:
                print(f"  error: {line}")
        return 1 if total_errors else 0


def notes_main(args, base: str, proc: psutil.Process, notes_url: str, layer: str) -> int:
    print(f"{args.sessions} concurrent browser sessions, {args.notes} label saves each, on units 0-{args.units - 1} "
          f"of {args.model}@{layer}; notes {notes_url.split('://')[0]}; {os.cpu_count()} CPUs")
    cpu = sum(proc.cpu_times()[:2])
    start = time.perf_counter()
    done, counts, errors = asyncio.run(notes_load(base, args.model, layer, args.units, args.sessions, args.notes,
                                                  args.ramp))
    wall = time.perf_counter() - start
    lost = lost_edits(notes_url, args.model, layer, done)
    times = counts["times"]
    print(f"{len(done)} saves confirmed in {wall:.1f} s: {len(done) / wall:.2f} saves per second; "
          f"{counts['stale']} stale saves shown both versions and saved again; {len(errors)} errors; "
          f"{len(lost)} lost edits")
    if times:
        print(f"  save to confirmation p50 {pct(times, 50):.2f} s  p95 {pct(times, 95):.2f} s; "
              f"server CPU {sum(proc.cpu_times()[:2]) - cpu:.1f} s")
    for line in errors[:10] + [f"lost: unit {u} label {t}" for u, t in lost[:10]]:
        print(f"  {line}")
    return 1 if errors or lost else 0


if __name__ == "__main__":
    sys.exit(main())
