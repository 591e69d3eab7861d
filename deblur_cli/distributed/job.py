"""``deblur_dataset``: ``deblur folder`` on a Ray cluster, resumable and idempotent.

The driver lists the inputs (:mod:`~deblur_cli.distributed.plan`), decides from what exists and
from the manifest of an earlier run what is left to do, writes a ``pending`` row for each
input it hands out (:mod:`~deblur_cli.distributed.manifest`), and streams the list through a
Ray Data actor pool of :class:`~deblur_cli.distributed.worker.DeblurWorker` (one model per
actor): the images in batches, then the videos one per call, each video whole on one worker.
Each result is recorded in the manifest the moment it comes back.

What survives what:

* a worker killed mid-run: Ray starts the actor again and retries its batches (Ray Data's
  actor pools restart actors and retry their tasks by default); outputs the killed actor had
  finished are kept, not computed again;
* the driver killed: the same command, run again, keeps every output that exists (written
  atomically, so complete) and does the rest; temporary files of interrupted writes are
  removed;
* bad files: a ``failed`` row each, never the end of the job; a rerun retries only those.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deblur_cli.distributed.cluster import WorkerSpec, check_reachable, cluster_resources, ray_session, size_workers
from deblur_cli.distributed.manifest import ManifestWriter, action_of, job_fingerprint, make_row, read_manifest
from deblur_cli.distributed.plan import Task, Triage, default_output, plan, triage
from deblur_cli.distributed.storage import Location, existing, remove_partials, resolve
from deblur_cli.distributed.worker import DeblurWorker
from deblur_cli.errors import DeblurError
from deblur_cli.video.formats import is_video_path

#: Files handed to a worker per call when the network batch is 1: enough to keep a worker
#: busy between calls, few enough that a killed worker's retried call is cheap.
FILES_PER_CALL = 8
#: Files per call when the network batch is chosen from free memory.
FILES_PER_CALL_AUTO = 16


@dataclass
class JobReport:
    """What :func:`deblur_dataset` did.

    Attributes:
        results: one :class:`~deblur_cli.inference.FileResult` per input; inputs left alone
            (done earlier, existing outputs kept) have status ``"skipped"``. For object-store
            files ``src``/``dst`` are the URIs as paths.
        input_root: the input folder as a path (for relative names in summaries).
        manifest: where the manifest is.
        device_description: what the workers ran, e.g. ``"cpu (2 threads), torch fp32; 2 Ray workers x 1 thread"``.
        seconds: wall time from the first hand-out to the last result (0 when nothing ran).
        workers: the pool (``None`` when nothing needed a worker).
    """

    results: list[Any] = field(default_factory=list)
    input_root: Path = Path(".")
    manifest: str = ""
    device_description: str = "none (nothing to do)"
    seconds: float = 0.0
    workers: WorkerSpec | None = None


def deblur_dataset(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str] | None = None,
    *,
    recursive: bool = False,
    suffix: str | None = None,
    ext: str | None = None,
    skip_existing: bool = False,
    overwrite: bool = False,
    quality: int | None = None,
    model: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    device: str = "auto",
    backend: str = "torch",
    tile: int | None = None,
    tile_overlap: int = 32,
    fp16: bool = False,
    bf16: bool = False,
    self_ensemble: int = 1,
    gate: tuple[float, float] | None = None,
    gate_scope: str = "image",
    batch_size: int | None = 1,
    video_batch_size: int | None = None,
    address: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    gpus_per_worker: float | None = None,
    files_per_call: int | None = None,
    filesystem: Any = None,
    manifest_interval: float = 30.0,
    viz: Any = None,
    on_start: Callable[[str, WorkerSpec, int], None] | None = None,
    on_result: Callable[[Any], None] | None = None,
) -> JobReport:
    """Deblur every image and video under ``src`` into ``dst`` on a Ray cluster, as ``deblur folder`` would.

    Args:
        src: input folder: a local or shared path (every worker must see it), or a URI
            (``s3://bucket/photos``, ``gs://...``).
        dst: output folder (default ``<src>_deblurred``); the tree is mirrored and the manifest
            ``deblur-manifest.jsonl`` written there.
        recursive, suffix, ext, skip_existing, overwrite, quality: as ``deblur folder``.
        model, weights, device, backend, tile, tile_overlap, fp16, bf16, self_ensemble, gate,
            gate_scope: as :class:`~deblur_cli.inference.Deblurrer` (a weights file must be
            readable on every worker).
        batch_size: the network's batch of images, as ``deblur folder --batch-size`` (``None``: from
            free memory).
        video_batch_size: frames per network call for videos (``None``: from free memory, at most
            8), as ``deblur folder`` gives ``--batch-size`` to its videos.
        address: Ray cluster (:func:`~deblur_cli.distributed.cluster.ray_session`).
        workers, threads, gpus_per_worker: the pool (:func:`~deblur_cli.distributed.cluster.size_workers`).
        files_per_call: files per worker call (default :data:`FILES_PER_CALL`, or the batch).
        filesystem: a ``pyarrow.fs.FileSystem`` for both folders instead of the URIs' own.
        manifest_interval: seconds between manifest uploads on an object store.
        viz: a :class:`~deblur_cli.viz.request.VizRequest` (``--viz DIR``): each image's maps are
            written under its folder, mirroring the output tree, as ``deblur folder --viz``. The
            output folder and ``DIR`` must be local or shared paths every worker sees.
        on_start: called with ``(cluster description, pool, number of inputs to run)`` before work.
        on_result: called with each :class:`~deblur_cli.inference.FileResult` as it arrives.

    Returns:
        A :class:`JobReport`.

    Raises:
        DeblurError: bad options or folders, existing outputs without ``skip_existing`` or
            ``overwrite``, no Ray, an unreachable cluster, or workers that cannot start.
    """
    from deblur_cli.inference import FileResult

    if overwrite and skip_existing:
        raise DeblurError("--overwrite and --skip-existing exclude each other")
    from deblur_cli.hub.registry import load_registry, uses_registry

    if uses_registry(model, weights):
        # A registry name is checked here, in a second, not by workers after the cluster starts.
        load_registry().get(model)
    src_loc = resolve(src, filesystem)
    dst_loc = resolve(dst if dst is not None else default_output(src_loc), filesystem)
    if viz is not None:
        viz = _shared_viz(viz, dst_loc)
    tasks = plan(src_loc, dst_loc, recursive=recursive, suffix=suffix, ext=ext)
    if weights is not None and "://" not in os.fspath(weights) and os.path.exists(weights):
        weights = os.path.abspath(weights)  # workers do not share the driver's working directory
    options = {"model": model, "weights": None if weights is None else os.fspath(weights), "backend": backend,
               "tile": tile, "tile_overlap": tile_overlap, "fp16": fp16, "bf16": bf16, "self_ensemble": self_ensemble,
               "gate": None if gate is None else tuple(gate), "gate_scope": gate_scope}  # fmt: skip
    # Maps are outputs too: a run that writes them is another job (only then is the key there,
    # so that jobs without maps keep their fingerprint).
    maps = {"viz": repr(viz.selection), "viz_raw": viz.raw} if viz is not None else {}
    job = job_fingerprint({**options, "quality": quality, "suffix": suffix, "ext": ext, **maps})
    rows = {} if overwrite else read_manifest(dst_loc)
    triaged = triage(tasks, existing(dst_loc, [t.out_rel for t in tasks]), rows, job,
                     skip_existing=skip_existing, overwrite=overwrite)  # fmt: skip
    if triaged.conflicts:
        raise DeblurError(
            f"{len(triaged.conflicts)} output file(s) already exist (first: {dst_loc.show(triaged.conflicts[0].out_rel)}); "
            "use --skip-existing to keep them or --overwrite to replace them"
        )
    if triaged.run:
        try:  # before anything is written
            import ray
        except ImportError:
            raise DeblurError('--ray needs Ray: pip install "deblur-cli[ray]"') from None
        if not ray.is_initialized():  # (ray_session then uses the Ray of this process)
            check_reachable(address)
    remove_partials(dst_loc, [t.out_rel for t in tasks])

    def paths(rel: str, out_rel: str) -> tuple[Path, Path]:
        return Path(src_loc.show(rel)), Path(dst_loc.show(out_rel))

    report = JobReport(input_root=Path(src_loc.uri))
    notify = on_result or (lambda r: None)
    with ManifestWriter(dst_loc, _first_rows(rows, triaged, job), interval=manifest_interval) as manifest:
        report.manifest = manifest.where
        for t, reason in triaged.kept:
            report.results.append(FileResult(*paths(t.rel, t.out_rel), "skipped", reason))
            notify(report.results[-1])
        if not triaged.run:
            return report
        with ray_session(address) as where:
            spec = size_workers(*cluster_resources(), device=device, workers=workers, threads=threads,
                                gpus_per_worker=gpus_per_worker)  # fmt: skip
            report.workers = spec
            if on_start is not None:
                on_start(where, spec, len(triaged.run))
            per_call = files_per_call or max(FILES_PER_CALL, batch_size or FILES_PER_CALL_AUTO)
            worker_args = {"src": src_loc, "dst": dst_loc, "deblurrer": {**options, "device": spec.device},
                           "threads": spec.threads, "batch_size": batch_size, "video_batch_size": video_batch_size,
                           "quality": quality, "overwrite": overwrite, "viz": viz}  # fmt: skip
            began = time.perf_counter()
            # Videos after the images, one per call: a long clip then holds up no image's result.
            videos = [t for t in triaged.run if is_video_path(t.rel)]
            images = [t for t in triaged.run if not is_video_path(t.rel)]
            streams = [_stream(part, spec, worker_args, n) for part, n in ((images, per_call), (videos, 1)) if part]
            try:
                for row in itertools.chain.from_iterable(streams):
                    if row["fatal"]:
                        raise DeblurError(f"a Ray worker could not start: {row['message']}")
                    blur, weight = _number(row["blur_px"]), _number(row["gate"])
                    result = FileResult(*paths(row["rel"], row["out_rel"]), row["status"], row["message"],
                                        float(row["seconds"]), int(row["pixels"]), blur, weight)  # fmt: skip
                    manifest.record(make_row(
                        row["rel"], row["out_rel"], row["status"], job, blur_px=blur, seconds=round(result.seconds, 4),
                        action=action_of(row["status"], weight, gate_scope == "region"), worker=row["worker"],
                        error=row["message"] if row["status"] == "failed" else "", pixels=result.pixels,
                    ))  # fmt: skip
                    report.results.append(result)
                    if row["device"]:
                        report.device_description = f"{row['device']}; {spec.describe()}"
                    notify(result)
            finally:
                report.seconds = time.perf_counter() - began
                remove_partials(dst_loc, [t.out_rel for t in triaged.run])
    return report


def _shared_viz(viz: Any, dst: Location) -> Any:
    """``viz`` with absolute paths, its tree mirroring ``dst`` (workers do not share the
    driver's working directory).

    Raises:
        DeblurError: ``dst`` is on an object store (the maps are written where the outputs are).
    """
    from dataclasses import replace

    if not dst.local:
        raise DeblurError(f"--viz needs a local or shared output folder, not {dst.uri}: the maps are written beside the outputs")
    return replace(viz, out_dir=Path(os.path.abspath(viz.out_dir)), mirror_from=Path(dst.path))


def _first_rows(rows: dict[str, dict[str, Any]], triaged: Triage, job: str) -> dict[str, dict[str, Any]]:
    """The manifest before any worker starts: the earlier rows, a ``pending`` row for every input
    handed out, and rows for outputs kept without one of this job."""
    first = dict(rows)
    found = {t.rel for t in triaged.found}
    for t, _ in triaged.kept:
        if t.rel in found:
            first[t.rel] = make_row(t.rel, t.out_rel, "done", job, action="written before an interruption")
        elif t.rel not in rows or rows[t.rel].get("job") != job:
            first[t.rel] = make_row(t.rel, t.out_rel, "skipped", job, action=action_of("skipped", None, False))
    for t in triaged.run:
        first[t.rel] = make_row(t.rel, t.out_rel, "pending", job, action=action_of("pending", None, False))
    return first


def _number(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _stream(tasks: list[Task], spec: WorkerSpec, worker_args: dict[str, Any], per_call: int) -> Iterator[dict[str, Any]]:
    """Result rows of the actor pool, as they arrive (not in input order).

    Raises:
        DeblurError: the Ray job itself failed (not a file: files fail one by one in their rows).
    """
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the caller shows its own progress
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    items = [{"rel": t.rel, "out_rel": t.out_rel} for t in tasks]
    calls = -(-len(items) // per_call)
    # One file per call (videos): a block each, and one call at a time per actor. Ray Data runs
    # no more calls at once than there are blocks, and queues up to two calls per actor: a short
    # clip would otherwise wait behind a long one while another worker idles.
    whole = per_call == 1
    results = ray.data.from_items(items, override_num_blocks=len(items) if whole else None).map_batches(
        DeblurWorker,
        fn_constructor_kwargs=worker_args,
        batch_size=per_call,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=min(spec.count, calls),  # no model loaded for nothing
                                           max_tasks_in_flight_per_actor=1 if whole else None),
        num_cpus=spec.num_cpus,
        num_gpus=spec.num_gpus or None,
    )
    try:
        yield from results.iter_rows()
    except (DeblurError, KeyboardInterrupt, GeneratorExit):
        raise
    except Exception as exc:  # noqa: BLE001  # a Ray failure, in one line (files never fail this way)
        lines = [ln for ln in str(exc).splitlines() if ln.strip()]
        raise DeblurError(f"the Ray job failed: {type(exc).__name__}: {lines[-1] if lines else ''}") from None
