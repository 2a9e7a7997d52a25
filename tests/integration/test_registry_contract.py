"""One contract suite for every ModelRegistry: FileRegistry and RedisRegistry (real Redis container).

The file backend needs no services; the Redis cases use the session's Redis
container with a per-test key namespace.
"""

from __future__ import annotations

import threading
import time

import pytest
import torch

from serving.registry.base import ModelRegistry
from serving.registry.factory import open_registry
from serving.registry.file_backend import FileRegistry
from serving.registry.redis_backend import RedisRegistry
from serving.registry.versions import AuditEvent, Version
from stream.core.errors import ConfigError, RegistryError, RegistryUnavailableError, VersionNotFoundError

EVENT_DEADLINE_S = 60  # for a watcher thread to see a pointer move (a poll every 0.2 s)


@pytest.fixture(params=["file", "redis"])
def registry(request, tmp_path, unique_name) -> ModelRegistry:
    if request.param == "file":
        reg = FileRegistry(tmp_path / "registry", keep_states=5)
    else:
        url = request.getfixturevalue("redis_url")
        reg = RedisRegistry(url, namespace=unique_name, keep_states=5)
    yield reg
    reg.close()


def _draft(**kw) -> Version:
    return Version(number=0, **kw)


def _state(value: float) -> dict:
    return {"model": {"w": torch.full((3,), value)}, "n_learned": int(value)}


def test_implements_the_protocol(registry):
    assert isinstance(registry, ModelRegistry)


def test_empty_registry(registry):
    assert registry.current() is None
    assert registry.pointer() == (None, 0)
    assert registry.history() == []
    assert registry.events() == []
    with pytest.raises(VersionNotFoundError, match="no model version 7"):
        registry.get(7)


def test_publish_numbers_versions_and_keeps_metadata(registry):
    a = registry.publish(
        _state(1),
        _draft(
            parent=None,
            offsets={"t:0": (0, 99)},
            metrics={"holdout_accuracy": 0.8},
            events_learned=100,
            schema={"n_features": 3},
            learner="logistic",
        ),
    )
    b = registry.publish(_state(2), _draft(parent=a.number, offsets={"t:0": (0, 199)}))
    assert (a.number, b.number) == (1, 2)
    assert a.status == b.status == "candidate"
    got = registry.get(a.number)
    assert got.offsets == {"t:0": (0, 99)} and got.metrics == {"holdout_accuracy": 0.8}
    assert got.schema == {"n_features": 3} and got.events_learned == 100 and got.learner == "logistic"
    assert registry.get(b.number).parent == a.number
    assert [v.number for v in registry.history()] == [2, 1]
    assert [v.number for v in registry.history(limit=1)] == [2]
    # Publishing does not make anything current.
    assert registry.current() is None


def test_state_round_trips_without_pickle(registry):
    v = registry.publish(_state(3.5), _draft())
    back = registry.load_state(v.number)
    assert torch.equal(back["model"]["w"], torch.full((3,), 3.5)) and back["n_learned"] == 3


def test_validate_moves_the_pointer_and_bumps_the_generation(registry):
    a = registry.publish(_state(1), _draft())
    registry.validate(a.number, reason="first", metrics={"holdout_accuracy": 0.7})
    assert registry.current().number == a.number
    assert registry.current().status == "validated"
    assert registry.current().metrics["holdout_accuracy"] == 0.7
    gen1 = registry.pointer()[1]
    b = registry.publish(_state(2), _draft(parent=a.number))
    registry.validate(b.number)
    assert registry.pointer() == (b.number, gen1 + 1)


def test_reject_keeps_the_pointer(registry):
    a = registry.publish(_state(1), _draft())
    registry.validate(a.number)
    b = registry.publish(_state(2), _draft())
    rejected = registry.reject(b.number, reason="worse on holdout", metrics={"holdout_accuracy": 0.1})
    assert rejected.status == "rejected"
    assert registry.get(b.number).status == "rejected" and registry.get(b.number).note == "worse on holdout"
    assert registry.current().number == a.number


def test_rollback_to_previous_validated_and_named(registry):
    vs = []
    for i in range(3):
        v = registry.publish(_state(i), _draft())
        registry.validate(v.number)
        vs.append(v.number)
    gen = registry.pointer()[1]
    back = registry.rollback(reason="corrupted")
    assert back.number == vs[1]
    assert registry.pointer() == (vs[1], gen + 1)  # back in version, forward in generation
    assert registry.get(vs[2]).status == "rolled_back"
    registry.rollback(to=vs[0], reason="further")
    assert registry.current().number == vs[0]
    with pytest.raises(RegistryError, match="already the current version"):
        registry.rollback(to=vs[0])
    with pytest.raises(RegistryError, match="no validated version before"):
        registry.rollback()


def test_promote_serves_any_version_with_weights(registry):
    a = registry.publish(_state(1), _draft())
    registry.reject(a.number, reason="worse")
    promoted = registry.promote(a.number, reason="operator knows better")
    assert promoted.status == "validated" and registry.current().number == a.number
    with pytest.raises(VersionNotFoundError):
        registry.promote(99)


def test_old_weights_are_pruned_but_current_and_metadata_stay(registry):
    first = registry.publish(_state(0), _draft())
    registry.validate(first.number)
    for i in range(1, 9):
        registry.publish(_state(i), _draft())
    # keep_states=5: versions 2..4 lost their weights; 1 is current and kept.
    assert registry.load_state(first.number)["n_learned"] == 0
    with pytest.raises(RegistryError, match="no weights"):
        registry.load_state(2)
    with pytest.raises(RegistryError, match="no weights"):
        registry.promote(2)
    assert registry.get(2).number == 2  # metadata survives
    assert registry.load_state(9)["n_learned"] == 8


def test_audit_trail_records_every_transition(registry):
    a = registry.publish(_state(1), _draft())
    registry.validate(a.number, reason="ok")
    b = registry.publish(_state(2), _draft())
    registry.validate(b.number)
    registry.rollback(reason="bad batch")
    registry.record_event(AuditEvent("drift", b.number, reason="adwin", details={"window": [10, 20]}))
    kinds = [e.kind for e in registry.events()]
    assert kinds == ["drift", "rollback", "validate", "publish", "validate", "publish"]
    rollbacks = registry.events(kind="rollback")
    assert len(rollbacks) == 1 and rollbacks[0].details == {"from": b.number, "to": a.number}
    assert rollbacks[0].reason == "bad batch" and rollbacks[0].id
    assert len(registry.events(limit=2)) == 2
    assert registry.events(since=time.time() + 60) == []
    assert registry.events(kind="drift")[0].details == {"window": [10, 20]}
    # A time range: `until` is inclusive and cuts the newer events off.
    drift = registry.events(kind="drift")[0]
    before_drift = registry.events(until=drift.at - 1e-3)
    assert before_drift and drift.id not in [e.id for e in before_drift]
    assert registry.events(since=drift.at, until=drift.at)[0].id == drift.id
    assert registry.events(until=time.time() - 3600) == []
    # Evidence travels with a rollback: the drift policy's details join its audit event.
    registry.promote(b.number)
    registry.rollback(to=a.number, reason="policy", details={"automatic": True, "live": 0.4})
    assert registry.events(kind="rollback")[0].details == {
        "automatic": True,
        "live": 0.4,
        "from": b.number,
        "to": a.number,
    }


@pytest.mark.parametrize("huge", [1e308, float("inf"), 2.0**70, 1.8446744073709552e16])
def test_event_bounds_far_outside_the_clock_are_plain_comparisons(registry, huge):
    # Redis stream ids are unsigned 64-bit milliseconds: these bounds overflow or
    # fall outside them, and must still mean "everything" or "nothing".
    v = registry.publish(_state(1), _draft())
    registry.validate(v.number)
    every = [e.id for e in registry.events()]
    assert len(every) == 2
    assert [e.id for e in registry.events(since=-huge)] == every
    assert [e.id for e in registry.events(until=huge)] == every
    assert [e.id for e in registry.events(since=-huge, until=huge)] == every
    assert registry.events(since=huge) == []
    assert registry.events(until=-huge) == []
    assert registry.events(since=-1.0, until=0.0) == []  # before the epoch: nothing, and no error
    assert [e.id for e in registry.events(since=0.0)] == every


def test_a_nan_event_bound_is_a_config_error(registry):
    for bound in ({"since": float("nan")}, {"until": float("nan")}):
        with pytest.raises(ConfigError, match="NaN"):
            registry.events(**bound)


def test_live_metrics_document_is_replaced_whole(registry):
    assert registry.live() == {}
    registry.record_live({"versions": {"3": {"n": 10, "accuracy": 0.5}}, "updated_at": 1.0})
    registry.record_live({"versions": {"4": {"n": 2, "accuracy": 1.0}}, "updated_at": 2.0})
    assert registry.live() == {"versions": {"4": {"n": 2, "accuracy": 1.0}}, "updated_at": 2.0}


def test_subscribe_yields_each_pointer_move(registry):
    a = registry.publish(_state(1), _draft())
    stop = threading.Event()
    seen: list[tuple] = []
    ready = threading.Event()

    def watch():
        for pointer in registry.subscribe(poll_interval=0.2, stop=stop):
            seen.append(pointer)
            ready.set()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    assert ready.wait(EVENT_DEADLINE_S)
    registry.validate(a.number)
    deadline = time.monotonic() + EVENT_DEADLINE_S  # generous: the loop ends on the second pointer
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    thread.join(EVENT_DEADLINE_S)
    assert seen[0] == (None, 0)
    assert seen[1][0] == a.number


def test_open_registry_picks_the_backend(tmp_path):
    assert isinstance(open_registry(str(tmp_path / "r")), FileRegistry)
    assert isinstance(open_registry(f"file://{tmp_path / 'r2'}"), FileRegistry)
    assert isinstance(open_registry("redis://127.0.0.1:1/0"), RedisRegistry)
    with pytest.raises(ConfigError, match="unknown registry URL"):
        open_registry("s3://bucket/models")
    with pytest.raises(ConfigError, match="no registry"):
        open_registry("")


def test_unreachable_redis_is_a_clear_error():
    from stream.sources.embedded_broker import free_port

    reg = RedisRegistry(f"redis://:secret@127.0.0.1:{free_port()}/0", socket_timeout=0.5, retries=1)
    with pytest.raises(RegistryUnavailableError, match="unreachable") as info:
        reg.current()
    assert "secret" not in str(info.value)
    reg.close()


def test_file_registry_is_shared_between_processes_safely(tmp_path):
    """Two writers (daemon + operator) never get the same version number."""
    import multiprocessing as mp

    root = str(tmp_path / "shared")
    FileRegistry(root)
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        numbers = pool.map(_publish_some, [root] * 4)
    flat = [n for chunk in numbers for n in chunk]
    assert sorted(flat) == list(range(1, len(flat) + 1))


def _publish_some(root: str) -> list[int]:
    reg = FileRegistry(root)
    return [reg.publish({"w": torch.zeros(1)}, Version(number=0)).number for _ in range(5)]
