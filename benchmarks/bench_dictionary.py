"""Dictionary learning: an 8x TopK dictionary of blocks.5 of the bundled EfficientNet-Lite0 over the sample
dataset (the pass that samples its activation vectors, two seeds' training, quality and stability), set
against the plain dataset pass (`--techniques stats`) of the same layer, each through `microscope precompute`
in a fresh process of its own: wall time, CPU time and peak resident memory, and their ratios.
Targets (issue 12): at most 2 minutes and 4 GB on 2 CPU cores.

    python benchmarks/bench_dictionary.py [--layer blocks.5] [--features 8x] [--device cpu] [--max-images N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def phase(args) -> None:
    sys.path.insert(0, str(ROOT))
    from precompute.pipeline import precompute
    from precompute.request import Request

    work = Path(args.work)
    summary = precompute(Request(model="efficientnet_lite0.bundled", store=work / "s.duckdb", work=work / "work",
                                 layers=args.layer, techniques=args.phase, device=args.device, progress=False,
                                 max_images=args.max_images, options={"features": args.features}))
    print(json.dumps({"seconds": summary["seconds"], "failed": summary["failed"]}))


def measure(args, technique: str, work: str) -> dict:
    command = [sys.executable, __file__, "--phase", technique, "--work", work, "--layer", args.layer,
               "--features", args.features, "--device", args.device]
    if args.max_images:
        command += ["--max-images", str(args.max_images)]
    started = time.time()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=ROOT)
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    if status:
        raise SystemExit(f"{technique} run failed (status {status})")
    return {"wall_s": time.time() - started, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_gb": usage.ru_maxrss / 2 ** 20, **json.loads(out.decode().strip().splitlines()[-1])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layer", default="blocks.5")
    p.add_argument("--features", default="8x")
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-images", type=int)
    p.add_argument("--phase")
    p.add_argument("--work")
    args = p.parse_args()
    if args.phase:
        return phase(args)
    import torch

    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {os.cpu_count()} cores"
    results = {}
    for technique in ("stats", "dictionary"):
        with tempfile.TemporaryDirectory() as work:
            results[technique] = measure(args, technique, work)
    plain, learnt = results["stats"], results["dictionary"]
    print(f"efficientnet_lite0.bundled@{args.layer}, --features {args.features}, {name}")
    for label, r in (("plain dataset pass (stats)", plain), ("dictionary (2 seeds)", learnt)):
        print(f"  {label:28s} wall {r['wall_s']:6.1f} s  (precompute {r['seconds']:6.1f} s)  cpu {r['cpu_s']:6.1f} s  "
              f"peak RSS {r['peak_rss_gb']:.2f} GB")
    print(f"  ratio dictionary / plain:    wall {learnt['wall_s'] / plain['wall_s']:.2f}x  "
          f"precompute {learnt['seconds'] / max(plain['seconds'], 1e-9):.2f}x  "
          f"peak RSS {learnt['peak_rss_gb'] / plain['peak_rss_gb']:.2f}x")
    print(f"  targets: wall <= 120 s: {'yes' if learnt['wall_s'] <= 120 else 'NO'}; "
          f"peak RSS <= 4 GB: {'yes' if learnt['peak_rss_gb'] <= 4 else 'NO'}")


if __name__ == "__main__":
    main()
