"""The ``.hcs`` accessor on ``xarray.DataTree``: the plate-level view of a tree.

Everything here is xarray in → xarray (or plain Python) out; nothing touches a store.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

import pandas as pd
import xarray as xr

from .errors import HcsNotAPlateError, HcsSelectionError
from .ngff import Acquisition, Plate, Well

__all__ = ["HcsAccessor"]


@xr.register_datatree_accessor("hcs")
class HcsAccessor:
    """Plate-level operations on a DataTree opened with ``engine="ome-hcs"``.

    The tree's root must be the plate node (its ``attrs["ome"]["plate"]`` describes it).
    """

    def __init__(self, tree: xr.DataTree) -> None:
        self._tree = tree

    # -- metadata -------------------------------------------------------------------------

    @cached_property
    def _ome(self) -> dict[str, Any]:
        ome = self._tree.attrs.get("ome")
        if not isinstance(ome, dict) or "plate" not in ome:
            raise HcsNotAPlateError("the root of this tree holds no OME-NGFF plate metadata "
                                    "(open the store with engine='ome-hcs')", self._tree.path)
        return ome

    @property
    def version(self) -> str:
        """The OME-NGFF version the plate was read as (``"0.4"``, ``"0.5"``, ...)."""
        return str(self._ome.get("version"))

    @cached_property
    def plate(self) -> Plate:
        """The plate metadata as a typed :class:`~xarray_hcs.ngff.Plate`."""
        return Plate.from_dict(self._ome["plate"], self._tree.path)

    @property
    def rows(self) -> list[str]:
        """Row names of the plate layout, in order."""
        return list(self.plate.rows)

    @property
    def columns(self) -> list[str]:
        """Column names of the plate layout, in order (spelled as stored: "3" or "03")."""
        return list(self.plate.columns)

    @property
    def wells(self) -> list[str]:
        """Paths (``"B/03"``) of the wells the tree holds, in plate order."""
        children = self._tree.children
        return [w.path for w in self.plate.wells
                if w.row in children and w.column in children[w.row].children]

    @property
    def acquisitions(self) -> list[Acquisition]:
        """The plate's acquisitions (empty for plates that declare none)."""
        return list(self.plate.acquisitions)

    def well(self, path: Any) -> Well:
        """The metadata of one well, named as ``sel`` takes it (``"B/03"``, ``"B3"``,
        ``("B", 3)``).

        Raises
        ------
        HcsSelectionError
            The plate has no such well, or the tree does not hold it.
        """
        from .tree import select_wells

        (w,) = select_wells(self.plate, [path], "/")
        node = self._tree.get(w.row)
        node = None if node is None else node.get(w.column)
        if node is None:
            raise HcsSelectionError(f"the tree does not hold well {w.path!r}", "/")
        return Well.from_dict(node.attrs["ome"]["well"], w.path)

    def image(self, field: Any, level: int | str = 0, label: str | None = None,
              variable: str | None = None) -> xr.DataArray:
        """One field's level as a lazy DataArray, whatever the writer named things.

        Parameters
        ----------
        field
            ``"B/03/0"``, ``"B3/0"`` or ``("B", 3, "0")``.
        level
            Index into the field's levels (``-1``: the coarsest) or a level path
            (``"0"``, ``"scale0"``, ``"s0"``, as the writer named it).
        label
            The name of a label image of the field: its level instead of the image's.
        variable
            The array's variable (default: ``image``, or ``labels`` for a label image).

        Returns
        -------
        xarray.DataArray
            Dimensions named by role (``t``, ``c``, ``z``, ``y``, ``x``) where the writer's
            names differ only in case (iohub's ``C``, ``Z``...) or are the one axis of their
            type; coordinates in physical units; channel labels on ``c``.

        Examples
        --------
        >>> img = dt.hcs.image("B/03/0")                      # doctest: +SKIP
        >>> img.sel(c="DAPI", x=slice(0, 100)).mean()          # doctest: +SKIP
        >>> nuclei = dt.hcs.image("B3/0", level=-1, label="nuclei")  # doctest: +SKIP
        """
        from .field_image import field_image

        return field_image(self._tree, field, level, label, variable)

    @property
    def field_paths(self) -> list[str]:
        """Paths (``"B/03/0"``) of every field image in the tree, well by well."""
        out = []
        for wpath in self.wells:
            node = self._tree[wpath]
            images = node.attrs.get("ome", {}).get("well", {}).get("images", [])
            out.extend(f"{wpath}/{im['path']}" for im in images
                       if im["path"] in node.children)  # type: ignore[union-attr]
        return out

    # -- selecting and editing -------------------------------------------------------------

    def sel(self, rows: Any = None, columns: Any = None, wells: Any = None, fields: Any = None,
            acquisition: int | str | None = None, levels: Any = None) -> xr.DataTree:
        """A new tree with part of the plate; its metadata describes exactly what it holds.

        Parameters
        ----------
        rows, columns
            Row names (``"B"``) and column names or numbers (``3`` finds ``"03"``).
        wells
            ``"B/03"``, ``"B03"``, ``"B3"`` or ``("B", "03")``.
        fields
            Field (image) paths; ints are paths too.
        acquisition
            Keep the fields of this acquisition (id or name), and only its plate entry.
        levels
            Level indices or paths to keep in every field; a label image with as many
            levels as its field keeps the same ones (else all of its own).

        Notes
        -----
        Built in one pass from the kept nodes, sharing their data: fast on a whole plate,
        where xarray's own tree-wide ``sel``/``filter`` take seconds and drop the plate's
        attributes.
        """
        from .edit import select

        return select(self._tree, rows=rows, columns=columns, wells=wells, fields=fields,
                      acquisition=acquisition, levels=levels)

    def remove_image(self, row: str, column: Any, field: Any) -> xr.DataTree:
        """A new tree without one field; the well goes too if it was its last field.

        The plate's rows and columns stay. The tree is unchanged; write the result with
        :meth:`to_zarr`, or edit a plate on disk with :func:`xarray_hcs.remove_image`.

        Raises
        ------
        HcsNotFoundError
            The tree holds no such well, or the well lists no such field.
        """
        from .edit import remove_image

        return remove_image(self._tree, row, column, field)

    def add_image(self, row: str, column: Any, image: Any, field: str | None = None,
                  acquisition: int | None = None, acquisition_name: str | None = None,
                  levels: int | None = None, labels: dict[str, Any] | None = None
                  ) -> xr.DataTree:
        """A new tree with ``image`` as a new field of well ``row``/``column``.

        Parameters
        ----------
        row, column
            The well; rows, columns and the well are added to the plate as needed, columns in
            the plate's naming style (``3`` becomes ``"03"`` on a zero-padded plate).
        image
            A DataArray (or a Dataset with an ``image`` variable) whose dims are among
            ``t, c, z, y, x``; coordinates, if any, give the physical scale and translation
            (``units`` attrs the unit), ``c`` labels the channels.
        field
            The field path; default the next free number in the well.
        acquisition, acquisition_name
            The acquisition id (declared on the plate if new, with that name).
        levels
            Pyramid levels (2x in y/x each; mean for images, every other pixel for labels);
            default as many as the plate's other fields have, else down to about 64 px.
        labels
            ``{"nuclei": DataArray}`` label images on the same grid (integer dtype).

        Returns
        -------
        xarray.DataTree
            The new tree; the pyramid is lazy (dask) until written.
        """
        from .edit import add_image

        return add_image(self._tree, row, column, image, field=field, acquisition=acquisition,
                         acquisition_name=acquisition_name, levels=levels, labels=labels)

    # -- plate-wide arrays -------------------------------------------------------------------

    def stack(self, level: int | str = 0, variable: str = "image", pad: bool = False,
              channels: str = "exact", chunks: Any = None) -> xr.DataArray:
        """Every field of one level as one lazy array ``(well, field, <image dims>)``.

        The same array and coordinates however the tree was opened (lazily, with
        ``chunks=``, with :func:`~xarray_hcs.open_plate`), after pixels were read, after a
        ``sel``, and for arrays computed or edited in the tree.

        Parameters
        ----------
        level
            Level index (``0`` finest, ``-1`` coarsest) or level path.
        variable
            ``"image"``.
        pad
            Stack fields of different shapes by padding the smaller ones at the end of each
            axis with their fill value; ``<dim>_size`` coordinates give each field's extent.
        channels
            Fields whose channel labels differ: ``"exact"`` (default) refuses them;
            ``"union"`` aligns them by label: the channels are the union of all labels, a
            channel a field lacks reads as the fill value and ``channel_present``
            ``(well, field, c)`` is False there.
        chunks
            ``None`` (default): dask if the tree's arrays are dask arrays, else lazy.
            ``{}``: dask, a block per well on the fields' stored chunks; ``-1``, ``"auto"``
            or ``{"well": 8, ...}`` as dask understands them. Always one graph layer for
            the plate's own arrays.

        Returns
        -------
        xarray.DataArray
            Coordinates ``well`` (``"B/03"``), ``row``, ``column`` on ``well``; ``field``
            (position in the well), ``field_path``, ``acquisition`` and ``present`` on
            ``(well, field)`` (wells with fewer fields are filled with the fill value where
            ``present`` is False); the image's physical coordinates, shared when all fields
            sit on one grid, else relative with ``<dim>_origin`` per field; channel labels.
            Nothing is read: it is lazy (see ``chunks``).

        Raises
        ------
        HcsMetadataError
            Fields differ in axes, dtype, shape (without ``pad``), channel labels (without
            ``channels="union"``) or pixel size at this level (the message lists them).

        Examples
        --------
        >>> st = dt.hcs.stack(level=-1)                           # doctest: +SKIP
        >>> st.mean(["z", "y", "x"]).where(st.present).mean("field")  # doctest: +SKIP
        """
        from .stack import stack_tree

        ds = stack_tree(self._tree, self.field_paths, self.wells, level, variable, pad=pad,
                        channels=channels, chunks=chunks)  # type: ignore[arg-type]
        return ds[variable]

    def map_fields(self, func: Any, level: int | str = 0, variable: str | None = "image",
                   load: bool = True, compute: bool = True, channels: str = "exact",
                   **kwargs: Any) -> Any:
        """Apply ``func`` to every field, in parallel with dask, and collect the results.

        Parameters
        ----------
        func
            ``func(field, **kwargs)``, where ``field`` is the field's ``variable`` at ``level``
            (a DataArray with its coordinates), or the whole level Dataset if
            ``variable=None``. It runs in a dask task: on a ``distributed.Client`` in a
            worker process, which reads the field from the store itself.
        level
            Level index (``0`` finest, ``-1`` coarsest) or level path.
        load
            Load the field into memory before calling ``func`` (default); False passes it
            lazily.
        compute
            False returns a ``dask.delayed`` of the collected result.
        channels
            Results labelled along a dimension (a ``c`` coordinate) whose labels differ
            between fields: ``"exact"`` (default) refuses them, ``"union"`` aligns them by
            label (NaN where a field has no such channel; ``channel_present`` marks them),
            as :meth:`stack` does.
        **kwargs
            Passed to ``func``.

        Returns
        -------
        xarray.Dataset or pandas.DataFrame
            Numbers, arrays, DataArrays, dicts of them or Datasets: one Dataset with dims
            ``(well, field, <the result's dims>)``, coordinates ``well``, ``row``, ``column``,
            ``field``, ``field_path``, ``acquisition`` and ``present`` (absent fields are
            NaN), like :meth:`stack`; results with coordinates keep them under the stacked
            view's rules (labels that agree; positions shared or relative to each field's
            ``<dim>_origin``). DataFrames: one DataFrame with ``row``, ``column``, ``field`` in
            front, indexed ``{row}_{column}_{field}_{index}``, like :meth:`concat_tables`.

        Examples
        --------
        >>> means = dt.hcs.map_fields(lambda im: im.mean(["z", "y", "x"]))  # doctest: +SKIP
        >>> means["result"].mean("field")        # per well and channel     # doctest: +SKIP
        """
        from .mapping import map_fields

        return map_fields(self._tree, func, level=level, variable=variable, load=load,
                          compute=compute, channels=channels, **kwargs)

    # -- tables ----------------------------------------------------------------------------

    def list_tables(self, mode: str = "common", acquisition: int | str | None = None,
                    path: str | None = None, kind: str | Sequence[str] | None = None
                    ) -> list[str]:
        """Names of the per-image tables of the plate.

        Parameters
        ----------
        mode
            ``"common"``: tables every field has; ``"all"``: tables any field has.
        acquisition
            Only the fields of this acquisition (id or name).
        path
            Instead, the tables of one node: a field path (``"B/03/0"``), or ``""`` for the
            plate-level tables.
        kind
            Only tables of this type or these types (``"roi_table"``,
            ``["roi_table", "masking_roi_table"]``...).

        Returns
        -------
        list of str
            In the order the fields list them.
        """
        from .plate_tables import list_tables

        return list_tables(self._tree, mode, acquisition, path, kind)

    def table(self, path: str, name: str, columns: Any = None) -> pd.DataFrame:
        """One table as a DataFrame, read on first use (then kept).

        Parameters
        ----------
        path
            The field (``"B/03/0"``), or ``""`` for a plate-level table.
        name
            The table's name.
        columns
            Only these columns (the index always): parquet and csv read only them, AnnData
            skips ``X`` when no ``X`` column is asked for.

        Returns
        -------
        pandas.DataFrame
            Indexed by the table's ``index_key`` (cast to its ``index_type``); AnnData tables
            give the ``X`` columns, then the ``obs`` columns, as ngio does.

        Raises
        ------
        HcsSelectionError
            No such node or table. Other ``HcsError`` kinds name the table's store path when its
            metadata or data is bad.
        """
        from .plate_tables import read_table_node

        return read_table_node(self._tree, path, name, columns)

    def concat_tables(self, name: str, acquisition: int | str | None = None,
                      strict: bool = True, columns: Any = None) -> pd.DataFrame:
        """Table ``name`` of every field as one DataFrame, read concurrently.

        Parameters
        ----------
        name
            The table's name.
        acquisition
            Only the fields of this acquisition (id or name).
        strict
            If True, a field without the table (or with an unreadable one) raises; if False,
            it is skipped (unreadable ones with an ``HcsMissingWarning``). Rows are never
            attributed to another field.
        columns
            Only these columns of each table (see :meth:`table`).

        Returns
        -------
        pandas.DataFrame
            Columns ``row``, ``column``, ``field`` (and ``acquisition`` on plates that declare
            acquisitions), the table's own index as a column of its name, then the table's
            columns. The index is ``"{row}_{column}_{field}_{index}"``, unique across the plate.
            Tables stored with different backends concatenate like any other.
        """
        from .plate_tables import concat_tables

        return concat_tables(self._tree, name, acquisition, strict, columns)

    def add_table(self, path: str, name: str, df: pd.DataFrame, kind: str = "generic_table",
                  backend: str = "parquet", index_key: str | None = None,
                  index_type: str | None = None, region: str | None = None,
                  instance_key: str | None = None, overwrite: bool = False) -> xr.DataTree:
        """A new tree with ``df`` as table ``name`` of a field (or of the plate, ``path=""``).

        Parameters
        ----------
        path, name
            Where: a field path (``"B/03/0"``) or ``""``, and the table's name.
        df
            The rows; its index becomes the table's index (named ``index_key``).
        kind
            ``"generic_table"``, ``"feature_table"``, ``"roi_table"``, ``"masking_roi_table"``,
            ``"condition_table"``, ``"generic_roi_table"`` or your own type name.
        backend
            ``"parquet"`` (default), ``"anndata"``, ``"csv"`` or ``"json"``: how
            :meth:`to_zarr` stores it. AnnData, as ngio writes it, keeps floats and booleans
            in ``X`` (booleans come back as 0.0 / 1.0) and strings as categoricals.
        index_key, index_type
            Default: the index's name (else ``"label"`` for feature and masking ROI tables,
            ``"index"`` otherwise) and ``"int"`` or ``"str"`` from its dtype.
        region, instance_key
            For tables that describe a label image: ``"../labels/<name>"`` and the column of
            label values (default: the index key).
        overwrite
            Replace a table of the same name.

        Raises
        ------
        HcsTableError
            Repeated index values or column names; ROI tables without the ROI columns;
            columns AnnData cannot hold.
        """
        from .plate_tables import add_table

        return add_table(self._tree, path, name, df, kind=kind, backend=backend,
                         index_key=index_key, index_type=index_type, region=region,
                         instance_key=instance_key, overwrite=overwrite)

    def remove_table(self, path: str, name: str) -> xr.DataTree:
        """A new tree without table ``name`` of the field at ``path`` (``""``: the plate's).

        The ``tables`` group stops listing it; :meth:`to_zarr` then writes the rest. The tree
        is unchanged.

        Raises
        ------
        HcsSelectionError
            No such node, or the node has no such table.
        """
        from .plate_tables import remove_table

        return remove_table(self._tree, path, name)

    def roi(self, path: str, name: str, index: Any, level: int | str = 0) -> xr.Dataset:
        """The pixels of one ROI of a ROI table, from one level of the field.

        Parameters
        ----------
        path
            The field (``"B/03/0"``).
        name
            A ROI table of that field (``roi_table``, ``masking_roi_table``, ...).
        index
            The ROI's index value (``"FOV_1"``, or a label).
        level
            Level index or path.

        Returns
        -------
        xarray.Dataset
            The level's dataset cut to the ROI in x, y (and z): ROIs are in micrometres from
            the image's origin, as Fractal and ngio define them. Lazy.
        """
        from .plate_tables import roi

        return roi(self._tree, path, name, index, level)

    # -- pictures ----------------------------------------------------------------------------

    def montage(self, level: int | str = -1, channel: Any = None, agg: str = "max",
                gap: int = 2, channels: str = "exact", pad: bool = False) -> xr.DataArray:
        """The whole plate as one image: wells in rows and columns, fields tiled in each well.

        Parameters
        ----------
        level
            Level to show (default the coarsest, ``-1``): one value per pixel of that level.
        channel
            Channel label or index; None keeps them all (a ``c`` dimension).
        agg
            How z (and t) are projected: ``"max"`` (default), ``"mean"``, ``"min"``,
            ``"median"``.
        gap
            Blank pixels between wells.
        channels, pad
            As for :meth:`stack`: ``channels="union"`` shows fields whose channel sets differ
            (a field without the channel shows the fill value), ``pad=True`` fields of
            different sizes.

        Returns
        -------
        xarray.DataArray
            ``(y, x)`` (or ``(c, y, x)``) floats, NaN where the plate has no well or a well
            has fewer fields; coordinates ``well_row`` on ``y`` and ``well_column`` on ``x``
            name the well under each pixel. Every field must have the same shape at
            ``level`` (else ``HcsMetadataError``, as for :meth:`stack`).
        """
        from .plot import montage

        return montage(self._tree, level=level, channel=channel, agg=agg, gap=gap,
                       channels=channels, pad=pad)

    def plot_montage(self, level: int | str = -1, channel: Any = 0, agg: str = "max",
                     ax: Any = None, cmap: str = "gray", robust: bool = True,
                     title: str | None = None, channels: str = "exact", pad: bool = False
                     ) -> Any:
        """Draw :meth:`montage` of one channel with matplotlib, wells labelled.

        ``robust`` scales colours to the 2nd-98th percentiles; ``channels`` and ``pad`` as
        for :meth:`montage`. Returns the matplotlib Axes.
        """
        from .plot import plot_montage

        return plot_montage(self._tree, level=level, channel=channel, agg=agg, ax=ax,
                            cmap=cmap, robust=robust, title=title, channels=channels,
                            pad=pad)

    def plot_plate(self, values: Any, ax: Any = None, cmap: str = "viridis",
                   title: str | None = None, label: str | None = None) -> Any:
        """A plate heatmap (rows x columns) of one value per well, with matplotlib.

        Parameters
        ----------
        values
            Per-well values: a Series or DataArray indexed by well (``"B/03"``; e.g.
            ``dt.hcs.map_fields(f)["result"].mean("field")``), a Series with a
            ``(row, column)`` MultiIndex (e.g. ``concat_tables(...).groupby(["row",
            "column"])["area"].mean()``) or a DataFrame with ``row``, ``column`` and one value
            column. Wells without a value are grey.

        Returns
        -------
        matplotlib.axes.Axes
        """
        from .plot import plot_plate

        return plot_plate(self._tree, values, ax=ax, cmap=cmap, title=title, label=label)

    # -- writing -------------------------------------------------------------------------

    def to_zarr(self, store: Any, ngff_version: str | None = None, mode: str = "w-",
                compute: bool = True, storage_options: dict[str, Any] | None = None,
                progress: bool = False, chunks: dict[str, int] | None = None) -> Any:
        """Write the tree as an OME-Zarr plate (NGFF 0.4 on zarr v2, or 0.5 on zarr v3).

        Parameters
        ----------
        store
            Directory path, fsspec URL or zarr ``Store``.
        ngff_version
            ``"0.4"`` or ``"0.5"``; default: the version the tree was read as (0.5 for new
            trees and for 0.6 trees).
        mode
            ``"w-"`` (default) fails if the target holds zarr data; ``"w"`` replaces it.
        compute
            False returns a ``dask.delayed`` that writes the pixels and then the metadata.
        storage_options
            fsspec options for URLs.
        progress
            Show a progress bar while writing (dask's local schedulers).
        chunks
            Chunk edge per dimension name (``{"y": 512, "x": 512}``); default: the chunks
            the data was read with, else 1 for leading dimensions and up to 1024 in y/x.

        Notes
        -----
        Everything the tree holds is written: plate, rows, wells, fields, every level, omero,
        labels, tables (each in its own backend); the metadata lists exactly that. Scale and
        translation come from the coordinates (a sliced level is written where it sits).
        Unknown metadata keys are kept.
        Pixels stream through dask, chunk by chunk; the plate document is written last.
        """
        from .write import write_plate

        return write_plate(self._tree, store, ngff_version=ngff_version, mode=mode,
                           compute=compute, storage_options=storage_options,
                           progress=progress, chunks=chunks)

    # -- summaries --------------------------------------------------------------------------

    def summary(self) -> str:
        """A short text description of the plate: layout, fields, levels, channels, dtypes.

        Quick on any plate size: it looks at one field per distinct layout, never at pixels.
        """
        from .summary import summary

        return summary(self._tree)
