"""Tests for .ci/shape_check.py, the CI check of module size and parameter count."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shape_check():
    spec = importlib.util.spec_from_file_location("shape_check", ROOT / ".ci" / "shape_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def counts(shape_check, source: str) -> dict[str, int]:
    return {name: count for name, _, count in shape_check.functions(ast.parse(source))}


def test_parameters_are_counted_as_a_caller_sees_them(shape_check):
    source = (
        "def f(a, /, b, *args, c, d=1, **kwargs): pass\n"
        "class A:\n"
        "    def m(self, a): pass\n"
        "    @classmethod\n"
        "    def c(cls, a, b): pass\n"
        "    def outer(self):\n"
        "        def inner(self, x): pass\n"
    )
    assert counts(shape_check, source) == {
        "f": 4,
        "A.m": 1,
        "A.c": 2,
        "A.outer": 0,
        "A.outer.<locals>.inner": 2,  # a nested function's first parameter is an ordinary one
    }


def test_offenders_name_long_modules_and_wide_functions(shape_check, tmp_path):
    (tmp_path / "stream").mkdir()
    (tmp_path / "stream" / "long.py").write_text("x = 1\n" * (shape_check.MAX_LINES + 1))
    wide = ", ".join(f"p{i}" for i in range(shape_check.MAX_PARAMS + 1))
    (tmp_path / "stream" / "wide.py").write_text(f"\n\ndef wide({wide}):\n    pass\n")
    ok = ", ".join(f"p{i}" for i in range(shape_check.MAX_PARAMS))
    (tmp_path / "stream" / "ok.py").write_text(f"def ok({ok}, *args, **kwargs):\n    pass\n")
    found = {(key, where) for key, where, _ in shape_check.offenders(tmp_path)}
    assert found == {("stream/long.py", "stream/long.py:1"), ("stream/wide.py:wide", "stream/wide.py:3")}
