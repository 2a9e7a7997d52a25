"""One declaration per option -- flag, type, default, help, environment variable -- and the commands made from them.

An :class:`Option` is declared once (the shared ones in :mod:`stream.cli.options`);
a command that words one differently uses a variant (``TOPICS.but(help=...)``).
:func:`with_options` turns a list of them into the command's click options and
calls the command with one :class:`Values` mapping, where every value has been
resolved by the one precedence rule (docs/configuration.md):

    command line > environment > default

An option given on the command line wins; one left out takes its
environment variable, read through the settings class that owns it
(:mod:`stream.core.settings`, :mod:`serving.settings`: names are
case-insensitive and typed there); otherwise its default. An option with no
flag is an environment-only setting (``STREAMLEARN_CHECKPOINT_KEEP``).

Examples
--------
>>> from click.testing import CliRunner
>>> DIR = Option("--dir", "dir", env=Env("stream.core.settings.CheckpointSettings", "dir"))
>>> @click.command()
... @with_options([DIR, Option("--n", "n", type=int, default=1)])
... def show(opts):
...     click.echo(f"{opts.dir} {opts.n}")
>>> CliRunner().invoke(show, ["--n", "2"], env={"STREAMLEARN_CHECKPOINT_DIR": "/ck"}).output
'/ck 2\\n'
>>> CliRunner().invoke(show, ["--dir", "here"], env={"STREAMLEARN_CHECKPOINT_DIR": "/ck"}).output
'here 1\\n'
>>> DIR.env.name
'STREAMLEARN_CHECKPOINT_DIR'
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Iterator, Mapping

import click
from click.core import ParameterSource

from stream.cli.errors import user_errors
from stream.core.errors import ConfigError

__all__ = ["Env", "Option", "Values", "with_options"]


@dataclass(frozen=True)
class Env:
    """An environment setting: ``field`` of a pydantic settings class (``None``: the whole settings object).

    ``settings`` is the class's dotted path, imported when a command first
    reads it (``--help`` stays fast).
    """

    settings: str
    field: str | None = None

    def settings_class(self) -> type:
        module, _, name = self.settings.rpartition(".")
        return getattr(importlib.import_module(module), name)

    @property
    def name(self) -> str:
        """The environment variable, e.g. ``STREAMLEARN_KAFKA_BOOTSTRAP``."""
        prefix = self.settings_class().model_config.get("env_prefix", "")
        return f"{prefix}{self.field or '*'}".upper()

    def read(self, loaded: dict[str, Any]) -> Any:
        """The setting's value; ``loaded`` caches one settings object per class for one command."""
        if self.settings not in loaded:
            from pydantic import ValidationError

            cls = self.settings_class()
            try:
                loaded[self.settings] = cls()
            except ValidationError as exc:
                first = exc.errors()[0]
                where = "_".join(str(part) for part in first.get("loc", ()))
                prefix = cls.model_config.get("env_prefix", "")
                raise ConfigError(f"{prefix}{where}".upper() + f": {first.get('msg', exc)}") from None
        settings = loaded[self.settings]
        return settings if self.field is None else getattr(settings, self.field)


@dataclass(frozen=True)
class Option:
    """One option: its flag (``None``: environment only), the key of its value, and what click needs.

    ``env`` is read when the flag is not given. Only the click settings that
    differ from click's own defaults are passed on, so ``--help`` reads as the
    hand-written options did.
    """

    flag: str | None
    name: str
    help: str | None = None
    default: Any = None
    type: Any = None
    multiple: bool = False
    is_flag: bool = False
    show_default: bool = False
    metavar: str | None = None
    required: bool = False
    env: Env | None = None

    def but(self, **changes: Any) -> Option:
        """This option as one command words or defaults it differently."""
        return replace(self, **changes)

    def click_option(self) -> Callable[[Callable], Callable]:
        kwargs: dict[str, Any] = {}
        for key in ("default", "help", "type", "metavar"):
            if getattr(self, key) is not None:
                kwargs[key] = getattr(self, key)
        for key in ("multiple", "is_flag", "show_default", "required"):
            if getattr(self, key):
                kwargs[key] = True
        return click.option(self.flag, self.name, **kwargs)


class Values(Mapping[str, Any]):
    """A command's resolved option values, by name, also as attributes (``opts.bootstrap``)."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(key) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Values({self._values!r})"


def resolve(given: Mapping[str, Any], options: Iterable[Option], ctx: click.Context | None) -> Values:
    """The one precedence rule: a value from the command line, else its environment variable, else its default."""
    loaded: dict[str, Any] = {}
    values = dict(given)
    for opt in options:
        from_command_line = (
            opt.flag is not None
            and ctx is not None
            and ctx.get_parameter_source(opt.name) not in (ParameterSource.DEFAULT, None)
        )
        if opt.env is not None and not from_command_line:
            values[opt.name] = opt.env.read(loaded)
        elif opt.flag is None:
            values.setdefault(opt.name, opt.default)
    return Values(values)


def with_options(options: Iterable[Option]) -> Callable[[Callable[[Values], Any]], Callable]:
    """Give a command ``options`` (in this order in ``--help``) and call it with one :class:`Values`.

    A :class:`~stream.core.errors.StreamlearnError` raised while resolving or
    running is one ``streamlearn: error:`` line (:func:`~stream.cli.errors.user_errors`).
    """
    options = tuple(options)

    def decorate(fn: Callable[[Values], Any]) -> Callable:
        @functools.wraps(fn)
        @user_errors
        def command(**given: Any) -> Any:
            return fn(resolve(given, options, click.get_current_context(silent=True)))

        for opt in reversed(options):
            if opt.flag is not None:
                command = opt.click_option()(command)
        return command

    return decorate
