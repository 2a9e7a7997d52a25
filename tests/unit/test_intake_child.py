"""The intake process's side of ``--intake process``, run on a thread over a real pipe (no process started).

The test plays the learning process: it answers the child's assignment
question, asks for polls and checks what comes back -- positions, dead
letters, the codec state only when it changed -- and that a stop or a closed
pipe ends the child.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import threading

import orjson
import pytest

from stream.codec.json_codec import CodecConfig, JsonCodec
from stream.core.poll import PollColumns
from stream.core.records import RawRecord, TopicPartition
from stream.engine.intake_child import ChildSpec, serve
from stream.engine.intake_wire import ShippedPoll
from stream.testing.doubles import ListSource, make_records

pytestmark = pytest.mark.unit

TP = TopicPartition("test", 0)


def start_child(records, codec_config, *, codec_state=None, with_records=True):
    parent, child = multiprocessing.Pipe(duplex=True)
    stop = threading.Event()
    spec = ChildSpec(
        source_factory=functools.partial(ListSource, records),
        codec_config=codec_config,
        codec_state=codec_state,
        with_records=with_records,
        parent_pid=os.getppid(),  # the child runs on a thread here: its "parent" is this process's
    )
    thread = threading.Thread(target=serve, args=(child, stop, spec), daemon=True)
    thread.start()
    return parent, stop, thread


def ask(conn, *request):
    conn.send(request)
    return conn.recv()


def test_the_child_seeks_where_the_learning_process_says_and_ships_offsets_with_each_poll():
    records = make_records(30, n_features=2)
    conn, stop, thread = start_child(records, CodecConfig(n_features=2))
    kind, partitions = conn.recv()
    assert (kind, partitions) == ("assigned", [TP])
    conn.send(("positions", {TP: 10}))  # restored: 10 records were learned before
    assert conn.recv() == ("opened",)
    kind, shipped = ask(conn, "poll", 0, 8)
    assert kind == "batch" and isinstance(shipped, ShippedPoll)
    cols = shipped.columns()
    assert cols.offset.tolist() == list(range(10, 18))
    assert cols.next_positions() == {TP: 18}
    assert cols.decoded.events.ids.tolist() == [f"e{i}" for i in range(10, 18)]
    assert cols.record(0) == records[10]  # rebuilt for a duplicate's dead letter
    conn.send(("stop",))
    thread.join(5)
    assert not thread.is_alive()


def test_dead_letters_travel_with_their_batch_and_the_codec_state_only_when_it_changed():
    records = make_records(12, n_features=2, bad_every=4)
    codec_config = CodecConfig(n_features=None)  # the dimension locks on the first record: a state change
    conn, stop, thread = start_child(records, codec_config)
    conn.recv()
    conn.send(("positions", {}))
    conn.recv()
    _, first = ask(conn, "poll", 0, 6)
    _, second = ask(conn, "poll", 0, 6)
    inline = JsonCodec(codec_config)
    for shipped, rows in ((first, records[:6]), (second, records[6:])):
        expected = inline.decode(PollColumns.from_records(rows))
        assert [(d.record, d.reason) for d in shipped.decoded.dead_letters] == [
            (d.record, d.reason) for d in expected.dead_letters
        ]
        assert shipped.decoded.events.ids.tolist() == expected.events.ids.tolist()
    assert first.codec_state == inline.schema_info() and first.codec_state["n_features"] == 2
    assert second.codec_state is None  # unchanged: not sent again
    conn.send(("stop",))
    thread.join(5)


def test_a_new_label_ships_the_grown_label_map():
    rows = [
        RawRecord(
            "test", 0, i, i, None, orjson.dumps({"id": f"e{i}", "x": [i, 1], "y": f"c{min(i // 4, 2)}"})
        )
        for i in range(12)
    ]
    config = CodecConfig(n_features=2, n_classes=None)
    conn, stop, thread = start_child(rows, config)
    conn.recv()
    conn.send(("positions", {}))
    conn.recv()
    states = [ask(conn, "poll", 0, 4)[1].codec_state for _ in range(3)]
    assert [s["classes"] if s else None for s in states] == [["c0"], ["c0", "c1"], ["c0", "c1", "c2"]]
    conn.send(("stop",))
    thread.join(5)


def test_the_child_exits_when_the_pipe_closes():
    conn, stop, thread = start_child(make_records(5, n_features=2), CodecConfig(n_features=2))
    conn.recv()
    conn.send(("positions", {}))
    conn.recv()
    conn.close()  # the learning process died
    thread.join(5)
    assert not thread.is_alive()


def test_a_failure_in_the_child_is_shipped_as_the_error_it_raised():
    conn, stop, thread = start_child(make_records(5, n_features=2), CodecConfig(n_features=2))
    conn.recv()
    conn.send(("positions", {}))
    conn.recv()
    conn.send(("nonsense",))
    kind, error = conn.recv()
    assert kind == "raise" and "unexpected request 'nonsense'" in str(error)
    thread.join(5)
    assert not thread.is_alive()
