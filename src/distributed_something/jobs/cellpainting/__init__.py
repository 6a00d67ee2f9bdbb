"""Cell Painting job files, as Distributed-CellProfiler's ``run_batch_general.py`` makes them.

A `CellPaintingSpec` names a step of the Cell Painting workflow, the plates, the wells and
sites, and where things live in the bucket; `job` turns it into a DCP job file (the format
`jobs.parse` reads as ``"dcp"``) and `write_jobs` writes it. Everything here is pure except
the two ``write_*`` functions.

What each step does, as in DCP 2.2's ``run_batch_general.py``:

================== ======================= ============================ ======================
step               one task per            pipeline / LoadData CSV      output (+ structure)
================== ======================= ============================ ======================
zproj              plate × well × site     Zproj.cppipe /               images_projected
                                           load_data_unprojected.csv    (Metadata_Plate)
illum              plate                   illum.cppipe / load_data.csv illum
qc                 plate × well            qc.cppipe / load_data.csv    qc/…/results
qc_persite         plate × well × site     as qc                        as qc
assaydev           plate × well            assaydev.cppipe /            assaydev
                                           load_data_with_illum.csv
assaydev_persite   plate × well × site     as assaydev                  as assaydev
analysis           plate × well × site     analysis.cppipe /            analysis (Metadata_Plate/
                                           load_data_with_illum.csv     analysis/Plate-Well-Site)
================== ======================= ============================ ======================

Groups are ``"Metadata_Plate=P,Metadata_Well=A01,Metadata_Site=1"`` strings (only the keys the
step groups by), plate-major, wells row-major (A01, A02, … A24, B01, …), then sites.

One DCP job file has a single ``data_file`` for all its groups, while DCP keeps one LoadData
CSV per plate (``load_data_csv/<batch>/<plate>/<name>.csv``). So a spec with several plates
that reads LoadData CSVs needs one job file per plate: `job_files` plans them and
`write_jobs` writes them (``{plate}`` in the path is replaced by the plate, otherwise
``_<plate>`` is added to the file name). With batch files (``Batch_data_<step>.h5``) one file
serves every plate.

Differences from ``run_batch_general.py``, on purpose: nothing is sent to a queue (the job
file goes through ``ds submit``); values are checked before anything is written (a 96-well
plate has no row K, sites start at 1, a gallery path needs its dataset and source); explicit
wells are written with the same padding as generated ones; ``--rows``/``--columns`` select
within the plate format instead of being silently replaced by it; ``cpg`` is accepted as a
spelling of the ``gallery`` path style.

The command line (``ds jobs cellpainting``) is described by `ARGUMENTS` and turned into a
spec by `spec_from_options`; the command itself adds only the output path and ``--force``.

The modules: `spec` (the steps and the checked `CellPaintingSpec`), `plate` (wells, sites,
groups), `writer` (the job and its files), `options` (the command line).
"""

from distributed_something.jobs.cellpainting.options import ARGUMENTS, Argument, spec_from_options
from distributed_something.jobs.cellpainting.plate import groups, sites, wells
from distributed_something.jobs.cellpainting.spec import (
    DEFAULT_SITES,
    OPTION_NAMES,
    STEPS,
    CellPaintingSpec,
    PathStyle,
    Step,
)
from distributed_something.jobs.cellpainting.writer import job, job_files, write_job, write_jobs

__all__ = [
    "ARGUMENTS",
    "DEFAULT_SITES",
    "OPTION_NAMES",
    "STEPS",
    "Argument",
    "CellPaintingSpec",
    "PathStyle",
    "Step",
    "groups",
    "job",
    "job_files",
    "sites",
    "spec_from_options",
    "wells",
    "write_job",
    "write_jobs",
]
