"""The `microscope` command line. Every failure is one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from store import config, workdir
from store.errors import MicroscopeError, one_line


def _store_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", type=Path, default=Path(config.store_location()),
                        help="store file (default: $MICROSCOPE_STORE or %(default)s)")


def _argument(parse, accept, expected: str):
    """An argparse type: `parse` the text, keep the value if `accept`s it, or say in one line what was expected."""
    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return convert


_floats3 = _argument(lambda text: tuple(float(v) for v in text.split(",")), lambda v: len(v) == 3,
                     "three comma-separated numbers")
_fraction = _argument(float, lambda v: 0 < v <= 1, "a fraction in (0, 1]")
_positive = _argument(int, lambda v: v > 0, "a positive integer")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="microscope", description="Render every unit of a vision model into a "
                                "store, and browse it in a dashboard.")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("models", help="list the models in the registry")
    sub.add_parser("entry", help="print the path of the dashboard's Streamlit entry, for `streamlit run "
                   "\"$(microscope entry)\" --server.fileWatcherType none` (an installed entry lies in site-packages)")

    pre = sub.add_parser("precompute", help="compute techniques for units of a model, then ingest the store")
    pre.add_argument("model", help="registry id, hf-hub:ORG/NAME[@REV], local-dir:PATH, or file.py:factory")
    pre.add_argument("--layers", default="default", help="comma-separated layer names or aliases; default (a "
                     "registry model's layers; for any other model its block and stage outputs), all (every layer "
                     "found) or convs (every convolution)")
    pre.add_argument("--units", default="all", help="units such as 0-15,40, or all")
    pre.add_argument("--techniques", default="default", help="comma list of stats,dataset,tuning,"
                     "featurevis,circuits,similar,classes,dictionary, where default (all but featurevis and "
                     "dictionary) and all stand for their sets: default,dictionary")
    # Choices are spelled out, not read from the registries: building the parser must not import torch (the
    # serving image has none); the request checks them against the registries again.
    pre.add_argument("--preset", choices=("quick", "full"), help="featurevis settings: quick (128 px, 256 steps, "
                     "the default) or full (224 px, 2048 steps)")
    pre.add_argument("--steps", type=_positive, help="featurevis optimisation steps (overrides the preset)")
    pre.add_argument("--size", type=_positive, help="featurevis image side in pixels (overrides the preset)")
    pre.add_argument("--window", type=_fraction, help="featurevis: side of the random window of the model's input "
                     "that each step of a pooled objective sees, as a fraction (quick: 0.5, full: 1, the whole input)")
    pre.add_argument("--gallery", action="store_true", help="featurevis: only each unit's channel pictures (the "
                     "gallery's; two seeds, with their trust signals) and the layer's DeepDream and caricatures, "
                     "not the neuron, negative and diversity pictures: about a quarter of the time")
    pre.add_argument("--features", help="dictionary: its size, an expansion of the layer's width (8x, the "
                     "default) or a feature count (2048); names the dictionary layer (blocks.5/topk8x)")
    pre.add_argument("--dict-k", type=_positive, help="dictionary: features active per position (the TopK's k; "
                     "default: the layer's width / 8, from 2 to 32)")
    pre.add_argument("--dataset", default="sample", help="sample, folder:PATH or hf:ORG/NAME (default: sample)")
    pre.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    pre.add_argument("--seed", type=int, default=0)
    pre.add_argument("--k", type=_positive, default=16, help="top and bottom examples kept per unit")
    pre.add_argument("--batch-size", type=_positive, default=32)
    pre.add_argument("--max-images", type=_positive, help="use only the first N dataset images")
    pre.add_argument("--work", type=workdir.location, help="shard folder, a path or s3://BUCKET/PREFIX that every "
                     "worker can reach (default: NAME.work beside the store NAME.duckdb)")
    pre.add_argument("--executor", choices=("local", "ray"), default="local",
                     help="run jobs in this process (local, the default) or as tasks on a Ray cluster")
    pre.add_argument("--address", help="with --executor ray: the cluster to join (auto, HOST:6379 or "
                     "ray://HOST:10001; default: start a local one)")
    pre.add_argument("--name", default="", help="model id to store a hub/local/factory model under")
    pre.add_argument("--input-size", type=_positive, help="input side in pixels for a model the registry lacks")
    pre.add_argument("--mean", type=_floats3, help="normalisation mean, e.g. 0.485,0.456,0.406")
    pre.add_argument("--std", type=_floats3, help="normalisation std, e.g. 0.229,0.224,0.225")
    _store_arg(pre)

    ing = sub.add_parser("ingest", help="rebuild the store from the shards of the work folder")
    ing.add_argument("--work", type=workdir.location, help="shard folder, a path or s3://BUCKET/PREFIX "
                     "(default: NAME.work beside the store NAME.duckdb)")
    _store_arg(ing)

    info = sub.add_parser("info", help="what the store holds")
    info.add_argument("--json", action="store_true", help="print JSON")
    _store_arg(info)

    unit = sub.add_parser("unit", help="everything stored for one unit")
    unit.add_argument("model")
    unit.add_argument("layer", help="layer name or alias")
    unit.add_argument("unit", type=int)
    unit.add_argument("--json", action="store_true", help="print JSON")
    unit.add_argument("--images", type=Path, metavar="DIR", help="also write every image stored for the unit (dataset "
                      "examples, feature visualisations, its layer's DeepDream and caricatures) into DIR as PNG")
    _store_arg(unit)

    compare = sub.add_parser("compare", help="match the units of two layers one to one by how alike they respond")
    for side in ("a", "b"):
        compare.add_argument(f"model_{side}", metavar=f"MODEL_{side.upper()}")
        compare.add_argument(f"layer_{side}", metavar=f"LAYER_{side.upper()}")
    compare.add_argument("--json", action="store_true", help="print JSON")
    _store_arg(compare)

    notes = sub.add_parser("notes", help="export or import the team's notes (labels, families, notes, stars)")
    notes_sub = notes.add_subparsers(dest="notes_command", required=True)
    out = notes_sub.add_parser("export", help="print every annotated unit, one row each")
    out.add_argument("--format", choices=("csv", "json"), default="csv")
    out.add_argument("--output", "-o", type=Path, help="write to this file instead of standard output")
    into = notes_sub.add_parser("import", help="set the units of an export file to its values, in one transaction")
    into.add_argument("file", type=Path, help="a file written by `microscope notes export` (CSV or JSON)")
    into.add_argument("--author", default="import", help="who the history rows name (default: %(default)s)")
    lost = notes_sub.add_parser("orphans", help="annotated units that the store no longer holds (kept, not dropped)")
    for each in (out, into, lost):
        each.add_argument("--notes", metavar="URL", help="notes database, any SQLAlchemy URL (default: "
                          "$MICROSCOPE_NOTES, or NAME.notes.sqlite beside the store)")
        _store_arg(each)

    for name, text in (("serve", "open the dashboard on a store"),
                       ("demo", "build the demo store if there is none, then open the dashboard")):
        s = sub.add_parser(name, help=text)
        s.add_argument("--port", type=int, default=8501)
        s.add_argument("--address", default="localhost", help="address to listen on (0.0.0.0 for all)")
        if name == "serve":
            s.add_argument("--store", default=config.store_location(),
                           help="store file, or a published one: https://..., s3://BUCKET/KEY, "
                                "hf://datasets/ORG/NAME/FILE (default: $MICROSCOPE_STORE or %(default)s)")
            s.add_argument("--refresh", type=float, metavar="SECONDS",
                           help="check a remote store for a newer file at most this often (default: "
                                "$MICROSCOPE_REFRESH or 60)")
            s.add_argument("--cache", type=Path, metavar="DIR",
                           help="where remote stores are copied (default: $MICROSCOPE_CACHE or "
                                "~/.cache/microscope/stores)")
        else:
            _store_arg(s)
        if name == "demo":
            s.add_argument("--no-serve", action="store_true", help="build the demo store, don't serve")
            s.add_argument("--organisms", action="store_true",
                           help="build EfficientNet-Lite0, Lite1 and Lite2 instead of Lite0 alone")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    args.argv = argv  # for a retry command that repeats it
    if config.offline():
        # huggingface_hub reads its switch once, when first imported (none of it is imported yet here)
        os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        return COMMANDS[args.command](args) or 0
    except KeyboardInterrupt:
        print("microscope: interrupted; finished jobs are kept and a rerun resumes", file=sys.stderr)
        return 130
    except Exception as exc:  # the contract is one line per failure
        if config.debug():
            raise
        print(f"microscope: error: {one_line(exc)}", file=sys.stderr)
        return exc.exit_code if isinstance(exc, MicroscopeError) else 1


def cmd_models(args) -> None:
    from precompute.models import REGISTRY

    for spec in REGISTRY.values():
        units = sum(layer.units for layer in spec.layers)
        where = f"{spec.hub_id}@{spec.revision or 'unpinned'}" if spec.hub_id else spec.source
        print(f"{spec.id:45s} {len(spec.layers):3d} layers {units:6d} units  {spec.input_size}px  {where}")
    print("\nAlso: hf-hub:ORG/NAME[@REV], local-dir:PATH, path/to/file.py:factory, package.module:factory")


def cmd_precompute(args) -> int:
    from precompute.models import Overrides
    from precompute.pipeline import precompute
    from precompute.request import Request

    summary = precompute(Request(
        model=args.model, store=args.store, layers=args.layers, units=args.units, techniques=args.techniques,
        dataset=args.dataset, device=args.device, seed=args.seed, k=args.k, batch_size=args.batch_size,
        max_images=args.max_images, work=args.work,
        options={"preset": args.preset, "steps": args.steps, "size": args.size, "window": args.window,
                 "gallery": args.gallery, "features": args.features, "dict_k": args.dict_k},
        overrides=Overrides(args.name, args.input_size, args.mean, args.std),
        executor=args.executor, address=args.address))
    print(f"{summary['model']}: {summary['ran']} jobs run, {summary['skipped']} already done"
          f"{', %d unreadable images skipped' % summary['images_skipped'] if summary['images_skipped'] else ''}; "
          f"store {args.store}: " + ", ".join(f"{v} {k}" for k, v in summary["store"].items()))
    for job in summary["failed"]:  # the store holds every other job; a rerun retries only these
        print(f"microscope: error: job {job['key']} ({job['label']}) failed: {job['error']}", file=sys.stderr)
    if summary["failed"]:
        print(f"microscope: {len(summary['failed'])} jobs failed, every other job is in the store; retry them "
              f"with: {retry_command(args.argv, summary['failed'])}", file=sys.stderr)
    return 1 if summary["failed"] else 0


def retry_command(argv: list[str], failed: list[dict]) -> str:
    """The command line that was run, cut down to the failed jobs' layers and techniques: their keys stay the
    same (every other option is kept), and the jobs of that cut that did finish are skipped as done."""
    layers = ",".join(dict.fromkeys(job["layer"] for job in failed))
    techniques = ",".join(dict.fromkeys(job["technique"] for job in failed))
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--layers", "--techniques"):
            skip = True
        elif not arg.startswith(("--layers=", "--techniques=")):
            kept.append(arg)
    return shlex.join(["microscope", *kept, "--layers", layers, "--techniques", techniques])


def cmd_ingest(args) -> None:
    from store.ingest import ingest

    counts = ingest(args.work or workdir.default_for(args.store), args.store)
    print(f"store {args.store}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))


def cmd_info(args) -> None:
    from store.queries import Store

    summary = Store(args.store).summary()
    if args.json:
        print(json.dumps(summary, indent=1, default=str))
        return
    print(f"{summary['store']} (built {summary['built_at']}, {summary['images']} dataset images)")
    print(f"  built from the work folder {summary['work'] or '(not recorded: built by an older version)'}")
    for m in summary["models"]:
        per = ", ".join(f"{k}: {v}" for k, v in m["units_per_technique"].items()) or "nothing computed"
        print(f"  {m['model']}: {len(m['layers'])} layers, {m['units']} units ({per})")


def _stored_layer(store, model_id: str, name: str) -> dict:
    """The layer row of a model in the store (by name or alias), or one line saying what is there instead."""
    from store import StoreError

    if store.model(model_id) is None:
        known = ", ".join(m["model_id"] for m in store.models())
        raise StoreError(f"model {model_id!r} is not in the store; it holds: {known}")
    layer = store.layer(model_id, name)
    if layer is None:
        raise StoreError(f"model {model_id} has no layer {name!r}")
    return layer


def cmd_unit(args) -> None:
    from store import StoreError
    from store.queries import Store

    store = Store(args.store)
    layer = _stored_layer(store, args.model, args.layer)
    if not 0 <= args.unit < layer["units"]:
        raise StoreError(f"unit {args.unit} is out of range for {args.model}@{layer['layer']} "
                         f"(units 0-{layer['units'] - 1})")
    record = store.unit_record(args.model, layer["layer"], args.unit)
    if args.images:
        record["images"] = write_unit_images(store, args.model, layer["layer"], args.unit, args.images)
    if args.json:
        print(json.dumps(record, indent=1, default=str))
        return
    stats = record["stats"]
    print(record["unit"])
    if stats:
        print(f"  max {stats['max']:.3f}  mean {stats['mean']:.3f}  std {stats['std']:.3f}  "
              f"p99 {stats['p99']:.3f}  positive {stats['frac_positive']:.0%}{'  DEAD' if stats['dead'] else ''}")
    if record["dataset"]:
        for ex in record["dataset"]["top"][:5]:
            print(f"  top {ex['rank']:2d}: {ex['activation']:8.3f}  {ex['image_source']}")
    if args.images:
        print(f"  wrote {len(record['images'])} PNG files into {args.images}")


def cmd_compare(args) -> None:
    from store import StoreError
    from store.queries import Store

    store = Store(args.store)
    a = _stored_layer(store, args.model_a, args.layer_a)["layer"]
    b = _stored_layer(store, args.model_b, args.layer_b)["layer"]
    result = store.compare_layers(args.model_a, a, args.model_b, b)
    if not result["pairs"]:
        missing = [f"{m}@{name}" for m, name in ((args.model_a, a), (args.model_b, b))
                   if name not in store.sampled_layers(m)]
        raise StoreError(f"no responses of {missing[0]} are stored: compute them with `microscope precompute "
                         f"{missing[0].rsplit('@', 1)[0]} --techniques similar`" if missing else
                         f"{args.model_a}@{a} and {args.model_b}@{b} were shown no dataset images in common")
    if args.json:
        print(json.dumps(result, indent=1))
        return
    cka = "n/a" if result["cka"] is None else f"{result['cka']:.3f}"
    print(f"{args.model_a}@{a} ({result['units_a']} units) vs {args.model_b}@{b} ({result['units_b']} units): "
          f"{result['good']} of {len(result['pairs'])} matched pairs correlate at least {result['good_match']}; "
          f"linear CKA {cka}")
    for pair in result["pairs"][:10]:
        print(f"  {pair['a']:5d} -> {pair['b']:5d}  {pair['score']:.3f}")


def write_unit_images(store, model_id: str, layer: str, unit: int, folder: Path) -> list[dict]:
    """Every image stored for the unit, as PNG files in `folder`: its dataset examples (crops with their heatmap
    overlay), its feature visualisations (channel per seed, neuron, negative, diversity facets) and its layer's
    DeepDream and caricatures. Returns one `{path, technique, facet}` per file; dataset examples also say their
    `kind` (top, bottom, quantile) and `rank`, layer visuals their `source` photo."""
    from store import pictures

    folder.mkdir(parents=True, exist_ok=True)
    written = []

    def save(image, name: str, **about) -> None:
        path = folder / f"{name}.png"
        image.save(path)
        written.append({"path": str(path), **about})

    examples = store.unit_examples(model_id, layer, unit)
    vmax = max((e["activation"] for e in examples if e["kind"] == "top"), default=0.0)
    for ex in examples:
        image = pictures.crop(pictures.decode(ex["image"]), ex["box"], size=160)
        image = pictures.overlay(image, pictures.heat_array(ex["heat"], ex["heat_cells"]), vmax)
        save(image, f"{ex['kind']}-{ex['rank']:02d}", technique="dataset", facet=ex["rank"], kind=ex["kind"],
             rank=ex["rank"])
    for row in store.unit_featurevis(model_id, layer, unit):
        save(pictures.decode(row["image"]), f"featurevis-{row['technique']}-{row['facet']}",
             technique=row["technique"], facet=row["facet"])
    for row in store.layer_visuals(model_id, layer):
        save(pictures.decode(row["image"]), f"layer-{row['technique']}-{row['facet']}", technique=row["technique"],
             facet=row["facet"], source=row["source"])
    return written


def app_entry() -> Path:
    """The dashboard's Streamlit entry, app.py. st.navigation resolves the page files (app_pages/*.py) against the
    entry's folder, so app.py sits beside app_pages/ and this package: at the top of the checkout, and at the top
    of site-packages in an installed copy (the wheel ships it as a top-level module)."""
    top = Path(__file__).resolve().parent.parent
    entry = top / "app.py"
    if not (entry.is_file() and (top / "app_pages").is_dir()):
        raise MicroscopeError(f"the dashboard is missing: no app.py beside app_pages/ in {top}; reinstall Microscope")
    return entry


def cmd_entry(args) -> None:
    print(app_entry())


def cmd_serve(args) -> int:
    entry = app_entry()
    env = {**os.environ, "MICROSCOPE_STORE": _serve_location(args)}
    if getattr(args, "cache", None):
        env["MICROSCOPE_CACHE"] = str(args.cache.resolve())
    if getattr(args, "refresh", None) is not None:
        env["MICROSCOPE_REFRESH"] = str(args.refresh)
    print(f"Microscope dashboard on http://{args.address}:{args.port}/ (store {args.store}); Ctrl-C stops it")
    # A viewer, not a development session: no watcher (an installed entry's folder is all of site-packages, which
    # Streamlit's watcher would follow recursively) and no Deploy button.
    command = [sys.executable, "-m", "streamlit", "run", str(entry), "--server.headless", "true",
               "--server.port", str(args.port), "--server.address", args.address,
               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
               "--client.toolbarMode", "viewer", "--runner.postScriptGC", "false"]  # as .streamlit/config.toml
    folder = _settings_folder(entry)
    if os.name == "posix":  # Streamlit becomes this process: a container's stop signal reaches it directly
        os.chdir(folder)
        os.execve(sys.executable, command, env)
    return subprocess.call(command, env=env, cwd=folder)


def _settings_folder(entry: Path) -> Path:
    """Where Streamlit runs, and so reads .streamlit/config.toml and secrets.toml: a checkout's own folder (beside
    app.py, as the README says), wherever serve was started; an installed copy's entry lies in site-packages, so
    there it is the current folder (/app in the image), as for `streamlit run`."""
    return entry.parent if (entry.parent / "pyproject.toml").is_file() else Path.cwd()


def _serve_location(args) -> str:
    """A local store as an absolute path; a remote one fetched once here, so that a wrong address or a bad file
    fails now with one line rather than in the browser. The dashboard then keeps its own copy fresh."""
    from store import remote

    location = str(args.store)
    if not remote.is_remote(location):
        return str(Path(location).resolve())
    mirror = remote.Mirror(location, args.cache or config.cache_dir(), 0.0)
    print(f"fetching {remote.redact(location)} into {mirror.folder}")
    mirror.current()  # fetches when nothing is cached, or raises with the reason
    mirror.refresh()  # a copy cached by an earlier run may be out of date
    if mirror.error:  # a copy from an earlier run is usable, the remote is not
        print(f"microscope: warning: {mirror.error}; serving the copy fetched {mirror.fetched_at()}",
              file=sys.stderr)
    return location


# Feature visualisation costs about a second per picture on a CPU, so the demo renders one whole gallery (every
# unit of blocks.3, a middle layer of textures and parts: its channel pictures, two seeds each, with their trust
# signals, and the layer's DeepDream and caricatures) and every picture of two units of an early layer (colours
# and edges). `precompute` renders the rest.
DEMO_FEATUREVIS = (("blocks.3", "all", {"gallery": True}), ("blocks.1", "0-1", {}))


def demo_models(organisms: bool) -> tuple[str, ...]:
    from precompute.models import DEFAULT_MODEL, ORGANISMS

    return ORGANISMS if organisms else (DEFAULT_MODEL,)


def cmd_demo(args) -> int:
    from store import StoreError
    from store.queries import Store

    models = demo_models(args.organisms)
    try:
        store = Store(args.store)
        try:
            held = {m["model_id"] for m in store.models()}
        finally:
            store.close()
        # An existing store is served as it is: rebuilding into it would drop whatever its work folder lacks.
        lacking = [model for model in models if model not in held]
        note = f"; it lacks {', '.join(lacking)}" if args.organisms and lacking else ""
        print(f"demo store {args.store} exists; serving it (delete it to rebuild{note})")
    except StoreError:
        from precompute.pipeline import precompute
        from precompute.request import Request

        seconds, counts = 0.0, {}
        for model in models:
            print(f"building the demo store {args.store}: {model}, every layer, stats and dataset examples "
                  "over the bundled sample photos, tuning curves over synthetic stimuli")
            summary = precompute(Request(model=model, store=args.store))
            seconds += summary["seconds"]
            for layer, units, options in DEMO_FEATUREVIS:
                what = "the gallery (channel pictures) of" if options.get("gallery") else f"units {units} of"
                print(f"rendering feature visualisations: {what} {layer} of {model} (quick preset)")
                rendered = precompute(Request(model=model, store=args.store, techniques="featurevis",
                                              layers=layer, units=units, options=options))
                seconds += rendered["seconds"]
                counts = rendered["store"]
        print(f"built in {seconds:.0f} s: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    if args.no_serve:
        return 0
    return cmd_serve(args)


def cmd_notes(args) -> None:
    from store import notes_io
    from store.notes import Notes, default_url

    held = Notes.open(args.notes or default_url(str(args.store)))
    try:
        if args.notes_command == "orphans":
            from store.queries import Store

            store = Store(args.store)
            try:
                for o in held.orphans(store):
                    print(f"{o['model_id']}@{o['layer']}:{o['unit']}\t{o['why']}\t{o['label']}")
            finally:
                store.close()
            return
        if args.notes_command == "export":
            text = notes_io.dumps(notes_io.export_rows(held), args.format)
            if args.output:
                args.output.write_text(text, encoding="utf-8")
                print(f"{len(held.annotated())} units written to {args.output}", file=sys.stderr)
            else:
                sys.stdout.write(text)
            return
        rows = notes_io.parse(args.file)
        changed = notes_io.import_rows(held, rows, args.author)
        print(f"{args.file}: {len(rows)} units, {changed} changed, {len(rows) - changed} already as in the file")
    finally:
        held.close()


COMMANDS = {"models": cmd_models, "entry": cmd_entry, "precompute": cmd_precompute, "ingest": cmd_ingest,
            "info": cmd_info, "unit": cmd_unit, "compare": cmd_compare, "serve": cmd_serve, "demo": cmd_demo,
            "notes": cmd_notes}

if __name__ == "__main__":
    sys.exit(main())
