"""Settings read from the environment (prefix ``STREAMLEARN_``), one class per concern.

Command-line flags override these; the environment is how deployments
(docker-compose, Kubernetes) configure the daemon without long command lines.

Examples
--------
>>> import os
>>> os.environ["STREAMLEARN_KAFKA_BOOTSTRAP"] = "broker:9092"
>>> KafkaSettings().bootstrap
'broker:9092'
>>> del os.environ["STREAMLEARN_KAFKA_BOOTSTRAP"]
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    """How to reach and use the Kafka cluster."""

    model_config = SettingsConfigDict(env_prefix="STREAMLEARN_KAFKA_")

    bootstrap: str | None = None
    client_id: str = "streamlearn"
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 1_000
    max_poll_interval_ms: int = 300_000
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None

    def client_options(self) -> dict:
        """Security options in kafka-python's spelling (only those that are set)."""
        opts: dict = {}
        if self.security_protocol != "PLAINTEXT":
            opts["security_protocol"] = self.security_protocol
        if self.sasl_mechanism:
            opts["sasl_mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            opts["sasl_plain_username"] = self.sasl_username
        if self.sasl_password is not None:
            opts["sasl_plain_password"] = self.sasl_password.get_secret_value()
        return opts


class DeadLetterSettings(BaseSettings):
    """The Kafka dead-letter destination (``--dead-letter kafka``) and its on-disk spool."""

    model_config = SettingsConfigDict(env_prefix="STREAMLEARN_DEAD_LETTER_")

    #: Appended to the source topic: ``clicks`` -> ``clicks.dlq``.
    suffix: str = ".dlq"
    #: Another cluster for dead letters; the source's bootstrap servers by default.
    bootstrap: str | None = None
    #: Source payload kept per envelope (KiB); the rest is cut and the envelope says so.
    max_value_kb: int = 256
    #: Spool size (MiB) at which the daemon stops while the destination is down.
    spool_mb: float = 256
    #: The share of a run's records that may go unlearned (undecodable or late) before the
    #: run says so loudly, a bounded run exits 1 and a replay fails (``--max-dead-letter-rate``).
    max_rate: float = Field(0.05, ge=0.0, le=1.0)


class CheckpointSettings(BaseSettings):
    """Where and how often the daemon checkpoints."""

    model_config = SettingsConfigDict(env_prefix="STREAMLEARN_CHECKPOINT_")

    dir: str = ".streamlearn/checkpoints"
    every_batches: int = 20
    every_seconds: float = 5.0
    keep: int = 3


class IntakeSettings(BaseSettings):
    """Where the client polls and records are decoded: on the learning thread, or in a second process."""

    model_config = SettingsConfigDict(env_prefix="STREAMLEARN_INTAKE_")

    #: ``inline``: poll, decode and learn on one thread; ``process``: poll and decode in a child process.
    mode: Literal["inline", "process"] = "inline"
    #: With ``process``: polls in flight at most between the two processes.
    prefetch: int = Field(2, ge=1)


class TorchSettings(BaseSettings):
    """torch's share of the machine (``--torch-threads`` overrides ``STREAMLEARN_TORCH_THREADS``)."""

    model_config = SettingsConfigDict(env_prefix="STREAMLEARN_TORCH_")

    threads: int = 1
