"""Pages per second from one dashboard server, with no browser on the machine: SESSIONS clients speak Streamlit's
own websocket protocol to one `streamlit run app.py`, each asking for a unit page (a new session's first run)
and then the next units (reruns on the open websocket, as "Next unit" does), back to back.

A page counts when its run has finished, its messages name the unit and hold every dataset example tile
(`--examples`); anything else counts as an error. The server's CPU per page is its own process's user + system
time; with the clients' CPU this small, pages per second here is what the server gives. Issue 14's target: one
2-core server serves 12 or more pages a second. bench_load.py drives real browsers (page times as people see
them); this one the server alone.

    python benchmarks/bench_serve.py --store data/microscope.duckdb [--sessions 8] [--pages 10]
                                     [-- EXTRA STREAMLIT FLAGS, e.g. --runner.postScriptGC true]

XSRF protection is off on the benchmark's loopback server: the clients have no browser cookie to send.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from store import config  # noqa: E402 - importable once the root is on the path

TILE = b'<figure class="ms-ex"'


async def session(url: str, model: str, layers: dict, pages: int, seed: int, examples: int, out: list,
                  errors: list) -> None:
    import websockets
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    rng = random.Random(seed)
    layer = rng.choice(sorted(layers))
    first = rng.randrange(max(1, layers[layer] - pages))
    try:
        async with websockets.connect(url, max_size=2**27) as ws:
            for unit in range(first, first + pages):
                ask = BackMsg()
                ask.rerun_script.query_string = urlencode({"model": model, "layer": layer, "unit": unit})
                ask.rerun_script.page_name = "unit"
                start, body = time.perf_counter(), []
                await ws.send(ask.SerializeToString())
                while True:
                    data = await ws.recv()
                    body.append(data)
                    msg = ForwardMsg()
                    msg.ParseFromString(data)
                    if msg.WhichOneof("type") == "script_finished":
                        break
                page = b"".join(body)
                if f"{model}@{layer}:{unit}".encode() not in page or page.count(TILE) < examples:
                    errors.append(f"{model}@{layer}:{unit}: {page.count(TILE)} example tiles")
                out.append((time.perf_counter() - start, len(page)))
    except Exception as exc:  # noqa: BLE001 - every failure is counted and reported, the others go on
        errors.append(f"{model}@{layer}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")


async def load(url: str, model: str, layers: dict, sessions: int, pages: int, examples: int, seed: int):
    out, errors = [], []
    await asyncio.gather(*(session(url, model, layers, pages, seed + i, examples, out, errors)
                           for i in range(sessions)))
    return out, errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=config.DEFAULT_STORE)
    ap.add_argument("--model", default="efficientnet_lite0.bundled")
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--pages", type=int, default=10, help="unit pages per session, one after the other")
    ap.add_argument("--examples", type=int, default=43, help="dataset tiles a unit page shows (16+16+11 at k=16)")
    ap.add_argument("streamlit", nargs="*", help="extra `streamlit run` flags, after --")
    args = ap.parse_args()
    from store.queries import Store

    held = Store(args.store)
    layers = {row["layer"]: row["units"] for row in held.layers(args.model) if row["dataset_units"]}
    held.close()
    if not layers:
        raise SystemExit(f"{args.store} has no dataset examples for {args.model}")
    from bench_load import SERVER_CORES, TARGET_PAGES_PER_S, streamlit_server

    env = {**os.environ, "MICROSCOPE_STORE": str(Path(args.store).resolve())}
    env.setdefault("MICROSCOPE_NOTES", f"sqlite:///{tempfile.mkdtemp(prefix='bench-serve-')}/notes.sqlite")
    with streamlit_server(env, ("--server.enableXsrfProtection", "false", *args.streamlit)) as (port, proc):
        url = f"ws://127.0.0.1:{port}/_stcore/stream"
        asyncio.run(load(url, args.model, layers, 1, 2, args.examples, 999))  # warm-up: imports, store, caches
        cpu, start = sum(proc.cpu_times()[:2]), time.perf_counter()
        out, errors = asyncio.run(load(url, args.model, layers, args.sessions, args.pages, args.examples, 0))
        wall, cpu = time.perf_counter() - start, sum(proc.cpu_times()[:2]) - cpu
        done = max(1, len(out))
        times = [t for t, _ in out] or [0.0]
        print(f"store {args.store}: {args.model}; {args.sessions} sessions x {args.pages} unit pages "
              f"{' '.join(args.streamlit)}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        print(f"  {len(out)} pages in {wall:.1f} s: {len(out) / wall:.1f} pages/s (target {TARGET_PAGES_PER_S}: "
              f"{len(out) / wall / TARGET_PAGES_PER_S:.2f} x); {len(errors)} errors")
        print(f"  page time p50 {statistics.median(times):.2f} s, max {max(times):.2f} s; "
              f"{sum(b for _, b in out) / done / 1024:.0f} KB sent per page")
        print(f"  server CPU {cpu / done:.3f} s per page, {cpu / wall:.2f} of {SERVER_CORES} cores busy; "
              f"server RSS {proc.memory_info().rss / 2**20:.0f} MB")
        for line in errors[:10]:
            print(f"  error: {line}")
        return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
