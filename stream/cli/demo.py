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
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import click

from stream.cli.options import (
    BOOTSTRAP,
    DRIFT,
    LEARNER,
    MAX_DEAD_LETTER_RATE,
    REGISTRY,
    REGISTRY_AND_GATE,
    TOPICS,
    WINDOW,
    drift_from,
    gate_from,
    learner_from,
)
from stream.cli.table import Option, Values, with_options

if TYPE_CHECKING:  # imported when the demo runs: `--help` stays fast
    from drift.choice import DriftChoice
    from learners.choice import LearnerChoice
    from stream.engine.config import RunSummary
    from stream.engine.gate import GateConfig
    from stream.engine.progress import RunStats
    from stream.engine.spec import EngineSpec


@dataclass(frozen=True)
class DemoConfig:
    """The demo's own options, and the learner, drift policy and gate of the engine it runs."""

    bootstrap: str | None
    n_events: int
    generator: str
    topic: str
    window: str
    workdir: str
    api_port: int
    keep_serving: bool
    #: ``--registry`` if given (the demo's default: a fresh one in its run directory).
    registry: str | None
    registry_namespace: str
    registry_keep_states: int
    gate: GateConfig
    learner: LearnerChoice
    drift: DriftChoice | None = None  # None: drift handling off
    max_dead_letter_rate: float = 0.05

    def engine_spec(self, *, bootstrap: str | None, run_id: str, run_dir: str) -> EngineSpec:
        """The engine the demo runs on ``bootstrap``, writing under ``run_dir``."""
        from stream.core.settings import KafkaSettings
        from stream.engine.config import EngineConfig
        from stream.engine.spec import CheckpointSpec, EngineSpec, RegistrySpec, SourceSpec

        return EngineSpec(
            source=SourceSpec(
                bootstrap=bootstrap,
                topics=(self.topic,),
                group=f"streamlearn-demo-{run_id}",
                # Short group timeouts: the demo's one consumer joins in a second, not ten.
                kafka=KafkaSettings(session_timeout_ms=6000, heartbeat_interval_ms=500),
            ),
            window=self.window,
            learner=self.learner,
            checkpoints=CheckpointSpec(dir=os.path.join(run_dir, "checkpoints"), keep=3),
            dead_letter="kafka",
            loop=EngineConfig(
                checkpoint_every_batches=20,
                checkpoint_every_seconds=5,
                until_idle_seconds=3.0,
                max_dead_letter_rate=self.max_dead_letter_rate,
            ),
            gate=self.gate,
            # A fresh registry per run unless one is named: versions of an earlier demo
            # (another seed, maybe another feature count) are not this run's baseline.
            registry=(
                None
                if self.registry == "none"
                else RegistrySpec(
                    url=self.registry or os.path.join(run_dir, "registry"),
                    namespace=self.registry_namespace,
                    keep_states=self.registry_keep_states,
                )
            ),
            drift=self.drift,
        )


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


def run_demo(cfg: DemoConfig) -> RunSummary:
    """Run the demo (see the module docstring); the daemon's summary."""
    import httpx

    from serving.api.app import create_app
    from serving.api.server import BackgroundServer, port_is_free
    from serving.settings import ServingSettings
    from stream.cli.options import open_gate
    from stream.cli.run import print_summary, run_engine
    from stream.engine.builder import EngineExtras, build_engine
    from stream.engine.progress import ProgressPrinter
    from stream.sources.embedded_broker import EmbeddedBroker
    from stream.sources.produce import SyntheticStream, ensure_topic, synthetic_rows
    from stream.sources.produce import produce as produce_stream

    run_id = uuid.uuid4().hex[:8]
    run_dir = os.path.join(cfg.workdir, f"demo-{run_id}")
    os.makedirs(run_dir, exist_ok=True)
    # The broker may not be started yet (its address is set below); the API needs the registry first.
    spec = cfg.engine_spec(bootstrap=cfg.bootstrap, run_id=run_id, run_dir=run_dir)
    checkpoint_dir = spec.checkpoints.dir
    registry_target = spec.registry.url if spec.registry is not None else "none"
    gate = open_gate(spec)
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
                    SyntheticStream(
                        n=cfg.n_events,
                        generator=cfg.generator,
                        drift_at=drift_at,
                        drift_width=max(1, cfg.n_events // 50),
                        seed=cfg.learner.seed + 42,
                        corrupt_every=997,
                    ),
                )
            except BaseException as exc:  # noqa: BLE001 -- surfaced after the daemon stops
                errors.append(exc)

        producer = threading.Thread(target=_produce, name="demo-producer", daemon=True)
        producer.start()

        timeline = AccuracyTimeline()

        def serving_now() -> str:
            model = slot.model
            return f"serving v{model.version.number}" if model is not None else "serving: none yet"

        started = time.monotonic()
        engine = build_engine(
            replace(spec, source=replace(spec.source, bootstrap=bootstrap)),
            gate=gate,
            extras=EngineExtras(on_progress=ProgressPrinter(extra=serving_now)),
        )
        timeline.follow(engine)
        summary = run_engine(engine)
        timeline.stop(engine)
        producer.join(timeout=5)
        if errors:
            raise errors[0]
        elapsed = time.monotonic() - started

        # Let the API catch up with the last validated version, then ask it once, for real.
        current = registry.current()
        if current is not None:
            app.state.swapper.wait_for_version(current.number, timeout=5)
        sample = next(iter(synthetic_rows(cfg.generator, 1, seed=cfg.learner.seed + 7)))
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
    return summary


#: ``streamlearn demo``'s options, in ``--help`` order.
DEMO_OPTIONS = (
    # No environment here: the demo starts its own broker and registry unless told otherwise.
    BOOTSTRAP.but(help="Use this Kafka instead of starting the embedded broker.", env=None),
    Option(
        "--events",
        "n_events",
        type=int,
        default=400_000,
        show_default=True,
        help="Stream length; the default takes about a minute on a 2-core machine.",
    ),
    Option(
        "--generator",
        "generator",
        type=click.Choice(["agrawal", "sea", "hyperplane", "rbf"]),
        default="hyperplane",
        show_default=True,
    ),
    TOPICS.but(name="topic", multiple=False, default="streamlearn-demo", show_default=True, help=None),
    WINDOW.but(default="count:100", help=None),
    Option(
        "--workdir",
        "workdir",
        default=".streamlearn",
        show_default=True,
        help="Where the registry, checkpoints and logs go (one demo-<id>/ folder per run).",
    ),
    Option(
        "--api-port",
        "api_port",
        type=int,
        default=8000,
        show_default=True,
        help="Port of the prediction API on 127.0.0.1 (a free one is used if it is taken).",
    ),
    Option(
        "--keep-serving",
        "keep_serving",
        is_flag=True,
        help="Keep the API up after the stream ends, until Ctrl-C.",
    ),
    *LEARNER,
    *(REGISTRY.but(env=None) if opt is REGISTRY else opt for opt in REGISTRY_AND_GATE),
    *DRIFT,
    MAX_DEAD_LETTER_RATE,
)


@click.command()
@with_options(DEMO_OPTIONS)
def demo(opts: Values) -> None:
    """The embedded default: broker + drifting stream + daemon + registry + API, end to end."""
    from stream.cli.run import fail_on_dead_letters

    learner = learner_from(opts)
    summary = run_demo(
        DemoConfig(
            bootstrap=opts.bootstrap,
            n_events=opts.n_events,
            generator=opts.generator,
            topic=opts.topic,
            window=opts.window,
            workdir=opts.workdir,
            api_port=opts.api_port,
            keep_serving=opts.keep_serving,
            registry=opts.registry,
            registry_namespace=opts.registry_namespace,
            registry_keep_states=opts.registry_keep_states,
            gate=gate_from(opts),
            learner=learner,
            drift=drift_from(opts),
            max_dead_letter_rate=opts.max_dead_letter_rate,
        )
    )
    fail_on_dead_letters(summary)  # the demo's stream ends: a bounded run
