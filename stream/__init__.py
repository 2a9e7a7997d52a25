"""streamlearn's streaming side: sources, codecs, windows, checkpoints, the daemon and the CLI."""

__version__ = "0.1.0"
