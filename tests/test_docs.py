"""The documentation: the site builds with ``--strict``, the README stays a short storefront that
shows CI's own test command, the CLI reference lists every option, and no internal development
history leaks into what users read."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"

README_MAX_LINES = 260
FIGURE_MAX_BYTES = 300 * 1024
# "session 12", "issue 6", "issue #6": history belongs in docs/experiments/ and CHANGELOG.md.
HISTORY = re.compile(r"session [0-9]|issue [0-9#]", re.IGNORECASE)
TEXT_SUFFIXES = {".md", ".json", ".txt", ".yml", ".yaml", ".toml", ".py"}


def test_site_builds_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
        cwd=ROOT,  # the snippets (CHANGELOG.md, weights/MODEL_CARD.md) are found from the repository root
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert (tmp_path / "site" / "index.html").is_file()
    # The included model card really rendered (a snippet that resolves to nothing renders empty).
    assert "SAPHN weights for" in (tmp_path / "site" / "model-card" / "index.html").read_text(encoding="utf-8")


def ci_commands() -> list[str]:
    """The pip install of the package and the pytest run of ``.ci/run``, without ``--quiet``."""
    wanted = []
    for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines():
        words = shlex.split(line, comments=True)
        if words[:4] == ["python", "-m", "pip", "install"] and any(w.startswith(".") for w in words):
            wanted.append(" ".join(shlex.quote(w) if "[" in w else w for w in words if w not in ("--quiet", "-q")))
        elif words[:3] == ["python", "-m", "pytest"]:
            wanted.append(" ".join(words))
    return wanted


def test_readme_is_short_and_shows_the_ci_test_command() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES
    commands = ci_commands()
    assert len(commands) == 2, commands  # the package install and the test run
    lines = {line.strip() for line in text.splitlines()}
    for command in commands:
        # pip's extras may be quoted either way in the README
        assert command in lines or command.replace("'", '"') in lines, f"README lacks CI's command: {command}"


def test_readme_figure_exists_and_is_small() -> None:
    figure = DOCS / "images" / "before_after.png"
    assert "docs/images/before_after.png" in README.read_text(encoding="utf-8")
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert figure.stat().st_size < FIGURE_MAX_BYTES


def user_facing_files() -> list[Path]:
    files = [README]
    files += [p for p in DOCS.rglob("*") if p.is_file() and "experiments" not in p.relative_to(DOCS).parts[:1]]
    files += [p for p in (ROOT / "weights").rglob("*") if p.is_file()]
    files += [p for p in (ROOT / "deblur_cli").rglob("*") if p.is_file()]  # docstrings, comments, --help, errors
    return [p for p in files if p.suffix in TEXT_SUFFIXES]


def test_no_internal_history_where_users_read() -> None:
    files = user_facing_files()
    assert README in files and any(p.name == "MODEL_CARD.md" for p in files) and any(p.name == "registry.json" for p in files)
    assert any(p.name == "deblurrer.py" for p in files)
    hits = [
        f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
        for p in files
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if HISTORY.search(line)
    ]
    assert not hits, "internal history in user-facing text (move it to docs/experiments/):\n" + "\n".join(hits)


def cli_commands() -> dict[str, list[str]]:
    """``"deblur weights list" -> ["--json", "--registry"]``: every command and its long options."""
    import typer

    from deblur_cli.cli.main import _register, app

    _register()

    def walk(cmd, path):
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                yield from walk(sub, [*path, name])
        else:
            yield " ".join(path), cmd

    return {
        path: [
            o
            for p in cmd.params
            if p.param_type_name == "option" and p.name != "help"
            for o in (*p.opts, *p.secondary_opts)
            if o.startswith("--")
        ]
        for path, cmd in walk(typer.main.get_command(app), ["deblur"])
    }


def test_cli_reference_lists_every_command_and_option() -> None:
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    sections = re.split(r"^#{2,3} ", text, flags=re.MULTILINE)
    missing = []
    for command, options in cli_commands().items():
        section = next((s for s in sections if s.startswith(f"`{command}`\n")), None)
        if section is None:
            missing.append(f"{command} (no section)")
            continue
        missing += [f"{command} {o}" for o in options if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", section)]
    assert not missing, "docs/cli.md does not document: " + ", ".join(missing)


def test_cli_reference_is_generated_from_the_live_cli() -> None:
    """docs/cli.md is ``tools/gen_cli_docs.py``'s output: no option's help or default can drift."""
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_cli_docs.py"), "--check"], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
