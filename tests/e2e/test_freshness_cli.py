"""A daemon with a count-or-time window and time-paced publication serves what it learned within seconds,
even when the count alone would never close a window (bounds of seconds, never a timing of milliseconds)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid

import httpx
import pytest
from cli_processes import embedded_bootstrap, serving

pytestmark = pytest.mark.e2e

BOUND_S = 60  # generous: start-up of torch and the broker on a loaded 2-core machine


@pytest.fixture(scope="module")
def bootstrap():
    yield from embedded_bootstrap()


def test_a_small_max_window_and_time_publication_serve_a_version_within_seconds(bootstrap, tmp_path):
    from stream.sources.produce import SyntheticStream, produce

    topic = f"fresh-{uuid.uuid4().hex[:8]}"
    produce(bootstrap, topic, SyntheticStream(n=1500, n_features=4), partitions=3)
    registry = tmp_path / "registry"
    registry.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLEARN_")}
    # count:100000 never fills: only max=200ms closes the windows.
    daemon = subprocess.Popen(
        [
            sys.executable, "-m", "stream.cli", "run", "--bootstrap", bootstrap, "--topic", topic,
            "--n-features", "4", "--classes", "2", "--checkpoint-dir", str(tmp_path / "ckpt"),
            "--registry", str(registry), "--dead-letter", "none", "--quiet",
            "--window", "count:100000,max=200ms", "--publish-every-seconds", "0.2",
            "--holdout-min-events", "10",
        ],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    stop = threading.Event()

    def trickle():  # 200 events a second: a candidate needs a later batch as its holdout
        while not stop.wait(1.0):
            produce(bootstrap, topic, SyntheticStream(n=200, n_features=4), partitions=3)

    feeder = threading.Thread(target=trickle, daemon=True)
    feeder.start()
    try:
        with serving(str(registry), ready_s=BOUND_S) as url:

            def learned() -> int:
                return httpx.get(f"{url}/models/current", timeout=5).json()["served"]["events_learned"]

            first = learned()
            deadline = time.monotonic() + BOUND_S
            while learned() < first + 1000 and time.monotonic() < deadline:
                time.sleep(0.2)
            # Served versions follow the trickle: windows close by time alone.
            assert learned() >= first + 1000
    finally:
        stop.set()
        feeder.join(30)
        daemon.terminate()
        _, err = daemon.communicate(timeout=60)
    assert "model versions:" in err and "0 failed to publish" in err, err[-2000:]
