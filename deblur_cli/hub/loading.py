"""Saving and loading SAPHN weights: safetensors only, rebuilt from their own config, strict.

A weights file is a safetensors file of the model's ``state_dict`` with metadata
``{"arch": <variant name>, "config": json.dumps(SAPHNConfig.to_dict())}``. Loading rebuilds
``SAPHN(SAPHNConfig.from_dict(config))`` and loads strictly: missing or unexpected tensors and
shape mismatches are a :class:`DeblurError` that names them. Nothing is ever unpickled
(timm's rule; ``torch.load`` is not used anywhere).

:func:`load_model` is the one entry point for the CLI and the library: a registry entry (the
bundled default needs no network), a local file or an ``hf://`` reference. Any of them may be a
sharded set (:mod:`deblur_cli.hub.shards`): an index file, or the folder that holds it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deblur_cli.errors import DeblurError
from deblur_cli.hub.registry import read_safetensors_metadata, sha256_file, uses_registry
from deblur_cli.hub.shards import index_path, is_sharded, read_index, read_sharded, save_sharded
from deblur_cli.models.saphn import SAPHN, SAPHNConfig

#: Metadata keys this module writes itself (``extra_metadata`` cannot override them).
RESERVED_METADATA = ("arch", "config", "format", "deblur_cli_version")
#: Value of the ``format`` metadata key.
FORMAT = "deblur-cli/saphn-1"
_SHOWN = 4  # names listed per kind in a mismatch message


def save_weights(
    model: nn.Module,
    path: str | os.PathLike[str],
    arch: str,
    extra_metadata: dict[str, Any] | None = None,
) -> str:
    """Write ``model``'s weights as safetensors with the metadata :func:`load_model` needs.

    Args:
        model: a :class:`SAPHN` (a ``torch.compile`` or ``DataParallel`` wrapper is unwrapped).
        path: destination; written atomically (temporary file, then rename).
        arch: registered variant name the config derives from, e.g. ``"saphn-s"``.
        extra_metadata: more metadata (e.g. training step, data); non-string values are
            stored as JSON.

    Returns:
        The file's sha256 (hex), as the registry records it.
    """
    from safetensors.torch import save_file

    net, meta = _net_and_metadata(model, arch, extra_metadata)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in net.state_dict().items()}
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    try:
        save_file(state, str(tmp), metadata=meta)
        os.chmod(tmp, 0o644)  # safetensors writes 0600 files; the bundled copy must be readable by all
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return sha256_file(dest)


def save_weights_sharded(
    model: nn.Module,
    folder: str | os.PathLike[str],
    arch: str,
    extra_metadata: dict[str, Any] | None = None,
    max_shard_bytes: int | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """As :func:`save_weights`, but as ``model-0000N-of-0000M.safetensors`` shards plus
    ``model.safetensors.index.json`` in ``folder`` (:mod:`deblur_cli.hub.shards`).

    Args:
        max_shard_bytes: largest shard file (default 15 MiB).
        dtype: store floating-point tensors in this dtype (e.g. ``torch.bfloat16`` to halve the
            size); loading casts them back to the model's dtype.

    Returns:
        the index file; its sha256 (which pins every shard's) is what the registry records.
    """
    net, meta = _net_and_metadata(model, arch, extra_metadata)
    state = {k: v.detach() for k, v in net.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    kwargs = {} if max_shard_bytes is None else {"max_shard_bytes": max_shard_bytes}
    return save_sharded(state, folder, meta, **kwargs)


def _net_and_metadata(model: nn.Module, arch: str, extra: dict[str, Any] | None) -> tuple[SAPHN, dict[str, str]]:
    """The unwrapped SAPHN of ``model`` and the metadata a weights file of it carries."""
    from deblur_cli._version import __version__

    net = getattr(model, "_orig_mod", model)
    net = getattr(net, "module", net)
    config = getattr(net, "config", None)
    if not isinstance(config, SAPHNConfig):
        raise TypeError(f"save_weights expects a SAPHN model, got {type(model).__name__}")
    meta = {
        "arch": arch,
        "config": json.dumps(config.to_dict(), sort_keys=True),
        "format": FORMAT,
        "deblur_cli_version": __version__,
    }
    for key, value in (extra or {}).items():
        if key in RESERVED_METADATA:
            raise ValueError(f"extra_metadata cannot set {key!r}")
        meta[str(key)] = value if isinstance(value, str) else json.dumps(value)
    return net, meta


def read_weights(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors (on CPU) and metadata of a safetensors file.

    A sharded set (its index file or folder) is read whole, each shard checked against the
    sha256 its index records.

    Raises:
        DeblurError: missing file, or not a safetensors file (pickles are refused).
    """
    if is_sharded(path):
        return read_sharded(path)
    meta = read_safetensors_metadata(path)  # checks the header without torch
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except (SafetensorError, OSError, ValueError) as exc:
        raise DeblurError(f"cannot read weights {path}: {exc}") from None
    return state, meta


def model_from_weights(state: dict[str, torch.Tensor], metadata: dict[str, str], label: str = "weights") -> SAPHN:
    """Rebuild the SAPHN described by ``metadata`` and load ``state`` into it strictly.

    Raises:
        DeblurError: missing/invalid metadata, or tensors that do not fit the architecture
            (the message names missing and unexpected keys and shape mismatches).
    """
    arch, raw = metadata.get("arch"), metadata.get("config")
    if not arch or not raw:
        raise DeblurError(
            f"{label} has no 'arch'/'config' metadata: it was not saved by deblur_cli.hub.loading.save_weights"
        )
    try:
        config = SAPHNConfig.from_dict(json.loads(raw))
    except (ValueError, TypeError) as exc:
        raise DeblurError(f"{label}: invalid 'config' metadata ({exc})") from None
    model = SAPHN(config)
    check_state_dict(model, state, f"{label} ({arch})")
    model.load_state_dict(state, strict=True)
    return model


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], label: str = "weights") -> None:
    """Raise a readable :class:`DeblurError` unless ``state`` fits ``model`` exactly."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        f"{what}: {_few(items)}"
        for what, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches (file vs model)", shapes),
        )
        if items
    ]
    if problems:
        raise DeblurError(f"{label} do not match the architecture; " + "; ".join(problems))


def load_weights_file(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[SAPHN, dict[str, str]]:
    """An eval-mode SAPHN from a local weights file, and the file's metadata (no sha256 check)."""
    state, meta = read_weights(path)
    model = model_from_weights(state, meta, str(path))
    return model.to(_device(device)).eval(), meta


def resolve_weights(
    model: str | None = None, weights: str | None = None, *, token: str | None = None
) -> dict[str, Any]:
    """Find and verify the weights file :func:`load_model` would use, without building the model.

    Returns:
        ``name``, ``source``, ``sha256``, ``path``, ``entry`` (registry name or ``None``),
        ``expected_arch`` (or ``None``), ``revision`` (Hub commit or ``None``).
    """
    from deblur_cli.hub import download as hub
    from deblur_cli.hub.registry import load_registry

    registry = None
    entry = None
    expected_arch: str | None = None
    if uses_registry(model, weights):
        registry = load_registry()
        entry = registry.get(model)  # a bare architecture name means its first entry
        expected_arch = entry.arch
    elif model is not None:  # a bare architecture name alongside weights: the file must be one
        expected_arch = model
    if weights is not None:
        if hub.is_hf_uri(weights):
            ref = hub.parse_hf_uri(weights)
            known = None
            if ref.pinned:
                known = (registry or load_registry()).find(ref.repo_id, ref.filename, ref.revision)
            fetched = hub.download(ref, sha256=known.sha256 if known else None, token=token, label=weights)
            _fetch_shards(fetched.path, ref, token, weights)
            return {
                "name": weights,
                "source": fetched.source,
                "sha256": fetched.sha256,
                "path": fetched.path,
                "entry": known.name if known else None,
                "expected_arch": expected_arch,
                "revision": fetched.commit,
            }
        p = Path(weights).expanduser()
        if is_sharded(p):
            p = index_path(p)  # the index's sha256 pins every shard's
        elif not p.is_file():
            raise DeblurError(f"weights file not found: {weights}")
        return {
            "name": str(weights),
            "source": "file",
            "sha256": sha256_file(p),
            "path": str(p.resolve()),
            "entry": None,
            "expected_arch": expected_arch,
            "revision": None,
        }
    assert registry is not None and entry is not None
    bundled = registry.bundled_path(entry)
    if bundled is not None:
        digest = sha256_file(bundled)
        if digest != entry.sha256:
            raise DeblurError(
                f"bundled weights {bundled} do not match the registry sha256 of {entry.name} "
                f"(expected {str(entry.sha256)[:16]}..., got {digest[:16]}...): "
                "reinstall deblur-cli, or after replacing the file run `deblur weights register FILE --name NAME`"
            )
        return {
            "name": entry.name,
            "source": "bundled",
            "sha256": digest,
            "path": str(bundled),
            "entry": entry.name,
            "expected_arch": entry.arch,
            "revision": entry.revision,
        }
    if entry.bundled and not entry.published:
        raise DeblurError(
            f"the bundled weights file {entry.bundled} of {entry.name} is missing from the installation; "
            "reinstall deblur-cli or pass --weights PATH"
        )
    fetched = hub.fetch_entry(entry, token=token)
    _fetch_shards(fetched.path, hub.HfRef(entry.repo_id or "", entry.filename, entry.revision), token, entry.name)
    return {
        "name": entry.name,
        "source": fetched.source,
        "sha256": fetched.sha256,
        "path": fetched.path,
        "entry": entry.name,
        "expected_arch": entry.arch,
        "revision": fetched.commit,
    }


def load_model(
    model: str | None = None,
    weights: str | None = None,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, dict]:
    """Load an eval-mode SAPHN with verified weights.

    Args:
        model: registry entry ``arch.tag`` (e.g. ``"saphn-s.synth"``), or a bare architecture
            name for that architecture's first entry (timm's convention); ``None`` for the
            default entry, whose weights ship with the package (no network call).
        weights: overrides the entry's file: a local ``.safetensors`` path or
            ``hf://REPO_ID/FILENAME[@REVISION]``. With ``model`` also given, the file must hold
            that entry's architecture.
        device: where to put the model.

    Returns:
        ``(model, info)``; ``info`` has ``name``, ``arch``, ``source`` (``"bundled"``,
        ``"cache"``, ``"download"`` or ``"file"``), ``sha256``, ``path``, plus ``entry``,
        ``revision``, ``config`` (dict), ``metadata`` (the file's) and ``parameters``.

    Raises:
        DeblurError: unknown name (the message lists the known ones), missing file, offline
            without a cached copy, failed download or sha256 check, architecture mismatch.
    """
    dev = _device(device)
    info = resolve_weights(model, weights)
    label = info["name"]
    state, meta = read_weights(info["path"])
    arch = meta.get("arch")
    expected = info.pop("expected_arch")
    if expected is not None and arch != expected:
        raise DeblurError(f"{label} holds weights for arch {arch!r}, but {model!r} needs {expected!r}")
    net = model_from_weights(state, meta, label)
    try:
        net = net.to(dev).eval()
    except (RuntimeError, AssertionError) as exc:
        raise DeblurError(f"cannot use device {dev}: {str(exc).splitlines()[0]}") from None
    info.update(arch=arch, config=net.config.to_dict(), metadata=meta, parameters=net.num_parameters())
    structure = structure_note(arch, net.config)
    if structure:
        info["structure"] = structure
    return net, info


def structure_note(arch: str | None, config: SAPHNConfig) -> str | None:
    """How a file's saved structure differs from its variant's structure today, or ``None``.

    A weights file rebuilds exactly the network it was saved with (its config is in its
    metadata), so a file written before a variant changed still loads. The note says so, in
    the line the CLI prints, rather than letting it pass as today's variant.
    """
    from deblur_cli.models.variants import get_config, list_variants

    if arch not in list_variants():
        return None
    today = get_config(arch).to_dict()
    saved = config.to_dict()
    changed = [f"{k} {saved[k]} (today {today[k]})" for k in today if k in saved and saved[k] != today[k]]
    if not changed:
        return None
    return f"the {arch} structure it was saved with, not today's: " + ", ".join(changed)


def _fetch_shards(path: str, ref: Any, token: str | None, label: str) -> None:
    """After a Hub index file: fetch its shards beside it, each checked against the index's sha256."""
    if not path.endswith(".index.json"):
        return
    from deblur_cli.hub import download as hub

    folder = ref.filename.rsplit("/", 1)[0] + "/" if "/" in ref.filename else ""
    for name, digest in sorted(read_index(path)["metadata"]["sha256"].items()):
        hub.download(hub.HfRef(ref.repo_id, folder + name, ref.revision), sha256=digest, token=token, label=f"{label} ({name})")


def _device(device: str | torch.device) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DeblurError(f"unknown device {device!r} (e.g. cpu, cuda, cuda:1, mps)") from None


def _few(items: list[str]) -> str:
    more = f" (+{len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more
