"""Which files are videos, and the check that PyAV is installed (imports nothing heavy)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from deblur_cli.errors import DeblurError

#: File extensions (lower case) taken as videos by ``deblur folder``; ``deblur video`` reads any file FFmpeg reads.
VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".wmv", ".flv",
     ".3gp", ".ogv"}
)  # fmt: skip

def is_video_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path``'s extension is one of :data:`VIDEO_EXTENSIONS`."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def require_av() -> None:
    """Raise a one-line :class:`DeblurError` when PyAV is not installed."""
    try:
        importlib.import_module("av")
    except ImportError:
        raise DeblurError("video needs PyAV: pip install 'deblur-cli[video]' (or pip install av)") from None
