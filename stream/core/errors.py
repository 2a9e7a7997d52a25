"""The streamlearn error hierarchy.

Every error a user can act on derives from :class:`StreamlearnError`; its
message says what to do. The CLI turns these into a one-line message and exit
code 2 instead of a traceback.
"""

from __future__ import annotations


class StreamlearnError(Exception):
    """Root of every error streamlearn raises on purpose."""


class ConfigError(StreamlearnError, ValueError):
    """A setting is missing, malformed or inconsistent with another one."""


class BrokerUnavailableError(StreamlearnError, ConnectionError):
    """The Kafka bootstrap servers could not be reached."""


class BrokerOutageError(BrokerUnavailableError):
    """The broker went away mid-run; the engine keeps its checkpoint and polls again after a backoff."""


class TopicNotFoundError(StreamlearnError, LookupError):
    """A topic named in the configuration does not exist on the broker."""


class RetrainFailedError(StreamlearnError):
    """A full retrain job stopped because a worker met a user error (its message says which)."""


class CheckpointError(StreamlearnError):
    """A checkpoint could not be written, or the one on disk is unreadable."""


class OffsetRegressionError(CheckpointError):
    """A checkpoint would move a partition's offset backwards (a double-learn risk)."""


class CheckpointLockedError(CheckpointError):
    """Another engine (this process or another) already uses the checkpoint directory."""


class UnreadableCheckpointError(CheckpointError):
    """Checkpoint files exist but none can be read: starting fresh would re-learn everything."""


class IntakeProcessError(StreamlearnError):
    """The intake process (``--intake process``) died or failed; the engine stops and a restart resumes."""


class SchemaMismatchError(StreamlearnError):
    """Restored state does not fit the configured model or feature schema."""


class RegistryError(StreamlearnError):
    """The model registry refused an operation (unknown version, bad state)."""


class RegistryUnavailableError(RegistryError, ConnectionError):
    """The model registry (Redis or its directory) cannot be reached right now."""


class VersionNotFoundError(RegistryError, LookupError):
    """No model version with that number exists in the registry."""
