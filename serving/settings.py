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
"""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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

    @field_validator("admin_token", mode="before")
    @classmethod
    def _empty_token_is_no_token(cls, value):
        # `STREAMLEARN_SERVING_ADMIN_TOKEN=` (e.g. compose passing an unset
        # variable through) must disable the admin endpoints, not enable them
        # with an empty secret.
        return None if value is None or str(value).strip() == "" else value
