"""Scale-out: ``deblur folder`` on a Ray cluster (``deblur folder --ray``, :func:`deblur_dataset`).

* :mod:`~deblur_cli.distributed.job`: :func:`deblur_dataset`, the driver;
* :mod:`~deblur_cli.distributed.worker`: the Ray Data actor that holds one ``Deblurrer``;
* :mod:`~deblur_cli.distributed.plan`: the inputs, their outputs, and what is left to do;
* :mod:`~deblur_cli.distributed.manifest`: one JSON line per input beside the outputs;
* :mod:`~deblur_cli.distributed.storage`: local, shared and object-store folders;
* :mod:`~deblur_cli.distributed.cluster`: connecting to Ray and sizing the workers;
* :mod:`~deblur_cli.distributed.progress`: live progress for the CLI.

Ray is an optional dependency (``pip install "deblur-cli[ray]"``); nothing here imports it
until a job runs.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "deblur_dataset": "deblur_cli.distributed.job",
    "JobReport": "deblur_cli.distributed.job",
    "MANIFEST_NAME": "deblur_cli.distributed.manifest",
    "read_manifest": "deblur_cli.distributed.manifest",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:  # imported on first use: the CLI imports submodules for --help
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
