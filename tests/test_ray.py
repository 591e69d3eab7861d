"""``deblur folder --ray`` / ``deblur_dataset`` on a real local Ray cluster (started here, 2 CPUs).

Same files as the local command, bad files mixed in, a killed worker, a killed-then-rerun
driver, and an S3 bucket served by moto on 127.0.0.1. Fast checks of the pieces (planning,
manifest, sizing) need no cluster and come first.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deblur_cli.distributed.cluster import size_workers
from deblur_cli.distributed.manifest import MANIFEST_NAME, action_of, make_row, parse
from deblur_cli.distributed.plan import Task, plan, triage
from deblur_cli.distributed.storage import repair_uri, resolve
from deblur_cli.errors import DeblurError

# Ray Data reads its own deprecated settings when a dataset runs; not this project's warnings.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")


def _image(path: Path, shape=(48, 64, 3), seed=0, blur=0) -> Path:
    """Noise smoothed a little; ``blur`` > 0 adds a horizontal motion blur of that length (px)."""
    import cv2

    rng = np.random.default_rng(seed)
    pixels = cv2.GaussianBlur(rng.integers(0, 256, shape, dtype=np.uint8), (0, 0), 1.5)
    if blur:
        pixels = cv2.filter2D(pixels, -1, np.full((1, blur), 1.0 / blur, np.float32))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def _tree(root: Path, videos: bool = False) -> Path:
    """Two sizes, a sub-folder, a sharp and a blurred image (the gate treats them apart), a
    text file named .png, a truncated JPEG, a hidden file and a non-image; with ``videos``
    also a two-frame clip (``sub/clip.avi``, written as ``sub/clip.mp4``) and a text file
    named ``broken.mp4``."""
    if videos:
        from test_video import make_clip  # needs PyAV: only tests that ask for videos import it

        (root / "sub").mkdir(parents=True, exist_ok=True)
        make_clip(root / "sub" / "clip.avi", 2, size=(64, 48), audio=False, rotation=0, tags=(2, 2, 2, 0),
                  pix_fmt="yuv420p")  # fmt: skip
        (root / "broken.mp4").write_text("not a video")
    _image(root / "a.png", seed=1)
    _image(root / "b.jpg", seed=2, blur=15)
    _image(root / "c.png", shape=(40, 40, 3), seed=3, blur=15)
    _image(root / "sub" / "d.png", seed=4)
    _image(root / "sub" / "e.webp", shape=(40, 40, 3), seed=5)
    (root / "bad.png").write_text("not an image")
    good = _image(root / "trunc.jpg", seed=6).read_bytes()
    (root / "trunc.jpg").write_bytes(good[: len(good) // 3])
    _image(root / ".hidden.png", seed=7)
    (root / "notes.txt").write_text("ignored")
    return root


def _outputs(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != MANIFEST_NAME}  # fmt: skip


def _manifest(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / MANIFEST_NAME).read_text().splitlines()]


def _partials(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*.part")]


# ------------------------------------------------------------------------- no cluster needed


def test_remote_planning_follows_the_local_rules(tmp_path):
    """The planner for buckets (run here on pyarrow's local filesystem) names outputs as plan_folder."""
    from pyarrow.fs import LocalFileSystem

    from deblur_cli.inference.media import plan_media

    def media(src, dst, **kwargs):
        images, videos = plan_media(src, dst, **kwargs)
        return [(s.relative_to(src).as_posix(), d.relative_to(dst).as_posix()) for s, d in sorted(images + videos)]

    tree = _tree(tmp_path / "in")
    (tree / "sub" / "clip.avi").write_bytes(b"")  # planning looks at names only
    (tree / "top.MOV").write_bytes(b"")
    for kwargs in ({}, {"recursive": True}, {"recursive": True, "ext": "png", "suffix": "_x"}):
        expected = media(tree, tmp_path / "out", **kwargs)
        outs = dict(expected)
        assert outs["top.MOV"] == f"top{kwargs.get('suffix', '')}.mov"  # a video keeps its container, not --ext
        assert ("sub/clip.avi" in outs) == ("recursive" in kwargs)
        fs = LocalFileSystem()
        got = plan(resolve(str(tree), fs), resolve(str(tmp_path / "out"), fs), **kwargs)
        assert [(t.rel, t.out_rel) for t in got] == expected
        assert [(t.rel, t.out_rel) for t in plan(resolve(str(tree)), resolve(str(tmp_path / "out")), **kwargs)] == expected
    same = plan(resolve(str(tree), fs), resolve(str(tree), fs), recursive=True)
    assert media(tree, tree, recursive=True) == [(t.rel, t.out_rel) for t in same]
    with pytest.raises(DeblurError, match="non-empty --suffix"):
        plan(resolve(str(tree), fs), resolve(str(tree), fs), suffix="")


def test_triage_resumes_without_repeating_work():
    tasks = [Task(f"{n}.png", f"{n}.png") for n in "abcdef"]
    rows = {
        "a.png": make_row("a.png", "a.png", "done", "J"),
        "b.png": make_row("b.png", "b.png", "pending", "J"),  # written, then the driver died
        "c.png": make_row("c.png", "c.png", "failed", "J"),
        "d.png": make_row("d.png", "d.png", "done", "J"),  # output deleted since
        "e.png": make_row("e.png", "e.png", "done", "OTHER"),  # another job's output
    }
    present = {"a.png", "b.png", "e.png"}
    t = triage(tasks, present, rows, "J", skip_existing=False, overwrite=False)
    assert [x.rel for x in t.run] == ["c.png", "d.png", "f.png"]
    assert [x.rel for x, _ in t.kept] == ["a.png", "b.png"] and [x.rel for x in t.found] == ["b.png"]
    assert [x.rel for x in t.conflicts] == ["e.png"]
    assert [x.rel for x, _ in triage(tasks, present, rows, "J", skip_existing=True, overwrite=False).kept] == [
        "a.png", "b.png", "e.png"
    ]
    assert len(triage(tasks, present, rows, "J", skip_existing=False, overwrite=True).run) == 6


def test_manifest_keeps_the_latest_row_and_ignores_a_torn_line():
    first = make_row("a.png", "a.png", "pending", "J")
    last = make_row("a.png", "a.png", "done", "J", blur_px=2.5, action=action_of("done", 0.5, False))
    text = json.dumps(first) + "\n" + json.dumps(last) + "\n" + '{"path": "b.png", "sta'
    rows = parse(text)
    assert list(rows) == ["a.png"] and rows["a.png"]["status"] == "done" and rows["a.png"]["action"] == "blended"
    assert action_of("done", 0.0, False) == "left as it was" and action_of("done", 0.3, True) == "deblurred in places"


def test_workers_are_sized_to_fit():
    two = size_workers([2.0], 0.0, workers=2)
    assert (two.count, two.threads, two.num_gpus) == (2, 1, 0.0) and two.count * two.num_cpus <= 2
    crowded = size_workers([2.0], 0.0, workers=3)  # more workers than CPUs: fractional, never waiting
    assert crowded.count * crowded.num_cpus <= 2.0 + 1e-6
    big = size_workers([16.0, 16.0], 0.0)
    assert (big.count, big.threads, big.num_cpus) == (8, 4, 4.0)
    gpu = size_workers([16.0], 4.0)
    assert (gpu.count, gpu.num_gpus, gpu.device) == (4, 1.0, "auto")
    assert size_workers([16.0], 4.0, gpus_per_worker=0.5).count == 8
    assert size_workers([16.0], 4.0, gpus_per_worker=0).num_gpus == 0.0
    with pytest.raises(DeblurError, match="no GPU"):
        size_workers([4.0], 0.0, device="cuda")


def test_uris_survive_the_cli():
    assert repair_uri("s3:/bucket/in") == "s3://bucket/in"
    assert repair_uri("s3://bucket/in") == "s3://bucket/in"
    assert repair_uri("photos/in") == "photos/in"
    assert resolve("s3://bucket/in?endpoint_override=http://127.0.0.1:9&scheme=http").uri == "s3://bucket/in"


def test_small_s3_objects_go_up_in_one_request():
    """S3 locations open with ``allow_delayed_open`` (one PutObject for an object under a part,
    not a three-request multipart upload) unless the URI says otherwise."""
    pytest.importorskip("pyarrow")

    def options(uri):
        return resolve(uri).fs.__reduce__()[1][0]

    assert options("s3://bucket/in?endpoint_override=http://127.0.0.1:9&scheme=http")["allow_delayed_open"] is True
    assert options("s3://bucket/in?allow_delayed_open=false&endpoint_override=http://127.0.0.1:9&scheme=http")["allow_delayed_open"] is False


def test_old_pyarrow_gets_no_delayed_open(monkeypatch):
    """pyarrow before 21 refuses ``allow_delayed_open`` in a URI: it is then not added."""
    from deblur_cli.distributed import storage

    uri = "s3://b/in?scheme=http"
    assert storage._single_put(uri, "s3") == uri + "&allow_delayed_open=true"
    assert storage._single_put("gs://b/in", "gs") == "gs://b/in"
    monkeypatch.setattr(storage, "_pyarrow_major", lambda: 20)
    assert storage._single_put(uri, "s3") == uri


def test_download_streams_a_copy_and_names_whose_fault_a_failure_is(tmp_path):
    from deblur_cli.distributed.storage import download

    src = resolve(str(tmp_path / "in"))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "clip.mp4").write_bytes(b"x" * (9 << 20))
    download(src, "clip.mp4", tmp_path / "copy.mp4")
    assert (tmp_path / "copy.mp4").read_bytes() == b"x" * (9 << 20)
    with pytest.raises(DeblurError, match=r"clip2\.mp4: no such file$"):
        download(src, "clip2.mp4", tmp_path / "copy2.mp4")
    with pytest.raises(DeblurError, match=r"missing/copy\.mp4: cannot write a local copy of .*clip\.mp4"):
        download(src, "clip.mp4", tmp_path / "missing" / "copy.mp4")


def test_worker_gives_videos_the_video_batch(tiny_weights, tmp_path, monkeypatch):
    """Images get the image batch, videos ``video_batch_size`` (None: from free memory), as the
    local ``deblur folder`` gives them; rows come back in the order of the call."""
    from deblur_cli.distributed.worker import DeblurWorker
    from deblur_cli.inference import FileResult
    from deblur_cli.inference import media

    calls = []

    def fake_run_videos(deblurrer, jobs, **kw):
        calls.append(kw)
        for src, dst in jobs:
            yield FileResult(src, dst, "done", "", 0.5, 64 * 48 * 2, 1.0, 0.0)

    monkeypatch.setattr(media, "run_videos", fake_run_videos)
    _image(tmp_path / "in" / "a.png")
    (tmp_path / "in" / "v.avi").write_bytes(b"")
    worker = DeblurWorker(resolve(str(tmp_path / "in")), resolve(str(tmp_path / "out")),
                          {"model": "saphn-tiny", "weights": str(tiny_weights)}, batch_size=1)  # fmt: skip
    rows = worker({"rel": np.array(["v.avi", "a.png"]), "out_rel": np.array(["v.mp4", "a.png"])})
    assert list(rows["status"]) == ["done", "done"] and list(rows["pixels"]) == [64 * 48 * 2, 64 * 48]
    assert calls == [{"batch_size": None, "overwrite": False, "skip_existing": True}]


def test_partials_of_interrupted_writes_are_removed(tmp_path):
    from deblur_cli.distributed.storage import remove_partials

    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    for name in ("a.png", ".a.png.k2x9q1zz.part", "sub/.d.png.abc_1234.part", ".hidden.png", ".notes.txt.abcd1234.part"):
        (out / name).write_bytes(b"x")
    assert remove_partials(resolve(str(out)), ["a.png", "sub/d.png", "b.png"]) == 2
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        ".hidden.png", ".notes.txt.abcd1234.part", "a.png"
    ]


def test_an_unreachable_store_is_one_line(tiny_weights, tmp_path):
    """pyarrow's OSError for a store that does not answer becomes a DeblurError naming the folder on
    the driver, and a failed row (not a crashed batch) on a worker."""
    import socket

    from pyarrow.fs import AwsStandardS3RetryStrategy, S3FileSystem

    from deblur_cli.distributed import deblur_dataset
    from deblur_cli.distributed.worker import DeblurWorker

    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        fs = S3FileSystem(access_key="t", secret_key="t", region="us-east-1", scheme="http",
                          endpoint_override=f"127.0.0.1:{closed.getsockname()[1]}",
                          retry_strategy=AwsStandardS3RetryStrategy(max_attempts=1))  # fmt: skip
        with pytest.raises(DeblurError, match=r"^s3://photos/in: cannot reach this location \("):
            deblur_dataset("s3://photos/in", "s3://photos/out", filesystem=fs)
        _image(tmp_path / "in" / "a.png")
        worker = DeblurWorker(resolve(str(tmp_path / "in")), resolve("s3://photos/out", fs),
                              {"model": "saphn-tiny", "weights": str(tiny_weights)})  # fmt: skip
        rows = worker({"rel": np.array(["a.png"]), "out_rel": np.array(["a.png"])})
    assert list(rows["status"]) == ["failed"] and "s3://photos/out: cannot reach" in rows["message"][0]


def test_an_unreachable_cluster_is_one_line_and_writes_nothing(tiny_weights, tmp_path):
    """Checked before the manifest is written (ray.init would retry the address for minutes).

    Run as a user would, in a fresh process: this one may already hold the module's cluster."""
    import socket

    pytest.importorskip("ray")
    src, out = _many(tmp_path / "in", 1, 16), tmp_path / "out"
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"
        start = time.monotonic()
        args = [str(a) for a in _cli_args(src, out, tiny_weights, "--ray", address)]
        done = subprocess.run([sys.executable, "-m", "deblur_cli", *args], capture_output=True, text=True,
                              timeout=120, check=False)  # fmt: skip
    assert done.returncode != 0 and time.monotonic() - start < 30
    line = f"deblur: error: cannot connect to the Ray cluster at {address}: Connection refused"
    assert done.stderr.strip().splitlines() == [line]
    assert not out.exists()


def test_an_unknown_weights_name_fails_before_the_cluster_starts(tmp_path):
    from deblur_cli.distributed import deblur_dataset

    src, out = _many(tmp_path / "in", 1, 16), tmp_path / "out"
    start = time.monotonic()
    with pytest.raises(DeblurError, match=r"^unknown weights 'saphn-nope'"):
        deblur_dataset(src, out, model="saphn-nope", address="127.0.0.1:9")
    with pytest.raises(DeblurError, match=r"^unknown weights 'saphn-s\.nope'"):
        deblur_dataset(src, out, model="saphn-s.nope", weights="w.safetensors", address="127.0.0.1:9")
    assert time.monotonic() - start < 10 and not out.exists()


def test_maps_need_a_folder_every_worker_sees(tiny_weights, tmp_path):
    from deblur_cli.distributed import deblur_dataset
    from deblur_cli.viz.recording import MapSelection
    from deblur_cli.viz.request import VizRequest

    src = _many(tmp_path / "in", 1, 16)
    viz = VizRequest(MapSelection(), tmp_path / "maps")
    with pytest.raises(DeblurError, match=r"^--viz needs a local or shared output folder, not s3://b/out"):
        deblur_dataset(src, "s3://b/out?endpoint_override=http://127.0.0.1:9&scheme=http", weights=tiny_weights,
                       model="saphn-tiny", viz=viz, address="127.0.0.1:9")  # fmt: skip
    assert not (tmp_path / "maps").exists()


def test_a_bare_ray_option_means_auto(tiny_weights, tmp_path):
    """``--ray`` without a value is ``--ray auto``: here RAY_ADDRESS names a cluster that does
    not answer, so the command must say so (and not take IN_DIR or -o for an address)."""
    import socket

    from deblur_cli.cli.folder import ray_default_value

    assert ray_default_value(["in", "--ray"]) == ["in", "--ray", "auto"]
    assert ray_default_value(["--ray", "-o", "out", "in"]) == ["--ray", "auto", "-o", "out", "in"]
    assert ray_default_value(["--ray", "s3://b/in", "-o", "s3://b/out"])[:2] == ["--ray", "auto"]
    assert ray_default_value(["--ray", "photos", "-r"])[:3] == ["--ray", "auto", "photos"]
    for value in ("auto", "local", "10.0.0.5:6379", "head-node.internal:6379", "[::1]:6379", "ray://h:10001"):
        assert ray_default_value(["in", "--ray", value]) == ["in", "--ray", value]
    assert ray_default_value(["--ray", "head-node", "in"])[:3] == ["--ray", "auto", "head-node"]  # an address has a port
    assert ray_default_value(["--", "--ray"]) == ["--", "--ray"]  # after --, an argument like any other
    assert ray_default_value(["in", "--ray=local"]) == ["in", "--ray=local"]

    pytest.importorskip("ray")
    src, out = _many(tmp_path / "in", 1, 16), tmp_path / "out"
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"
        args = [str(a) for a in ("folder", src, "--ray", "-o", out, "--weights", tiny_weights, "--model", "saphn-tiny")]
        done = subprocess.run([sys.executable, "-m", "deblur_cli", *args], capture_output=True, text=True, timeout=120,
                              check=False, env=dict(os.environ, RAY_ADDRESS=address))  # fmt: skip
    assert done.returncode != 0
    line = f"deblur: error: cannot connect to the Ray cluster at {address}: Connection refused"
    assert done.stderr.strip().splitlines() == [line]
    assert not out.exists()


# ------------------------------------------------------------------------------ on a cluster

@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on 127.0.0.1; its endpoint and test credentials in the environment
    before Ray starts, so that the workers see them as a cluster's nodes would. ``None``
    without moto (only the object-store test needs it)."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        yield None
        return
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_EC2_METADATA_DISABLED": "true"}  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="module")
def cluster(s3):
    """A local Ray cluster of 2 CPUs for the module; yields its address."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _cli_args(src, dst, weights, *extra):
    return ("folder", src, "-o", dst, "-r", "--model", "saphn-tiny", "--weights", weights, *extra)


def test_same_files_as_local_bad_files_reported_and_rerun_retries_failures(cli, tiny_weights, tmp_path, cluster):
    pytest.importorskip("av")
    tree = _tree(tmp_path / "in", videos=True)
    local = cli(*_cli_args(tree, tmp_path / "local", tiny_weights, "--gate", "1,3"))
    on_ray = cli(*_cli_args(tree, tmp_path / "ray", tiny_weights, "--gate", "1,3", "--ray", "local", "--workers", "2"))
    assert local.exit_code == on_ray.exit_code == 1, on_ray.output
    assert _outputs(tmp_path / "ray") == _outputs(tmp_path / "local")  # byte for byte, same names, same tree
    assert len(_outputs(tmp_path / "ray")) == 6 and "sub/clip.mp4" in _outputs(tmp_path / "ray")
    for name in ("bad.png", "trunc.jpg", "broken.mp4"):
        assert name in on_ray.output and name in local.output
    rows = {r["path"]: r for r in _manifest(tmp_path / "ray")}
    assert sorted(rows) == ["a.png", "b.jpg", "bad.png", "broken.mp4", "c.png", "sub/clip.avi", "sub/d.png",
                            "sub/e.webp", "trunc.jpg"]  # fmt: skip
    assert {p for p, r in rows.items() if r["status"] == "failed"} == {"bad.png", "broken.mp4", "trunc.jpg"}
    assert rows["sub/clip.avi"]["output"] == "sub/clip.mp4" and rows["sub/clip.avi"]["pixels"] == 64 * 48 * 2
    assert all(r["error"] for r in rows.values() if r["status"] == "failed")
    done = [r for r in rows.values() if r["status"] == "done"]
    assert all(r["blur_px"] is not None and r["worker"] and r["seconds"] > 0 for r in done)
    assert {r["action"] for r in done} >= {"left as it was"} and len({r["action"] for r in done}) >= 2

    _image(tree / "bad.png", seed=8)  # fixed; trunc.jpg stays broken
    before = {p: (tmp_path / "ray" / p).stat().st_mtime_ns for p in _outputs(tmp_path / "ray")}
    again = cli(*_cli_args(tree, tmp_path / "ray", tiny_weights, "--gate", "1,3", "--ray", "local", "--workers", "2"))
    assert again.exit_code == 1 and "trunc.jpg" in again.output
    after = {r["path"]: r for r in _manifest(tmp_path / "ray")}
    assert after["bad.png"]["status"] == "done" and after["trunc.jpg"]["status"] == after["broken.mp4"]["status"] == "failed"
    for path, row in rows.items():
        if row["status"] == "done":
            assert after[path] == row  # not touched again
    assert all((tmp_path / "ray" / p).stat().st_mtime_ns == t for p, t in before.items())


def test_maps_on_the_cluster_are_those_of_a_local_run(cli, tiny_weights, tmp_path, cluster, monkeypatch):
    """``--viz`` on Ray writes the same map files, byte for byte, in the same mirrored tree (paths
    relative to the working directory, which the workers do not share)."""
    _image(tmp_path / "in" / "a.png", seed=1)
    _image(tmp_path / "in" / "sub" / "b.png", seed=2, blur=15)
    monkeypatch.chdir(tmp_path)
    weights = os.path.relpath(tiny_weights, tmp_path)
    maps = ("--viz", "MAPS", "--offsets", "--fusion")
    local = cli(*_cli_args("in", "local", weights, *[m.replace("MAPS", "maps_local") for m in maps]))
    on_ray = cli(*_cli_args("in", "ray", weights, "--ray", "local", *[m.replace("MAPS", "maps_ray") for m in maps]))
    assert local.exit_code == on_ray.exit_code == 0, on_ray.output
    expected = _outputs(tmp_path / "maps_local")
    assert {"a.offsets.png", "a.fusion.png", "a.sheet.png", "sub/b.offsets.png"} <= set(expected)
    assert _outputs(tmp_path / "maps_ray") == expected
    assert _outputs(tmp_path / "ray") == _outputs(tmp_path / "local")


def _many(root: Path, n: int, side: int) -> Path:
    for i in range(n):
        _image(root / f"img{i:02d}.png", shape=(side, side, 3), seed=i)
    return root


def test_a_killed_worker_does_not_stop_the_job(tiny_weights, tmp_path, cluster):
    from deblur_cli.distributed import deblur_dataset

    # Images large enough that the worker is still busy when the driver gets its first results.
    src, out = _many(tmp_path / "in", 12, 320), tmp_path / "out"
    killed: list[int] = []

    def kill_first_worker(result):
        if killed or result.status != "done":
            return
        worker = next(r["worker"] for r in _manifest(out) if r["status"] == "done")
        killed.append(int(worker.rpartition(":")[2]))
        os.kill(killed[0], signal.SIGKILL)

    report = deblur_dataset(src, out, model="saphn-tiny", weights=tiny_weights, workers=1, threads=1,
                            files_per_call=2, on_result=kill_first_worker)  # fmt: skip
    assert killed, "the worker was never killed"
    rows = _manifest(out)
    # A file the killed actor had written before its batch was retried is kept ("skipped").
    assert len(rows) == 12 and all(r["status"] == "done" or r["error"] == "" and r["status"] == "skipped" for r in rows)
    workers = {r["worker"] for r in rows}
    assert len(workers) >= 2 and f"{os.uname().nodename}:{killed[0]}" in workers  # a new actor finished the job
    assert sorted(_outputs(out)) == [f"img{i:02d}.png" for i in range(12)] and not _partials(out)
    for p in _outputs(out):
        Image.open(out / p).load()  # complete images
    assert sum(r.status == "failed" for r in report.results) == 0 and len(report.results) == 12


def _wait_until_still(out: Path, quiet: float = 1.5, limit: float = 30.0) -> None:
    """Wait until no output has appeared for ``quiet`` seconds."""
    seen, since, end = len(_outputs(out)), time.monotonic(), time.monotonic() + limit
    while time.monotonic() - since < quiet and time.monotonic() < end:
        time.sleep(0.1)
        now = len(_outputs(out))
        if now != seen:
            seen, since = now, time.monotonic()


def test_a_killed_driver_is_finished_by_the_same_command(cli, tiny_weights, tmp_path, cluster):
    src, out = _many(tmp_path / "in", 24, 256), tmp_path / "out"
    args = _cli_args(src, out, tiny_weights, "--gate", "off", "--ray", cluster, "--workers", "1", "--worker-threads", "1")
    driver = subprocess.Popen([sys.executable, "-m", "deblur_cli", *map(str, args)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 90
    try:
        while len(_outputs(out) if out.exists() else {}) < 2:
            assert driver.poll() is None, "the driver ended before it could be killed"
            assert time.monotonic() < deadline, "no output within 90 s"
            time.sleep(0.02)
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.kill()
        driver.wait()
    _wait_until_still(out)  # Ray stops the dead driver's worker
    snapshot = {p: ((out / p).stat().st_ino, (out / p).stat().st_mtime_ns) for p in _outputs(out)}
    assert 2 <= len(snapshot) < 24, "the driver was killed mid-run"

    again = cli(*args)
    assert again.exit_code == 0, again.output
    assert sorted(_outputs(out)) == [f"img{i:02d}.png" for i in range(24)] and not _partials(out)
    for p, ident in snapshot.items():
        assert ((out / p).stat().st_ino, (out / p).stat().st_mtime_ns) == ident  # kept, not written again
    rows = _manifest(out)
    # One row per input, all done: had a finished file been handed out again, its worker would
    # have found the output and recorded "skipped".
    assert len(rows) == 24 and all(r["status"] == "done" for r in rows)


def test_object_store_paths(tiny_weights, tmp_path, cluster, s3):
    if s3 is None:
        pytest.skip("moto[server] is not installed")
    import boto3

    from deblur_cli.distributed import deblur_dataset
    from deblur_cli.inference import Deblurrer

    pytest.importorskip("av")
    from deblur_cli.inference.media import plan_media, run_videos

    tree = _tree(tmp_path / "in", videos=True)
    bucket = boto3.client("s3", endpoint_url=s3)
    bucket.create_bucket(Bucket="photos")
    for p in tree.rglob("*"):
        if p.is_file():
            bucket.upload_file(str(p), "photos", f"in/{p.relative_to(tree).as_posix()}")
    options = {"model": "saphn-tiny", "weights": tiny_weights, "gate": (1.0, 3.0)}
    report = deblur_dataset("s3://photos/in", "s3://photos/out", recursive=True, workers=1, threads=1, **options)
    assert sorted(r.status for r in report.results).count("failed") == 3

    expected_dir = tmp_path / "local"
    local = Deblurrer("saphn-tiny", weights=tiny_weights, gate=(1.0, 3.0))
    images, videos = plan_media(tree, expected_dir, recursive=True)
    list(local.deblur_files(images))
    list(run_videos(local, videos))
    assert "sub/clip.mp4" in _outputs(expected_dir)
    keys = sorted(o["Key"] for o in bucket.list_objects_v2(Bucket="photos", Prefix="out/")["Contents"])
    assert keys == sorted([f"out/{p}" for p in _outputs(expected_dir)] + [f"out/{MANIFEST_NAME}"])
    for p, data in _outputs(expected_dir).items():
        assert bucket.get_object(Bucket="photos", Key=f"out/{p}")["Body"].read() == data
    rows = parse(bucket.get_object(Bucket="photos", Key=f"out/{MANIFEST_NAME}")["Body"].read().decode())
    assert len(rows) == 9 and rows["bad.png"]["status"] == "failed" and "s3://photos/in/bad.png" in rows["bad.png"]["error"]
    assert rows["broken.mp4"]["status"] == "failed" and "s3://photos/in/broken.mp4" in rows["broken.mp4"]["error"]

    rerun = deblur_dataset("s3://photos/in", "s3://photos/out", recursive=True, workers=1, threads=1, **options)
    assert [r.status for r in rerun.results if r.status != "failed"] == ["skipped"] * 6
    import pyarrow

    if int(pyarrow.__version__.split(".")[0]) >= 21:  # small objects went up in one request each
        assert resolve("s3://photos/out").fs.__reduce__()[1][0]["allow_delayed_open"] is True


def test_a_worker_that_cannot_start_stops_the_job_in_one_line(cli, tiny_weights, tmp_path, cluster):
    src, out = _many(tmp_path / "in", 2, 32), tmp_path / "out"
    result = cli(*_cli_args(src, out, tiny_weights, "--ray", "local", "--tile", "8"))  # refused by the Deblurrer
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "a Ray worker could not start" in str(result.exception) and "--tile" in str(result.exception)
    assert not _outputs(out) and {r["status"] for r in _manifest(out)} == {"pending"}  # a rerun does them
