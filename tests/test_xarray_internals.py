"""Guards on the one module that touches xarray internals (fails loudly on an xarray upgrade)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import xarray_hcs
from xarray_hcs import _xarray_internals as xi
from xarray_hcs.open import _nodes
from xarray_hcs.tree import OpenOptions


def test_this_xarray_has_the_internals_we_use():
    assert xi.fast_path_available(), "DataTree internals changed: review _xarray_internals.py"
    assert xi._default_index_mapper() is not None, (
        "xarray.backends.api._maybe_create_default_indexes is gone: review _IndexedTree")


@pytest.mark.parametrize("chunks", [None, {}])
def test_fast_and_public_builds_are_identical(plate, chunks):
    _, nodes = _nodes(plate, OpenOptions(chunks=chunks), None, None)
    fast = xi.assemble_tree(nodes, fast=True)
    public = xi.assemble_tree(nodes, fast=False)
    xr.testing.assert_identical(fast, public)
    for node in fast.subtree:  # same dims, in a form xarray itself would have built
        twin = public[node.path] if node.path != "/" else public
        assert dict(node.dims) == dict(twin.dims)
        assert set(node.xindexes) == set(twin.xindexes)


def test_intermediate_nodes_are_created():
    nodes = {"": xi.NodeSpec(attrs={"a": 1}),
             "a/b/c": xi.NodeSpec(data_vars={"v": xr.Variable(("x",), np.arange(3))})}
    fast = xi.assemble_tree(nodes, fast=True)
    xr.testing.assert_identical(fast, xi.assemble_tree(nodes, fast=False))
    assert fast["a/b/c"]["v"].values.tolist() == [0, 1, 2]


def test_open_datatree_returns_a_plate_tree(plate):
    dt = xr.open_datatree(plate, engine="ome-hcs")
    assert type(dt) is xi.HcsTree and isinstance(dt, xr.DataTree)
    # operations on it behave as on any tree
    assert isinstance(dt.map_over_datasets(lambda ds: ds), xr.DataTree)
    xr.testing.assert_identical(dt.copy(), dt)


def test_repr_is_abridged_on_large_trees(plate, monkeypatch):
    dt = xr.open_datatree(plate, engine="ome-hcs")
    full = repr(xr.DataTree.from_dict({n.path: n.to_dataset(inherit=False)
                                       for n in dt.subtree}))
    assert repr(dt) == full  # small trees: xarray's own repr
    monkeypatch.setattr(xi.HcsTree, "FULL_REPR_NODES", 20)
    short = repr(dt)
    assert short.startswith(f"<{len(list(dt.subtree))} nodes: 2 children shown")
    assert len(short) < len(full)
    assert "nodes: 2 children" in dt._repr_html_()


def test_map_over_datasets_on_a_marked_tree_takes_the_public_path(plate):
    tree = xi.mark_indexed(xarray_hcs.open_plate(plate, chunks=None))
    out = tree.map_over_datasets(lambda ds: ds.isel(x=slice(0, 2)) if "x" in ds.dims else ds)
    assert isinstance(out, xr.DataTree)
    fp = out.hcs.field_paths[0]
    assert out[fp + "/0"].sizes["x"] == 2
