"""The ONNX Runtime backend: runs batches through an exported SAPHN.

:class:`OnnxBackend` implements the engine's backend protocol (:mod:`deblur_cli.backends.base`):
``run`` on a float32 ``(B, 3, H, W)`` batch and ``device_description``. Tiling, padding,
batching and image IO stay in the engine, shared with the torch backend.

On first use of a model the backend exports it (:func:`deblur_cli.backends.onnx_export.export_onnx`,
verified against torch) into a cache folder and reuses the file afterwards. The file name is
keyed by the weights' sha256, the opset, the precision and the deblur version, and the
file's own metadata must repeat them, so a stale or foreign export is never used; an
unreadable cached file is exported again. Files are written atomically (temporary file, then
rename), so concurrent runs at worst both export.

Cache folder: ``$DEBLUR_CACHE/onnx`` if ``DEBLUR_CACHE`` is set, else
``$XDG_CACHE_HOME/deblur/onnx``, else ``~/.cache/deblur/onnx`` (next to the Hugging Face cache,
``~/.cache/huggingface``, in the default layout).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deblur_cli.backends.onnx_export import (
    DEFAULT_OPSET,
    META_ARCH,
    META_CONFIG,
    META_OPSET,
    META_PRECISION,
    META_SHA256,
    META_VERSION,
)
from deblur_cli.backends.providers import CPU, CUDA, TENSORRT, select_providers, wants_gpu
from deblur_cli.errors import DeblurError

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

log = logging.getLogger(__name__)

#: The network pads its input to a multiple of this (``deblur_cli.models.saphn.SIZE_MULTIPLE``).
SIZE_MULTIPLE = 8


def default_cache_dir() -> Path:
    """Where exports are cached: ``$DEBLUR_CACHE/onnx``, ``$XDG_CACHE_HOME/deblur/onnx`` or ``~/.cache/deblur/onnx``."""
    root = os.environ.get("DEBLUR_CACHE")
    if root:
        return Path(root).expanduser() / "onnx"
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "deblur" / "onnx"


def cache_path(cache_dir: str | os.PathLike[str], sha256: str, opset: int, precision: str) -> Path:
    """The cached export of weights ``sha256``: ``<sha256[:16]>-opset<N>-<precision>-deblur<version>.onnx``."""
    from deblur_cli._version import __version__

    return Path(cache_dir) / f"{sha256[:16]}-opset{opset}-{precision}-deblur{__version__}.onnx"


class OnnxBackend:
    """Run SAPHN with onnxruntime.

    Args:
        model: registry/architecture name, ``None`` for the default model, or a built
            ``nn.Module`` (exported from memory; its cache key is
            :func:`~deblur_cli.backends.onnx_export.state_digest`).
        weights: local ``.safetensors`` file or ``hf://repo/file@rev`` (exported and cached), or
            an ``.onnx`` file (used as is; ``model`` must then be ``None``).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; see :mod:`deblur_cli.backends.providers`.
        opset: ONNX opset of exports (at least 16).
        fp16: use a float16 export; needs the CUDA provider (an error on CPU).
        cache_dir: export cache; default :func:`default_cache_dir`.
        threads: onnxruntime intra-op threads; ``None`` lets onnxruntime choose (physical cores).
        tensorrt: allow TensorRT when ``onnxruntime-gpu`` offers it.

    Attributes:
        session: the ``onnxruntime.InferenceSession``.
        providers: ``session.get_providers()``, the providers actually in use.
        device_description: e.g. ``"onnxruntime 1.31.1 [CPUExecutionProvider], fp32, 2 threads"``.
        onnx_path: the ``.onnx`` file in use.
        cache_hit: whether an existing export was reused (``None`` for a user's ``.onnx`` file).
        info: ``name``, ``arch``, ``source``, ``sha256``, ``path`` (weights), ``onnx_path``.
        config: the network's :class:`~deblur_cli.models.SAPHNConfig` when the file records it.
        device: a CUDA :class:`torch.device` when a GPU provider runs and torch sees that GPU
            (the engine sizes tiles from its free memory), else ``None``.

    Raises:
        DeblurError: CUDA asked for without ``CUDAExecutionProvider``, or the GPU provider
            failed to start; fp16 without CUDA; unknown model; export or verification failure.
    """

    def __init__(
        self,
        model: str | nn.Module | None = None,
        weights: str | os.PathLike[str] | None = None,
        device: str = "auto",
        *,
        opset: int = DEFAULT_OPSET,
        fp16: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        threads: int | None = None,
        tensorrt: bool = True,
    ) -> None:
        import onnxruntime as ort

        from deblur_cli.backends.onnx_export import check_opset

        check_opset(opset)
        self.opset = opset
        self.precision = "fp16" if fp16 else "fp32"
        self.threads = threads
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        requested = select_providers(
            device, ort.get_available_providers(), tensorrt=tensorrt, trt_cache_dir=str(self.cache_dir / "tensorrt")
        )
        if fp16 and all(name == CPU for name, _ in requested):
            raise DeblurError(
                "fp16 with the ONNX backend needs onnxruntime's CUDA provider; this run uses the CPU, drop fp16"
            )
        self._requested = requested
        self.cache_hit: bool | None
        if weights is not None and os.fspath(weights).lower().endswith(".onnx"):
            self._use_file(model, Path(os.fspath(weights)).expanduser())
        elif model is not None and not isinstance(model, str):
            if weights is not None:
                raise DeblurError("give either a built model or weights, not both")
            self._use_module(model)
        else:
            self._use_named(model, None if weights is None else os.fspath(weights))

        self.providers: list[str] = list(self.session.get_providers())
        gpu = [p for p in self.providers if p in (TENSORRT, CUDA)]
        if wants_gpu(device) and not gpu:
            raise DeblurError(
                f"onnxruntime could not start the CUDA provider for device {device!r} (it fell back to "
                f"{', '.join(self.providers)}): check that the CUDA and cuDNN libraries onnxruntime-gpu "
                f"{ort.__version__} needs are installed, or use --device cpu"
            )
        if not gpu and any(name != CPU for name, _ in requested):
            log.warning("onnxruntime fell back to %s", ", ".join(self.providers))
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        self._input, self._output = inputs[0].name, outputs[0].name
        self._input_half = inputs[0].type == "tensor(float16)"
        self.device_description = self._describe(ort.__version__)
        self.device = self._torch_device(gpu)

    # ------------------------------------------------------------------------------ running

    def run(self, batch: np.ndarray) -> np.ndarray:
        """``(B, 3, H, W)`` float32 RGB in ``[0, 1]`` -> same shape, float32 (not clamped)."""
        import numpy as np

        x = np.ascontiguousarray(batch, dtype=np.float16 if self._input_half else np.float32)
        if x.ndim != 4 or x.shape[1] != 3:
            raise DeblurError(f"expected a (B, 3, H, W) batch, got shape {tuple(x.shape)}")
        h, w = x.shape[2], x.shape[3]
        ph, pw = -h % SIZE_MULTIPLE, -w % SIZE_MULTIPLE
        if ph >= h or pw >= w:
            # Too small to reflect-pad (the exported graph's mode): replicate like torch's
            # pad_to_multiple does for such sizes (the engine never sends them).
            x = np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="edge")
        y = self.session.run([self._output], {self._input: x})[0]
        return np.ascontiguousarray(y[:, :, :h, :w], dtype=np.float32)

    # ---------------------------------------------------------------------- model sources

    def _use_file(self, model: object, path: Path) -> None:
        """A user's ``.onnx`` file, used as is."""
        if model is not None:
            raise DeblurError("an .onnx file already holds its model: drop the model name")
        if not path.is_file():
            raise DeblurError(f"ONNX file not found: {path}")
        try:
            self.session = self._session(path)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise DeblurError(f"onnxruntime cannot load {path}: {_first_line(exc)}") from None
        meta = self._metadata()
        self.onnx_path, self.cache_hit = path, None
        self.info = {
            "name": str(path),
            "arch": meta.get(META_ARCH),
            "source": "onnx file",
            "sha256": meta.get(META_SHA256),
            "path": str(path),
            "onnx_path": str(path),
        }
        self.precision = meta.get(META_PRECISION, self.precision)
        self.config = self._config(meta)

    def _use_module(self, model: nn.Module) -> None:
        """A built module: exported from memory, cached under its state digest."""
        from deblur_cli.backends.onnx_export import export_metadata, state_digest

        digest = state_digest(model)
        info = {"name": type(model).__name__, "arch": None, "source": "in-memory module", "sha256": digest, "path": None}

        def export(path: Path) -> None:
            self._export(model, path, export_metadata(model, sha256=digest, name="in-memory module"))

        self._cached_or_export(digest, info, export)

    def _use_named(self, model: str | None, weights: str | None) -> None:
        """A registry entry or weights file: cached under the file's sha256."""
        from deblur_cli.backends.onnx_export import export_metadata
        from deblur_cli.hub.loading import load_model, resolve_weights

        resolved = resolve_weights(model, weights)
        expected = resolved.get("expected_arch")
        info = {k: resolved.get(k) for k in ("name", "source", "sha256", "path")}
        info["arch"] = expected

        def export(path: Path) -> None:
            net, loaded = load_model(model, weights, "cpu")
            info["arch"] = loaded.get("arch")
            meta = export_metadata(net, sha256=loaded["sha256"], arch=loaded.get("arch"), name=loaded.get("name"))
            self._export(net, path, meta)

        self._cached_or_export(resolved["sha256"], info, export)
        arch = self._metadata().get(META_ARCH)
        if expected is not None and arch != expected:
            raise DeblurError(f"{info['name']} holds weights for arch {arch!r}, but {model!r} needs {expected!r}")
        self.info["arch"] = arch

    def _cached_or_export(self, sha256: str, info: dict[str, Any], export: Any) -> None:
        """Open the cached export of ``sha256`` if it is valid, else ``export`` it there and open it."""
        from deblur_cli._version import __version__

        path = cache_path(self.cache_dir, sha256, self.opset, self.precision)
        expected = {
            META_SHA256: sha256,
            META_OPSET: str(self.opset),
            META_PRECISION: self.precision,
            META_VERSION: __version__,
        }
        self.cache_hit = False
        if path.is_file():
            try:
                self.session = self._session(path)
                meta = self._metadata()
                stale = {k: meta.get(k) for k, v in expected.items() if meta.get(k) != v}
                if stale:
                    log.warning("cached ONNX export %s does not match (%s); exporting again", path, stale)
                else:
                    self.cache_hit = True
            except Exception as exc:  # noqa: BLE001 - a corrupt file raises onnxruntime's own types
                log.warning("cached ONNX export %s is unreadable (%s); exporting again", path, _first_line(exc))
        if not self.cache_hit:
            log.warning("exporting %s to ONNX (once; cached as %s)", info.get("name"), path)
            export(path)
            try:
                self.session = self._session(path)
            except Exception as exc:  # noqa: BLE001
                raise DeblurError(f"onnxruntime cannot load the fresh export {path}: {_first_line(exc)}") from None
        meta = self._metadata()
        self.onnx_path = path
        self.info = {**info, "onnx_path": str(path), "cache": "hit" if self.cache_hit else "exported"}
        self.config = self._config(meta)

    def _export(self, net: nn.Module, path: Path, metadata: dict[str, str]) -> None:
        from deblur_cli.backends.onnx_export import export_onnx

        export_onnx(net, path, opset=self.opset, fp16=self.precision == "fp16", metadata=metadata, overwrite=True)

    # -------------------------------------------------------------------------------- helpers

    def _session(self, path: Path) -> Any:
        import onnxruntime as ort

        from deblur_cli.backends.onnx_export import session_options

        return ort.InferenceSession(str(path), session_options(self.threads), providers=self._requested)

    def _metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    @staticmethod
    def _config(meta: dict[str, str]) -> Any:
        raw = meta.get(META_CONFIG)
        if not raw:
            return None
        from deblur_cli.models.saphn import SAPHNConfig

        try:
            return SAPHNConfig.from_dict(json.loads(raw))
        except (ValueError, TypeError):
            return None

    def _describe(self, version: str) -> str:
        options = self.session.get_provider_options()
        names = []
        for p in self.providers:
            dev = options.get(p, {}).get("device_id") if p != CPU else None
            names.append(f"{p}:{dev}" if dev is not None else p)
        threads = f", {self.threads} threads" if self.threads else ""
        return f"onnxruntime {version} [{', '.join(names)}], {self.precision}{threads}"

    def _torch_device(self, gpu: list[str]) -> Any:
        if not gpu:
            return None
        try:
            import torch

            if torch.cuda.is_available():
                dev = self.session.get_provider_options().get(gpu[0], {}).get("device_id", "0")
                return torch.device("cuda", int(dev))
        except (ImportError, ValueError, RuntimeError):
            pass
        return None

    def __repr__(self) -> str:
        return f"OnnxBackend({self.info.get('name')!r}, {self.device_description!r})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = ["OnnxBackend", "cache_path", "default_cache_dir"]
