"""Write docs/cli.md from the commands' own ``--help`` (the Typer/Click command tree).

The prose lives in ``tools/cli_docs_template.md``; its placeholders are filled from the live CLI:

* ``{{help:deblur image}}``: the command's one-line help;
* ``{{usage:deblur image}}``: its usage line;
* ``{{options:deblur image}}``: one Markdown table per ``--help`` panel (arguments and options).

Usage::

    python tools/gen_cli_docs.py            # rewrite docs/cli.md
    python tools/gen_cli_docs.py --check    # exit 1 if docs/cli.md is out of date (the tests run this)
"""

from __future__ import annotations

import argparse
import enum
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "tools" / "cli_docs_template.md"
OUTPUT = ROOT / "docs" / "cli.md"


def _escape(text: str | None) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ").strip()


def _option_row(option: Any, ctx: Any) -> str:
    names = ", ".join(option.opts) + (" / " + ", ".join(option.secondary_opts) if option.secondary_opts else "")
    meta = "" if option.is_flag else " " + str(option.display_type(ctx)).strip().replace("|", " or ").replace("int range", "int")
    default = option.default.value if isinstance(option.default, enum.Enum) else option.default
    if option.is_flag and option.secondary_opts:
        shown = f" Default: `{(option.opts if default else option.secondary_opts)[0]}`."
    elif option.is_flag or default in (None, (), []) or callable(default):
        shown = ""
    else:
        shown = f" Default: `{default}`."
    help_text = _escape(option.help)
    required = " **Required.**" if option.required else ""
    return f"| `{names}{meta}` | {help_text}{required}{shown if 'default' not in help_text.lower() else ''} |"


def _commands(cmd: Any, path: list[str]) -> Any:
    if hasattr(cmd, "commands"):
        for name, sub in cmd.commands.items():
            yield from _commands(sub, [*path, name])
    else:
        yield path, cmd


def describe() -> dict[str, dict[str, Any]]:
    """Every leaf command: ``{"deblur image": {"help", "usage", "panels": {panel: [rows]}}}``."""
    import typer

    from deblur_cli.cli.main import _register, app

    _register()
    described: dict[str, dict[str, Any]] = {}
    for path, cmd in _commands(typer.main.get_command(app), ["deblur"]):
        ctx = cmd.make_context(path[-1], [], resilient_parsing=True)
        arguments = [p for p in cmd.params if p.param_type_name == "argument"]
        panels: dict[str, list[str]] = {}
        for a in arguments:
            panels.setdefault("Arguments", []).append(f"| `{a.metavar or a.name.upper()}` | {_escape(a.help)} |")
        for o in cmd.params:
            if o.param_type_name == "option" and o.name != "help":
                panels.setdefault(o.rich_help_panel or "Options", []).append(_option_row(o, ctx))

        def shown(a: Any) -> str:
            name = a.metavar or (a.name.upper() + ("..." if a.nargs == -1 else ""))
            return name if a.required else f"[{name}]"

        usage = " ".join(path) + " [OPTIONS]" + "".join(" " + shown(a) for a in arguments)
        described[" ".join(path)] = {"help": _escape((cmd.help or "").split("\n\n")[0]), "usage": usage, "panels": panels}
    return described


def render(template: str, described: dict[str, dict[str, Any]]) -> str:
    """Fill the template's placeholders; every command must appear in it, and only real ones."""
    used: set[str] = set()

    def lookup(name: str) -> dict[str, Any]:
        if name not in described:
            raise SystemExit(f"gen_cli_docs: the template names {name!r}, which is not a command")
        used.add(name)
        return described[name]

    def options(name: str) -> str:
        parts = []
        for panel, rows in lookup(name)["panels"].items():
            head = "argument" if panel == "Arguments" else "option"
            parts.append(f"*{panel.split(' (')[0]}*\n\n| {head} | meaning |\n|---|---|\n" + "\n".join(rows))
        return "\n\n".join(parts)

    text = re.sub(r"\{\{usage:([^}]+)\}\}", lambda m: "```\n" + lookup(m.group(1))["usage"] + "\n```", template)
    text = re.sub(r"\{\{help:([^}]+)\}\}", lambda m: lookup(m.group(1))["help"], text)
    text = re.sub(r"\{\{options:([^}]+)\}\}", lambda m: options(m.group(1)), text)
    missing = sorted(set(described) - used)
    if missing:
        raise SystemExit(f"gen_cli_docs: commands missing from {TEMPLATE.name}: {missing}")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare with docs/cli.md; exit 1 if it differs")
    args = parser.parse_args(argv)
    text = render(TEMPLATE.read_text(encoding="utf-8"), describe())
    if args.check:
        if OUTPUT.read_text(encoding="utf-8") != text:
            print("docs/cli.md is out of date: run python tools/gen_cli_docs.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
