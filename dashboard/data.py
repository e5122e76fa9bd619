"""The dashboard's window on the store: one cached read-only `Store` per file version, and bounded caches.

Every cached function takes `key` = (absolute path, (mtime_ns, size)) first, so a store file replaced by
`microscope ingest` is a new key: the next run opens the new file and never serves the old one's rows.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import pandas as pd
import streamlit as st

from store import config, remote
from store.queries import Store

StoreKey = tuple[str, tuple[int, int]]


class StoreMissing(Exception):
    """No store file where MICROSCOPE_STORE (or the default) points."""

    def __init__(self, path: Path):
        super().__init__(f"no store at {path}")
        self.path = path


def store_path() -> Path:
    """The file to open: the store itself, or the checked local copy of a remote one (`store.remote`), which is
    fetched on first use and replaced atomically when a newer good file is published."""
    location = config.store_location()
    if remote.is_remote(location):
        return remote.mirror(location).current()
    return Path(location)


def remote_status() -> dict | None:
    """For a remote store: where it comes from, when the copy being served was fetched, and why the last check
    did not give a newer one (None when it did, or when nothing newer was published)."""
    location = config.store_location()
    if not remote.is_remote(location):
        return None
    held = remote.mirror(location)
    return {"location": remote.redact(location), "fetched_at": held.fetched_at(), "error": held.error}


def store_key() -> StoreKey:
    """Raises StoreMissing if there is no file (`open_store` raises store.StoreError if it is not a store)."""
    path = store_path()
    try:
        info = path.stat()
    except OSError:
        raise StoreMissing(path) from None
    if not path.is_file():
        raise StoreMissing(path)
    return str(path.resolve()), (info.st_mtime_ns, info.st_size)


MAX_OPEN = 4  # store files held open at once (one per path; a deployment normally has one)


@st.cache_resource(show_spinner=False)
def _open_stores() -> dict:
    """The server's open stores: {path: (stamp, Store)}, with the lock that guards them."""
    return {"lock": threading.Lock(), "open": {}}


def open_store(path: str, stamp: tuple[int, int]) -> Store:
    """The open Store for this version of the file. DuckDB hands back the database it already has open for a
    path, even after the file was replaced, so the superseded version is closed before the new one opens."""
    held = _open_stores()
    with held["lock"]:
        current = held["open"].get(path)
        if current and current[0] == stamp:
            return current[1]
        if current:
            held["open"].pop(path)[1].close()
        store = Store(path)
        held["open"][path] = (stamp, store)
        while len(held["open"]) > MAX_OPEN:
            held["open"].pop(next(iter(held["open"])))[1].close()
        return store


def _store(key: StoreKey) -> Store:
    return open_store(*key)


@st.cache_data(max_entries=8, ttl=600, show_spinner=False)
def models(key: StoreKey) -> list[dict]:
    return _store(key).models()


def model(key: StoreKey, model_id: str) -> dict | None:
    return next((m for m in models(key) if m["model_id"] == model_id), None)


@st.cache_data(max_entries=8, ttl=600, show_spinner=False)
def built_at(key: StoreKey) -> str:
    return _store(key).built_at()


@st.cache_data(max_entries=32, ttl=600, show_spinner=False)
def layers(key: StoreKey, model_id: str) -> list[dict]:
    return _store(key).layers(model_id)


def layer(key: StoreKey, model_id: str, name: str) -> dict | None:
    """A layer (with its computed counts) by canonical name or alias."""
    return next((row for row in layers(key, model_id) if name in (row["layer"], row["alias"])), None)


@st.cache_data(max_entries=32, ttl=600, show_spinner=False)
def find_layer(key: StoreKey, text: str) -> list[dict]:
    return _store(key).find_layer(text)


@st.cache_data(max_entries=16, ttl=600, show_spinner=False)
def layer_units(key: StoreKey, model_id: str, layer: str) -> pd.DataFrame:
    return _store(key).layer_units(model_id, layer)


@st.cache_resource(max_entries=8, ttl=600, show_spinner=False)
def thumbnails(key: StoreKey, model_id: str, layer: str, units: int, technique: str = "dataset") -> dict[int, bytes]:
    """Every unit's thumbnail of one layer (dataset crop or channel render): one query, reused across sort
    orders and pages. Shared, not copied (cache_data would unpickle a large layer's 4 MB on every view): read
    it, never change it."""
    return _store(key).thumbnails(model_id, layer, list(range(units)), technique)


@st.cache_data(max_entries=8, ttl=600, show_spinner=False)
def layer_visuals(key: StoreKey, model_id: str, layer: str) -> list[dict]:
    return _store(key).layer_visuals(model_id, layer)


@st.cache_data(max_entries=256, ttl=600, show_spinner=False)
def unit_stats(key: StoreKey, model_id: str, layer: str, unit: int) -> dict | None:
    return _store(key).unit_stats(model_id, layer, unit)


@st.cache_data(max_entries=256, ttl=600, show_spinner=False)
def unit_runs(key: StoreKey, model_id: str, layer: str, unit: int) -> list[dict]:
    return _store(key).unit_runs(model_id, layer, unit)


@st.cache_data(max_entries=64, ttl=600, show_spinner=False)
def circuit_paths(key: StoreKey, model_id: str, layer: str) -> list[dict]:
    """The layers whose weights reach this one (the circuits lens's inputs, the layer page's weight matrix)."""
    return _store(key).circuit_paths(model_id, layer)


@st.cache_data(max_entries=16, ttl=600, show_spinner=False)
def layer_votes(key: StoreKey, model_id: str, layer: str) -> dict[int, dict]:
    """Each unit's strongest class vote (the layer gallery's class column); empty without class votes."""
    return _store(key).layer_votes(model_id, layer)


CONCENTRATED = 0.25  # a layer where this share of its units or more have one strongest vote


def concentrated_votes(key: StoreKey, model_id: str, layer: str) -> str:
    """One line for a layer whose units mostly share their strongest class vote, '' otherwise. There the
    linearised path's own gain decides the vote: measured on EfficientNet-Lite0, 2 to 6 distinct strongest votes
    among the units of each layer up to blocks.4, and 146 of 192, 266 of 320, 559 of 1,280 from blocks.5 on."""
    votes = layer_votes(key, model_id, layer)
    if len(votes) < 8:
        return ""
    label, count = Counter(v["label"] or f"class {v['index']}" for v in votes.values()).most_common(1)[0]
    if count < CONCENTRATED * len(votes):
        return ""
    return (f"{count} of {len(votes)} units of this layer vote most for the same class ({label}): through the layers "
            "between here and the head, the linearised path's own gain decides the strongest vote, so it tells more "
            "about the path than about a unit.")


def unit_examples(key: StoreKey, model_id: str, layer: str, unit: int) -> list[dict]:
    """Not cached here: `dashboard.examples` caches what it renders from these rows."""
    return _store(key).unit_examples(model_id, layer, unit)


@st.cache_data(max_entries=256, ttl=600, show_spinner=False)
def unit_pictures(key: StoreKey, model_id: str, layer: str, units: tuple[int, ...]) -> dict[int, bytes]:
    """Each unit's channel feature visualisation where rendered, else the crop of its top dataset example."""
    store = _store(key)
    return {**store.thumbnails(model_id, layer, list(units)), **store.thumbnails(model_id, layer, list(units),
                                                                                  "channel")}


@st.cache_data(max_entries=256, ttl=600, show_spinner=False)
def unit_similar(key: StoreKey, model_id: str, layer: str, unit: int) -> list[dict] | None:
    return _store(key).unit_similar(model_id, layer, unit)


@st.cache_data(max_entries=16, ttl=600, show_spinner=False)
def compare_layers(key: StoreKey, model_a: str, layer_a: str, model_b: str, layer_b: str) -> dict:
    return _store(key).compare_layers(model_a, layer_a, model_b, layer_b)


@st.cache_data(max_entries=16, ttl=600, show_spinner=False)
def layer_cka(key: StoreKey, model_a: str, model_b: str) -> list[dict]:
    return _store(key).layer_cka(model_a, model_b)


@st.cache_data(max_entries=32, ttl=600, show_spinner=False)
def sampled_layers(key: StoreKey, model_id: str) -> list[str]:
    return _store(key).sampled_layers(model_id)


@st.cache_data(max_entries=64, ttl=600, show_spinner=False)
def closest_layer(key: StoreKey, model_id: str, layer: str) -> tuple[str, str] | None:
    return _store(key).closest_layer(model_id, layer)
