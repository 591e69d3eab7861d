"""Sharded safetensors: a state dict as ``model-0000N-of-0000M.safetensors`` files of bounded
size plus ``model.safetensors.index.json``, the Hugging Face Hub's convention.

Why: files that travel through a size-limited path (at most 16 MiB a file from an accelerator
machine, see ``docs/accelerator.md``) and Hub repositories of larger models. The split is
``huggingface_hub.split_torch_state_dict_into_shards``; this module writes the files itself so
that every set has an index (also a single shard, named ``model-00001-of-00001``), every shard
carries the same metadata as a single weights file (``arch``, ``config``, ``format``: each is
loadable on its own by :mod:`deblur_cli.hub.loading`), and the index records each shard's
sha256: the index file's own sha256 (what the registry records) pins the whole set.

Index layout::

    {"metadata": {"total_size": BYTES, "arch": ..., "config": ..., "format": ...,
                  "sha256": {"model-00001-of-00002.safetensors": HEX, ...}},
     "weight_map": {"tensor.name": "model-00001-of-00002.safetensors", ...}}

This module imports torch lazily (only to read or write tensors).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deblur_cli.errors import DeblurError

if TYPE_CHECKING:
    import torch

#: Name of the index file.
INDEX_NAME = "model.safetensors.index.json"
#: Largest shard file written by default: 15 MiB (the return path takes 16 MiB a file).
MAX_SHARD_BYTES = 15 * 1024 * 1024
#: Room left for each shard's JSON header (names, shapes, offsets, metadata) below the limit.
_HEADER_ROOM = 256 * 1024
_SHARD = re.compile(r"(?P<prefix>.+)-(?P<i>\d{5})-of-(?P<n>\d{5})\.safetensors")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (the digest the registry records)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def is_sharded(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an index file or a folder holding :data:`INDEX_NAME`."""
    p = Path(path)
    return (p.is_file() and p.name.endswith(".index.json")) or (p.is_dir() and (p / INDEX_NAME).is_file())


def index_path(path: str | os.PathLike[str]) -> Path:
    """The index file of a sharded set given as the index itself or its folder."""
    p = Path(path)
    return p / INDEX_NAME if p.is_dir() else p


def save_sharded(
    state: dict[str, torch.Tensor],
    folder: str | os.PathLike[str],
    metadata: dict[str, str] | None = None,
    max_shard_bytes: int = MAX_SHARD_BYTES,
    prefix: str = "model",
) -> Path:
    """Write ``state`` as shards of at most ``max_shard_bytes`` bytes each, plus the index.

    Shards of an earlier set with the same ``prefix`` in ``folder`` are removed first.

    Args:
        state: tensors (any device and dtype; saved contiguous, on the CPU).
        folder: destination (created).
        metadata: string metadata stored in every shard and in the index's ``metadata``.
        max_shard_bytes: limit on each shard file's size, header included.
        prefix: file name prefix (``model`` gives the Hub's names).

    Returns:
        the index file.

    Raises:
        DeblurError: one tensor alone exceeds the limit.
    """
    from safetensors.torch import save_file

    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    dest = Path(folder)
    dest.mkdir(parents=True, exist_ok=True)
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    groups = _split(cpu, max(1, max_shard_bytes - _HEADER_ROOM), prefix)
    n = len(groups)
    for old in dest.glob(f"{prefix}-*-of-*.safetensors"):
        old.unlink()
    names = [f"{prefix}-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    weight_map, digests, total = {}, {}, 0
    for name, keys in zip(names, groups):
        path = dest / name
        tmp = path.with_name(name + ".tmp")
        save_file({k: cpu[k] for k in keys}, str(tmp), metadata=meta)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        size = path.stat().st_size
        if size > max_shard_bytes:
            big = max(keys, key=lambda k: cpu[k].numel() * cpu[k].element_size())
            raise DeblurError(f"{path}: {size} bytes, over the {max_shard_bytes}-byte shard limit (tensor {big})")
        total += sum(cpu[k].numel() * cpu[k].element_size() for k in keys)
        digests[name] = sha256_file(path)
        weight_map.update({k: name for k in keys})
    index = {
        "metadata": {"total_size": total, **meta, "sha256": digests},
        "weight_map": dict(sorted(weight_map.items())),
    }
    out = dest / (INDEX_NAME if prefix == "model" else f"{prefix}.safetensors.index.json")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(index, indent=2) + "\n")
    os.replace(tmp, out)
    return out


def _split(state: dict[str, torch.Tensor], limit: int, prefix: str) -> list[list[str]]:
    """Tensor names grouped into shards of at most ``limit`` bytes of data:
    ``huggingface_hub.split_torch_state_dict_into_shards`` (it also keeps tied tensors
    together), or where that is missing the same greedy fill in file order."""
    try:
        from huggingface_hub import split_torch_state_dict_into_shards
    except ImportError:  # an older or newer huggingface_hub without it
        groups: list[list[str]] = [[]]
        used = 0
        for name, t in state.items():
            size = t.numel() * t.element_size()
            if groups[-1] and used + size > limit:
                groups.append([])
                used = 0
            groups[-1].append(name)
            used += size
        return groups
    split = split_torch_state_dict_into_shards(
        state, filename_pattern=prefix + "{suffix}.safetensors", max_shard_size=limit
    )
    return [list(names) for names in split.filename_to_tensors.values()]


def read_index(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed index (checked for ``weight_map`` and per-shard sha256).

    Raises:
        DeblurError: missing or malformed index.
    """
    p = index_path(path)
    try:
        index = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DeblurError(f"weights index not found: {p}") from None
    except (OSError, ValueError) as exc:
        raise DeblurError(f"cannot read weights index {p}: {exc}") from None
    if not isinstance(index, dict) or not isinstance(index.get("weight_map"), dict):
        raise DeblurError(f"{p} is not a safetensors index (no weight_map)")
    digests = (index.get("metadata") or {}).get("sha256")
    shards = set(index["weight_map"].values())
    if not isinstance(digests, dict) or set(digests) != shards:
        raise DeblurError(f"{p}: the index must list the sha256 of each of its {len(shards)} shards")
    for name in shards:
        if "/" in name or "\\" in name or not name.endswith(".safetensors"):
            raise DeblurError(f"{p}: bad shard name {name!r}")
    return index


def shard_files(path: str | os.PathLike[str]) -> list[Path]:
    """The shard files an index names, sorted (they live beside it)."""
    p = index_path(path)
    return sorted(p.parent / name for name in set(read_index(p)["weight_map"].values()))


def verify_shards(path: str | os.PathLike[str]) -> list[Path]:
    """The shard files of a set, each checked to exist and to match the index's sha256.

    Raises:
        DeblurError: a shard is missing, damaged or replaced.
    """
    p = index_path(path)
    digests = read_index(p)["metadata"]["sha256"]
    for name in sorted(digests):
        shard = p.parent / name
        if not shard.is_file():
            raise DeblurError(f"shard {name} of {p} is missing")
        if sha256_file(shard) != digests[name]:
            raise DeblurError(f"shard {shard} does not match the sha256 in {p.name}: damaged or replaced")
    return [p.parent / name for name in sorted(digests)]


def set_size(path: str | os.PathLike[str]) -> int:
    """Bytes of the index plus its shards on disk."""
    p = index_path(path)
    return p.stat().st_size + sum(f.stat().st_size for f in shard_files(p))


def index_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string metadata of a set (``arch``, ``config``...), from its index without torch."""
    meta = read_index(path).get("metadata") or {}
    return {str(k): str(v) for k, v in meta.items() if isinstance(v, str)}


def read_sharded(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors (on CPU) and metadata of a sharded set, every shard checked against its sha256.

    Raises:
        DeblurError: missing shard, digest mismatch, or tensors that differ from the weight map.
    """
    from safetensors import SafetensorError, safe_open

    p = index_path(path)
    index = read_index(p)
    state: dict[str, torch.Tensor] = {}
    for shard in verify_shards(p):
        try:
            with safe_open(str(shard), framework="pt", device="cpu") as f:
                state.update({k: f.get_tensor(k) for k in f.keys()})  # noqa: SIM118 - no __iter__
        except (SafetensorError, OSError, ValueError) as exc:
            raise DeblurError(f"cannot read shard {shard}: {exc}") from None
    if set(state) != set(index["weight_map"]):
        extra = sorted(set(state) ^ set(index["weight_map"]))[:4]
        raise DeblurError(f"{p}: the shards' tensors differ from the weight map ({', '.join(extra)})")
    return state, index_metadata(p)
