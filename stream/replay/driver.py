"""Backtests: the engine of ``streamlearn run`` over a historical range, for several configurations at once.

:class:`Backtest` reads a bounded source once -- a Kafka offset/time range
(:class:`~stream.sources.range.KafkaRangeSource`) or files
(:class:`~stream.sources.files.FileSource`) -- and feeds every poll to one
:class:`~stream.engine.loop.Engine` per configuration. Each engine is the daemon's
own: codec, window, learner, drift policy and validation gate, driven through
``start`` / ``feed`` / ``end_of_input`` / ``finish`` exactly as ``run()``
drives itself. What differs is only what a backtest must not touch or depend
on:

- nothing is committed to Kafka and nothing is published to the production
  registry: each configuration gets a scratch registry and checkpoint
  directory under the output directory (so a backtested version can still be
  served or inspected);
- time is the data's (:class:`~stream.core.clock.DataClock`, the newest record
  timestamp) and the gate is paced in batches, so results are the same on
  every run for a given seed.

Per-window metrics come from an engine observer
(:class:`~stream.replay.metrics.WindowMetrics`); :meth:`Backtest.run`
returns the result dict that :mod:`stream.replay.report` renders.

Examples
--------
>>> import os, tempfile
>>> from stream.sources.files import FileSource
>>> from stream.sources.produce import synthetic_rows
>>> from stream.replay.config import ReplayConfig
>>> import orjson
>>> d = tempfile.mkdtemp(); path = os.path.join(d, "sea.jsonl")
>>> with open(path, "wb") as f:
...     _ = f.write(b"\\n".join(orjson.dumps(r) for r in synthetic_rows("sea", 3000, seed=1)))
>>> base = ReplayConfig.base(window="count:500")
>>> result = Backtest(FileSource([path]), [base], os.path.join(d, "out"), progress=False).run()
>>> cfg = result["configs"][0]
>>> result["read"]["records"], cfg["summary"]["events"], len(cfg["windows"]["accuracy"])
(3000, 3000, 6)
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from datetime import datetime, timezone
from typing import Any, Mapping, Protocol, Sequence

from stream.codec.json_codec import CodecConfig
from stream.core.clock import DataClock
from stream.core.errors import ConfigError, StreamlearnError
from stream.core.poll import as_columns
from stream.core.records import TopicPartition
from stream.engine.config import EngineConfig
from stream.engine.loop import Engine
from stream.engine.spec import (
    CheckpointSpec,
    EngineSpec,
    RegistrySpec,
    SourceSpec,
    without_checkpoint_cadence,
)
from stream.replay.config import ReplayConfig
from stream.replay.metrics import WindowMetrics
from stream.sources.base import Bounded, HasRanges, NoPositions, Source, source_extras

log = logging.getLogger(__name__)

__all__ = ["Backtest", "BoundedSource", "FeedSource"]

_MARKER = ".streamlearn-replay"
# A backtest that gets no record for this long although its range is not
# finished has lost its broker: fail with where it stopped rather than hang.
_STALL_SECONDS = 60.0


class FeedSource:
    """An engine's source when a driver feeds it: it only announces the partitions.

    The driver reads the real source once and calls ``engine.feed(poll)`` for
    every engine; this object satisfies the engine's
    :class:`~stream.sources.base.Source` side (assignment, commit, lag).
    """

    def __init__(self, partitions: Sequence[TopicPartition], lag=lambda: None) -> None:
        self.partitions = list(partitions)
        self._lag = lag

    def open(self, handler) -> None:
        positions = handler.on_assigned(self.partitions)
        if positions:
            # The driver reads one range for every engine; a resumed engine would need its own.
            raise ConfigError(
                "a backtest starts from scratch, but this configuration's directory holds a "
                "checkpoint; use a new --out directory"
            )

    def poll(self, timeout_ms: int, max_records: int):
        return {}

    def commit(self, positions) -> None:
        """Nothing to commit: a backtest never touches consumer groups."""

    def lag(self) -> int | None:
        return self._lag()

    def close(self) -> None:
        pass


class BoundedSource(Source, Bounded, Protocol):
    """What a backtest reads: a :class:`~stream.sources.base.Source` with an end (:class:`~stream.sources.base.Bounded`).

    :class:`~stream.sources.range.KafkaRangeSource` and
    :class:`~stream.sources.files.FileSource` are the two; a
    ``poll_columns`` method (:class:`~stream.sources.base.ColumnPolling`) is
    used when the source has one.
    """


def prepare_out_dir(path: str) -> None:
    """Create ``path`` for a backtest; reuse it only if an earlier backtest made it (then its runs are replaced)."""
    if os.path.isdir(path) and os.listdir(path):
        if not os.path.exists(os.path.join(path, _MARKER)):
            raise ConfigError(
                f"--out {path!r} exists and was not made by `streamlearn replay`; choose a new "
                "directory (nothing was written)"
            )
        shutil.rmtree(os.path.join(path, "configs"), ignore_errors=True)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, _MARKER), "w") as f:
        f.write("made by streamlearn replay; safe to delete\n")


class Backtest:
    """One read of ``source`` fed to one engine per configuration; see the module docstring.

    ``source`` is a :class:`~stream.sources.range.KafkaRangeSource` or a
    :class:`~stream.sources.files.FileSource`; ``source_info`` is what the
    report shows about it (topics, specs). ``progress`` draws a progress bar
    with ETA on stderr. ``decode`` is how every engine decodes the records
    (task, classes, features, label field: one for all, since they score the same
    labels). ``about`` is what the report says about the run: ``command`` and
    ``source`` (topics, specs). ``max_dead_letter_rate`` is every engine's
    threshold (:mod:`stream.engine.rejects`); the result's ``dead_letter_rate``
    is the worst configuration's verdict (they read the same records; only late
    events, which depend on the window, can differ).
    """

    def __init__(
        self,
        source: BoundedSource,
        configs: Sequence[ReplayConfig],
        out_dir: str,
        *,
        decode: CodecConfig | None = None,
        max_poll_records: int = 5_000,
        progress: bool = True,
        dead_letters: str | None = "file",
        about: Mapping[str, Any] | None = None,
        max_dead_letter_rate: float = 0.05,
    ) -> None:
        if not configs:
            raise ConfigError("a backtest needs at least one configuration")
        names = [c.name for c in configs]
        if len(set(names)) != len(names):
            raise ConfigError(f"configuration names must be unique, got {names}")
        self.source = source
        self.configs = list(configs)
        self.out_dir = out_dir
        self.decode = decode or CodecConfig()
        self.task, self.n_classes = self.decode.task, self.decode.n_classes
        self.max_poll_records = max_poll_records
        self.progress = progress
        self.dead_letters = dead_letters
        self.max_dead_letter_rate = max_dead_letter_rate
        about = about or {}
        self.command = about.get("command")
        self.source_info = dict(about.get("source") or {})
        self.clock = DataClock()
        self._timestamps = source.record_timestamps
        for cfg in self.configs:
            if cfg.window.startswith("processing") and not self._timestamps:
                raise ConfigError(
                    f"configuration {cfg.name!r}: a processing-time window needs record "
                    "timestamps, which files do not have; use count:N or event:..."
                )

    # ------------------------------------------------------------------ run
    def run(self) -> dict[str, Any]:
        prepare_out_dir(self.out_dir)
        started = time.monotonic()
        self.source.open(NoPositions())  # the range, as resolved, is where reading starts
        try:
            total = self.source.count_records()
            if total == 0:
                raise ConfigError(
                    f"the replay range holds no records ({self._describe_ranges()}); check --from/--to"
                )
            partitions = self.source.partitions()
            lanes = [self._lane(cfg, i, partitions, total) for i, cfg in enumerate(self.configs)]
            for lane in lanes:
                lane.engine.start()
            read, read_seconds = self._read_and_feed(lanes, total)
            results = [lane.finish() for lane in lanes]
        finally:
            self.source.close()
        return self._result(results, read, read_seconds, total, time.monotonic() - started)

    def _lane(self, cfg: ReplayConfig, index: int, partitions, total) -> _Lane:
        from stream.engine.builder import EngineExtras, build_engine

        work = os.path.join(self.out_dir, "configs", cfg.name)
        # One copy of each dead letter, whatever the configs: the first engine writes them.
        dead_letter = "none"
        if self.dead_letters == "file" and index == 0:
            dead_letter = "file:" + os.path.join(self.out_dir, "dead-letters.jsonl")
        spec = EngineSpec(
            # The engines are fed by the driver (FeedSource below): no source of their own to describe.
            source=SourceSpec(),
            window=cfg.window,
            learner=cfg.learner,
            decode=self.decode,
            checkpoints=CheckpointSpec(dir=os.path.join(work, "checkpoints"), keep=1),
            dead_letter=dead_letter,
            # Checkpoints only at the end: the final state is kept for `inspect`, mid-run ones would only cost.
            loop=without_checkpoint_cadence(
                EngineConfig(
                    max_poll_records=self.max_poll_records,
                    rehearse="always",
                    max_dead_letter_rate=self.max_dead_letter_rate,
                )
            ),
            # A scratch registry per configuration: nothing is published to the production one.
            gate=cfg.gate,
            registry=RegistrySpec(url=os.path.join(work, "registry")),
            drift=cfg.drift,
        )
        metrics = WindowMetrics(self.task, self.n_classes)
        lane = _Lane(cfg, metrics)
        lane.engine = build_engine(
            spec,
            extras=EngineExtras(
                source=FeedSource(partitions, lag=lambda: max(0, total - lane.read)),
                clock=self.clock,
                observer=metrics,
                quiet=True,
            ),
        )
        lane.gate = lane.engine.gate
        return lane

    def _read_and_feed(self, lanes: list[_Lane], total: int) -> tuple[int, float]:
        source = self.source
        poll_columns = source_extras(source).poll_columns
        bar = _progress_bar(total, len(lanes)) if self.progress else None
        read = 0
        read_seconds = 0.0
        last_data = time.monotonic()
        try:
            while not source.exhausted:
                t = time.perf_counter()
                poll = (
                    poll_columns(100, self.max_poll_records)
                    if poll_columns is not None
                    else as_columns(source.poll(100, self.max_poll_records))
                )
                read_seconds += time.perf_counter() - t
                if not len(poll):
                    if time.monotonic() - last_data > _STALL_SECONDS:
                        raise StreamlearnError(
                            f"the replay stalled: no record for {_STALL_SECONDS:g}s after "
                            f"{read:,} of {total:,} records (is the broker up?)"
                        )
                    continue
                last_data = time.monotonic()
                if self._timestamps:
                    self.clock.observe(int(poll.timestamps().max()))
                read += len(poll)
                for lane in lanes:
                    lane.feed(poll)
                if bar is not None:
                    bar.update(len(poll))
                    bar.set_postfix_str(" ".join(lane.short_status() for lane in lanes), refresh=False)
        finally:
            if bar is not None:
                bar.close()
        return read, read_seconds

    # --------------------------------------------------------------- result
    def _result(
        self, lanes_results: list[dict], read: int, read_seconds: float, total: int, wall: float
    ) -> dict[str, Any]:
        from importlib.metadata import PackageNotFoundError, version

        try:
            own_version = version("streamlearn")
        except PackageNotFoundError:
            own_version = "unknown"
        # The first engine writes the dead letters (see _lane); every engine counts the same ones.
        dead = sum(lanes_results[0]["_dead_letters"].values())
        for r in lanes_results:
            del r["_dead_letters"]
        worst = max((r["dead_letter_rate"] for r in lanes_results), key=lambda v: (v["exceeded"], v["rate"]))
        return {
            "streamlearn_version": own_version,
            "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": self.command,
            "task": self.task,
            "seed": self.configs[0].learner.seed,
            "source": {**self.source_info, "partitions": self._ranges(), "records": total},
            "read": {
                "records": read,
                "seconds": read_seconds,
                "records_per_second": read / read_seconds if read_seconds > 0 else None,
                "dead_letters": dead,
                "wall_seconds": wall,
            },
            "dead_letter_rate": worst,
            "configs": lanes_results,
        }

    def _describe_ranges(self) -> str:
        ranges = self._ranges()
        if not ranges:
            return "rows " + ", ".join(self.source_info.get("topics", [])) if self.source_info else "no rows"
        return ", ".join(f"{tp} [{s}, {e})" for tp, (s, e) in ranges.items())

    def _ranges(self) -> dict[str, list[int]]:
        if not isinstance(self.source, HasRanges):
            return {}
        ranges = self.source.ranges
        return {f"{tp.topic}:{tp.partition}": [int(s), int(e)] for tp, (s, e) in ranges.items()}


class _Lane:
    """One configuration's engine and what the driver measures about it."""

    def __init__(self, cfg: ReplayConfig, metrics: WindowMetrics) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.gate = None  # the engine's, once built
        self.engine: Engine | None = None
        self.read = 0
        self.seconds = 0.0

    def feed(self, poll) -> None:
        scoring_before = self.metrics.scoring_seconds
        t = time.perf_counter()
        self.engine.feed(poll)
        # The engine's own time -- decode, window, score, policy, gate, learn -- without the
        # backtest's extra scoring (class probabilities), which a live daemon does not do.
        self.seconds += time.perf_counter() - t - (self.metrics.scoring_seconds - scoring_before)
        self.read += len(poll)

    def short_status(self) -> str:
        s = self.engine.stats
        acc = s.accuracy
        value = f"{acc:.3f}" if acc is not None else (f"rmse {s.rmse:.3g}" if s.rmse is not None else "-")
        return f"{self.cfg.name}={value}"

    def finish(self) -> dict[str, Any]:
        engine = self.engine
        t = time.perf_counter()
        engine.end_of_input()
        self.seconds += time.perf_counter() - t
        summary = engine.finish("end of range")
        m = self.metrics.result()
        drift = summary.drift or {}
        return {
            "name": self.cfg.name,
            "file": self.cfg.file,
            "settings": self.cfg.settings(),
            "summary": {
                "events": summary.events_learned,
                "batches": summary.batches_learned,
                **m["overall"],
                "events_per_second": summary.events_learned / self.seconds if self.seconds > 0 else None,
                "engine_seconds": self.seconds,
                "alarms": drift.get("alarms", 0),
                "rollbacks": drift.get("rollback", 0),
                "adapts": drift.get("adapt", 0),
                "dismissed": drift.get("drift_dismissed", 0),
                "versions_published": self.gate.counts["published"],
                "versions_validated": self.gate.counts["validated"],
                "versions_rejected": self.gate.counts["rejected"],
                "late": summary.late,
                "duplicates": summary.duplicates,
                "stopped_because": summary.stopped_because,
            },
            "windows": m["windows"],
            "per_class": m["per_class"],
            "markers": m["markers"],
            "dead_letter_rate": summary.dead_letter_rate.as_dict(),
            "_dead_letters": summary.dead_letters,
        }


def _progress_bar(total: int, n_configs: int):
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="ev",
        unit_scale=True,
        dynamic_ncols=True,
        file=sys.stderr,
        mininterval=0.5,
        desc=f"replay x{n_configs}" if n_configs > 1 else "replay",
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, "
        "{rate_fmt}] {postfix}",
    )
