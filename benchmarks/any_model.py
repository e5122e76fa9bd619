"""Models the registry does not describe, as a new user brings them: each architecture (random weights) gets
its default layers, a default run (stats, dataset, tuning, circuits) over 24 images, then feature
visualisation of two units of its middle default layer at the default preset. Each run is its own process
(`microscope precompute`), so its peak memory (max RSS) and wall time are its own; the table says what failed.

    python benchmarks/any_model.py [--only resnet18,swin] [--images 24] [--no-featurevis] [--out DIR]
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
FACTORIES = '''
import timm
import torchvision


def resnet18():
    return timm.create_model("resnet18", pretrained=False)


def densenet121():
    return timm.create_model("densenet121", pretrained=False)


def convnext_atto():
    return timm.create_model("convnext_atto", pretrained=False)


def mobilenetv3():
    return timm.create_model("mobilenetv3_small_050", pretrained=False)


def vit_tiny():
    return timm.create_model("vit_tiny_patch16_224", pretrained=False)


def swin_tiny():
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False)


def googlenet():
    return torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False)
'''
ARCHS = ("resnet18", "densenet121", "convnext_atto", "mobilenetv3", "vit_tiny", "swin_tiny", "googlenet")


def microscope(*args: str) -> tuple[int, float, float, str]:
    """(exit code, seconds, peak MB of that process, its last `microscope:` line) of one `microscope` command."""
    with tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "precompute.cli", *args], cwd=ROOT,
                                 stdout=subprocess.DEVNULL, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage, not the largest child's so far
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        lines = [line for line in err.read().replace("\r", "\n").splitlines() if line.startswith("microscope")]
    return child.returncode, seconds, usage.ru_maxrss / 1024, (lines[-1] if lines else "")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", help="comma-separated architectures (default: all)")
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--no-featurevis", action="store_true")
    ap.add_argument("--out", help="folder for the stores (default: a temporary one)")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="any-model-"))
    out.mkdir(parents=True, exist_ok=True)
    factories = out / "architectures.py"
    factories.write_text(FACTORIES)
    print(f"{'model':14} {'layers':>6}  {'default run':>12} {'peak MB':>8}  {'featurevis':>10}  layers or failure")
    for arch in (args.only.split(",") if args.only else ARCHS):
        store = out / f"{arch}.duckdb"
        code, seconds, peak, err = microscope("precompute", f"{factories}:{arch}", "--name", arch, "--store",
                                              str(store), "--techniques", "stats,dataset,tuning,circuits",
                                              "--max-images", str(args.images))
        info = subprocess.run([sys.executable, "-m", "precompute.cli", "info", "--json", "--store", str(store)],
                              cwd=ROOT, capture_output=True, text=True)
        layers = [la["layer"] for m in json.loads(info.stdout or "{}").get("models", []) for la in m.get("layers", [])]
        fv = "-"
        if not args.no_featurevis and layers:
            middle = layers[len(layers) // 2]
            fcode, fseconds, _, ferr = microscope("precompute", f"{factories}:{arch}", "--name", arch, "--store",
                                                  str(store), "--techniques", "featurevis", "--layers", middle,
                                                  "--units", "0-1")
            fv = f"{fseconds:.0f} s" if fcode == 0 else "failed"
            err = err or ferr
        status = f"{seconds:.0f} s" if code == 0 else f"exit {code}"
        print(f"{arch:14} {len(layers):>6}  {status:>12} {peak:>8.0f}  {fv:>10}  {err or ', '.join(layers)}",
              flush=True)


if __name__ == "__main__":
    main()
