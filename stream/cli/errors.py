"""How the CLI reports a user's mistake, and the checks that find one before a command starts work.

A mistake is one line ``streamlearn: error: <what is wrong and what to do>``
on stderr and exit code 2 (:data:`EXIT_USAGE`); tracebacks are for bugs
(``STREAMLEARN_DEBUG=1`` shows them for errors too). :func:`user_errors`
turns a :class:`~stream.core.errors.StreamlearnError` into that line;
:class:`OneLineGroup` does the same for click's own usage errors.

The ``require_*`` checks run before a command prints a banner, takes a lock
or launches torchrun workers, so that the error is the only line it prints.
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, Callable, NoReturn

import click

from stream.core.errors import BrokerUnavailableError, ConfigError, RegistryUnavailableError, StreamlearnError

if TYPE_CHECKING:
    from serving.registry.base import ModelRegistry
    from stream.sources.kafka import KafkaSourceConfig

EXIT_USAGE = 2
#: A command that ran to its end but whose result is not to be trusted (e.g. most records
#: dead-lettered): not the user's command line, so not :data:`EXIT_USAGE`.
EXIT_UNTRUSTED_RESULT = 1


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``message`` as one ``streamlearn: error:`` line on stderr and exit with ``code``."""
    # One line whatever the message: some come from libraries (a YAML parser) and span several.
    text = " ".join(line.strip() for line in str(message).splitlines() if line.strip())
    click.echo(f"streamlearn: error: {text}", err=True)
    sys.exit(code)


def user_errors(fn: Callable) -> Callable:
    """Turn StreamlearnError (and Kafka's connection errors) into one line + exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from kafka.errors import KafkaConnectionError, KafkaTimeoutError

        try:
            return fn(*args, **kwargs)
        except StreamlearnError as exc:
            if os.environ.get("STREAMLEARN_DEBUG"):
                raise
            fail(str(exc))
        except (KafkaTimeoutError, KafkaConnectionError) as exc:
            fail(f"cannot reach Kafka ({exc}): check --bootstrap and that the broker is up")

    return wrapper


class OneLineGroup(click.Group):
    """A click group whose usage errors (a malformed value, an unknown option) are one line too.

    Click prints a usage line, a hint and the error over four lines; this keeps
    its message and points at ``--help`` instead.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as exc:
            ctx = getattr(exc, "ctx", None)
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            fail(f"{exc.format_message().rstrip('.')}{hint}", exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        except OSError as exc:
            if exc.errno == errno.EPIPE:  # output piped into `head`: as click does, no traceback
                sys.exit(1)
            raise
        # Without standalone mode click returns instead of exiting: an explicit
        # ctx.exit(n) (--help, --version: 0) as n; our commands return None.
        sys.exit(code if isinstance(code, int) else 0)


# ----------------------------------------------------------------- checks
def require_broker(bootstrap: str, timeout_s: float = 3.0) -> None:
    """Raise BrokerUnavailableError at once if no bootstrap server accepts a TCP connection.

    The Kafka clients find out too, but only after their bootstrap timeout (10 s
    per client); a server that accepts the connection and is no broker is still
    theirs to report.

    Raises
    ------
    BrokerUnavailableError
        Nothing listens at any of the bootstrap servers.
    """
    from stream.sources.kafka import first_reachable

    server, causes = first_reachable(bootstrap, timeout_s)
    if server is None:
        raise BrokerUnavailableError(
            f"no Kafka broker answered at {bootstrap!r} ({'; '.join(causes)}): "
            "check --bootstrap and that the broker is up"
        )


def require_topics(config: KafkaSourceConfig) -> None:
    """Check that the broker answers and every topic of ``config`` exists, as the sources do when they open.

    Raises
    ------
    BrokerUnavailableError, TopicNotFoundError
        With the message ``streamlearn run`` gives for the same mistake.
    """
    from stream.sources.base import NoPositions
    from stream.sources.kafka import KafkaSource

    # No group: opening assigns partitions and seeks lazily, so nothing is joined or fetched.
    source = KafkaSource(replace(config, group_id=None))
    source.open(NoPositions())
    source.close()


def require_registry(registry: ModelRegistry) -> None:
    """Ping ``registry``: unreachable at start is a user error (mid-run, the gate rides an outage out).

    Raises
    ------
    RegistryUnavailableError
        The message says which registry and which setting names it.
    """
    try:
        registry.ping()
    except RegistryUnavailableError as exc:
        raise RegistryUnavailableError(
            f"{str(exc).rstrip('.')}; check --registry (or STREAMLEARN_REGISTRY_URL) and that the registry is up"
        ) from None


def require_registry_dir(target: str) -> None:
    """For ``serve``: a directory registry must exist (a typo would otherwise serve an empty one forever).

    Raises
    ------
    ConfigError
        ``target`` is ``none`` or a directory that does not exist.
    """
    if target == "none":
        raise ConfigError("serve needs a registry: pass --registry DIR or redis://HOST:6379/0")
    if "://" in target and not target.startswith("file://"):
        return  # Redis: pinged by the caller
    path = target.removeprefix("file://")
    if not os.path.isdir(path):
        raise ConfigError(
            f"registry directory {path!r} does not exist: `streamlearn run` (or `streamlearn demo`) "
            f"creates it when it publishes; pass --registry with that directory or a redis:// URL, "
            f"or `mkdir -p {path}` to serve it empty until a version arrives"
        )


def require_free_port(host: str, port: int, option: str = "--port (or STREAMLEARN_SERVING_PORT)") -> None:
    """Check that ``host:port`` can be listened on, as uvicorn and tansu will (SO_REUSEADDR, then bind).

    ``option`` names how the user picks another port, for the message.

    Raises
    ------
    ConfigError
        The port is taken, or the address is not one of this machine's.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"port {port} on {host} is already in use: stop what listens there or pick another "
                    f"with {option}"
                ) from None
            raise ConfigError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}; check --host and --port"
            ) from None


def why_nothing_learned(dead_letters: dict[str, int], label_column: str | None) -> str | None:
    """The summary line for a run that learned nothing because every record was dead-lettered, or None.

    >>> why_nothing_learned({"missing label": 1000}, "y")
    "0 events learned: 1,000 dead-lettered (missing label 'y': 1,000); name the label with --label-column"
    """
    total = sum(dead_letters.values())
    if not total:
        return None
    label = f" {label_column!r}" if label_column else ""
    reasons = ", ".join(
        f"{kind}{label if kind == 'missing label' else ''}: {n:,}"
        for kind, n in sorted(dead_letters.items(), key=lambda kv: -kv[1])
    )
    hint = "; name the label with --label-column" if label_column and "missing label" in dead_letters else ""
    return f"0 events learned: {total:,} dead-lettered ({reasons}){hint}"
