"""Inference: the :class:`Deblurrer` pipeline around the network.

Any image in, deblurred image out, at any size: the :class:`Deblurrer` (``deblurrer``), tiling
with blended overlaps (``tiling``), tile and batch sizes from free memory (``memory``), array
layouts (``layout``), reading and writing files (``files``), output paths and folder plans
(``planning``), the self-ensemble (``ensemble``) and the allocator tuning (``allocator``).
Other packages (video, distributed runs) use the names exported here.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> the module that defines it. Imported on first use, so that importing a
# submodule (the CLI does, for option defaults) does not pull numpy or torch in.
_EXPORTS = {
    "Deblurrer": "deblur_cli.inference.deblurrer",
    "FileResult": "deblur_cli.inference.files",
    "check_job": "deblur_cli.inference.planning",
    "default_output": "deblur_cli.inference.planning",
    "folder_output_root": "deblur_cli.inference.planning",
    "merge_image": "deblur_cli.inference.layout",
    "plan_folder": "deblur_cli.inference.planning",
    "split_image": "deblur_cli.inference.layout",
    "tile_process": "deblur_cli.inference.tiling",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
