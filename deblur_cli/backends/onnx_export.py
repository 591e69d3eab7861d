"""Export a SAPHN to ONNX and check the file against torch before anyone uses it.

The exported graph has one input ``blurred`` and one output ``deblurred``, both float32
``(batch, 3, height, width)`` RGB in ``[0, 1]`` with dynamic batch, height and width (the
network pads to a multiple of 8 inside and crops back, so any size of at least 8 px a side
works; the engine never sends less than 16). Export uses the TorchScript exporter
(``torch.onnx.export(..., dynamo=False)``), which needs no ``onnxscript``; opset 16 is the
minimum because the pixel-dependent filter's bilinear sampling is ONNX ``GridSample``.

Every export is checked before it is moved into place (written to a temporary file next to
the destination, then renamed): ``onnx.checker.check_model``, then onnxruntime (CPU) and
torch run the same random ``1x3x67x91`` input and the maximum absolute difference must be at
most :data:`TOLERANCE` (``1e-3`` for fp32). A failed check leaves no file behind.

Half precision (``fp16=True``): torch's TorchScript exporter cannot trace the network in
``.half()`` (its ``arange`` symbolic fails on float16 with "tensor does not have a device",
torch 2.13), so the fp32 graph is converted instead with onnxruntime's own converter
(``onnxruntime.transformers.float16.convert_float_to_float16``, shipped in both the
``onnxruntime`` and ``onnxruntime-gpu`` wheels): weights and compute become float16, the input
and output stay float32 (casts at both ends), and ops onnxruntime keeps in float32 (``Range``)
get casts around them. That works on a CPU-only machine. The check runs on onnxruntime's CPU
provider, which executes the float16 ops it has no CPU kernel for in float32 (it inserts the
casts itself), so it proves the graph and the rounding of the weights rather than measuring
GPU half-precision arithmetic; its tolerance is ``1e-2`` (about 2.5/255).

The model's metadata (``metadata_props``) records what the file was made from, see
:func:`export_metadata`; :mod:`deblur_cli.backends.ort` uses it to refuse stale cached files.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deblur_cli.errors import DeblurError

if TYPE_CHECKING:
    import onnx
    from torch import nn

log = logging.getLogger(__name__)

INPUT_NAME = "blurred"
OUTPUT_NAME = "deblurred"
DEFAULT_OPSET = 18
#: ``GridSample`` (the pixel-dependent filter's bilinear sampling) needs opset 16.
MIN_OPSET = 16
#: Largest accepted difference between onnxruntime and torch (fp32 torch reference) per precision.
TOLERANCE = {"fp32": 1e-3, "fp16": 1e-2}
#: The random input of the check after export: odd sizes, so padding and cropping are exercised.
VERIFY_SHAPE = (1, 3, 67, 91)
#: The example input the exporter traces with (its size does not matter: axes are dynamic).
TRACE_SHAPE = (1, 3, 64, 64)

# metadata_props keys.
META_ARCH = "arch"
META_CONFIG = "config"
META_NAME = "model_name"
META_SHA256 = "weights_sha256"
META_VERSION = "deblur_version"
META_OPSET = "opset"
META_PRECISION = "precision"
META_TORCH = "exported_with"
META_IO = "io"


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote and how well it matched torch.

    Attributes:
        path: the ``.onnx`` file.
        precision: ``"fp32"`` or ``"fp16"``.
        opset: ONNX opset of the default domain.
        max_abs_diff: onnxruntime vs torch on :data:`VERIFY_SHAPE` (``nan`` if not verified).
        tolerance: the bound ``max_abs_diff`` was held to.
        seconds: export plus checks, wall clock.
        metadata: the ``metadata_props`` stored in the file.
    """

    path: Path
    precision: str
    opset: int
    max_abs_diff: float
    tolerance: float
    seconds: float
    metadata: dict[str, str] = field(default_factory=dict)


def state_digest(model: nn.Module) -> str:
    """sha256 (hex) of a module's config and ``state_dict`` tensors: the cache key of a built model.

    Covers each tensor's name, dtype, shape and bytes, and the ``config`` attribute if any
    (switches such as ``max_offset`` have no tensor), so two modules that compute differently
    never share a digest.
    """
    import torch

    h = hashlib.sha256(b"deblur-state-digest-1\0")
    config = getattr(model, "config", None)
    if config is not None:
        h.update(json.dumps(config.to_dict() if hasattr(config, "to_dict") else repr(config), sort_keys=True).encode())
    h.update(type(model).__qualname__.encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def export_metadata(
    model: nn.Module,
    *,
    sha256: str,
    arch: str | None = None,
    name: str | None = None,
) -> dict[str, str]:
    """The provenance stored in an export (``opset`` and ``precision`` are added on export).

    Args:
        model: the network (its ``config`` is stored as JSON when it has one).
        sha256: the weights file's sha256, or :func:`state_digest` for a built module.
        arch: registered variant name, e.g. ``"saphn-s"``.
        name: registry entry or file the weights came from.
    """
    import torch

    from deblur_cli._version import __version__

    meta = {
        META_ARCH: arch or "unknown",
        META_NAME: name or "unknown",
        META_SHA256: sha256,
        META_VERSION: __version__,
        META_TORCH: f"torch {torch.__version__} (TorchScript exporter)",
        META_IO: f"{INPUT_NAME}/{OUTPUT_NAME}: float32 (batch, 3, height, width) RGB in [0, 1]",
    }
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        meta[META_CONFIG] = json.dumps(config.to_dict(), sort_keys=True)
    return meta


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    metadata: dict[str, str] | None = None,
    overwrite: bool = False,
    verify: bool = True,
    tolerance: float | None = None,
) -> ExportResult:
    """Export ``model`` to ``path``, check it, and only then move it into place.

    Args:
        model: a SAPHN (any ``(B, 3, H, W) -> (B, 3, H, W)`` module works); it is not modified
            (a CPU float32 eval-mode copy is exported).
        path: destination ``.onnx`` file; parent folders are created.
        opset: ONNX opset, :data:`MIN_OPSET` to :func:`max_opset`.
        fp16: convert weights and compute to float16 (input/output stay float32), see the
            module docstring.
        metadata: extra ``metadata_props`` (e.g. from :func:`export_metadata`); ``opset`` and
            ``precision`` are always set.
        overwrite: replace an existing ``path``.
        verify: run onnxruntime against torch (the default; the CLI and the cache always do).
        tolerance: bound on the difference; default :data:`TOLERANCE` of the precision.

    Returns:
        The :class:`ExportResult`.

    Raises:
        DeblurError: existing ``path`` without ``overwrite``, unsupported opset, export or
            ``onnx.checker`` failure, or a difference above the tolerance (no file is left).
    """
    import onnx

    start = time.perf_counter()
    dest = Path(path).expanduser()
    check_destination(dest, overwrite)
    precision = "fp16" if fp16 else "fp32"
    bound = TOLERANCE[precision] if tolerance is None else tolerance
    net = _cpu_copy(model)
    proto = _trace(net, opset)
    if fp16:
        proto = to_float16(proto)
    meta = dict(metadata or {})
    meta.update({META_OPSET: str(opset), META_PRECISION: precision})
    set_metadata(proto, meta)
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise DeblurError(f"the exported model fails onnx.checker: {_first_line(exc)}") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}.tmp")  # unique: concurrent exports are safe
    try:
        onnx.save_model(proto, str(tmp))
        diff = float("nan")
        if verify:
            try:
                diff = verify_onnx(tmp, net)
            except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
                raise DeblurError(f"onnxruntime cannot run the exported model: {_first_line(exc)}") from None
        if verify and not diff <= bound:
            raise DeblurError(
                f"ONNX export does not match torch: max abs difference {diff:.3g} on a "
                f"{'x'.join(map(str, VERIFY_SHAPE))} input exceeds {bound:g} ({precision}); no file written"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    log.info("exported %s (%s, opset %d) in %.1f s, max abs diff %.3g", dest, precision, opset, seconds, diff)
    return ExportResult(dest, precision, opset, diff, bound, seconds, meta)


def export_model(
    output: str | os.PathLike[str],
    model: str | None = None,
    weights: str | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    overwrite: bool = False,
) -> tuple[ExportResult, dict[str, Any]]:
    """Load a model like every command does (:func:`deblur_cli.hub.loading.load_model`) and export it.

    Returns:
        ``(result, info)``: the :class:`ExportResult` and the loader's info dict.

    Raises:
        DeblurError: as :func:`export_onnx`, plus the loader's errors (unknown model, ...).
    """
    dest = Path(output).expanduser()
    check_destination(dest, overwrite)  # before the (slow) load and export
    check_opset(opset)
    from deblur_cli.hub.loading import load_model

    net, info = load_model(model, weights, "cpu")
    meta = export_metadata(net, sha256=info["sha256"], arch=info.get("arch"), name=info.get("name"))
    result = export_onnx(net, dest, opset=opset, fp16=fp16, metadata=meta, overwrite=overwrite)
    return result, info


def verify_onnx(
    source: str | os.PathLike[str] | bytes,
    model: nn.Module,
    *,
    shape: tuple[int, int, int, int] = VERIFY_SHAPE,
    seed: int = 0,
) -> float:
    """Max absolute difference between onnxruntime (CPU provider) and ``model`` on a random input.

    Args:
        source: ``.onnx`` path or serialized model.
        model: the torch reference (run in float32 on the CPU).
        shape: input shape, ``(B, 3, H, W)``.
        seed: seed of the uniform ``[0, 1)`` input.

    Returns:
        The difference; ``inf`` if shapes differ or the ONNX output is not finite.
    """
    import numpy as np
    import torch

    x = np.random.default_rng(seed).random(shape, dtype=np.float32)
    net = _cpu_copy(model)
    with torch.inference_mode():
        ref = net(torch.from_numpy(x)).numpy()
    session = cpu_session(source)
    out = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0].astype(np.float32)
    if out.shape != ref.shape or not np.isfinite(out).all():
        return float("inf")
    return float(np.abs(out - ref).max())


def session_options(threads: int | None = None) -> Any:
    """``onnxruntime.SessionOptions`` of every session deblur opens.

    All graph optimizations (``ORT_ENABLE_ALL``), sequential execution, errors-only logging
    (the providers in use are reported instead), ``threads`` intra-op threads (``None``:
    onnxruntime's default, one per physical core).

    Memory-reuse *planning* is off: onnxruntime's allocation planner is superlinear in the graph
    size, and the exported ``saphn-s`` has ~16k nodes (shape arithmetic of the dynamic axes), so
    planning took 8 of the 9 s of session start. Buffers are still released after their last
    use and recycled by the arena: peak memory was unchanged (656 vs 657 MB for a 1280x720
    image, onnxruntime 1.31 CPU) and the run no slower.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    opts.enable_mem_reuse = False
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return opts


def cpu_session(source: str | os.PathLike[str] | bytes, threads: int | None = None) -> Any:
    """An onnxruntime session on the CPU provider with :func:`session_options`."""
    import onnxruntime as ort

    data = source if isinstance(source, bytes) else os.fspath(source)
    return ort.InferenceSession(data, session_options(threads), providers=["CPUExecutionProvider"])


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``metadata_props`` of an ``.onnx`` file.

    Raises:
        DeblurError: missing or unreadable file.
    """
    import onnx

    p = Path(path)
    if not p.is_file():
        raise DeblurError(f"ONNX file not found: {p}")
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several unrelated types
        raise DeblurError(f"cannot read ONNX file {p}: {_first_line(exc)}") from None
    return {prop.key: prop.value for prop in proto.metadata_props}


def set_metadata(proto: onnx.ModelProto, metadata: dict[str, str]) -> None:
    """Set (replace) ``metadata_props`` entries of ``proto``."""
    keep = [p for p in proto.metadata_props if p.key not in metadata]
    del proto.metadata_props[:]
    for p in keep:
        proto.metadata_props.add(key=p.key, value=p.value)
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=str(value))


def max_opset() -> int:
    """The highest opset torch's TorchScript exporter supports (20 in torch 2.13).

    Above it torch only warns and writes symbolics of the older opset under the newer number.
    """
    try:
        from torch.onnx import _constants

        return int(_constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)
    except (ImportError, AttributeError):  # pragma: no cover - private constant moved
        return 20


def check_opset(opset: int) -> None:
    """Raise a :class:`DeblurError` unless ``MIN_OPSET <= opset <= max_opset()``."""
    top = max_opset()
    if not MIN_OPSET <= opset <= top:
        raise DeblurError(
            f"--opset must be between {MIN_OPSET} (GridSample) and {top} (torch's TorchScript exporter), got {opset}"
        )


def check_destination(dest: str | os.PathLike[str], overwrite: bool) -> None:
    """Raise a :class:`DeblurError` if ``dest`` is a folder, or exists and ``overwrite`` is off."""
    dest = Path(dest)
    if dest.is_dir():
        raise DeblurError(f"{dest} is a folder; give the .onnx file to write")
    if dest.exists() and not overwrite:
        raise DeblurError(f"{dest} already exists; pass --overwrite to replace it")


def to_float16(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Convert a float32 graph to float16 weights and compute with float32 input and output.

    Uses onnxruntime's converter, then puts the nodes back in topological order (the converter
    appends the input casts at the end of the node list, which ``onnx.checker`` rejects).

    Raises:
        DeblurError: onnxruntime's converter is not installed.
    """
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as exc:
        raise DeblurError(
            f"--fp16 needs onnxruntime's float16 converter (onnxruntime.transformers.float16): {exc}"
        ) from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = convert_float_to_float16(proto, keep_io_types=True)
    _toposort(converted.graph)
    return converted


# ----------------------------------------------------------------------------------- helpers


def _cpu_copy(model: nn.Module) -> nn.Module:
    """A float32, CPU, eval-mode copy of ``model`` (the caller's module is left as it was)."""
    import copy

    import torch

    params = list(model.parameters())
    on_cpu = all(p.device.type == "cpu" and p.dtype == torch.float32 for p in params)
    if on_cpu and not any(m.training for m in model.modules()):
        return model
    return copy.deepcopy(model).to("cpu", torch.float32).eval()


def _trace(net: nn.Module, opset: int) -> onnx.ModelProto:
    """Export ``net`` with the TorchScript exporter, dynamic batch/height/width."""
    import onnx
    import torch

    check_opset(opset)
    axes = {0: "batch", 2: "height", 3: "width"}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # TracerWarnings about the pad mode chosen from the trace size (see saphn.pad_to_multiple)
        # and the exporter's deprecation notice are expected.
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                net,
                (torch.rand(*TRACE_SHAPE, generator=torch.Generator().manual_seed(0)),),  # leaves the global RNG alone
                buf,
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
                do_constant_folding=True,
            )
        except (RuntimeError, ValueError, TypeError) as exc:
            raise DeblurError(f"ONNX export failed (opset {opset}): {_first_line(exc)}") from None
    proto = onnx.load_from_string(buf.getvalue())
    # The tracer leaves the output's channel axis symbolic (it comes out of a Slice): it is RGB.
    channels = proto.graph.output[0].type.tensor_type.shape.dim[1]
    if not channels.dim_value:
        channels.dim_value = 3
    return proto


def _toposort(graph: onnx.GraphProto) -> None:
    """Reorder ``graph.node`` topologically in place; drop exact duplicate producers of a name."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    produced: set[tuple[str, ...]] = set()
    while pending:
        rest = []
        for node in pending:
            if all(name in ready for name in node.input):
                key = tuple(node.output)
                if key not in produced:
                    produced.add(key)
                    ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            missing = sorted({n for node in rest for n in node.input if n not in ready})[:3]
            raise DeblurError(f"float16 conversion produced a broken graph (unknown inputs {missing})")
        pending = rest
    nodes = [type(n)() for n in ordered]
    for dst, src in zip(nodes, ordered):
        dst.CopyFrom(src)
    del graph.node[:]
    graph.node.extend(nodes)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
