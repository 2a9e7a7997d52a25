"""The window kinds as one type, :data:`WindowConfig`, and :func:`parse_window`, which turns
the CLI's window specs (``count:1000``, ``count:1000,max=250ms``, ``event:10s,lateness=2s``) into one of them.

The kinds themselves live one per module (:mod:`stream.window.count`,
:mod:`stream.window.processing_time`, :mod:`stream.window.event_time`); this module
sits above them, and they never import it.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from stream.core.clock import Clock, SystemClock
from stream.core.errors import ConfigError
from stream.window.count import CountWindow
from stream.window.event_time import EventTimeWindow
from stream.window.processing_time import ProcessingTimeWindow

__all__ = ["WindowConfig", "duration_ms", "parse_window"]

WindowConfig = CountWindow | ProcessingTimeWindow | EventTimeWindow
"""Any window configuration; ``config.build(resume_state)`` gives its
:class:`~stream.window.base.Windower`."""

_FORMS = (
    "accepted window specs: 'count:N[,max=DUR]' or 'N' (a batch every N events, or when the "
    "open one is DUR old), "
    "'processing:DUR', 'event:DUR[,lateness=DUR][,idle=DUR]', where DUR is a number "
    "with a unit ms, s or m (e.g. 'count:1000', 'count:1000,max=250ms', 'processing:5s', 'event:10s,lateness=2s,idle=5s')"
)
_COUNT = re.compile(r"[0-9]+")
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
#: Windows are counted in seconds and minutes: an hour-long micro-batch is a mistake more often than not.
_WINDOW_UNITS = ("ms", "s", "m")


def duration_ms(text: str, units: tuple[str, ...] = tuple(_UNIT_MS)) -> int:
    """A duration such as ``250ms``, ``5s``, ``10m``, ``1.5h`` or ``7d`` (``units`` allowed), in whole milliseconds.

    >>> duration_ms("1.5h"), duration_ms(" 250MS ")
    (5400000, 250)

    Raises
    ------
    ValueError
        Not a number with one of those units, or not a whole number of milliseconds
        (the message says which; callers name the option around it).
    """
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None or match[2] not in units:
        raise ValueError("not a duration")
    try:
        value = Decimal(match[1]) * _UNIT_MS[match[2]]
    except InvalidOperation:  # pragma: no cover - the regex admits only plain decimals
        raise ValueError("not a duration") from None
    if value != value.to_integral_value():
        raise ValueError("is not a whole number of milliseconds")
    return int(value)


def _duration_ms(text: str, what: str, spec: str) -> int:
    try:
        return duration_ms(text, _WINDOW_UNITS)
    except ValueError as exc:
        if str(exc) == "not a duration":
            raise ConfigError(f"bad {what} {text.strip()!r} in window spec {spec!r}; {_FORMS}") from None
        raise ConfigError(f"{what} {text.strip()!r} in window spec {spec!r} {exc}") from None


def parse_window(spec: str, clock: Clock | None = None) -> WindowConfig:
    """Parse a CLI window spec into a window config.

    Parameters
    ----------
    spec : str
        ``count:N`` or ``N``, optionally ``count:N,max=DUR`` (close a partial
        window once it is ``DUR`` old); ``processing:DUR``; ``event:DUR`` optionally
        followed by ``,lateness=DUR`` and/or ``,idle=DUR``. ``DUR`` is a number
        with a unit ``ms``, ``s`` or ``m`` (``1.5s`` is 1500 ms).
    clock : Clock or None
        Processing-time clock for processing windows and a count window's ``max``
        (default :class:`~stream.core.clock.SystemClock`), and for the event-time idle timeout.

    Returns
    -------
    CountWindow, ProcessingTimeWindow or EventTimeWindow

    Raises
    ------
    ConfigError
        If the spec is malformed or a value is out of range; the message lists
        the accepted forms.

    Examples
    --------
    >>> parse_window("1000")
    CountWindow(size=1000, max_ms=None)
    >>> parse_window("count:1000,max=250ms")
    CountWindow(size=1000, max_ms=250)
    >>> parse_window("processing:5s").length_ms
    5000
    >>> parse_window("event:10s,lateness=2s,idle=1m")
    EventTimeWindow(length_ms=10000, allowed_lateness_ms=2000, idle_timeout_ms=60000, clock=None)
    """
    if not isinstance(spec, str):
        raise ConfigError(f"a window spec must be a string, got {type(spec).__name__}; {_FORMS}")
    text = spec.strip()
    kind, colon, rest = text.partition(":")
    if not colon:
        if _COUNT.fullmatch(text):
            return CountWindow(int(text))
        raise ConfigError(f"bad window spec {spec!r}; {_FORMS}")
    kind = kind.strip().lower()
    head, *options = [part.strip() for part in rest.split(",")]
    if kind == "count":
        if not _COUNT.fullmatch(head) or len(options) > 1:
            raise ConfigError(f"bad count window spec {spec!r}; {_FORMS}")
        max_ms = None
        for option in options:
            key, eq, value = option.partition("=")
            if not eq or key.strip().lower() != "max":
                raise ConfigError(f"unknown option {option!r} in window spec {spec!r}; {_FORMS}")
            max_ms = _duration_ms(value, "max", spec)
        return CountWindow(int(head), max_ms=max_ms, clock=clock or SystemClock())
    if kind == "processing":
        if options:
            raise ConfigError(f"processing windows take no options, got {spec!r}; {_FORMS}")
        return ProcessingTimeWindow(_duration_ms(head, "length", spec), clock=clock or SystemClock())
    if kind == "event":
        length = _duration_ms(head, "length", spec)
        values: dict[str, int] = {}
        for option in options:
            key, eq, value = option.partition("=")
            key = key.strip().lower()
            if not eq or key not in ("lateness", "idle"):
                raise ConfigError(f"unknown option {option!r} in window spec {spec!r}; {_FORMS}")
            if key in values:
                raise ConfigError(f"option {key!r} given twice in window spec {spec!r}")
            values[key] = _duration_ms(value, key, spec)
        return EventTimeWindow(
            length,
            allowed_lateness_ms=values.get("lateness", 0),
            idle_timeout_ms=values.get("idle"),
            clock=clock,
        )
    raise ConfigError(f"unknown window kind {kind!r} in {spec!r}; {_FORMS}")
