"""A run's resumable state as files that fit a size-limited return path, and back.

An accelerator machine gives back at most 8 files of at most 16 MiB each, 64 MiB in all (see
``docs/accelerator.md``), and the next call receives what travels with it. :func:`pack_run`
turns a run folder (``checkpoint.safetensors`` + ``state.json``, as
:func:`deblur_cli.training.trainer.save_checkpoint` writes them) into:

* ``model-0000N-of-0000M.safetensors`` + ``model.safetensors.index.json``: the weights, loadable
  as they are by ``load_model`` and ``deblur weights register`` (always returned);
* ``state.json``: configuration, step, history, data random state (always returned);
* ``optimizer-0000N-of-0000M.safetensors`` + ``optimizer.safetensors.index.json``: Adam's
  moments and the torch random state, only when they fit the limits after the rest.

:func:`unpack_run` rebuilds the run folder from such files. Without the optimizer files the
checkpoint has no Adam state and :func:`~deblur_cli.training.trainer.train` resumes with a
learning-rate warm-up instead (tested in ``tests/test_accelerator_rehearsal.py``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from deblur_cli.hub.shards import INDEX_NAME, MAX_SHARD_BYTES, read_sharded, save_sharded, shard_files

#: The return path's limits: files, bytes per file, bytes in all.
MAX_FILES = 8
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_TOTAL_BYTES = 64 * 1024 * 1024
#: Index of the optimizer set.
OPTIMIZER_INDEX = "optimizer.safetensors.index.json"


def pack_run(
    run_dir: Path,
    out: Path,
    reserve_files: int = 1,
    reserve_bytes: int = 1024 * 1024,
    weights_dtype: torch.dtype | None = None,
    max_shard_bytes: int = MAX_SHARD_BYTES,
) -> dict:
    """Write ``run_dir``'s state into ``out`` within the return path's limits.

    Args:
        run_dir: a run folder with ``checkpoint.safetensors`` and ``state.json``.
        out: destination folder (created).
        reserve_files, reserve_bytes: room kept for files the caller adds (a summary).
        weights_dtype: store the weights in this dtype (e.g. ``torch.bfloat16`` to carry a large
            model into the next call within the travel limit); ``None``: float32 where the
            weights fit the limits so, else bfloat16 (half the bytes; loading casts back).
        max_shard_bytes: largest shard.

    Returns:
        what was written: ``files`` (names), ``bytes``, ``weights_dtype``, ``optimizer`` (whether
        Adam's state is among them) and, if not, ``optimizer_bytes`` (what it would have needed).
    """
    run_dir, out = Path(run_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = json.loads((run_dir / "state.json").read_text())
    tensors = load_file(str(run_dir / "checkpoint.safetensors"))
    weights = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    if weights_dtype is None:
        size = sum(v.numel() * v.element_size() for v in weights.values())
        files = -(-size // (max_shard_bytes - 256 * 1024)) + 2 + reserve_files  # shards, index, state
        if files > MAX_FILES or size + reserve_bytes + (1 << 20) > MAX_TOTAL_BYTES:
            weights_dtype = torch.bfloat16
    if weights_dtype is not None:
        weights = {k: v.to(weights_dtype) if v.is_floating_point() else v for k, v in weights.items()}
    rest = {k: v for k, v in tensors.items() if not k.startswith("model.")}
    meta = {
        "arch": state["config"]["model"],
        "config": json.dumps(state["model_config"], sort_keys=True),
        "format": "deblur-cli/saphn-1",
        "train_steps": str(state["run"]["step"]),
    }
    index = save_sharded(weights, out, meta, max_shard_bytes=max_shard_bytes)
    (out / "state.json").write_text(json.dumps(state, indent=1))
    written = [index, *shard_files(index), out / "state.json"]
    used_files = len(written) + reserve_files
    used_bytes = sum(f.stat().st_size for f in written) + reserve_bytes
    opt_bytes = sum(v.numel() * v.element_size() for v in rest.values())
    n_opt = -(-opt_bytes // (max_shard_bytes - 256 * 1024)) + 1  # shards + index (an upper bound)
    packed_opt = bool(rest) and used_files + n_opt <= MAX_FILES and used_bytes + opt_bytes + 65536 <= MAX_TOTAL_BYTES
    for old in out.glob("optimizer*"):
        old.unlink()
    if packed_opt:
        opt_index = save_sharded(rest, out, {"step": str(state["run"]["step"])}, max_shard_bytes, prefix="optimizer")
        written += [opt_index, *shard_files(opt_index)]
    sizes = [f.stat().st_size for f in written]
    assert len(written) + reserve_files <= MAX_FILES and max(sizes) <= MAX_FILE_BYTES
    dtype = str(weights_dtype or torch.float32).removeprefix("torch.")
    result = {
        "files": sorted(f.name for f in written),
        "bytes": sum(sizes),
        "weights_dtype": dtype,
        "optimizer": packed_opt,
    }
    if not packed_opt:
        result["optimizer_bytes"] = opt_bytes
    return result


def unpack_run(folder: Path, run_dir: Path) -> dict:
    """Rebuild a run folder (``checkpoint.safetensors`` + ``state.json``) from :func:`pack_run`'s files.

    Weights stored in another dtype come back as float32. Returns ``{"step": ..., "optimizer": bool}``.
    """
    folder, run_dir = Path(folder), Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = json.loads((folder / "state.json").read_text())
    weights, _ = read_sharded(folder / INDEX_NAME)
    tensors = {f"model.{k}": (v.float() if v.is_floating_point() else v) for k, v in weights.items()}
    has_opt = (folder / OPTIMIZER_INDEX).is_file()
    if has_opt:
        rest, _ = read_sharded(folder / OPTIMIZER_INDEX)
        tensors.update(rest)
    if "rng.torch" not in tensors:
        tensors["rng.torch"] = torch.get_rng_state()
    save_file(tensors, str(run_dir / "checkpoint.safetensors"))
    shutil.copyfile(folder / "state.json", run_dir / "state.json")
    return {"step": state["run"]["step"], "optimizer": has_opt}


def main(argv: list[str] | None = None) -> int:
    """``python -m deblur_cli.training.carry to-carry|to-file SRC DEST``: prepare returned files.

    ``to-carry SRC DEST [--bf16]``: the folder a window returned, repacked for the next call
    (``--bf16``: weights in bfloat16, half the bytes, for a model whose float32 weights and the
    photos would not fit the travel limit together). ``to-file SRC DEST.safetensors``: the
    returned weights as one weights file, as the selection tools and the bundled default take.
    """
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(prog="python -m deblur_cli.training.carry", description=main.__doc__.splitlines()[0])
    ap.add_argument("action", choices=("to-carry", "to-file"))
    ap.add_argument("src", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--bf16", action="store_true")
    args = ap.parse_args(argv)
    if args.action == "to-file":
        from deblur_cli.hub.loading import load_model, save_weights

        model, info = load_model(weights=str(args.src))
        sha = save_weights(model, args.dest, info["arch"], {"train_steps": info["metadata"].get("train_steps", "")})
        print(f"{args.dest}: {info['arch']}, sha256 {sha}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        unpack_run(args.src, Path(tmp))
        packed = pack_run(Path(tmp), args.dest, reserve_files=0, weights_dtype=torch.bfloat16 if args.bf16 else None)
    print(
        f"{args.dest}: {len(packed['files'])} files, {packed['bytes'] / 2**20:.1f} MiB, optimizer state: {packed['optimizer']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
