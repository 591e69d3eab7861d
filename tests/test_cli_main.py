"""The command as a whole: fast --help/--version without torch, entry points, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
from deblur_cli.cli.main import main
try:
    main({args!r})
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in ("torch", "cv2", "onnxruntime", "numpy") if m in sys.modules)
print("HEAVY=" + ",".join(heavy))
"""


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["image", "--help"], ["folder", "--help"],
                                  ["weights", "--help"], ["train", "--help"], ["eval", "--help"]])  # fmt: skip
def test_help_does_not_import_the_heavy_stack(args):
    out = subprocess.run([sys.executable, "-c", PROBE.format(args=args)], capture_output=True, text=True, timeout=120)
    assert "HEAVY=\n" in out.stdout or out.stdout.rstrip().endswith("HEAVY="), out.stdout[-500:] + out.stderr[-500:]


def test_python_dash_m_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "deblur_cli", "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("deblur ")
    out = subprocess.run([sys.executable, "-m", "deblur_cli.cli.main", "weights", "--help"], capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr


def test_user_error_is_one_line_without_traceback(tmp_path):
    out = subprocess.run([sys.executable, "-m", "deblur_cli", "image", str(tmp_path / "missing.jpg")],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "missing.jpg" in lines[0], out.stderr


def test_commands_tune_the_allocator(monkeypatch):
    """Every command (not --help/--version, which answer before) raises glibc's malloc thresholds."""
    import deblur_cli.inference.allocator as allocator
    from deblur_cli.cli.main import main

    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    with pytest.raises(SystemExit) as exc:
        main(["weights", "list"])
    assert exc.value.code in (0, None)
    assert calls == [1]
