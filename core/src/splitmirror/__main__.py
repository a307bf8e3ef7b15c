"""``python -m splitmirror`` runs the command line."""

from .cli import main

main()
