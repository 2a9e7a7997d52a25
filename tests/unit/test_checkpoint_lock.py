"""One engine per checkpoint directory: a second store or engine on it fails with a named error.

Across processes (the lock dies with its holder, a second daemon is refused) in
tests/e2e/test_checkpoint_lock_processes.py.
"""

from __future__ import annotations

import os

import pytest

from learners.neural.learner import TorchLearner
from stream.codec.json_codec import CodecConfig, JsonCodec
from stream.core.errors import CheckpointLockedError, SchemaMismatchError
from stream.core.poll import as_columns
from stream.engine.checkpoint import CheckpointStore
from stream.engine.loop import Engine, EngineConfig
from stream.testing.doubles import ListSource, make_records
from stream.window.count import CountWindow


def engine_on(directory, records, n_features: int = 3) -> Engine:
    return Engine(
        source=ListSource(records, batch_size=100),
        codec=JsonCodec(CodecConfig(n_features=n_features)),
        window=CountWindow(50),
        learner_builder=lambda d: TorchLearner(n_features=d),
        store=CheckpointStore(directory),
        config=EngineConfig(until_idle_seconds=0, ledger=True),
    )


def test_a_second_store_on_a_locked_directory_is_refused_with_the_directory_and_pid(tmp_path):
    first = CheckpointStore(tmp_path / "ck")
    first.lock()
    first.lock()  # the holder may lock again (the CLI locks before the engine starts)
    with pytest.raises(
        CheckpointLockedError,
        match=rf"{tmp_path / 'ck'} is in use by pid {os.getpid()} "
        r"\(this process\).*its own --checkpoint-dir",
    ):
        CheckpointStore(tmp_path / "ck").lock()
    first.unlock()
    first.unlock()  # idempotent
    second = CheckpointStore(tmp_path / "ck")
    second.lock()
    assert second.locked and not first.locked
    second.unlock()


def test_a_second_engine_on_one_directory_fails_and_the_first_learns_everything(tmp_path):
    records = make_records(400, n_features=3)
    first = engine_on(tmp_path, records)
    first.start()
    with pytest.raises(CheckpointLockedError, match="in use by pid"):
        engine_on(tmp_path, records).run()
    # The first engine goes on, driven step by step as stream.replay.driver drives its engines.
    while first.source.lag():
        first.feed(as_columns(first.source.poll(0, 100)))
    first.end_of_input()
    summary = first.finish("end of input")
    assert summary.events_learned == 400
    # The lock went with the first engine: a later one resumes from its checkpoint.
    again = engine_on(tmp_path, records).run()
    assert again.events_learned == 400 and again.events_read_this_run == 0
    ledger = CheckpointStore(tmp_path).latest().ledger
    assert len(ledger["ids"]) == 400 and max(ledger["counts"]) == 1


def test_an_engine_that_fails_to_start_releases_the_lock(tmp_path):
    engine_on(tmp_path, make_records(100, n_features=3)).run()
    with pytest.raises(SchemaMismatchError):
        engine_on(tmp_path, make_records(100, n_features=4), n_features=4).run()
    store = CheckpointStore(tmp_path)
    store.lock()  # nothing left holding it
    store.unlock()
