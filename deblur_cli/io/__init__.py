"""Image files in and out: EXIF orientation, alpha, 16 bits, ICC profiles and atomic writes."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"ImageData": "deblur_cli.io.images", "read_image": "deblur_cli.io.images", "write_image": "deblur_cli.io.images"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:  # imported on first use: the CLI imports submodules for --help
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
