"""One error base class and one way to print it: every error class the project defines is a MicroscopeError,
and every MicroscopeError prints as its own one-line message, whatever technique raised it."""

import ast
import importlib
from pathlib import Path

import pytest

from store.errors import MicroscopeError, one_line

ROOT = Path(__file__).resolve().parents[1]


def error_classes() -> list[type]:
    """Every class named *Error that the project's packages define, found by reading the source."""
    found = []
    for package in ("precompute", "store", "dashboard", "app_pages"):
        for path in sorted((ROOT / package).rglob("*.py")):
            classes = [node.name for node in ast.parse(path.read_text()).body
                       if isinstance(node, ast.ClassDef) and node.name.endswith("Error")]
            if classes:
                parts = path.relative_to(ROOT).with_suffix("").parts
                module = importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
                found += [getattr(module, name) for name in classes]
    return found


def test_every_error_class_is_a_microscope_error():
    classes = error_classes()
    names = {cls.__name__ for cls in classes}
    assert {"RenderError", "CircuitError", "ModelError", "DatasetError", "StoreError", "UsageError"} <= names
    assert [cls.__name__ for cls in classes if not issubclass(cls, MicroscopeError)] == []


@pytest.mark.parametrize("cls", error_classes(), ids=lambda cls: cls.__name__)
def test_every_error_prints_the_same_way(cls):
    assert one_line(cls("layer blocks.9 is not in the model\nsecond line")) == "layer blocks.9 is not in the model"


def test_other_errors_keep_their_type_so_that_a_bug_can_be_reported():
    assert one_line(RuntimeError("size mismatch\nat ...")) == "RuntimeError: size mismatch"
    assert one_line(KeyError()) == "KeyError"


def test_usage_errors_exit_2_and_the_rest_1():
    from precompute.request import UsageError
    from store import StoreError

    assert UsageError.exit_code == 2 and StoreError.exit_code == MicroscopeError.exit_code == 1
