"""Entry point of the ``deblur`` command.

Each command lives in its own module, adds itself to :data:`deblur_cli.cli.app.app`, and
imports the heavy stack (torch, cv2, onnxruntime) inside its body, so ``deblur --help`` and
``deblur --version`` answer instantly.
"""

from __future__ import annotations

import sys

from deblur_cli.cli.app import app
from deblur_cli.errors import DeblurError

__all__ = ["app", "main"]


def _register() -> None:
    """Import the command modules: each adds its commands to ``app``."""
    # In this order, not sorted: it is the order of the commands in ``deblur --help``.
    from deblur_cli.cli import (  # noqa: F401, I001
        image, folder, video, estimate, weights, export, train, evaluate, viz, analyze, bench,
    )


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; a :class:`DeblurError` becomes one line on stderr and a non-zero exit."""
    _register()
    try:
        app(args=argv, standalone_mode=True)
    except DeblurError as exc:
        print(f"deblur: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("deblur: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
