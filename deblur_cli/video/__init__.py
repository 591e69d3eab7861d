"""Video: deblur clips frame by frame with the same :class:`~deblur_cli.inference.Deblurrer`, keeping the
timing, audio, rotation and colour tags (``deblur video``, ``deblur folder`` with videos).

Needs PyAV (``pip install 'deblur-cli[video]'``). This module itself imports nothing heavy, so that
``deblur folder`` can tell videos from images without it.
"""

from __future__ import annotations

import importlib
from typing import Any

from deblur_cli.video.formats import VIDEO_EXTENSIONS, is_video_path, require_av

# Public name -> the module that defines it, imported on first use (they need PyAV).
_EXPORTS = {
    "deblur_video": "deblur_cli.video.pipeline",
    "check_video_job": "deblur_cli.video.job",
    "VideoResult": "deblur_cli.video.job",
    "VideoProgress": "deblur_cli.video.job",
    "TemporalGate": "deblur_cli.video.temporal",
    "default_video_output": "deblur_cli.video.encoding",
}

__all__ = [  # noqa: RUF022 - the lazy exports first
    "deblur_video", "check_video_job", "VideoResult", "VideoProgress", "TemporalGate", "default_video_output",
    "VIDEO_EXTENSIONS", "is_video_path", "require_av",
]  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        if _EXPORTS[name] != "deblur_cli.video.temporal":
            require_av()
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
