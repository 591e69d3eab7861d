"""The ``deblur`` Typer application that every command module adds its commands to.

It lives apart from :mod:`deblur_cli.cli.main`, which imports the command modules, so that
they can import ``app`` without importing the module that imports them.
"""

from __future__ import annotations

from typing import Annotated

import typer

from deblur_cli._version import __version__

app = typer.Typer(
    name="deblur",
    help="Remove motion blur from photographs with SAPHN (CVPR 2020).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"deblur {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Remove motion blur from photographs with SAPHN (CVPR 2020)."""
    from deblur_cli.inference.allocator import keep_freed_memory

    keep_freed_memory()  # ~25 % faster on CPU: no page faults for every big tensor (see inference/allocator.py)
