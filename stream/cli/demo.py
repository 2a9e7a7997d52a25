"""``streamlearn demo``: the whole product on one machine, in about a minute.

Starts, in this order: the embedded broker (tansu, in memory) unless a
bootstrap is given; a model registry (a directory under the workdir unless
``--registry`` names one); the prediction API on 127.0.0.1 (port 8000, or a
free one if that is taken); a producer thread writing a drifting synthetic
stream with some corrupt records; and the learning daemon with its validation
gate, on the main thread. Progress lines show the served version. When the
stream is exhausted the daemon checkpoints, the demo asks the live API for
one prediction, prints a summary -- events, accuracy over time, versions,
rollbacks, where the API was -- and stops everything (``--keep-serving``
leaves the API up until Ctrl-C).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import click

from stream.cli.errors import user_errors
from stream.cli.options import drift_options, learner_options, registry_options
from stream.engine.progress import ProgressPrinter, RunStats


@dataclass(frozen=True)
class DemoConfig:
    bootstrap: str | None
    n_events: int
    generator: str
    topic: str
    window: str
    workdir: str
    api_port: int
    keep_serving: bool
    registry: str | None
    registry_namespace: str | None
    seed: int
    gate_args: tuple[int, float, float, int]
    learner_factory: Callable[[int], Any]
    task: str
    n_classes: int
    n_features: int | None
    drift: Any = None  # a drift.choice.DriftChoice; None: drift handling off


def _say(message: str) -> None:
    click.echo(f"[streamlearn] {message}", err=True)


class AccuracyTimeline:
    """Prequential accuracy per stretch of the stream, sampled from the engine's cumulative counters.

    A sampler thread reads the counters every ``interval`` seconds: plain int
    reads, so the learning loop is never touched.
    """

    def __init__(self, interval: float = 0.2) -> None:
        self.points: list[tuple[int, int, int]] = [(0, 0, 0)]  # (events learned, correct, predicted)
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def observe(self, stats: RunStats) -> None:
        point = (stats.events_learned, stats.correct, stats.predicted)
        if point[0] > self.points[-1][0]:
            self.points.append(point)

    def follow(self, engine) -> None:
        def sample() -> None:
            while not self._stop.wait(self.interval):
                self.observe(engine.stats)

        self._thread = threading.Thread(target=sample, name="demo-timeline", daemon=True)
        self._thread.start()

    def stop(self, engine) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        self.observe(engine.stats)

    def segments(self, n: int = 8) -> list[tuple[int, float]]:
        """Up to ``n`` ``(end event, accuracy)`` stretches of roughly equal size."""
        total = self.points[-1][0]
        if total == 0:
            return []
        step = total / n
        ends = [self.points[0]]
        for point in self.points[1:]:
            if point[0] - ends[-1][0] >= step * 0.999:
                ends.append(point)
        last = self.points[-1]
        if ends[-1] is not last:
            # A short tail joins the stretch before it rather than showing a noisy accuracy of its own.
            if len(ends) > 1 and last[0] - ends[-1][0] < step / 4:
                ends[-1] = last
            else:
                ends.append(last)
        return [(b[0], (b[1] - a[1]) / (b[2] - a[2])) for a, b in zip(ends, ends[1:]) if b[2] > a[2]]


def run_demo(cfg: DemoConfig) -> None:
    import httpx

    from serving.api.app import create_app
    from serving.api.server import BackgroundServer, port_is_free
    from serving.settings import ServingSettings
    from stream.cli.options import open_gate
    from stream.cli.run import print_summary, run_engine
    from stream.core.settings import KafkaSettings
    from stream.sources.embedded_broker import EmbeddedBroker
    from stream.sources.produce import ensure_topic, synthetic_rows
    from stream.sources.produce import produce as produce_stream

    run_id = uuid.uuid4().hex[:8]
    run_dir = os.path.join(cfg.workdir, f"demo-{run_id}")
    os.makedirs(run_dir, exist_ok=True)
    checkpoint_dir = os.path.join(run_dir, "checkpoints")
    # A fresh registry per run unless one is named: versions of an earlier demo
    # (another seed, maybe another feature count) are not this run's baseline.
    registry_target = cfg.registry or os.path.join(run_dir, "registry")
    gate = open_gate(registry_target, cfg.registry_namespace, *cfg.gate_args)
    if gate is None:
        raise click.UsageError("the demo needs a registry; --registry none is for `streamlearn run`")
    registry = gate.registry

    broker_ctx = None
    server = None
    bootstrap = cfg.bootstrap
    try:
        if bootstrap is None:
            _say("starting the embedded broker (tansu, in memory) ...")
            broker_ctx = EmbeddedBroker(log_path=os.path.join(run_dir, "broker.log"))
            bootstrap = broker_ctx.start().bootstrap

        port = cfg.api_port
        if not port_is_free("127.0.0.1", port):
            _say(f"port {port} is taken; the API uses a free port instead")
            port = 0
        app = create_app(ServingSettings(poll_interval_s=0.5), registry=registry)
        server = BackgroundServer(app, host="127.0.0.1", port=port).start()
        slot = app.state.slot
        _say(f"prediction API on {server.url} (docs {server.url}/docs); registry {registry!r}")

        ensure_topic(bootstrap, cfg.topic, 3)
        drift_at = cfg.n_events // 2
        _say(
            f"broker {bootstrap}; producing {cfg.n_events:,} {cfg.generator} events with a concept drift at "
            f"{drift_at:,} to '{cfg.topic}' while the daemon learns"
        )
        errors: list[BaseException] = []

        def _produce() -> None:
            try:
                produce_stream(
                    bootstrap,
                    cfg.topic,
                    cfg.n_events,
                    generator=cfg.generator,
                    drift_at=drift_at,
                    drift_width=max(1, cfg.n_events // 50),
                    seed=cfg.seed + 42,
                    corrupt_every=997,
                )
            except BaseException as exc:  # noqa: BLE001 -- surfaced after the daemon stops
                errors.append(exc)

        producer = threading.Thread(target=_produce, name="demo-producer", daemon=True)
        producer.start()

        timeline = AccuracyTimeline()
        engines: list = []

        def serving_now() -> str:
            model = slot.model
            return f"serving v{model.version.number}" if model is not None else "serving: none yet"

        def follow(engine) -> None:
            engines.append(engine)
            timeline.follow(engine)

        started = time.monotonic()
        summary = run_engine(
            bootstrap=bootstrap,
            topics=(cfg.topic,),
            partitions=(),
            group=f"streamlearn-demo-{run_id}",
            files=(),
            window=cfg.window,
            checkpoint_dir=checkpoint_dir,
            checkpoint_every_batches=20,
            checkpoint_every_seconds=5,
            keep=3,
            dead_letter="kafka",
            late_policy="dead_letter",
            until_idle=3.0,
            max_events=None,
            backend="kafka-python",
            kafka_extra={},
            kafka_settings=KafkaSettings(session_timeout_ms=6000, heartbeat_interval_ms=500),
            max_poll_records=5000,
            ledger=False,
            quiet=False,
            learner_factory=cfg.learner_factory,
            task=cfg.task,
            n_classes=cfg.n_classes,
            n_features=cfg.n_features,
            gate=gate,
            policy=cfg.drift.build(task=cfg.task) if cfg.drift is not None else None,
            on_progress=ProgressPrinter(extra=serving_now),
            engine_hook=follow,
        )
        timeline.stop(engines[0])
        producer.join(timeout=5)
        if errors:
            raise errors[0]
        elapsed = time.monotonic() - started

        # Let the API catch up with the last validated version, then ask it once, for real.
        current = registry.current()
        if current is not None:
            app.state.swapper.wait_for_version(current.number, timeout=5)
        sample = next(iter(synthetic_rows(cfg.generator, 1, seed=cfg.seed + 7)))
        x = [
            round(float(v), 4)
            for v in (sample["x"].values() if isinstance(sample["x"], dict) else sample["x"])
        ]
        try:
            answer = httpx.post(f"{server.url}/predict", json={"x": x}, timeout=5).json()
        except httpx.HTTPError as exc:
            answer = {"error": str(exc)}

        print_summary(summary)
        rollbacks = len(registry.events(kind="rollback", limit=10_000))
        c = gate.counts
        curve = "  ".join(f"{acc:.2f}@{end // 1000}k" for end, acc in timeline.segments())
        served = slot.model.version.number if slot.model is not None else None
        _say("summary")
        click.echo(
            f"  events learned   {summary.events_learned:,} in {elapsed:.1f}s; dead letters "
            f"{sum(summary.dead_letters.values()):,} (-> {cfg.topic}.dlq)",
            err=True,
        )
        click.echo(
            f"  accuracy         {curve}   (prequential, per stretch; drift at {drift_at // 1000}k)", err=True
        )
        click.echo(
            f"  model versions   {c['published']} published, {c['validated']} validated, {c['rejected']} "
            f"rejected, {rollbacks} rollbacks; the API serves v{served}",
            err=True,
        )
        click.echo(f'  API              {server.url}  POST /predict {{"x": {x}}} -> {answer}', err=True)
        click.echo(
            f"  registry         {registry_target}   (streamlearn serve --registry {registry_target})",
            err=True,
        )
        click.echo(f"  checkpoints      {checkpoint_dir}   (streamlearn inspect {checkpoint_dir})", err=True)
        if cfg.keep_serving:
            _say(f"the API stays up on {server.url}; Ctrl-C to stop")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    finally:
        if server is not None:
            server.stop()
        registry.close()
        if broker_ctx is not None:
            broker_ctx.stop()


@click.command()
@click.option("--bootstrap", default=None, help="Use this Kafka instead of starting the embedded broker.")
@click.option(
    "--events",
    "n_events",
    type=int,
    default=400_000,
    show_default=True,
    help="Stream length; the default takes about a minute on a 2-core machine.",
)
@click.option(
    "--generator",
    type=click.Choice(["agrawal", "sea", "hyperplane", "rbf"]),
    default="hyperplane",
    show_default=True,
)
@click.option("--topic", default="streamlearn-demo", show_default=True)
@click.option("--window", default="count:100", show_default=True)
@click.option(
    "--workdir",
    default=".streamlearn",
    show_default=True,
    help="Where the registry, checkpoints and logs go (one demo-<id>/ folder per run).",
)
@click.option(
    "--api-port",
    type=int,
    default=8000,
    show_default=True,
    help="Port of the prediction API on 127.0.0.1 (a free one is used if it is taken).",
)
@click.option("--keep-serving", is_flag=True, help="Keep the API up after the stream ends, until Ctrl-C.")
@learner_options
@registry_options
@drift_options
@user_errors
def demo(
    bootstrap,
    n_events,
    generator,
    topic,
    window,
    workdir,
    api_port,
    keep_serving,
    learner,
    registry,
    registry_namespace,
    publish_every_batches,
    publish_every_seconds,
    validation_tolerance,
    holdout_min_events,
    drift,
):
    """The embedded default: broker + drifting stream + daemon + registry + API, end to end."""
    run_demo(
        DemoConfig(
            bootstrap=bootstrap,
            n_events=n_events,
            generator=generator,
            topic=topic,
            window=window,
            workdir=workdir,
            api_port=api_port,
            keep_serving=keep_serving,
            registry=registry,
            registry_namespace=registry_namespace,
            seed=learner.seed,
            gate_args=(
                publish_every_batches,
                publish_every_seconds,
                validation_tolerance,
                holdout_min_events,
            ),
            learner_factory=learner.factory(),
            task=learner.task,
            n_classes=learner.n_classes,
            n_features=learner.n_features,
            drift=drift,
        )
    )
