"""``--until-idle`` counts the known lag, and a broker outage is neither idleness nor a crash.

The engine runs on the shipped test doubles (:mod:`stream.testing.doubles`): a source
that stalls while records wait, and one whose broker goes away for some polls.
The Kafka sources' own outage bookkeeping is checked against fake clients.
"""

from __future__ import annotations

import io
import logging

import pytest
from redis.backoff import ExponentialBackoff

from learners.neural.learner import TorchLearner
from stream.codec.json_codec import CodecConfig, JsonCodec
from stream.core.errors import BrokerOutageError
from stream.engine.checkpoint import CheckpointStore
from stream.engine.loop import Engine, EngineConfig
from stream.engine.progress import ProgressPrinter, RunStats
from stream.sources.base import Outage
from stream.sources.kafka import KafkaSource, KafkaSourceConfig
from stream.sources.outage import OutageWatch
from stream.testing.doubles import ListSource, OutageSource, StallingSource, make_records
from stream.window.count import CountWindow

N = 200
N_FEATURES = 3
IDLE_S = 0.05
POLL_MS = 20  # each empty poll of the doubles sleeps this long, as a client's does


def engine_for(source, tmp_path, *, on_progress=None) -> Engine:
    return Engine(
        source=source,
        codec=JsonCodec(CodecConfig(n_features=N_FEATURES)),
        window=CountWindow(25),
        learner_builder=lambda d: TorchLearner(n_features=d, seed=1),
        store=CheckpointStore(tmp_path / "ckpt"),
        config=EngineConfig(
            until_idle_seconds=IDLE_S,
            ledger=True,
            poll_timeout_ms=POLL_MS,
            checkpoint_every_batches=2,
            progress_every_seconds=0.0,
        ),
        on_progress=on_progress,
    )


def assert_learned_each_once(engine: Engine, summary) -> None:
    ledger = engine.ledger
    assert ledger.ids() == {f"e{i}" for i in range(N)}
    assert not ledger.duplicated()
    assert summary.events_learned == N


# ------------------------------------------------------------- idle rule
@pytest.mark.parametrize("lag_known", [True, False], ids=["known-lag", "unknown-lag"])
def test_until_idle_does_not_stop_while_records_wait(tmp_path, lag_known):
    # 15 empty polls of 20 ms: the quiet time passes the 50 ms idle period six
    # times over while the lag is 200 (or unknown, as before an assignment).
    source = StallingSource(
        make_records(N, n_features=N_FEATURES), stall_polls=15, lag_known=lag_known, batch_size=37
    )
    engine = engine_for(source, tmp_path)
    summary = engine.run()
    assert source.polls > 15
    assert summary.stopped_because == f"idle for {IDLE_S:g}s"
    assert_learned_each_once(engine, summary)
    assert summary.outage is None


def test_until_idle_stops_once_the_lag_is_known_to_be_zero(tmp_path):
    engine = engine_for(ListSource(make_records(N, n_features=N_FEATURES), batch_size=37), tmp_path)
    summary = engine.run()
    assert summary.stopped_because == f"idle for {IDLE_S:g}s"
    assert engine.source.lag() == 0
    assert_learned_each_once(engine, summary)


def test_progress_line_never_shows_an_unknown_lag_as_zero():
    out = io.StringIO()
    stats = RunStats(events_learned=10, lag=None, outage="broker unreachable for 12s, retrying")
    ProgressPrinter(out)(stats)
    line = out.getvalue()
    assert "lag ?" in line and "lag 0" not in line
    assert "broker unreachable for 12s, retrying" in line


# --------------------------------------------------------------- outages
def test_a_reported_outage_is_not_idleness_and_learning_resumes_exactly_once(tmp_path, caplog):
    # Polls 3..22 (~0.4 s) find the broker gone mid-stream, far longer than the idle period.
    source = OutageSource(make_records(N, n_features=N_FEATURES), down=range(3, 23), batch_size=37)
    notes = []
    engine = engine_for(source, tmp_path, on_progress=lambda stats: notes.append(stats.outage))
    with caplog.at_level(logging.WARNING, logger="stream.engine.loop"):
        summary = engine.run()
    assert source.polls > 22, "stopped during the outage"
    assert_learned_each_once(engine, summary)
    assert summary.stopped_because == f"idle for {IDLE_S:g}s"
    assert summary.outage.count == 1 and not summary.outage.ongoing
    assert summary.outage.seconds >= 0.3
    assert summary.outage.last_cause == "test outage: connection refused"
    assert any(n and n.startswith("broker unreachable for ") and n.endswith("s, retrying") for n in notes)
    assert notes[-1] is None  # the final line: the broker answers again
    messages = [r.getMessage() for r in caplog.records]
    assert any("broker unreachable (test outage: connection refused)" in m for m in messages)
    assert any(m.startswith("broker reachable again after") for m in messages)
    # The last checkpoint holds everything, once.
    ckpt = CheckpointStore(tmp_path / "ckpt").latest()
    assert ckpt.counters["events_learned"] == N


class _Recorded:
    """A backoff that records what it computed."""

    def __init__(self, inner):
        self.inner, self.delays = inner, []

    def compute(self, failures: int) -> float:
        self.delays.append(self.inner.compute(failures))
        return self.delays[-1]


class _FakeTime:
    """A clock that only sleep() moves: waits cost no real time and are summed."""

    def __init__(self):
        self.now, self.slept = 0.0, 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0, "a zero sleep would be a busy loop"
        self.now += seconds
        self.slept += seconds


def test_a_poll_that_raises_is_retried_after_a_growing_backoff_not_in_a_tight_loop(tmp_path):
    source = OutageSource(
        make_records(N, n_features=N_FEATURES), down=range(3, 9), raises=True, batch_size=37
    )
    backoff = _Recorded(ExponentialBackoff(cap=4.0, base=0.5))
    fake = _FakeTime()
    engine = engine_for(source, tmp_path)
    summary = engine.run(outage_watch=OutageWatch(retry_backoff=backoff, clock=fake, sleep=fake.sleep))
    assert backoff.delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]  # six failed polls, each waited out
    assert fake.slept == pytest.approx(sum(backoff.delays))
    assert summary.outage.count == 1 and not summary.outage.ongoing
    assert_learned_each_once(engine, summary)


def test_a_stop_request_cuts_a_backoff_wait_short(tmp_path):
    source = OutageSource(make_records(N, n_features=N_FEATURES), down=range(2, 10_000), raises=True)
    fake = _FakeTime()
    engine = engine_for(source, tmp_path)

    def sleep(seconds):
        fake.sleep(seconds)
        if fake.slept >= 1.0:
            engine.request_stop("SIGTERM (test)")

    summary = engine.run(
        outage_watch=OutageWatch(retry_backoff=ExponentialBackoff(cap=600, base=60), clock=fake, sleep=sleep)
    )
    assert summary.stopped_because == "SIGTERM (test)"
    assert 1.0 <= fake.slept < 1.2  # not the 60 s the backoff asked for
    assert summary.outage.ongoing
    assert "still unreachable at the stop" in summary.outage.describe()


def test_outage_warnings_are_spaced_out_however_long_it_lasts(caplog):
    watch = OutageWatch()
    outage = Outage(since=0.0, cause="connection refused")
    with caplog.at_level(logging.WARNING, logger="stream.engine.loop"):
        for tick in range(2_000):  # 200 s of 100 ms loop turns
            watch.observe(outage, now=tick / 10)
        watch.observe(None, now=200.0)
    messages = [r.getMessage() for r in caplog.records]
    # Begins, reminds at 30 s and 90 s (then 210 s: past the end), ends.
    assert len(messages) == 4, messages
    assert messages[0].startswith("broker unreachable (connection refused)")
    assert messages[1].startswith("broker still unreachable after 30s")
    assert (
        messages[-1] == "broker reachable again after 200s; learning resumes from the checkpointed positions"
    )
    assert watch.summary(now=200.0).seconds == pytest.approx(200.0)


# ---------------------------------------------- KafkaSource bookkeeping
class _FakeKafkaConsumer:
    """The few kafka-python calls KafkaSource makes after open()."""

    def __init__(self):
        self.connections = 1
        self.records: dict = {}
        self.assigned: set = set()
        self.commits = []

    def poll(self, timeout_ms, max_records):
        records, self.records = self.records, {}
        return records

    def metrics(self):
        return {"consumer-metrics": {"connection-count": float(self.connections)}}

    def assignment(self):
        return set(self.assigned)

    def highwater(self, tp):
        return 10

    def position(self, tp, timeout_ms=None):
        return 4

    def commit(self, offsets, timeout_ms=None):
        self.commits.append((offsets, timeout_ms))


def _kafka_source(now):
    source = KafkaSource(
        KafkaSourceConfig(bootstrap="127.0.0.1:1", topics=("t",), group_id="g"), clock=lambda: now[0]
    )
    source._consumer = consumer = _FakeKafkaConsumer()
    return source, consumer


def test_kafka_source_lag_is_unknown_before_assignment_and_while_disconnected():
    from kafka import TopicPartition as KafkaTP

    now = [0.0]
    source, consumer = _kafka_source(now)
    assert source.lag() is None  # no partitions yet: not "lag 0"
    consumer.assigned = {KafkaTP("t", 0)}
    assert source.lag() == 6
    consumer.connections = 0
    source.poll(0, 10)
    assert source.lag() is None and source.outage() is None  # unknown at once, an outage after the grace


def test_kafka_source_declares_an_outage_after_the_grace_and_ends_it_on_reconnect():
    from kafka import TopicPartition as KafkaTP

    from stream.core.records import TopicPartition

    now = [100.0]
    source, consumer = _kafka_source(now)
    consumer.assigned = {KafkaTP("t", 0)}
    consumer.connections = 0
    source.poll(0, 10)
    now[0] = 101.0
    source.poll(0, 10)
    assert source.outage() is None
    now[0] = 102.5
    source.poll(0, 10)
    outage = source.outage()
    assert outage.since == 100.0
    assert outage.cause.startswith("127.0.0.1:1: ")  # the connect attempt's own words
    with pytest.raises(BrokerOutageError):
        source.commit({TopicPartition("t", 0): 4})
    source.commit({TopicPartition("t", 0): 4})  # said once (the engine logs it), then skipped quietly
    assert consumer.commits == []  # nothing sent: a sync commit would wait for a coordinator that is gone
    consumer.connections = 1
    now[0] = 103.0
    source.poll(0, 10)
    assert source.outage() is not None  # one look is not enough: a refused attempt counts while it lasts
    now[0] = 103.5
    source.poll(0, 10)
    assert source.outage() is None and source.lag() == 6
    source.commit({TopicPartition("t", 0): 4})
    assert consumer.commits and consumer.commits[0][1] is not None  # commits are bounded in time


# ----------------------------------------- ConfluentKafkaSource bookkeeping
class _FakeError:
    def __init__(self, code, text):
        self._code, self._text = code, text

    def code(self):
        return self._code

    def str(self):
        return self._text


def test_confluent_source_tracks_all_brokers_down_and_probes_with_backoff():
    ck = pytest.importorskip("confluent_kafka")
    from stream.sources.confluent import ConfluentKafkaSource

    now = [0.0]
    probes = []

    class FakeConsumer:
        up = False

        def consume(self, num_messages, timeout):
            return []

        def list_topics(self, topic=None, timeout=None):
            probes.append(now[0])
            if not self.up:
                raise ck.KafkaException(ck.KafkaError(ck.KafkaError._TRANSPORT))

        def assignment(self):
            return [ck.TopicPartition("t", 0)]

    source = ConfluentKafkaSource(
        KafkaSourceConfig(bootstrap="127.0.0.1:1", topics=("t",)),
        backoff=ExponentialBackoff(cap=4.0, base=1.0),
        clock=lambda: now[0],
    )
    source._consumer = consumer = FakeConsumer()
    source._on_error(_FakeError(ck.KafkaError._TRANSPORT, "127.0.0.1:1/bootstrap: Connection refused"))
    assert source.outage() is None  # one broker's connection failing is not an outage
    source._on_error(_FakeError(ck.KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    assert source.outage().cause == "127.0.0.1:1/bootstrap: Connection refused"
    assert source.lag() is None
    fail = logging.LogRecord(
        "x", logging.ERROR, "", 0, "%s [%s] %s", ("FAIL", "rdkafka#consumer-1", "refused"), None
    )
    assert not source._log_filter.filter(fail)  # librdkafka's ~20 lines a second are not repeated
    for t in [0.5, 1.0, 2.5, 3.0, 4.5, 6.9, 7.0]:
        now[0] = t
        source.poll_columns(10, 10)
    assert probes == [1.0, 3.0, 7.0]  # 1 s, then 2 s, then 4 s apart: no probe per poll
    consumer.up = True
    now[0] = 11.0
    source.poll_columns(10, 10)
    assert source.outage() is None
    assert not source._log_filter.filter(fail)  # lines queued before the probe succeeded stay unsaid...
    source.poll_columns(10, 10)  # ...until a consume() has handed them over
    assert source._log_filter.filter(fail)  # outside an outage, librdkafka speaks for itself
