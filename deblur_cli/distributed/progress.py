"""Live progress of a distributed job on stderr (images/s, MP/s, failures), for ``deblur folder --ray``."""

from __future__ import annotations

import os
import time
from typing import Any

from deblur_cli.distributed.cluster import WorkerSpec
from deblur_cli.distributed.job import JobReport, deblur_dataset


class LiveProgress:
    """A rich progress bar fed by :func:`deblur_dataset`'s ``on_start`` and ``on_result``.

    Rates count the images that workers processed in this run (not those kept from earlier
    runs), over the wall time since the first worker was asked for."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=self.console,
        )  # fmt: skip
        self.task: Any = None
        self.start = 0.0
        self.done = self.failed = self.pixels = 0

    def on_start(self, where: str, spec: WorkerSpec, count: int) -> None:
        self.console.print(f"deblur: {count} file(s) on {where}: {spec.describe()}", highlight=False, soft_wrap=True)
        self.start = time.perf_counter()
        self.progress.start()
        self.task = self.progress.add_task("deblurring", total=count, rate="starting workers")

    def on_result(self, result: Any) -> None:
        if self.task is None:
            return  # an input left alone before any worker started: not part of this run's work
        self.done += 1
        self.failed += result.status == "failed"
        self.pixels += result.pixels
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rate = f"{self.done / elapsed:.2f} img/s, {self.pixels / 1e6 / elapsed:.3g} MP/s, {self.failed} failed"
        self.progress.update(self.task, advance=1, rate=rate, description=os.path.basename(str(result.src)))

    def stop(self) -> None:
        self.progress.stop()


def run_folder(address: str, input_dir: Any, output_dir: Any, **options: Any) -> JobReport:
    """``deblur folder IN_DIR -o OUT_DIR --ray ADDRESS``: :func:`deblur_dataset` under live progress.

    ``options`` are :func:`deblur_dataset`'s keyword arguments. Paths may be URIs (a URI that
    went through :class:`pathlib.Path` is repaired). Prints the wall-clock throughput at the
    end; the summary table is the caller's.

    Raises:
        DeblurError: what :func:`deblur_dataset` raises.
    """
    live = LiveProgress()
    try:
        report = deblur_dataset(input_dir, output_dir, address=address, on_start=live.on_start,
                                on_result=live.on_result, **options)  # fmt: skip
    finally:
        live.stop()
    if report.workers is not None and report.seconds > 0:
        done = [r for r in report.results if r.status == "done"]
        mp = sum(r.pixels for r in done) / 1e6
        live.console.print(
            f"deblur: {len(done)} file(s) in {report.seconds:.1f} s wall clock: {len(done) / report.seconds:.2f} img/s, "
            f"{mp / report.seconds:.3g} MP/s; manifest {report.manifest}",
            highlight=False,
            soft_wrap=True,
        )
    return report
