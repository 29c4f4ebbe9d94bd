"""``python -m shelby``: the same as the ``shelby`` command."""

from shelby.cli import main

main()
