"""PollColumns: the columns of a poll agree with its records, and positions are one past each partition's last record."""

from __future__ import annotations

import numpy as np
import pytest

from stream.core.errors import BrokerUnavailableError
from stream.core.poll import PollColumns, as_columns
from stream.core.records import RawRecord, TopicPartition
from stream.testing.columns import FakeMessage, messages_from


def rec(topic: str, partition: int, offset: int, value: bytes | None = b"{}") -> RawRecord:
    return RawRecord(topic, partition, offset, 1_000 + offset, b"k", value)


def test_from_mapping_keeps_poll_order_and_the_records_themselves():
    a = [rec("t", 0, 5), rec("t", 0, 6)]
    b = [rec("u", 3, 40, b'{"x": 1}')]
    cols = PollColumns.from_mapping(
        {TopicPartition("t", 0): a, TopicPartition("t", 1): [], TopicPartition("u", 3): b}
    )
    assert len(cols) == 3
    assert cols.values == [b"{}", b"{}", b'{"x": 1}']
    assert cols.topic.tolist() == ["t", "t", "u"] and cols.partition.tolist() == [0, 0, 3]
    assert (
        cols.offset.tolist() == [5, 6, 40]
        and cols.offset.dtype == np.int64
        and cols.partition.dtype == np.int32
    )
    assert cols.timestamps().tolist() == [1_005, 1_006, 1_040]
    assert cols.record(2) is b[0] and cols.records() == a + b
    assert cols.next_positions() == {TopicPartition("t", 0): 7, TopicPartition("u", 3): 41}


def test_empty_polls_have_no_rows_and_no_positions():
    for cols in (
        PollColumns.from_mapping({}),
        PollColumns.from_mapping({TopicPartition("t", 0): []}),
        PollColumns.from_messages([]),
    ):
        assert len(cols) == 0 and cols.next_positions() == {} and cols.records() == []


def test_from_messages_takes_the_last_record_of_each_partition_in_arrival_order():
    arrived = [
        rec("t", 1, 10),
        rec("t", 0, 3),
        rec("u", 1, 7),
        rec("t", 1, 11),
        rec("t", 0, 4),
        rec("t", 1, 12),
    ]
    cols = PollColumns.from_messages(messages_from(arrived))
    assert cols.topic.tolist() == ["t", "t", "u", "t", "t", "t"]
    assert cols.partition.tolist() == [1, 0, 1, 1, 0, 1] and cols.offset.tolist() == [10, 3, 7, 11, 4, 12]
    assert cols.next_positions() == {
        TopicPartition("t", 0): 5,
        TopicPartition("t", 1): 13,
        TopicPartition("u", 1): 8,
    }
    assert cols.records() == arrived  # rebuilt as RawRecords on demand, equal field by field
    assert cols.timestamps().tolist() == [r.timestamp for r in arrived]
    assert cols.to_mapping() == {
        TopicPartition("t", 1): [arrived[0], arrived[3], arrived[5]],
        TopicPartition("t", 0): [arrived[1], arrived[4]],
        TopicPartition("u", 1): [arrived[2]],
    }


def test_as_columns_passes_columns_through():
    cols = PollColumns.from_messages(messages_from([rec("t", 0, 1)]))
    assert as_columns(cols) is cols
    assert as_columns({TopicPartition("t", 0): [rec("t", 0, 1)]}).values == [b"{}"]


class _Consumer:
    def __init__(self, messages):
        self.messages = messages

    def consume(self, num_messages, timeout):
        return self.messages[:num_messages]


def test_confluent_source_drops_partition_eof_and_raises_on_real_errors():
    ck = pytest.importorskip("confluent_kafka")
    from stream.sources.confluent import ConfluentKafkaSource
    from stream.sources.kafka import KafkaSourceConfig

    source = ConfluentKafkaSource(KafkaSourceConfig(bootstrap="127.0.0.1:1", topics=("t",)))
    eof = FakeMessage(rec("t", 0, 2), error=ck.KafkaError(ck.KafkaError._PARTITION_EOF))
    source._consumer = _Consumer([FakeMessage(rec("t", 0, 0)), eof, FakeMessage(rec("t", 0, 1))])
    cols = source.poll_columns(0, 10)
    assert cols.offset.tolist() == [0, 1] and cols.next_positions() == {TopicPartition("t", 0): 2}
    assert source.poll(0, 10) == {TopicPartition("t", 0): [rec("t", 0, 0), rec("t", 0, 1)]}

    source._consumer = _Consumer([FakeMessage(rec("t", 0, 0), error=ck.KafkaError(ck.KafkaError._TRANSPORT))])
    with pytest.raises(BrokerUnavailableError, match="while consuming"):
        source.poll_columns(0, 10)
