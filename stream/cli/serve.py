"""``streamlearn serve``: the prediction API over a registry, checked before uvicorn starts.

Kept apart from :mod:`stream.cli.main` (which registers it on import), like inspect.
"""

from __future__ import annotations

import os

import click

from stream.cli.errors import fail, require_free_port, require_registry, require_registry_dir
from stream.cli.options import BOOTSTRAP, KAFKA_SETTINGS, REGISTRY, REGISTRY_NAMESPACE
from stream.cli.table import Env, Option, Values, with_options

_SERVING = "serving.settings.ServingSettings"
#: The options that are :class:`~serving.settings.ServingSettings` fields, by field.
_SERVING_FIELDS = {
    "host": "host",
    "port": "port",
    "max_batch_rows": "max_batch_rows",
    "max_body_bytes": "max_body_bytes",
    "poll_interval": "poll_interval_s",
    "prediction_log": "prediction_log",
    "prediction_log_queue_rows": "prediction_log_queue_rows",
    "labels_topic": "labels_topic",
    "shadow": "shadow",
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
    BOOTSTRAP.but(
        help="Kafka bootstrap servers of --prediction-log and --labels-topic [env STREAMLEARN_KAFKA_BOOTSTRAP]."
    ),
    Option(
        "--prediction-log",
        "prediction_log",
        metavar="TOPIC",
        help="Write every answered row (id, x, version, prediction) to this topic, in the background; "
        "a slow or absent broker drops rows, never requests [env STREAMLEARN_SERVING_PREDICTION_LOG].",
        env=Env(_SERVING, "prediction_log"),
    ),
    Option(
        "--prediction-log-queue-rows",
        "prediction_log_queue_rows",
        type=click.IntRange(min=1),
        help="Rows the prediction log holds while the broker is slow; more are dropped and counted "
        "[env STREAMLEARN_SERVING_PREDICTION_LOG_QUEUE_ROWS; default 10000].",
        env=Env(_SERVING, "prediction_log_queue_rows"),
    ),
    Option(
        "--labels-topic",
        "labels_topic",
        metavar="TOPIC",
        help="Enable POST /feedback: labels by id go to this topic, acknowledged before the 202 "
        "[env STREAMLEARN_SERVING_LABELS_TOPIC].",
        env=Env(_SERVING, "labels_topic"),
    ),
    Option(
        "--shadow",
        "shadow",
        type=int,
        multiple=True,
        metavar="VERSION",
        help="Also score each logged row with this version, off the response path, into the record's "
        "'shadow' field (repeatable; needs --prediction-log) [env STREAMLEARN_SERVING_SHADOW=9,10].",
        env=Env(_SERVING, "shadow"),
    ),
    KAFKA_SETTINGS,
    Option("--workers", "workers", type=int, default=1, show_default=True, help="uvicorn worker processes."),
    Option("--log-level", "log_level", default="info", show_default=True),
)


@click.command()
@with_options(SERVE_OPTIONS)
def serve(opts: Values) -> None:
    """Serve the latest validated model over HTTP, hot-swapping to new versions.

    The admin endpoints (promote, rollback) need STREAMLEARN_SERVING_ADMIN_TOKEN
    in the environment; it is never a flag, so it stays out of `ps` output.

    The feedback loop: --prediction-log logs every answer with its id,
    --labels-topic takes the labels for those ids (POST /feedback), --shadow
    scores other versions on the logged rows (only with --prediction-log).
    """
    import torch
    import uvicorn

    from serving.api.app import create_app
    from serving.registry.factory import open_registry
    from serving.settings import RegistrySettings, ServingSettings

    # Every value resolved (command line > environment > default); the admin token and device stay env-only.
    serving = {field: opts[name] for name, field in _SERVING_FIELDS.items() if opts[name] is not None}
    settings = ServingSettings(**serving)
    registry = {"url": opts.registry, "namespace": opts.registry_namespace}
    reg_settings = RegistrySettings(**registry)
    kafka = opts.kafka.model_copy(update={"bootstrap": opts.bootstrap})
    if settings.shadow and not settings.prediction_log:
        fail("--shadow scores versions into the prediction log: give --prediction-log TOPIC too")
    if (settings.prediction_log or settings.labels_topic) and not kafka.bootstrap:
        fail("--prediction-log and --labels-topic write to Kafka: give --bootstrap HOST:PORT")
    # Fail fast, with one line, before uvicorn starts: a missing directory (a
    # FileRegistry would create it and serve nothing forever), a bad URL, an
    # unreachable Redis, a port in use.
    require_registry_dir(reg_settings.url)
    probe = open_registry(reg_settings.url, namespace=reg_settings.namespace)
    try:
        require_registry(probe)
        current = probe.current()
        _require_shadows(probe, settings.shadow)
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
            "STREAMLEARN_KAFKA_BOOTSTRAP": kafka.bootstrap,
        }.items():
            if value is not None:
                os.environ[key] = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
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
            create_app(settings, registry_settings=reg_settings, kafka_settings=kafka),
            host=settings.host,
            port=settings.port,
            log_level=opts.log_level,
            access_log=False,
        )


def _require_shadows(registry, versions) -> None:
    """Every shadow version exists and can be served (its weights are kept), or one line and exit 2."""
    from serving.api.model import ServedModel
    from stream.core.errors import RegistryError, RegistryUnavailableError, VersionNotFoundError

    for number in versions:
        try:
            ServedModel.load(registry, number)
        except VersionNotFoundError:
            fail(f"--shadow {number}: the registry has no version {number} (see `streamlearn inspect`)")
        except RegistryUnavailableError:
            raise
        except RegistryError as exc:
            fail(f"--shadow {number}: version {number} cannot be loaded: {exc}")
