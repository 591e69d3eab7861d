"""Video: deblur clips frame by frame with the same :class:`~deblur_cli.inference.Deblurrer`, keeping the
timing, audio, rotation and colour tags (``deblur video``, ``deblur folder`` with videos).

Needs PyAV (``pip install 'deblur-cli[video]'``). This module itself imports nothing heavy, so that
``deblur folder`` can tell videos from images without it.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from deblur_cli.errors import DeblurError

#: File extensions (lower case) taken as videos by ``deblur folder``; ``deblur video`` reads any file FFmpeg reads.
VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".wmv", ".flv",
     ".3gp", ".ogv"}
)  # fmt: skip

# Public name -> the module that defines it, imported on first use (they need PyAV).
_EXPORTS = {
    "deblur_video": "deblur_cli.video.pipeline",
    "check_video_job": "deblur_cli.video.pipeline",
    "VideoResult": "deblur_cli.video.pipeline",
    "VideoProgress": "deblur_cli.video.pipeline",
    "TemporalGate": "deblur_cli.video.temporal",
    "default_video_output": "deblur_cli.video.encoding",
}

__all__ = [  # noqa: RUF022 - the lazy exports first
    "deblur_video", "check_video_job", "VideoResult", "VideoProgress", "TemporalGate", "default_video_output",
    "VIDEO_EXTENSIONS", "is_video_path", "require_av",
]  # fmt: skip


def is_video_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path``'s extension is one of :data:`VIDEO_EXTENSIONS`."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def require_av() -> None:
    """Raise a one-line :class:`DeblurError` when PyAV is not installed."""
    try:
        importlib.import_module("av")
    except ImportError:
        raise DeblurError("video needs PyAV: pip install 'deblur-cli[video]' (or pip install av)") from None


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        if _EXPORTS[name] != "deblur_cli.video.temporal":
            require_av()
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
