"""Settings for the registry and the prediction API (environment prefix ``STREAMLEARN_``).

Examples
--------
>>> import os
>>> os.environ["STREAMLEARN_SERVING_ADMIN_TOKEN"] = "s3cret"
>>> ServingSettings().admin_token
SecretStr('**********')
>>> del os.environ["STREAMLEARN_SERVING_ADMIN_TOKEN"]
>>> RegistrySettings().url
'.streamlearn/registry'
>>> os.environ["STREAMLEARN_SERVING_SHADOW"] = "9,10"
>>> ServingSettings().shadow
(9, 10)
>>> del os.environ["STREAMLEARN_SERVING_SHADOW"]
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class RegistrySettings(BaseSettings):
    """Where model versions live: a directory (embedded default) or ``redis://`` / ``rediss://`` URL.

    Credentials and TLS go in the URL: ``rediss://:PASSWORD@host:6380/0``.
    """

    model_config = SettingsConfigDict(env_prefix="STREAMLEARN_REGISTRY_")

    url: str = ".streamlearn/registry"
    namespace: str = "streamlearn"
    keep_states: int = Field(100, ge=1)


class ServingSettings(BaseSettings):
    """How the prediction API behaves."""

    model_config = SettingsConfigDict(env_prefix="STREAMLEARN_SERVING_")

    host: str = "127.0.0.1"
    port: int = 8000
    #: Bearer token for promote/rollback; unset disables those endpoints.
    admin_token: SecretStr | None = None
    max_batch_rows: int = Field(1024, ge=1)
    #: Largest request body accepted, in bytes; larger ones are 413 before
    #: anything parses them. 1 MiB holds a full batch of ~50 float features.
    max_body_bytes: int = Field(1_048_576, ge=1)
    #: Fallback poll of the registry pointer, for notifications that were missed.
    poll_interval_s: float = Field(1.0, gt=0)
    device: str = "cpu"

    # The feedback loop (docs/serving.md#feedback-loop); the broker is STREAMLEARN_KAFKA_BOOTSTRAP.
    #: Topic every answered row is logged to (``None``: no prediction log).
    prediction_log: str | None = None
    #: Rows the prediction log holds in memory waiting for the broker; more are dropped and counted.
    prediction_log_queue_rows: int = Field(10_000, ge=1)
    #: Topic ``POST /feedback`` writes labels to (``None``: the endpoint answers 404).
    labels_topic: str | None = None
    #: How long ``POST /feedback`` waits for the broker's acknowledgement before answering 503.
    feedback_timeout_s: float = Field(5.0, gt=0)
    #: Versions scored beside the served one, off the response path (needs the prediction log);
    #: in the environment a comma-separated list: ``STREAMLEARN_SERVING_SHADOW=9,10``.
    shadow: Annotated[tuple[int, ...], NoDecode] = ()

    @field_validator("shadow", mode="before")
    @classmethod
    def _shadow_list(cls, value):
        if isinstance(value, str):
            return tuple(int(part) for part in value.replace(" ", "").split(",") if part)
        return value

    @field_validator("prediction_log", "labels_topic", mode="before")
    @classmethod
    def _empty_topic_is_none(cls, value):
        return None if value is None or str(value).strip() == "" else value

    @field_validator("admin_token", mode="before")
    @classmethod
    def _empty_token_is_no_token(cls, value):
        # `STREAMLEARN_SERVING_ADMIN_TOKEN=` (e.g. compose passing an unset
        # variable through) must disable the admin endpoints, not enable them
        # with an empty secret.
        return None if value is None or str(value).strip() == "" else value
