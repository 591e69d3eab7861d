"""Inference: the :class:`Deblurrer` pipeline around the network.

Any image in, deblurred image out, at any size: tiling with blended overlaps, tile and batch
sizes from free memory, the blur gate, the self-ensemble and folder planning. Other packages
(video, distributed runs) use the names exported here.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> the module that defines it. Imported on first use, so that importing a
# submodule (the CLI does, for option defaults) does not pull numpy or torch in.
_EXPORTS = {
    "Deblurrer": "deblur_cli.inference.engine",
    "FileResult": "deblur_cli.inference.engine",
    "VizRequest": "deblur_cli.inference.engine",
    "check_job": "deblur_cli.inference.engine",
    "default_output": "deblur_cli.inference.engine",
    "folder_output_root": "deblur_cli.inference.engine",
    "merge_image": "deblur_cli.inference.engine",
    "plan_folder": "deblur_cli.inference.engine",
    "split_image": "deblur_cli.inference.engine",
    "tile_process": "deblur_cli.inference.engine",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
