"""`hf-hub:` models and `hf:` datasets through the real huggingface_hub and timm: fetched from a loopback Hub
(tests/hub_support.py) into a Hub cache of the test's own, then read from that cache alone with HF_HUB_OFFLINE
set, as on an air-gapped cluster; revisions reach the server; an empty cache offline is one line at once."""

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from precompute.datasets import DatasetError, open_dataset
from precompute.models import HALF, ModelError, build, resolve
from tests.hub_support import LoopbackHub, use_hub

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
MODEL, PHOTOS, FOLDER = "lab/tiny-net", "lab/photos", "lab/photo-folder"
PROBE = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def saved_model(folder: Path, seed: int) -> tuple[dict[str, bytes], torch.Tensor]:
    """The files `timm.models.save_for_hf` writes for a tiny timm model, and its output on PROBE."""
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(seed)
    model = timm.create_model("test_efficientnet", num_classes=5, pretrained_cfg_overlay={"mean": HALF, "std": HALF})
    save_for_hf(model.eval(), str(folder), safe_serialization=True)
    with torch.no_grad():
        return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}, model(PROBE)


def noise_png(seed: int, side: int = 40) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side + 8, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def parquet_shard(images: list[bytes]) -> bytes:
    # What `datasets` pushes: data/<split>-NNNNN-of-NNNNN.parquet, the image a struct of its bytes and file name.
    table = pa.table({"image": [{"bytes": b, "path": f"{i}.png"} for i, b in enumerate(images)],
                      "label": list(range(len(images)))})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=4)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The loopback Hub with a model at two commits (tag v1, then main) and an image dataset in each of the Hub's
    two layouts. Yields (hub, facts): the commits and the outputs each version of the model gives on PROBE."""
    root = tmp_path_factory.mktemp("published")
    v1_files, v1_out = saved_model(root / "v1", seed=1)
    v2_files, v2_out = saved_model(root / "v2", seed=2)
    images = [noise_png(i) for i in range(12)]
    with LoopbackHub() as server:
        facts = {"v1": server.publish(MODEL, v1_files, tags=("v1",)), "v1_out": v1_out}
        facts["main"], facts["main_out"] = server.publish(MODEL, v2_files), v2_out
        facts["photos_v1"] = server.publish(PHOTOS, {"data/train-00000-of-00001.parquet": parquet_shard(images),
                                                     "README.md": b"---\nlicense: cc0-1.0\n---\n"},
                                            repo_type="dataset", tags=("v1",))
        server.publish(PHOTOS, {"data/train-00000-of-00001.parquet": parquet_shard(images[:3])}, repo_type="dataset")
        server.publish(FOLDER, {"train/cat/a.png": images[0], "train/dog/b.PNG": images[1],
                                "test/cat/c.png": images[2], "metadata.jsonl": b'{"file_name": "train/cat/a.png"}\n'},
                       repo_type="dataset")
        yield server, facts


def outputs(model) -> torch.Tensor:
    with torch.no_grad():
        return model(PROBE)


def test_hub_model_from_the_loopback_hub_then_offline_from_the_cache_it_left(hub, monkeypatch, tmp_path):
    server, facts = hub
    use_hub(monkeypatch, tmp_path / "hf", server.endpoint)
    spec = resolve(f"hf-hub:{MODEL}@v1")
    assert (spec.arch, spec.source, spec.hub_id, spec.revision) == ("test_efficientnet", "hf-hub", MODEL, facts["v1"])
    assert (spec.input_size, spec.mean, spec.std) == (160, HALF, HALF)  # the model's own config, not defaults
    assert torch.allclose(outputs(build(spec)), facts["v1_out"], atol=1e-5)
    # The tag reached the server; the weights then came from the commit it named, through the CDN redirect.
    assert server.saw(f"/{MODEL}/resolve/v1/config.json")
    assert server.saw(f"/{MODEL}/resolve/{facts['v1']}/model.safetensors") and server.saw("/blobs/")

    # huggingface_hub's own cache layout: refs/TAG -> commit, snapshots/COMMIT/FILE -> blobs/ETAG.
    repo = tmp_path / "hf" / "hub" / "models--lab--tiny-net"
    assert (repo / "refs" / "v1").read_text() == facts["v1"]
    weights = repo / "snapshots" / facts["v1"] / "model.safetensors"
    assert weights.is_symlink() and weights.resolve().parent == (repo / "blobs").resolve()

    use_hub(monkeypatch, tmp_path / "hf", offline=True)
    heard = len(server.seen)
    spec = resolve(f"hf-hub:{MODEL}@v1")
    assert spec.revision == facts["v1"] and torch.allclose(outputs(build(spec)), facts["v1_out"], atol=1e-5)
    pinned = resolve(f"hf-hub:{MODEL}@{facts['v1']}")  # the commit itself, as a cache copied elsewhere holds it
    assert torch.allclose(outputs(build(pinned)), facts["v1_out"], atol=1e-5)
    assert len(server.seen) == heard  # nothing asked of the server
    with pytest.raises(ModelError, match="not in the Hub cache"):
        resolve(f"hf-hub:{MODEL}")  # main was never fetched here


def test_an_unpinned_hub_model_is_main_and_the_store_learns_its_commit(hub, monkeypatch, tmp_path):
    server, facts = hub
    use_hub(monkeypatch, tmp_path / "hf", server.endpoint)
    spec = resolve(f"hf-hub:{MODEL}")
    assert spec.revision == facts["main"] and server.saw(f"/{MODEL}/resolve/main/config.json")
    assert torch.allclose(outputs(build(spec)), facts["main_out"], atol=1e-5)
    assert not torch.allclose(facts["main_out"], facts["v1_out"], atol=1e-3)


def test_offline_with_an_empty_cache_is_one_line_at_once(hub, monkeypatch, tmp_path):
    server, _ = hub
    use_hub(monkeypatch, tmp_path / "hf", offline=True)
    heard, start = len(server.seen), time.monotonic()
    with pytest.raises(ModelError) as model_error:
        resolve(f"hf-hub:{MODEL}@v1")
    with pytest.raises(DatasetError) as dataset_error:
        open_dataset(f"hf:{PHOTOS}@v1")
    assert time.monotonic() - start < 5 and len(server.seen) == heard
    cache = tmp_path / "hf" / "hub"
    assert str(model_error.value) == (
        f"model hf-hub:{MODEL}@v1 is not in the Hub cache ({cache}) and HF_HUB_OFFLINE is set: on a machine with a "
        f"network run `hf download {MODEL} --revision v1` and copy that cache here")
    assert f"`hf download {PHOTOS} --repo-type dataset --revision v1`" in str(dataset_error.value)
    assert len(str(dataset_error.value).splitlines()) == 1


def test_unknown_repositories_and_revisions_are_one_line(hub, monkeypatch, tmp_path):
    server, _ = hub
    use_hub(monkeypatch, tmp_path / "hf", server.endpoint)
    for ref, reason in [(f"hf-hub:{MODEL}@v9", "Revision Not Found"), ("hf-hub:lab/nothing", "Repository Not Found")]:
        with pytest.raises(ModelError) as info:
            resolve(ref)
        message = str(info.value)
        assert message.startswith(f"cannot fetch model {ref} from {server.endpoint}: ") and reason in message
        assert len(message.splitlines()) == 1
    with pytest.raises(DatasetError, match=f"cannot fetch dataset hf:{PHOTOS}@v9 .*Revision Not Found"):
        open_dataset(f"hf:{PHOTOS}@v9")


def test_hub_datasets_in_both_layouts_online_then_offline(hub, monkeypatch, tmp_path):
    server, facts = hub
    use_hub(monkeypatch, tmp_path / "hf", server.endpoint)
    photos = open_dataset(f"hf:{PHOTOS}@v1")
    assert server.saw(f"/api/datasets/{PHOTOS}/revision/v1")
    assert server.saw(f"/datasets/{PHOTOS}/resolve/{facts['photos_v1']}/data/train-00000-of-00001.parquet")
    assert not server.saw("README.md")  # only the shards and image files are fetched
    assert len(photos) == 12 and photos.source(5) == "data/train-00000-of-00001.parquet row 5"
    assert len(open_dataset(f"hf:{PHOTOS}")) == 3  # main holds a smaller shard
    folder = open_dataset(f"hf:{FOLDER}")
    assert [folder.source(i) for i in range(len(folder))] == ["test/cat/c.png", "train/cat/a.png", "train/dog/b.PNG"]

    use_hub(monkeypatch, tmp_path / "hf", offline=True)
    heard = len(server.seen)
    again = open_dataset(f"hf:{PHOTOS}@v1")
    first = [np.asarray(image) for _, image in again.stream(32)]
    assert len(first) == 12 and len(server.seen) == heard
    expected = Image.open(io.BytesIO(noise_png(0))).convert("RGB")
    assert first[0].shape == (32, 32, 3) and np.abs(first[0].astype(int) - np.asarray(
        expected.resize((32, 32), Image.BICUBIC, box=(4, 0, 44, 40)))).max() <= 1


def test_precompute_from_an_offline_hub_cache(hub, monkeypatch, tmp_path):
    """The air-gapped run: the cache is filled as the README says (snapshot_download, what `hf download` runs),
    then `microscope precompute` runs in a fresh process that has only HF_HUB_OFFLINE=1 and that cache."""
    from huggingface_hub import snapshot_download

    server, facts = hub
    use_hub(monkeypatch, tmp_path / "hf", server.endpoint)
    snapshot_download(MODEL, revision="v1")
    snapshot_download(PHOTOS, repo_type="dataset", revision="v1")
    env = use_hub(monkeypatch, tmp_path / "hf", offline=True)
    heard = len(server.seen)
    store = tmp_path / "hub.duckdb"
    done = subprocess.run(
        [sys.executable, "-m", "precompute.cli", "precompute", f"hf-hub:{MODEL}@v1", "--dataset", f"hf:{PHOTOS}@v1",
         "--techniques", "stats", "--layers", "blocks.1,blocks.3", "--store", str(store)],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(server.seen) == heard
    con = duckdb.connect(str(store), read_only=True)
    try:
        models = con.execute("SELECT model_id, arch, source, hub_id, revision, input_size FROM models").fetchall()
        layers = con.execute("SELECT layer FROM layers ORDER BY position").fetchall()
        stats = con.execute("SELECT DISTINCT layer, images FROM unit_stats ORDER BY layer").fetchall()
        dataset = con.execute("SELECT DISTINCT dataset FROM runs").fetchall()
    finally:
        con.close()
    assert models == [(f"hf-hub:{MODEL}@v1", "test_efficientnet", "hf-hub", MODEL, facts["v1"], 160)]
    assert layers == [("blocks.1",), ("blocks.3",)]
    assert stats == [("blocks.1", 12), ("blocks.3", 12)] and dataset == [(f"hf:{PHOTOS}@v1",)]


def test_microscope_offline_alone_keeps_the_command_off_the_hub(hub, monkeypatch, tmp_path):
    """MICROSCOPE_OFFLINE=1 with a reachable Hub and an empty cache: the command asks the Hub nothing."""
    server, _ = hub
    env = {**use_hub(monkeypatch, tmp_path / "hf", server.endpoint), "MICROSCOPE_OFFLINE": "1"}
    env.pop("HF_HUB_OFFLINE")
    heard = len(server.seen)
    done = subprocess.run(
        [sys.executable, "-m", "precompute.cli", "precompute", f"hf-hub:{MODEL}@v1", "--techniques", "stats",
         "--store", str(tmp_path / "s.duckdb")],
        cwd=ROOT, env={k: v for k, v in {**os.environ, **env}.items() if k != "HF_HUB_OFFLINE"},
        capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and len(server.seen) == heard
    assert "is not in the Hub cache" in done.stderr and len(done.stderr.strip().splitlines()) == 1
