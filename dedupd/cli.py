"""The command line: turns arguments into calls and errors into exit codes.

Exit codes (also in ``dedupd --help``):

  0   success (``compare``: the two files are the same picture)
  1   ``compare``: the two files are different pictures
  2   bad command-line usage
  3   ``scan`` finished, but some files were skipped with errors
  66  a path given on the command line does not exist
  70  internal error (a bug: please report it)
  74  the store cannot be read or written
  75  the store is busy (another writer); try again
  78  invalid configuration
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import click
import structlog

from dedupd import __version__, errors, logs
from dedupd import config as config_module
from dedupd.config import Config
from dedupd.errors import display_path
from dedupd.hashing import fingerprint_file
from dedupd.matching import compare as compare_fingerprints
from dedupd.store import Store, default_db_path

log = structlog.get_logger()

EPILOG = """\b
Exit codes:
  0   success (compare: the same picture)
  1   compare: different pictures
  2   bad usage
  3   scan finished, some files skipped with errors
  66  a path given does not exist
  74  the store cannot be read or written
  78  invalid configuration
"""

db_option = click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The SQLite store. Default: 'db' from the config, else "
    "$STATE_DIRECTORY/dedupd.db or ~/.local/state/dedupd/dedupd.db.",
)
config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A YAML config file (see config.example.yaml). Default: embedded defaults.",
)


class Context:
    def __init__(self, config_path: Path | None, db: Path | None) -> None:
        self.config: Config = config_module.load(config_path)
        self.db_path: Path = db or self.config.db or default_db_path()

    def store(self, *, readonly: bool = False) -> Store:
        return Store.open(self.db_path, readonly=readonly)


def _configure_logs(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Callback of the log options: set logging up as soon as both are parsed."""
    ctx.meta[param.name or ""] = value
    if "log_format" in ctx.meta and "log_level" in ctx.meta:
        logs.configure(ctx.meta["log_format"], ctx.meta["log_level"])
    return value


def log_options(f: Any) -> Any:
    f = click.option(
        "--log-format",
        type=click.Choice(["auto", "json", "console"]),
        default="auto",
        show_default=True,
        expose_value=False,
        is_eager=True,
        callback=_configure_logs,
        help="Log lines on stderr: JSON (for journald) or console; auto: console on a terminal.",
    )(f)
    return click.option(
        "--log-level",
        type=click.Choice(logs.LEVELS),
        default="info",
        show_default=True,
        expose_value=False,
        is_eager=True,
        callback=_configure_logs,
        help="The least important log lines shown.",
    )(f)


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dedupd")
def cli() -> None:
    """Find duplicate images, and deal with them safely.

    dedupd fingerprints images (an exact content hash, a hash of the picture
    without its metadata, and perceptual hashes), keeps them in a SQLite
    store, and groups copies of the same picture: exact copies, copies whose
    metadata changed, and resized, re-encoded, converted, lightly edited,
    rotated or mirrored copies. Nothing is ever deleted.
    """


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@db_option
@config_option
@log_options
@click.option("--dry-run", is_flag=True, help="Report duplicates and what would be done; change no file.")
@click.option("--workers", type=click.IntRange(0, 256), help="Fingerprinting processes (default: one per core).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
def scan(
    paths: tuple[Path, ...],
    db: Path | None,
    config_path: Path | None,
    dry_run: bool,
    workers: int | None,
    progress: bool | None,
) -> None:
    """Index new and changed images under PATHS and find their duplicates.

    Unchanged files (same device, inode, size and modification time) are not
    read again; renamed files are followed without re-reading them; files
    that are gone are forgotten. Each duplicate found gets the action the
    config gives its tier (by default: log only).
    """
    from dedupd.actions import Actor
    from dedupd.scan import scan as run_scan

    ctx = Context(config_path, db)
    store = ctx.store()
    try:
        actor = Actor(store, ctx.config, dry_run=dry_run)
        summary = run_scan(
            list(paths), store, ctx.config, on_duplicate=actor.handle, progress=progress, workers=workers
        )
    finally:
        store.close()
    result = summary.as_dict()
    result["actions"] = dict(sorted(actor.counts.items()))
    log.info("scan_finished", db=ctx.db_path, dry_run=dry_run, **result)
    _echo_summary(result)
    if summary.errors:
        sys.exit(errors.EX_PARTIAL)


def _echo_summary(result: dict[str, Any]) -> None:
    dups = result["duplicates"]
    assert isinstance(dups, dict)
    click.echo(
        f"{result['seen']} files seen, {result['fingerprinted']} fingerprinted, "
        f"{result['unchanged']} unchanged, {result['renamed']} renamed, "
        f"{result['removed']} removed, {result['errors']} errors"
        + (f" ({', '.join(f'{k}: {v}' for k, v in result['errors_by_reason'].items())})" if result["errors"] else "")
    )
    click.echo(
        "duplicates found: "
        + (", ".join(f"{k}: {v}" for k, v in dups.items()) if dups else "none")
        + (f"; actions: {', '.join(f'{k}: {v}' for k, v in result['actions'].items())}" if result["actions"] else "")
    )


@cli.command()
@db_option
@config_option
@log_options
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True
)
def groups(db: Path | None, config_path: Path | None, fmt: str) -> None:
    """List duplicate groups: the original first, then each duplicate with its
    tier, distance, similarity and the reason it matched."""
    ctx = Context(config_path, db)
    store = ctx.store(readonly=True)
    try:
        data = [
            {
                "original": str(original),
                "duplicates": [
                    {
                        "path": str(path),
                        "tier": m.tier.value,
                        "distance": m.distances.phash,
                        "similarity": m.similarity,
                        "reason": m.reason + ("; no keep rule decided the original: no action" if tie else ""),
                    }
                    for path, m, tie in members
                ],
            }
            for original, members in store.groups()
        ]
    finally:
        store.close()
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(["original", "path", "tier", "distance", "similarity", "reason"])
        for g in data:
            for d in g["duplicates"]:  # type: ignore[attr-defined]
                writer.writerow([g["original"], d["path"], d["tier"], d["distance"], d["similarity"], d["reason"]])
    else:
        for g in data:
            click.echo(display_path(str(g["original"])))
            for d in g["duplicates"]:  # type: ignore[attr-defined]
                click.echo(
                    f"  {d['tier']:<5} {d['similarity']:>5.1f}%  d={d['distance']:<2} "
                    f"{display_path(d['path'])}\n        {d['reason']}"
                )
        click.echo(f"{len(data)} groups, {sum(len(g['duplicates']) for g in data)} duplicates")  # type: ignore[arg-type, misc]


@cli.command()
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@config_option
@log_options
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def compare(a: Path, b: Path, config_path: Path | None, fmt: str) -> None:
    """Fingerprint two files and explain whether B is a copy of A.

    Exits 0 when they are the same picture, 1 when they are not.
    """
    cfg = config_module.load(config_path)
    prints = []
    for path in (a, b):
        try:
            prints.append(fingerprint_file(path, max_pixels=cfg.max_pixels, max_bytes=cfg.max_file_bytes)[1])
        except errors.FileSkipped as exc:
            raise errors.InputPathError(exc.message) from exc
    verdict = compare_fingerprints(prints[1], prints[0], cfg.match)
    m = verdict.match
    d = verdict.distances
    out: dict[str, Any] = {
        "a": str(a),
        "b": str(b),
        "duplicate": m is not None,
        "tier": m.tier.value if m else None,
        "similarity": m.similarity if m else None,
        "orientation": m.orientation.value if m else None,
        "distances": {"phash": d.phash, "dhash": d.dhash, "colour": round(d.colour, 2)} if d else None,
        "reason": verdict.reason if m is None else m.reason,
        "files": [
            {"path": str(p), "format": f.format, "width": f.width, "height": f.height, "detail": f.detail, "sha256": f.sha256}
            for p, f in zip((a, b), prints)
        ],
    }
    if fmt == "json":
        click.echo(json.dumps(out, indent=2))
    else:
        for f in out["files"]:
            click.echo(f"{display_path(f['path'])}: {f['format']} {f['width']}x{f['height']}, detail {f['detail']}")
        verdict_word = f"DUPLICATE ({out['tier']}, {out['similarity']}% similar)" if m else "NOT duplicates"
        click.echo(f"{verdict_word}: {out['reason']}")
    sys.exit(0 if m is not None else 1)


def main() -> None:
    """Entry point: one handler maps every expected error to a log line and an exit code."""
    try:
        cli.main(prog_name="dedupd", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except errors.DedupdError as exc:
        if not structlog.is_configured():
            logs.configure()
        log.error("dedupd_error", error=exc.message, exit_code=exc.exit_code)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
