"""``streamlearn serve``: the prediction API over a registry, checked before uvicorn starts.

Kept apart from :mod:`stream.cli.main` (which registers it on import), like inspect.
"""

from __future__ import annotations

import os

import click

from stream.cli.errors import require_free_port, require_registry, require_registry_dir
from stream.cli.options import REGISTRY, REGISTRY_NAMESPACE
from stream.cli.table import Env, Option, Values, with_options

_SERVING = "serving.settings.ServingSettings"
#: The options that are :class:`~serving.settings.ServingSettings` fields, by field.
_SERVING_FIELDS = {
    "host": "host",
    "port": "port",
    "max_batch_rows": "max_batch_rows",
    "max_body_bytes": "max_body_bytes",
    "poll_interval": "poll_interval_s",
}

#: ``streamlearn serve``'s options, in ``--help`` order.
SERVE_OPTIONS = (
    REGISTRY.but(
        help="Directory or redis://HOST:6379/0 URL [env STREAMLEARN_REGISTRY_URL; default .streamlearn/registry]."
    ),
    REGISTRY_NAMESPACE,
    Option(
        "--host",
        "host",
        help="Bind address [env STREAMLEARN_SERVING_HOST; default 127.0.0.1].",
        env=Env(_SERVING, "host"),
    ),
    Option(
        "--port",
        "port",
        type=int,
        help="Port [env STREAMLEARN_SERVING_PORT; default 8000].",
        env=Env(_SERVING, "port"),
    ),
    Option(
        "--max-batch-rows",
        "max_batch_rows",
        type=int,
        help="Largest /predict/batch request (default 1024).",
        env=Env(_SERVING, "max_batch_rows"),
    ),
    Option(
        "--max-body-bytes",
        "max_body_bytes",
        type=click.IntRange(min=1),
        help="Largest request body in bytes; larger is 413 before parsing [default 1 MiB].",
        env=Env(_SERVING, "max_body_bytes"),
    ),
    Option(
        "--poll-interval",
        "poll_interval",
        type=float,
        help="Fallback poll of the registry when notifications are missed (default 1s).",
        env=Env(_SERVING, "poll_interval_s"),
    ),
    Option("--workers", "workers", type=int, default=1, show_default=True, help="uvicorn worker processes."),
    Option("--log-level", "log_level", default="info", show_default=True),
)


@click.command()
@with_options(SERVE_OPTIONS)
def serve(opts: Values) -> None:
    """Serve the latest validated model over HTTP, hot-swapping to new versions.

    The admin endpoints (promote, rollback) need STREAMLEARN_SERVING_ADMIN_TOKEN
    in the environment; it is never a flag, so it stays out of `ps` output.
    """
    import torch
    import uvicorn

    from serving.api.app import create_app
    from serving.registry.factory import open_registry
    from serving.settings import RegistrySettings, ServingSettings

    # Every value resolved (command line > environment > default); the admin token and device stay env-only.
    serving = {field: opts[name] for name, field in _SERVING_FIELDS.items()}
    settings = ServingSettings(**serving)
    registry = {"url": opts.registry, "namespace": opts.registry_namespace}
    reg_settings = RegistrySettings(**registry)
    # Fail fast, with one line, before uvicorn starts: a missing directory (a
    # FileRegistry would create it and serve nothing forever), a bad URL, an
    # unreachable Redis, a port in use.
    require_registry_dir(reg_settings.url)
    probe = open_registry(reg_settings.url, namespace=reg_settings.namespace)
    try:
        require_registry(probe)
        current = probe.current()
    finally:
        probe.close()
    require_free_port(settings.host, settings.port)
    torch.set_num_threads(1)  # one request at a time per worker; more threads only add contention
    click.echo(
        f"[streamlearn] serving {reg_settings.url} on http://{settings.host}:{settings.port} "
        f"(current version: {current.number if current else 'none yet'}; docs at /docs)",
        err=True,
    )
    if opts.workers > 1:
        # Each worker builds its own app from the environment.
        for key, value in {
            **{f"STREAMLEARN_SERVING_{k.upper()}": v for k, v in serving.items()},
            **{f"STREAMLEARN_REGISTRY_{k.upper()}": v for k, v in registry.items()},
        }.items():
            os.environ[key] = str(value)
        uvicorn.run(
            "serving.api.app:app_from_env",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=opts.workers,
            log_level=opts.log_level,
            access_log=False,
        )
    else:
        uvicorn.run(
            create_app(settings, registry_settings=reg_settings),
            host=settings.host,
            port=settings.port,
            log_level=opts.log_level,
            access_log=False,
        )
