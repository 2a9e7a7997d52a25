"""``streamlearn predict``'s parts in process: reading feature records, predicting a poll as the API would, the loop.

The loop runs on the shipped in-memory source (:class:`~stream.testing.doubles.ListSource`)
and :class:`~stream.sources.prediction_stream.MemoryProducer`; the broker-backed
runs are in tests/e2e/test_predict_cli.py.
"""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

from learners.neural.learner import TorchLearner
from serving.api.hot_swap import ModelSlot
from serving.api.model import ServedModel
from serving.api.predict import answer_batch
from serving.registry.versions import Version
from serving.stream_predict import FeatureRow, output_record, predict_rows, read_feature
from stream.core.deadletter import CountingSink
from stream.core.features import FeatureSchema, FieldSpec
from stream.core.feedback import decode_prediction
from stream.core.records import RawRecord, TopicPartition
from stream.sources.prediction_stream import (
    MemoryProducer,
    PositionsFile,
    PredictionStream,
    PredictionStreamConfig,
    ProduceError,
)
from stream.testing.doubles import ListSource


def served(number: int = 1, n_features: int = 2, seed: int = 0, **schema) -> ServedModel:
    import torch

    torch.manual_seed(seed)
    learner = TorchLearner(n_features=n_features, device="cpu")
    return ServedModel.from_state(Version(number=number, schema=schema), learner.state_dict())


def rec(
    value, offset: int = 0, key: bytes | None = None, timestamp: int = 1000, partition: int = 0
) -> RawRecord:
    raw = value if isinstance(value, bytes) or value is None else orjson.dumps(value)
    return RawRecord("features", partition, offset, timestamp, key, raw)


# ------------------------------------------------------------------ reading a record
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "empty value: record has no payload"),
        (b"[1, 2]", "bad json: expected an object, got list"),
        ({"id": "a"}, "missing features: no 'x' field"),
        ({"id": "a", "x": "1,2"}, "bad row: x: Input should be a valid"),
        ({"id": "a", "x": [1, True]}, "bad row: x.1: Input should be a valid number"),
        ({"id": "a", "x": [1, 1e39]}, "bad row: x.1: Input should be a number finite in float32"),
        ({"id": True, "x": [1, 2]}, "bad id: must be a string or an integer, got bool"),
        ({"id": "a" * 201, "x": [1, 2]}, "bad id: must be 1 to 200 characters, got 201"),
    ],
)
def test_an_unreadable_record_has_a_reason(value, reason):
    got = read_feature(rec(value))
    assert isinstance(got, str) and got.startswith(reason), got


def test_a_record_without_id_or_ts_takes_its_position_and_kafka_time():
    row = read_feature(rec({"x": [1, 2], "y": 1}, offset=9, timestamp=1234))
    assert (row.id, row.x, row.ts) == ("features:0:9", [1.0, 2.0], 1234)
    row = read_feature(rec({"id": 7, "x": {"a": "b"}, "ts": 55}, timestamp=-1))
    assert (row.id, row.x, row.ts) == ("7", {"a": "b"}, 55)
    assert read_feature(rec({"id": "n", "x": [1]}, timestamp=-1), now_ms=99).ts == 99
    # ISO-8601 as `run` reads it; an unreadable ts does not cost the prediction: the Kafka time stands in.
    assert read_feature(rec({"x": [1], "ts": "2023-11-14T22:13:20+00:00"})).ts == 1_700_000_000_000
    assert read_feature(rec({"x": [1], "ts": "yesterday"}, timestamp=77)).ts == 77
    assert read_feature(rec({"x": [1], "ts": True}, timestamp=78)).ts == 78


# ------------------------------------------------------------------ predicting a poll
def rows_of(xs) -> list[FeatureRow]:
    return [FeatureRow(f"r{i}", x, i, rec({"x": x}, offset=i)) for i, x in enumerate(xs)]


def test_a_poll_is_predicted_as_the_api_predicts_its_rows():
    model = served(4, classes=["no", "yes"])
    xs = [[0.1, 0.2], [3.0, -1.0], [0.0, 0.0], [-2.5, 7.0]]
    out = predict_rows(model, rows_of(xs))
    api = json.loads(answer_batch(orjson.dumps({"rows": xs}), lambda: model, max_rows=100))
    assert not out.rejected
    assert [p.prediction for _, p in out.answered] == api["predictions"]
    assert np.allclose([p.probabilities for _, p in out.answered], api["probabilities"])
    assert {(p.version, tuple(p.classes)) for _, p in out.answered} == {(4, ("no", "yes"))}
    assert [p.x for _, p in out.answered] == xs and [p.ts for _, p in out.answered] == [0, 1, 2, 3]


def test_a_row_the_model_cannot_take_is_rejected_alone_with_the_api_message():
    model = served(2)
    out = predict_rows(model, rows_of([[1.0, 2.0], [1.0, 2.0, 3.0], {"a": 1.0}, [0.5, 0.5]]))
    assert [row.id for row, _ in out.answered] == ["r0", "r3"]
    assert [(letter.record.offset, letter.reason) for letter in out.rejected] == [
        (1, "bad row: expected 2 features, got 3 (model version 2)"),
        (2, "bad row: this model (version 2) has unnamed features: send x as a list of 2 numbers"),
    ]


def test_named_fields_are_checked_by_the_version_schema_with_the_api_messages():
    schema = FeatureSchema((FieldSpec("amount"), FieldSpec("country", "categorical")))
    learner = TorchLearner(n_features=schema.width, device="cpu")
    version = Version(number=5, schema={"n_features": schema.width, "features": schema.to_dict()})
    model = ServedModel.from_state(version, learner.state_dict())
    out = predict_rows(
        model, rows_of([{"amount": 3.5, "country": "FR"}, {"amount": "lots"}, {"country": "DE"}])
    )
    assert [row.id for row, _ in out.answered] == ["r0"]
    wrong_kind, missing = (letter.reason for letter in out.rejected)
    assert wrong_kind == "bad row: expected a number, got str 'lots' (field amount)"
    # A plain model does not impute a missing field: the API's 422 message, as the reason.
    assert "does not impute the missing fields ['amount']" in missing


def test_a_regression_model_logs_values_without_probabilities():
    import torch

    torch.manual_seed(0)
    learner = TorchLearner(n_features=2, task="regression", device="cpu")
    model = ServedModel.from_state(Version(number=1), learner.state_dict())
    (_, p), *_ = predict_rows(model, rows_of([[1.0, 2.0]])).answered
    assert isinstance(p.prediction, float) and p.probabilities is None and p.classes is None


class NanOnRow1:
    """An inference model whose output is not finite for the second row."""

    n_features = 2
    classification = True

    def predict(self, X):
        proba = np.full((len(X), 2), 0.5, np.float32)
        proba[1] = np.nan
        return np.zeros(len(X), np.int64), proba


def test_a_row_with_no_finite_output_is_rejected_and_the_others_answered():
    model = ServedModel(Version(number=3), NanOnRow1())
    out = predict_rows(model, rows_of([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    assert [row.id for row, _ in out.answered] == ["r0", "r2"]
    assert out.rejected[0].reason.startswith("bad row: model version 3 overflows on this row")


def test_the_output_is_keyed_by_the_input_key_else_the_id_and_decodes_as_the_prediction_log():
    model = served(1)
    keyed = FeatureRow("a", [1.0, 2.0], 5, rec({"x": [1, 2]}, key=b"user-9"))
    keyless = FeatureRow("b", [1.0, 2.0], 6, rec({"x": [1, 2]}))
    out = predict_rows(model, [keyed, keyless])
    (k1, v1), (k2, v2) = (output_record(*pair) for pair in out.answered)
    assert (k1, k2) == (b"user-9", b"b")
    assert decode_prediction(v1) == out.answered[0][1] and decode_prediction(v2).id == "b"


# ------------------------------------------------------------------ the loop
def feature_records(n: int, start: int = 0, partitions: int = 2) -> list[RawRecord]:
    return [
        rec({"id": f"r{i}", "x": [i / 10, 1.0]}, offset=i // partitions, partition=i % partitions)
        for i in range(start, start + n)
    ]


def loop_of(source, slot, tmp_path, producer=None, **config):
    config = {"output_topic": "preds", "until_idle_s": 0.0, **config}
    return PredictionStream(
        source,
        producer or MemoryProducer(),
        slot,
        PredictionStreamConfig(**config),
        positions=PositionsFile(tmp_path, "preds"),
        dead_letters=CountingSink(None),
    )


def slot_of(model: ServedModel) -> ModelSlot:
    slot = ModelSlot()
    slot.swap(model, 0)
    return slot


def test_a_restart_resumes_at_the_saved_positions_none_skipped_none_twice(tmp_path):
    records = feature_records(40)
    first = MemoryProducer()
    summary = loop_of(ListSource(records[:30], batch_size=7), slot_of(served()), tmp_path, first).run()
    assert summary.predicted == 30 and summary.stopped_because == "idle"
    assert PositionsFile(tmp_path, "preds").load() == {
        TopicPartition("features", 0): 15,
        TopicPartition("features", 1): 15,
    }
    second = MemoryProducer()
    loop_of(ListSource(records, batch_size=7), slot_of(served()), tmp_path, second).run()
    ids = [decode_prediction(value).id for _, _, value in first.sent + second.sent]
    assert sorted(ids) == sorted(f"r{i}" for i in range(40))


def test_bad_records_are_dead_lettered_counted_and_committed_past(tmp_path):
    records = [
        *feature_records(4, partitions=1),
        rec(b"{oops", offset=4),
        rec({"id": "w", "x": [1]}, offset=5),
    ]
    loop = loop_of(ListSource(records), slot_of(served()), tmp_path)
    summary = loop.run()
    assert (summary.read, summary.predicted) == (6, 4)
    assert summary.dead_letters == {"bad json": 1, "bad row": 1}
    assert PositionsFile(tmp_path, "preds").load() == {TopicPartition("features", 0): 6}


class FailingFuture:
    is_done = True
    exception = RuntimeError("MessageSizeTooLarge")

    def failed(self) -> bool:
        return True


class RefusingProducer(MemoryProducer):
    def send(self, topic, value, key=None):
        super().send(topic, value, key)
        return FailingFuture()


def test_a_refused_send_commits_nothing(tmp_path):
    loop = loop_of(ListSource(feature_records(5)), slot_of(served()), tmp_path, RefusingProducer())
    with pytest.raises(ProduceError, match="refused a prediction .*MessageSizeTooLarge"):
        loop.run()
    assert PositionsFile(tmp_path, "preds").load() == {}


class SwappingSource(ListSource):
    """Swaps version 2 into the slot before its third poll."""

    def __init__(self, records, slot, model, **kw):
        super().__init__(records, **kw)
        self.slot, self.model = slot, model

    def poll(self, timeout_ms, max_records):
        if self._polls == 2:
            self.slot.swap(self.model, 1)
        return super().poll(timeout_ms, max_records)


def test_a_swapped_version_predicts_the_polls_after_it(tmp_path):
    slot = slot_of(served(1))
    producer = MemoryProducer()
    source = SwappingSource(feature_records(30, partitions=1), slot, served(2, seed=1), batch_size=10)
    summary = loop_of(source, slot, tmp_path, producer).run()
    versions = [decode_prediction(value).version for _, _, value in producer.sent]
    assert versions == [1] * 20 + [2] * 10 and dict(summary.by_version) == {1: 20, 2: 10}


def test_a_stop_while_waiting_for_a_first_version_opens_nothing(tmp_path):
    source = ListSource(feature_records(3))
    loop = loop_of(source, ModelSlot(), tmp_path)
    loop.request_stop("received SIGTERM")
    summary = loop.run()
    assert summary.stopped_because == "received SIGTERM" and summary.read == 0 and not source.closed


def test_a_torn_positions_file_is_a_clear_error(tmp_path):
    (tmp_path / "positions-preds.json").write_text("{not json")
    with pytest.raises(Exception, match="cannot read the positions file .*delete it to start over"):
        PositionsFile(tmp_path, "preds").load()


# ------------------------------------------------------------------ the command's mistakes
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--topic", "f"], "name the topic the predictions go to: --to TOPIC"),
        (["--to", "p"], "name the features topic: --topic TOPIC"),
        (["--topic", "f", "--to", "f"], "--to 'f' is also a --topic"),
        (["--topic", "f", "--to", "p", "--exactly-once"], "--exactly-once commits the offsets"),
        (["--topic", "f", "--to", "p", "--registry", "none"], "predict needs a registry"),
        (
            ["--topic", "f", "--to", "p", "--registry", "no/such/dir"],
            "registry directory 'no/such/dir' does not",
        ),
    ],
)
def test_a_predict_mistake_is_one_line_and_exit_2(args, message, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from stream.cli.main import main

    monkeypatch.chdir(tmp_path)
    ran = CliRunner().invoke(main, ["predict", "--bootstrap", "127.0.0.1:1", *args])
    assert ran.exit_code == 2, ran.output
    lines = ran.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamlearn: error: ") and message in lines[0], ran.output


class TransactionalProducer(MemoryProducer):
    """Records the order of the transaction's steps in ``events`` (shared with the dead-letter sink)."""

    def __init__(self, events: list[str]) -> None:
        super().__init__()
        self.events = events

    def begin_transaction(self) -> None:
        self.events.append("begin")

    def send_offsets_to_transaction(self, offsets, group) -> None:
        self.events.append("offsets")

    def commit_transaction(self) -> None:
        self.events.append("commit")

    def abort_transaction(self) -> None:
        self.events.append("abort")


class OrderedSink(CountingSink):
    def __init__(self, events: list[str]) -> None:
        super().__init__(None)
        self.events = events

    def send(self, letters) -> None:
        letters = list(letters)
        if letters:
            self.events.append("dead letters")
        super().send(letters)

    def flush(self) -> None:
        self.events.append("flush dead letters")
        super().flush()


def test_with_a_transaction_dead_letters_are_flushed_before_the_offsets_commit(tmp_path):
    # After the commit a restart never reads the poll again: its dead letters must be out already.
    events: list[str] = []
    records = [*feature_records(3, partitions=1), rec(b"{oops", offset=3)]
    loop = PredictionStream(
        ListSource(records),
        TransactionalProducer(events),
        slot_of(served()),
        PredictionStreamConfig(output_topic="preds", until_idle_s=0.0, transactional_group="g"),
        positions=PositionsFile(tmp_path, "preds"),
        dead_letters=OrderedSink(events),
    )
    loop.run()
    assert events[:5] == ["begin", "dead letters", "flush dead letters", "offsets", "commit"]
