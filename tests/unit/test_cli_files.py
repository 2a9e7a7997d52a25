"""The CLI on local files (no broker needed): learn, dead-letter file, inspect."""

from __future__ import annotations

import json
import subprocess
import sys


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream.cli", *args], capture_output=True, text=True, timeout=180)


def test_learning_from_files_with_a_dead_letter_file(tmp_path):
    data = tmp_path / "rows.jsonl"
    lines = [json.dumps({"id": i, "x": [i % 7, 1.0], "y": i % 2}) for i in range(500)] + ["{broken"]
    data.write_text("\n".join(lines) + "\n")
    dlq = tmp_path / "dead.jsonl"
    ran = cli("run", "--file", str(data), "--checkpoint-dir", str(tmp_path / "ck"), "--until-idle", "0.5",
              "--dead-letter", f"file:{dlq}", "--window", "count:64", "--quiet")
    assert ran.returncode == 0, ran.stderr
    info = json.loads(cli("inspect", str(tmp_path / "ck"), "--json").stdout)
    assert info["events_learned"] == 500 and info["dead_letters"] == {"bad json": 1}
    letter = json.loads(dlq.read_text().splitlines()[0])
    assert letter["offset"] == 500 and letter["value_text"] == "{broken"
