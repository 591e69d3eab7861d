"""deblur_cli.inference.allocator: glibc's thresholds are raised unless turned off (run in a subprocess,
because the setting is process-wide)."""

import subprocess
import sys

import pytest

CODE = "from deblur_cli.inference.allocator import keep_freed_memory; print(keep_freed_memory())"


def _run(env_value: str | None) -> str:
    import os

    env = dict(os.environ)
    env.pop("DEBLUR_MALLOC", None)
    if env_value is not None:
        env["DEBLUR_MALLOC"] = env_value
    return subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_sets_thresholds_on_glibc():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert _run(None).strip() == "True"


def test_opt_out_leaves_malloc_alone():
    assert _run("system").strip() == "False"
    assert _run("SYSTEM").strip() == "False"


def test_non_linux_is_a_no_op(monkeypatch):
    import deblur_cli.inference.allocator as allocator

    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.keep_freed_memory() is False
