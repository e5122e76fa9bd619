"""Server-side time to build dashboard pages on a store (default: the demo store), through AppTest.

Each page is built in a fresh AppTest session (as a newly opened link is). "first visit" builds a different
unit each time, so no per-unit cache helps; "revisit" builds the same page again. Target: a unit page in
under 300 ms.

    python benchmarks/bench_pages.py [--store data/microscope.duckdb] [--model efficientnet_lite0.bundled]
                                     [--other efficientnet_lite1.bundled]

The compare view matches `--layer` of the model against each layer of `--other` (default: the same model) in
turn, so each first visit is a pair not seen before.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from store import config  # noqa: E402 - importable once the root is on the path


def build(page: str, params: dict) -> float:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.switch_page(f"app_pages/{page}.py")
    for key, value in params.items():
        at.query_params[key] = str(value)
    start = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - start
    if at.exception or at.error:
        raise SystemExit(f"{page} {params}: {[e.value for e in at.exception] or [e.value for e in at.error]}")
    return elapsed * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", default=config.DEFAULT_STORE)
    ap.add_argument("--model", default="efficientnet_lite0.bundled")
    ap.add_argument("--layer", default="conv_head", help="a large layer: its gallery and units are timed")
    ap.add_argument("--other", help="the model the compare view matches against (default: --model)")
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    os.environ["MICROSCOPE_STORE"] = str(Path(args.store).resolve())
    from store.queries import Store

    store = Store(args.store)
    layer = store.layer(args.model, args.layer)
    other = args.other or args.model
    sides = [f"{other}@{name}" for name in store.sampled_layers(other)]
    print(f"store {args.store}: {args.model}@{layer['layer']} ({layer['units']} units), {args.runs} runs each")
    build("models", {})  # warm-up: imports, store connection

    rows = [
        ("unit page, first visit", [build("unit", {"model": args.model, "layer": layer["layer"], "unit": u})
                                    for u in range(1, args.runs + 1)]),
        ("unit page, revisit", [build("unit", {"model": args.model, "layer": layer["layer"], "unit": 1})
                                for _ in range(args.runs)]),
        ("unit page, stats lens", [build("unit", {"model": args.model, "layer": layer["layer"], "unit": u,
                                                  "view": "stats"}) for u in range(1, args.runs + 1)]),
        (f"layer page ({layer['units']} units)", [build("layer", {"model": args.model, "layer": layer["layer"]})
                                                  for _ in range(args.runs)]),
        ("model page", [build("model", {"model": args.model}) for _ in range(args.runs)]),
        *[(f"unit page, {lens} lens", [build("unit", {"model": args.model, "layer": layer["layer"], "unit": u,
                                                      "view": lens}) for u in range(1, args.runs + 1)])
          for lens in ("similar", "classes")],
    ]
    if sides:
        a = f"{args.model}@{layer['layer']}"
        rows += [(f"compare page vs {other}, first visit", [build("compare", {"a": a, "b": b}) for b in sides]),
                 ("compare page, revisit", [build("compare", {"a": a, "b": sides[-1]}) for _ in range(args.runs)])]
    for name, times in rows:
        print(f"{name:32s} median {statistics.median(times):7.1f} ms   max {max(times):7.1f} ms")
    unit_median = statistics.median(rows[0][1])
    print(f"unit page first visit / 300 ms target: {unit_median / 300:.2f}")


if __name__ == "__main__":
    main()
