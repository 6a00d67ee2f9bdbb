"""The plate plan of a `CellPaintingSpec`: its wells, sites and the tasks' groups."""

from __future__ import annotations

import string

from distributed_something.jobs.cellpainting.spec import (
    DEFAULT_SITES,
    LAYOUTS,
    PLATE_KEY,
    SITE_KEY,
    STEP_INFO,
    WELL_KEY,
    CellPaintingSpec,
)


def _format_well(spec: CellPaintingSpec, row: str, column: int) -> str:
    return f"{row}{column:02d}" if spec.pad_wells else f"{row}{column}"


def wells(spec: CellPaintingSpec) -> list[str]:
    """The wells to process, formatted as the LoadData CSVs spell them.

    Row-major as DCP makes them (A01, A02, … A24, B01, …), limited to ``rows``/``columns``;
    or the explicit ``wells`` in the order given. ``exclude_wells`` are left out. ``A01``
    with ``pad_wells`` (DCP's default), ``A1`` without.
    """
    n_rows, n_columns = LAYOUTS[spec.plate_format]
    if spec.wells is not None:
        chosen = [(well[0], int(well[1:])) for well in spec.wells]
    else:
        rows = set(spec.rows) if spec.rows is not None else None
        columns = set(spec.columns) if spec.columns is not None else None
        chosen = [
            (row, column)
            for row in string.ascii_uppercase[:n_rows]
            if rows is None or row in rows
            for column in range(1, n_columns + 1)
            if columns is None or column in columns
        ]
    excluded = {(well[0], int(well[1:])) for well in spec.exclude_wells}
    return [
        _format_well(spec, row, column) for row, column in chosen if (row, column) not in excluded
    ]


def sites(spec: CellPaintingSpec) -> list[int]:
    """The sites (fields of view) per well: ``spec.sites``, or DCP's default 1–9."""
    return list(spec.sites) if spec.sites is not None else list(range(1, DEFAULT_SITES + 1))


def groups(spec: CellPaintingSpec) -> list[str]:
    """The ``Metadata`` of every task, in DCP's order: plate, then well, then site.

    Only the keys the step groups by appear: ``Metadata_Plate=P`` for illum,
    ``Metadata_Plate=P,Metadata_Well=A01`` for qc and assaydev, and
    ``Metadata_Plate=P,Metadata_Well=A01,Metadata_Site=1`` for zproj, the ``_persite``
    steps and analysis. The strings are unique.
    """
    keys = STEP_INFO[spec.step].keys
    the_wells, the_sites = wells(spec), sites(spec)
    result: list[str] = []
    for plate in spec.plates:
        if WELL_KEY not in keys:
            result.append(f"{PLATE_KEY}={plate}")
            continue
        for well in the_wells:
            if SITE_KEY not in keys:
                result.append(f"{PLATE_KEY}={plate},{WELL_KEY}={well}")
                continue
            result.extend(
                f"{PLATE_KEY}={plate},{WELL_KEY}={well},{SITE_KEY}={site}" for site in the_sites
            )
    return result
