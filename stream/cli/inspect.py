"""``streamlearn inspect``: what a checkpoint directory holds (positions, counters, ledger), and with
``--registry`` the live metrics the daemon recorded there (per served and shadow version, from joined
labels, and the join's counters), for people or as JSON.

>>> doc = {"updated_at": 100.0, "served": {"7": {"n": 120, "task": "classification", "accuracy": 0.9083,
...        "log_loss": 0.25, "holdout_accuracy": 0.93, "flagged": False}},
...        "join": {"joined": 5000, "pending_features": 10, "pending_labels": 2, "pending_bytes": 2048}}
>>> for line in live_lines(doc, now=112.0):
...     print(line)
live metrics (from joined labels, recorded 12s ago)
  served v7      : n 120, accuracy 0.9083, log loss 0.2500, holdout accuracy 0.9300
  join           : joined 5,000; pending 10 predictions, 2 labels (2.0 KiB); expired ? predictions, ? labels; evicted ?; repeated labels ?; bad records ?
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import click

from stream.cli.errors import require_registry, user_errors
from stream.cli.options import REGISTRY, REGISTRY_NAMESPACE
from stream.core.errors import ConfigError


@click.command()
@click.argument("checkpoint_dir", type=click.Path(file_okay=False), required=False)
@REGISTRY.but(
    env=None,
    help="Also show the live metrics recorded in this registry (a directory or redis:// URL): "
    "per served and shadow version from joined labels, and the join's counters.",
).click_option()
@REGISTRY_NAMESPACE.but(env=None, default="streamlearn", show_default=True).click_option()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--ids", "with_ids", is_flag=True, help="With --json: include the ledger's learned ids and counts."
)
@user_errors
def inspect(checkpoint_dir, registry, registry_namespace, as_json, with_ids):
    """Show what the newest checkpoint in CHECKPOINT_DIR holds (and with --registry, the live metrics)."""
    if checkpoint_dir is None and registry is None:
        raise ConfigError(
            "nothing to inspect: pass a CHECKPOINT_DIR (the --checkpoint-dir of a `streamlearn run`), "
            "--registry for the live metrics, or both"
        )
    info = _checkpoint_info(checkpoint_dir, with_ids) if checkpoint_dir is not None else None
    live = _read_live(registry, registry_namespace) if registry is not None else None
    if as_json:
        doc = dict(info or {})
        if live is not None:
            doc["live"] = live
        click.echo(json.dumps(doc, indent=2, default=str))
        return
    if info is not None:
        _echo_checkpoint(info)
    if live is not None:
        for line in live_lines(live, time.time()):
            click.echo(line)


def _read_live(url: str, namespace: str) -> dict:
    """The registry's live-metrics document (``{}`` before the daemon recorded one)."""
    from serving.registry.factory import open_registry
    from stream.cli.errors import require_registry_dir

    if url == "none":
        raise ConfigError("--registry none has no live metrics: pass a directory or redis:// URL")
    require_registry_dir(url)
    registry = open_registry(url, namespace=namespace)
    try:
        require_registry(registry)
        return registry.live()
    finally:
        registry.close()


def _checkpoint_info(checkpoint_dir: str, with_ids: bool) -> dict:
    from stream.engine.checkpoint import CheckpointStore
    from stream.engine.ledger import LearnLedger

    hint = "pass the --checkpoint-dir of a `streamlearn run` (default .streamlearn/checkpoints)"
    if not os.path.isdir(checkpoint_dir):
        raise ConfigError(f"checkpoint directory {checkpoint_dir!r} does not exist; {hint}")
    ckpt = CheckpointStore(checkpoint_dir).latest()
    if ckpt is None:
        raise ConfigError(f"no checkpoint in {checkpoint_dir!r} (no ckpt-*.safetensors file); {hint}")
    counters = ckpt.counters
    residue = ckpt.window.get("pending") or {}
    info = {
        "checkpoint": ckpt.seq,
        "created_at": ckpt.created_at,
        "events_learned": counters.get("events_learned", 0),
        "batches_learned": counters.get("batches_learned", 0),
        "offsets": {f"{tp.topic}:{tp.partition}": pos for tp, pos in sorted(ckpt.positions.items())},
        "dead_letters": counters.get("dead_letters", {}),
        "late": counters.get("late", 0),
        "duplicate_ids": counters.get("duplicates", 0),
        "pending_in_window": len(residue.get("ids", [])) if isinstance(residue, dict) else 0,
        "prequential_accuracy": (counters["correct"] / counters["predicted"])
        if counters.get("predicted")
        else None,
        "schema": ckpt.schema,
    }
    if ckpt.ledger is not None:
        ledger = LearnLedger.from_snapshot(ckpt.ledger)
        info["ledger"] = {
            "distinct_ids": ledger.distinct,
            "total": ledger.total,
            "duplicated": len(ledger.duplicated()),
        }
        if with_ids:
            info["ledger"]["ids"] = list(ckpt.ledger["ids"])
            info["ledger"]["counts"] = [int(c) for c in ckpt.ledger["counts"]]
    return info


def _echo_checkpoint(info: dict) -> None:
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["created_at"]))
    click.echo(f"checkpoint #{info['checkpoint']} ({created})")
    click.echo(f"  events learned : {info['events_learned']:,} in {info['batches_learned']:,} batches")
    acc = info["prequential_accuracy"]
    click.echo(f"  accuracy       : {acc:.4f} (prequential)" if acc is not None else "  accuracy       : n/a")
    click.echo(f"  pending        : {info['pending_in_window']:,} events in the open window")
    click.echo(
        f"  dead letters   : {info['dead_letters'] or 'none'}   late: {info['late']:,}   "
        f"duplicate ids: {info['duplicate_ids']:,}"
    )
    for name, pos in info["offsets"].items():
        click.echo(f"  offset {name:<20} next {pos:,}")
    if "ledger" in info:
        led = info["ledger"]
        click.echo(
            f"  ledger         : {led['distinct_ids']:,} ids, {led['duplicated']:,} learned more than once"
        )
    _echo_schema(info["schema"])


def _echo_schema(schema: dict) -> None:
    """The input the checkpoint was learned on: its feature schema (as YAML to save), classes, unknown fields."""
    classes = schema.get("classes")
    if schema.get("task") == "classification":
        named = f": {classes}" if classes else " (integer labels)"
        click.echo(f"  classes        : {schema.get('n_classes')}{named}")
    features = schema.get("features")
    if not features:
        click.echo(f"  features       : {schema.get('n_features')} numbers per row")
        return
    from stream.core.features import FeatureSchema

    unknown = schema.get("unknown_fields") or {}
    if unknown:
        shown = ", ".join(f"{name} ({count:,})" for name, count in list(unknown.items())[:10])
        click.echo(f"  unknown fields : {shown} -- ignored; add them to the schema to learn from them")
    click.echo("  feature schema :")
    for line in FeatureSchema.from_dict(features).to_yaml().splitlines():
        click.echo(f"    {line}")


# ----------------------------------------------------------------- live metrics
def live_lines(doc: dict[str, Any], now: float) -> list[str]:
    """The live-metrics document as lines, in the checkpoint lines' style; any part may be missing."""
    if not doc:
        return [
            "live metrics   : none recorded yet (the daemon records them at its checkpoints once "
            "labels join logged predictions)"
        ]
    updated = doc.get("updated_at")
    when = f", recorded {max(0.0, now - updated):.0f}s ago" if isinstance(updated, (int, float)) else ""
    lines = [f"live metrics (from joined labels{when})"]
    for role in ("served", "shadow"):
        versions = doc.get(role) or {}
        for number in sorted(versions, key=lambda v: int(v) if str(v).isdigit() else 0):
            lines.append(f"  {role + ' v' + str(number):<15}: {_version_line(versions[number] or {})}")
    if len(lines) == 1:
        lines.append("  versions       : none yet (no label has joined a prediction)")
    join = doc.get("join")
    if join:
        lines.append(f"  join           : {_join_line(join)}")
    return lines


def _number(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "n/a"


def _version_line(m: dict[str, Any]) -> str:
    parts = [f"n {m.get('n', 0):,}"]
    if m.get("task") == "regression":
        parts += [f"MAE {_number(m.get('mae'))}", f"RMSE {_number(m.get('rmse'))}"]
    else:
        parts.append(f"accuracy {_number(m.get('accuracy'))}")
        if m.get("log_loss") is not None:
            parts.append(f"log loss {_number(m.get('log_loss'))}")
    if m.get("holdout_accuracy") is not None:
        parts.append(f"holdout accuracy {_number(m.get('holdout_accuracy'))}")
    line = ", ".join(parts)
    if m.get("flagged"):
        line += f" -- FLAGGED: {m.get('flag_reason') or 'no reason given'}"
    return line


def _join_line(j: dict[str, Any]) -> str:
    def count(key: str) -> str:
        value = j.get(key)
        return f"{value:,}" if isinstance(value, int) else "?"

    pending_kib = j.get("pending_bytes")
    size = f" ({pending_kib / 1024:.1f} KiB)" if isinstance(pending_kib, (int, float)) else ""
    return (
        f"joined {count('joined')}; pending {count('pending_features')} predictions, "
        f"{count('pending_labels')} labels{size}; expired {count('expired_features')} predictions, "
        f"{count('expired_labels')} labels; evicted {count('evicted')}; "
        f"repeated labels {count('repeated_labels')}; bad records {count('bad_records')}"
    )
