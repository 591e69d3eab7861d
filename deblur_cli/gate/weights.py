"""The blur-extent network's weights: the bundled file, its checksum, and the file format.

The bundled weights (``weights/blur-extent.safetensors``) are checked against the sha256 in the
record beside them before use (:func:`checked_bundled_path`). Files are safetensors with the
metadata ``arch=blur-extent`` and ``width`` (:func:`save_blur_extent`, :func:`read_blur_extent`);
:func:`deblur_cli.gate.meter.load_blur_extent` builds the network from them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from deblur_cli.errors import DeblurError

if TYPE_CHECKING:
    import torch
    from torch import nn

#: Bundled weights of the blur-extent network (``weights/blur-extent.safetensors``).
BUNDLED_FILE = "blur-extent.safetensors"
#: Its record: sha256, training data and figures (written by ``tools/train_blur_extent.py``).
BUNDLED_RECORD = "blur-extent.json"


def bundled_path() -> Path:
    """The bundled blur-extent weights: in the installed package, or in ``weights/`` of a
    source checkout (the same lookup as the SAPHN registry, :func:`deblur_cli.hub.registry.weights_dir`)."""
    from deblur_cli.hub.registry import weights_dir

    return weights_dir() / BUNDLED_FILE


def checked_bundled_path() -> Path:
    """:func:`bundled_path`, after checking its sha256 against ``blur-extent.json`` beside it.

    Raises:
        DeblurError: the file or its record is missing or unreadable, or the checksum differs.
    """
    import json

    from deblur_cli.hub.registry import sha256_file

    try:
        path = bundled_path()
    except ModuleNotFoundError as exc:
        raise DeblurError(f"bundled weights folder not found ({exc}); reinstall deblur-cli") from None
    record = path.with_name(BUNDLED_RECORD)
    try:
        expected = json.loads(record.read_text())["sha256"]
        if not isinstance(expected, str):
            raise TypeError(f"sha256 is {type(expected).__name__}, not a string")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DeblurError(f"blur-extent weights record {record} unreadable: {exc}") from None
    if not path.is_file():
        raise DeblurError(f"bundled blur-extent weights missing: {path}")
    try:
        actual = sha256_file(path)
    except OSError as exc:
        raise DeblurError(f"bundled blur-extent weights {path}: cannot read ({exc.strerror or exc})") from None
    if actual != expected:
        raise DeblurError(f"bundled blur-extent weights {path}: sha256 {actual[:12]}... differs from the recorded {expected[:12]}...")
    return path


def save_blur_extent(net: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> str:
    """Write a :class:`~deblur_cli.gate.meter.BlurExtentNet` as safetensors (metadata
    ``arch=blur-extent``, ``width``); returns its sha256."""
    from safetensors.torch import save_file

    from deblur_cli.hub.registry import sha256_file

    meta = {"arch": "blur-extent", "width": str(net.width), **(metadata or {})}
    state = {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(dest), metadata=meta)
    return sha256_file(dest)


def read_blur_extent(path: str | Path) -> tuple[dict[str, torch.Tensor], int]:
    """The tensors of a blur-extent weights file and the network's ``width`` (safetensors only).

    Raises:
        DeblurError: missing/unreadable file, or not blur-extent weights.
    """
    from deblur_cli.hub.loading import read_weights

    state, meta = read_weights(path)
    if meta.get("arch") != "blur-extent":
        raise DeblurError(f"{path} is not blur-extent weights (arch {meta.get('arch')!r})")
    try:
        width = int(meta.get("width", "16"))
    except ValueError as exc:
        raise DeblurError(f"{path}: {str(exc).splitlines()[0]}") from None
    return state, width
