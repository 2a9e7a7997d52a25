"""``streamlearn serve``: the prediction API over a registry, checked before uvicorn starts.

Kept apart from :mod:`stream.cli.main` (which registers it on import), like inspect.
"""

from __future__ import annotations

import os

import click

from stream.cli.errors import require_free_port, require_registry, require_registry_dir, user_errors


@click.command()
@click.option(
    "--registry",
    default=None,
    help="Directory or redis://HOST:6379/0 URL [env STREAMLEARN_REGISTRY_URL; default .streamlearn/registry].",
)
@click.option(
    "--registry-namespace", default=None, help="Redis key prefix [env STREAMLEARN_REGISTRY_NAMESPACE]."
)
@click.option("--host", default=None, help="Bind address [env STREAMLEARN_SERVING_HOST; default 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port [env STREAMLEARN_SERVING_PORT; default 8000].")
@click.option(
    "--max-batch-rows", type=int, default=None, help="Largest /predict/batch request (default 1024)."
)
@click.option(
    "--max-body-bytes",
    type=click.IntRange(min=1),
    default=None,
    help="Largest request body in bytes; larger is 413 before parsing [default 1 MiB].",
)
@click.option(
    "--poll-interval",
    type=float,
    default=None,
    help="Fallback poll of the registry when notifications are missed (default 1s).",
)
@click.option("--workers", type=int, default=1, show_default=True, help="uvicorn worker processes.")
@click.option("--log-level", default="info", show_default=True)
@user_errors
def serve(
    registry,
    registry_namespace,
    host,
    port,
    max_batch_rows,
    max_body_bytes,
    poll_interval,
    workers,
    log_level,
):
    """Serve the latest validated model over HTTP, hot-swapping to new versions.

    The admin endpoints (promote, rollback) need STREAMLEARN_SERVING_ADMIN_TOKEN
    in the environment; it is never a flag, so it stays out of `ps` output.
    """
    import torch
    import uvicorn

    from serving.api.app import create_app
    from serving.registry.factory import open_registry
    from serving.settings import RegistrySettings, ServingSettings

    overrides = {
        k: v
        for k, v in {
            "host": host,
            "port": port,
            "max_batch_rows": max_batch_rows,
            "max_body_bytes": max_body_bytes,
            "poll_interval_s": poll_interval,
        }.items()
        if v is not None
    }
    settings = ServingSettings(**overrides)
    reg_overrides = {
        k: v for k, v in {"url": registry, "namespace": registry_namespace}.items() if v is not None
    }
    reg_settings = RegistrySettings(**reg_overrides)
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
    if workers > 1:
        # Each worker builds its own app from the environment.
        for key, value in {
            **{f"STREAMLEARN_SERVING_{k.upper()}": v for k, v in overrides.items()},
            **{f"STREAMLEARN_REGISTRY_{k.upper()}": v for k, v in reg_overrides.items()},
        }.items():
            os.environ[key] = str(value)
        uvicorn.run(
            "serving.api.app:app_from_env",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=workers,
            log_level=log_level,
            access_log=False,
        )
    else:
        uvicorn.run(
            create_app(settings, registry_settings=reg_settings),
            host=settings.host,
            port=settings.port,
            log_level=log_level,
            access_log=False,
        )
