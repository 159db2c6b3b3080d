"""The error family is used as promised: every raise names its condition's own class."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pytest

import xarray_hcs
from xarray_hcs import errors

PACKAGE = Path(xarray_hcs.__file__).parent


def test_no_bare_hcs_error_is_raised():
    """``raise HcsError(...)`` says nothing a caller can catch by kind: each condition has
    its class (a caller's bad argument, stored metadata, the store, a selection...)."""
    bare = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and isinstance(
                    node.exc.func, ast.Name) and node.exc.func.id == "HcsError":
                bare.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not bare, f"bare HcsError raised at {bare}"


@pytest.mark.parametrize("name", errors.__all__)
def test_every_error_is_public_pickles_and_subclasses_a_builtin(name):
    cls = getattr(errors, name)
    assert getattr(xarray_hcs, name) is cls
    if issubclass(cls, Warning):
        return
    e = cls("what is wrong", "/B/03/0")
    back = pickle.loads(pickle.dumps(e))  # from dask workers
    assert type(back) is cls and back.path == "/B/03/0" and str(back) == str(e)
    if cls is not errors.HcsError:
        assert any(issubclass(cls, b) for b in (ValueError, OSError, KeyError, TypeError))
