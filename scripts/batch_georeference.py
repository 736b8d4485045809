"""Batch georeferencing for cron jobs and Slurm scripts: ``sarreg batch`` as a plain script.

Same arguments, outputs and exit codes as ``sarreg batch`` (0: every scene ok or skipped,
18: some scenes failed, other codes: the run could not start), e.g.::

    python scripts/batch_georeference.py -r ref.tif 'scenes/*.tif' -o aligned/ --workers 4
    python scripts/batch_georeference.py --pairs pairs.csv -o aligned/ --scheduler tcp://host:8786

Running it again finishes an interrupted batch (finished scenes are skipped). On Slurm, start a
Dask scheduler and workers on the allocation (``dask scheduler`` / ``dask worker``, or
dask-jobqueue) and pass ``--scheduler``; the workers need sarreg installed and the same paths.
"""

from __future__ import annotations

import sys

from sarreg.cli import main

if __name__ == "__main__":  # the guard matters: Dask starts worker processes by spawning
    args = sys.argv[1:]
    verbose = [a for a in args if a in ("-v", "--verbose")]
    rest = [a for a in args if a not in ("-v", "--verbose")]
    sys.exit(main([*verbose, "batch", *rest]))
