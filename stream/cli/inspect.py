"""``streamlearn inspect``: what a checkpoint directory holds (positions, counters, ledger), for people or as JSON."""

from __future__ import annotations

import json
import os
import time

import click

from stream.cli.errors import user_errors
from stream.core.errors import ConfigError


@click.command()
@click.argument("checkpoint_dir", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--ids", "with_ids", is_flag=True, help="With --json: include the ledger's learned ids and counts."
)
@user_errors
def inspect(checkpoint_dir, as_json, with_ids):
    """Show what the newest checkpoint in CHECKPOINT_DIR holds."""
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
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    click.echo(
        f"checkpoint #{info['checkpoint']} ({time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(ckpt.created_at))})"
    )
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
    _echo_schema(ckpt.schema)


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
