"""Tests shared by every window kind (snapshots, restore, schema, config validation) and for
stream.window.spec's parse_window."""

from __future__ import annotations

import numpy as np
import pytest
from window_helpers import (
    assert_plain,
    checkpoint_roundtrip,
    ids,
    make_events,
    random_events,
)

from stream.core.clock import ManualClock, SystemClock
from stream.core.errors import CheckpointError, ConfigError, SchemaMismatchError
from stream.core.records import Events
from stream.window.base import Windower
from stream.window.count import CountWindow
from stream.window.event_time import EventTimeWindow
from stream.window.processing_time import ProcessingTimeWindow
from stream.window.spec import parse_window


# ----------------------------------------------------- snapshots and restore
@pytest.mark.parametrize(
    "config",
    [
        CountWindow(4),
        CountWindow(4, max_ms=50, clock=ManualClock()),
        ProcessingTimeWindow(10, clock=ManualClock()),
        EventTimeWindow(10, idle_timeout_ms=5, clock=ManualClock()),
    ],
    ids=["count", "count-or-time", "processing", "event"],
)
def test_snapshot_is_plain_and_round_trips(config):
    windower = config.build()
    windower.add(random_events(6, ts=[1, 2, 3, 14, 15, 16]))
    state = windower.snapshot()
    assert_plain(state)
    restored = config.build(resume_state=checkpoint_roundtrip(state))
    again = restored.snapshot()
    assert again.keys() == state.keys()
    for key, value in state.items():
        if key == "pending":
            assert ids(Events.from_plain(again[key])) == ids(Events.from_plain(value))
            np.testing.assert_array_equal(again[key]["X"], value["X"])
        else:
            assert again[key] == value, key
    assert isinstance(windower, Windower) and isinstance(restored, Windower)


def test_snapshot_does_not_share_memory_with_added_events():
    stream = random_events(3)
    windower = CountWindow(10).build()
    windower.add(stream)
    state = windower.snapshot()
    assert not np.shares_memory(state["pending"]["X"], stream.X)


def test_resume_with_another_window_kind_is_a_config_error():
    state = CountWindow(3).build().snapshot()
    with pytest.raises(ConfigError, match="'count' window"):
        EventTimeWindow(10).build(resume_state=state)


def test_resume_event_time_with_another_length_is_a_config_error():
    state = EventTimeWindow(10).build().snapshot()
    with pytest.raises(ConfigError, match="length"):
        EventTimeWindow(20).build(resume_state=state)


@pytest.mark.parametrize("damage", ["drop_seq", "bad_format", "not_a_dict"])
def test_damaged_resume_state_is_a_checkpoint_error(damage):
    state = CountWindow(3).build().snapshot()
    if damage == "drop_seq":
        del state["seq"]
    elif damage == "bad_format":
        state["format"] = 99
    else:
        state = [state]
    with pytest.raises(CheckpointError):
        CountWindow(3).build(resume_state=state)


def test_feature_dimension_change_is_a_schema_mismatch():
    windower = CountWindow(10).build()
    windower.add(make_events([0], n_features=2))
    with pytest.raises(SchemaMismatchError):
        windower.add(make_events([0], n_features=3))


# ------------------------------------------------------------------ configs
@pytest.mark.parametrize(
    "build",
    [
        lambda: CountWindow(0),
        lambda: CountWindow(-3),
        lambda: CountWindow(True),
        lambda: CountWindow(2.0),
        lambda: ProcessingTimeWindow(0, clock=ManualClock()),
        lambda: ProcessingTimeWindow(10, clock=object()),
        lambda: EventTimeWindow(0),
        lambda: EventTimeWindow(10, allowed_lateness_ms=-1),
        lambda: EventTimeWindow(10, idle_timeout_ms=0),
        lambda: EventTimeWindow(10, clock="now"),
    ],
)
def test_bad_configs_raise_config_error(build):
    with pytest.raises(ConfigError):
        build()


def test_configs_are_frozen_and_accept_numpy_ints():
    window = CountWindow(np.int64(5))
    assert window.size == 5 and type(window.size) is int
    with pytest.raises(AttributeError):
        window.size = 6  # type: ignore[misc]


# ------------------------------------------------------------------ parsing
@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("count:1000", CountWindow(1000)),
        ("1000", CountWindow(1000)),
        (" COUNT : 7 ", CountWindow(7)),
        ("count:1000,max=250ms", CountWindow(1000, max_ms=250)),
        ("count:10, MAX=1.5s", CountWindow(10, max_ms=1_500)),
        ("processing:5s", ProcessingTimeWindow(5_000)),
        ("processing:250ms", ProcessingTimeWindow(250)),
        ("event:10s", EventTimeWindow(10_000)),
        ("event:10s,lateness=2s,idle=5s", EventTimeWindow(10_000, 2_000, 5_000)),
        ("event:1m, idle=1.5s", EventTimeWindow(60_000, 0, 1_500)),
        ("event:500ms,lateness=0s", EventTimeWindow(500, 0)),
    ],
)
def test_parse_window_accepts(spec, expected):
    assert parse_window(spec) == expected


def test_parse_window_passes_the_clock():
    clock = ManualClock()
    assert parse_window("processing:1s", clock=clock).clock is clock
    assert parse_window("event:1s,idle=2s", clock=clock).clock is clock
    assert parse_window("count:10,max=1s", clock=clock).clock is clock
    assert isinstance(parse_window("processing:1s").clock, SystemClock)


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "count:",
        "count:-1",
        "count:1.5",
        "count:5,idle=1s",
        "count:5,max",
        "count:5,max=1s,max=2s",
        "count:5,max=10",
        "processing:5",
        "processing:5h",
        "processing:5s,idle=1s",
        "event:",
        "event:10s,late=2s",
        "event:10s,idle",
        "event:10s,idle=-1s",
        "tumbling:5s",
        "five",
        "１２",
    ],
)
def test_parse_window_rejects_malformed_specs_showing_accepted_forms(spec):
    with pytest.raises(ConfigError, match="accepted window specs"):
        parse_window(spec)


@pytest.mark.parametrize(
    "spec",
    [
        "count:0",
        "count:10,max=0ms",
        "event:0s",
        "event:10s,idle=0ms",
        "event:1.0005s",
        "event:10s,idle=1s,idle=2s",
    ],
)
def test_parse_window_rejects_out_of_range_values(spec):
    with pytest.raises(ConfigError):
        parse_window(spec)


def test_parse_window_rejects_non_strings():
    with pytest.raises(ConfigError):
        parse_window(1000)  # type: ignore[arg-type]
