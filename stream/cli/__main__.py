"""``python -m stream.cli``: the ``streamlearn`` command."""

from stream.cli.main import main

main()
