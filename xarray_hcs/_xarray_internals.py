"""The one place that touches xarray internals: building a DataTree without per-node copies.

``DataTree.from_dict`` copies and re-merges every node it inserts (~0.3 ms a node, 3.9 s for the
14,225 empty nodes of a 384-well × 9-field × 3-level plate), and xarray's ``open_datatree`` then
maps ``_maybe_create_default_indexes`` over every node (3.4 s more on that plate) although our
nodes already carry their indexes. Here nodes are assembled directly from variables and indexes
that the tree builder has already made consistent (aligned, deduplicated, indexed), in ~30 ms.

Guarded twice: :func:`fast_path_available` checks that the DataTree slots we set still exist
(else the public ``from_dict`` path is used), and ``tests/test_xarray_internals.py`` checks that
both paths give ``identical`` trees, so an xarray upgrade that changes the internals fails
loudly in the test suite instead of building wrong trees.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import xarray as xr
from xarray import DataTree, Variable
from xarray.core.indexes import Index

__all__ = ["HcsTree", "NodeSpec", "assemble_tree", "fast_path_available", "mark_indexed",
           "node_coord", "node_data_var", "spec_of"]

_SLOTS = ("_name", "_parent", "_children", "_data_variables", "_node_coord_variables",
          "_node_dims", "_node_indexes", "_attrs", "_encoding", "_close")


@dataclass(slots=True)
class NodeSpec:
    """The content of one tree node, already consistent with its ancestors.

    ``coord_vars`` hold only this node's own coordinates (never one inherited from a parent);
    every dimension coordinate has its index in ``indexes``. A spec is used for one tree: the
    node takes its dicts over, so make a new spec (see :func:`spec_of`) for each tree.
    """

    data_vars: dict[str, Variable] = field(default_factory=dict)
    coord_vars: dict[str, Variable] = field(default_factory=dict)
    indexes: dict[str, Index] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)
    encoding: dict[str, Any] = field(default_factory=dict)
    #: the node's dimension sizes, when already known (a copied node): else computed
    dims: dict[Any, int] | None = None

    def dataset(self) -> xr.Dataset:
        coords = xr.Coordinates(self.coord_vars, indexes=self.indexes)
        return xr.Dataset(self.data_vars, coords=coords, attrs=self.attrs)


@lru_cache(maxsize=1)
def fast_path_available() -> bool:
    """True if this xarray's DataTree still has the internals the direct build relies on."""
    slots: set[str] = set()
    for klass in DataTree.__mro__:
        slots.update(getattr(klass, "__slots__", ()))
    return all(s in slots for s in _SLOTS)


def _new_node(name: str | None, parent: DataTree | None, spec: NodeSpec | None) -> DataTree:
    node = DataTree.__new__(DataTree)
    # object.__setattr__: the slots directly, past xarray's attribute-guarding __setattr__
    # (ten calls a node, 14,000 nodes a plate)
    put = object.__setattr__
    put(node, "_name", name)
    put(node, "_parent", parent)
    put(node, "_children", {})
    put(node, "_close", None)
    if spec is None:
        put(node, "_data_variables", {})
        put(node, "_node_coord_variables", {})
        put(node, "_node_dims", {})
        put(node, "_node_indexes", {})
        put(node, "_attrs", None)
        put(node, "_encoding", None)
    else:  # the node takes the spec's dicts over: specs are made for one tree
        dims = spec.dims
        if dims is None:
            dims = {}
            for var in (*spec.coord_vars.values(), *spec.data_vars.values()):
                for d, n in zip(var.dims, var.shape, strict=True):
                    dims[d] = n
        put(node, "_data_variables", spec.data_vars)
        put(node, "_node_coord_variables", spec.coord_vars)
        put(node, "_node_dims", dims)
        put(node, "_node_indexes", spec.indexes)
        put(node, "_attrs", spec.attrs or None)
        put(node, "_encoding", spec.encoding or None)
    if parent is not None:
        parent._children[name] = node  # type: ignore[index]
    return node


def _depth(path: str) -> int:
    return 0 if path in ("", "/") else path.strip("/").count("/") + 1


def assemble_tree(nodes: Mapping[str, NodeSpec | None], *, fast: bool | None = None) -> DataTree:
    """Build a DataTree from ``{path: NodeSpec}``; intermediate nodes are created empty.

    Parameters
    ----------
    nodes
        Absolute or root-relative paths ("/", "B", "B/03/0/0", ...) to node contents.
    fast
        Force the direct build (True) or the public ``DataTree.from_dict`` (False); default:
        direct when :func:`fast_path_available`.
    """
    if fast is None:
        fast = fast_path_available()
    norm = {p.strip("/"): s for p, s in nodes.items()}
    if not fast:
        tree = DataTree.from_dict(
            {"/" + p: (s.dataset() if s is not None else None) for p, s in norm.items()})
        tree.__class__ = HcsTree
        return tree
    root = _new_node(None, None, norm.get(""))
    root.__class__ = HcsTree
    made: dict[str, DataTree] = {"": root}
    for path in sorted((p for p in norm if p), key=_depth):
        parent_path, _, name = path.rpartition("/")
        parent = made.get(parent_path)
        if parent is None:  # create empty intermediates ("scale0" of "scale0/image")
            parent = root
            so_far = ""
            for comp in parent_path.split("/"):
                so_far = f"{so_far}/{comp}" if so_far else comp
                nxt = made.get(so_far)
                if nxt is None:
                    nxt = made[so_far] = _new_node(comp, parent, None)
                parent = nxt
        made[path] = _new_node(name, parent, norm[path])
    return root


# ------------------------------------------------------------------ open_datatree hand-off


def _default_index_mapper() -> Callable[..., Any] | None:
    try:
        from xarray.backends.api import _maybe_create_default_indexes
    except ImportError:  # renamed upstream: fall back to the public, slower path
        return None
    return _maybe_create_default_indexes


class HcsTree(DataTree):
    """A plate's DataTree: the same as any, but its repr stays short and quick.

    xarray's repr renders every shown node (up to ``display_max_children`` per level, 12 by
    default): about 6 s for a 384-well plate. Above a few hundred nodes this repr shows a
    one-line summary and two children per node; ``dt.hcs.summary()`` says more.
    """

    __slots__ = ()

    #: above this many nodes the repr is abridged
    FULL_REPR_NODES = 300
    #: children shown per node when abridged
    ABRIDGED_CHILDREN = 2

    def _abridged(self) -> tuple[str, int] | None:
        n = 0
        for _ in self.subtree:
            n += 1
            if n > self.FULL_REPR_NODES:
                break
        if n <= self.FULL_REPR_NODES:
            return None
        total = sum(1 for _ in self.subtree)
        return (f"<{total} nodes: {self.ABRIDGED_CHILDREN} children shown per node; "
                "dt.hcs.summary() describes the plate>", total)

    def __repr__(self) -> str:
        short = self._abridged()
        if short is None:
            return super().__repr__()
        with xr.set_options(display_max_children=self.ABRIDGED_CHILDREN):
            return short[0] + "\n" + super().__repr__()

    def _repr_html_(self) -> str:
        short = self._abridged()
        if short is None:
            return super()._repr_html_()
        import html

        with xr.set_options(display_max_children=self.ABRIDGED_CHILDREN):
            return f"<p>{html.escape(short[0])}</p>" + super()._repr_html_()


class _IndexedTree(HcsTree):
    """A freshly built backend tree whose every dimension coordinate already has an index.

    ``xr.open_datatree`` maps ``_maybe_create_default_indexes`` over the backend's tree; on
    ours that is a no-op that costs a full tree rebuild, so we answer it by handing back the
    same tree, now an :class:`HcsTree`. Any other mapping takes the ordinary path.
    """

    __slots__ = ()

    def map_over_datasets(self, func: Any, *args: Any, kwargs: Any = None) -> Any:
        self.__class__ = HcsTree
        if func is _default_index_mapper() and not args and not kwargs:
            return self
        return DataTree.map_over_datasets(self, func, *args, kwargs=kwargs)


def mark_indexed(tree: DataTree) -> DataTree:
    """Let ``xr.open_datatree`` skip its default-index pass on ``tree`` (see ``_IndexedTree``)."""
    if fast_path_available() and _default_index_mapper() is not None and type(tree) in (
            DataTree, HcsTree):
        tree.__class__ = _IndexedTree
    return tree


def spec_of(node: DataTree) -> NodeSpec:
    """The content of an existing node, sharing its variables and indexes (no copies)."""
    if fast_path_available():
        return NodeSpec(dict(node._data_variables), dict(node._node_coord_variables),
                        dict(node._node_indexes), dict(node._attrs or {}),
                        dict(node._encoding or {}), dict(node._node_dims))
    ds = node.to_dataset(inherit=False)
    return NodeSpec(dict(ds.data_vars.variables), {k: ds.variables[k] for k in ds.coords},
                    dict(ds.xindexes), dict(ds.attrs), dict(ds.encoding))


def node_data_var(node: DataTree, name: str) -> Variable | None:
    """The data variable ``name`` of ``node`` itself, without building a DataArray."""
    if fast_path_available():
        return node._data_variables.get(name)
    return node.to_dataset(inherit=False).data_vars.variables.get(name)


def node_coord(node: DataTree, name: str) -> tuple[Variable, Index | None] | None:
    """Coordinate ``name`` as ``node`` sees it (its own, else the nearest ancestor's), with its
    index; None if there is none. Skips the merged coordinate views xarray builds per call."""
    cur: DataTree | None = node
    while cur is not None:
        if fast_path_available():
            var = cur._node_coord_variables.get(name)
            if var is not None:
                return var, cur._node_indexes.get(name)
        else:
            ds = cur.to_dataset(inherit=False)
            if name in ds.coords:
                return ds.variables[name], ds.xindexes.get(name)
        cur = cur.parent
    return None
