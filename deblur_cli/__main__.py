"""``python -m deblur_cli`` runs the ``deblur`` command."""

from deblur_cli.cli.main import main

main()
