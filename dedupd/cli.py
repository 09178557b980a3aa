"""The command line: turns arguments into calls and errors into exit codes.

Exit codes (also in ``dedupd --help``):

  0   success (``compare``: the two files are the same picture)
  1   ``compare``: the two files are different pictures
  2   bad command-line usage
  3   ``scan`` finished, but some files were skipped with errors; ``apply``:
      some planned actions were skipped or failed
  4   ``compare``: similar pictures, not the same picture
  66  a path given on the command line does not exist
  69  ``reload``: no daemon to signal
  70  internal error (a bug: please report it); ``scan``: it finished, but
      some files were skipped because working on them raised one
  74  the store cannot be read or written (``run``: before it is ready;
      once running, a PostgreSQL server that goes away pauses it instead)
  75  the store is busy (another writer); try again
  78  invalid configuration
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import structlog

from dedupd import __version__, errors, logs
from dedupd import config as config_module
from dedupd.config import Config
from dedupd.audit import iso_time
from dedupd.errors import display_path
from dedupd.models import Action, Tier
from dedupd.models import PostgresUrl, StoreLocation
from dedupd.store import AnyStore, default_db_path, location_of, open_store

if TYPE_CHECKING:
    from dedupd.scan import Found

log = structlog.get_logger()

EPILOG = """\b
Exit codes:
  0   success (compare: the same picture)
  1   compare: different pictures
  2   bad usage
  3   scan finished, some files skipped with errors; apply: some not done
  4   compare: similar pictures, not the same
  66  a path given does not exist
  69  reload: no daemon to signal
  70  internal error (a bug); scan: finished, some files skipped because of one
  74  the store cannot be read or written (run: a PostgreSQL server lost
      after the start pauses it instead, until the server answers)
  75  the store is busy (another writer)
  78  invalid configuration
"""

db_option = click.option(
    "--db",
    type=str,
    callback=lambda ctx, param, value: None if value is None else location_of(value),
    help="The store: a SQLite file, or a PostgreSQL database as postgresql://user@host/dbname "
    "(the password from ~/.pgpass, PGPASSFILE or PGPASSWORD). Default: 'db' from the config, else "
    "$STATE_DIRECTORY/dedupd.db or ~/.local/state/dedupd/dedupd.db.",
)
config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A YAML config file (see config.example.yaml). Default: embedded defaults.",
)


class Context:
    def __init__(self, config_path: Path | None, db: StoreLocation | None) -> None:
        self.config: Config = config_module.load(config_path)
        self.db_path: StoreLocation = db or self.config.db or default_db_path()

    def store(self, *, readonly: bool = False) -> AnyStore:
        return open_store(self.db_path, readonly=readonly, host=self.config.host)


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
    db: StoreLocation | None,
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

    Exits 0 when every file was read; 3 when some were skipped with errors
    (unreadable, not an image...: 'dedupd errors' lists them); 70 when working
    on some file raised an internal error (a bug in dedupd: the log has its
    traceback as worker_error, and the file is skipped as internal_error). In
    both cases every other file was indexed and matched.
    """
    from dedupd.actions import Actor, resolve_intents
    from dedupd.audit import Audit
    from dedupd.identity import resolve
    from dedupd.relink import original_gone as original_gone_repair
    from dedupd.relink import original_renamed as original_renamed_repair
    from dedupd.scan import scan as run_scan

    ctx = Context(config_path, db)
    # a missing quarantine (an unmounted disk) is refused: its mount point must not fill up
    config = resolve(ctx.config, strict=False, quarantine_needed=not dry_run)
    store = ctx.store()
    store.lock_writer()
    click_ctx = click.get_current_context()
    bar = sys.stderr.isatty() if progress is None else progress
    if bar and click_ctx.get_parameter_source("log_level") is click.core.ParameterSource.DEFAULT:
        # quiet under the bar: each duplicate is listed at the end, not interleaved
        logs.configure(click_ctx.meta.get("log_format", "auto"), "warning")
    with tempfile.TemporaryDirectory(prefix="dedupd-dry-run-") as scratch:
        if dry_run:  # work on a private copy: the real store and every file stay as they are
            real, store = store, store.snapshot(Path(scratch) / "dry-run.db")
            real.close()
        else:
            resolve_intents(store, Audit(store, config.audit_jsonl))
        try:
            roots = tuple(Path(os.path.realpath(p)) for p in paths)
            if not dry_run:  # 'dedupd apply' acts on what was found here, later
                store.add_scanned_roots(r for r in roots if r.is_dir())
            actor = Actor(store, config, roots=roots, dry_run=dry_run)

            def original_gone(path: Path) -> None:
                # its symlinks would dangle: a quarantined copy goes back in their place
                original_gone_repair(store, config, path, roots=roots)

            def original_renamed(old: Path, new: Path) -> None:
                # its symlinks follow it to its new name
                original_renamed_repair(store, config, old, new)

            summary = run_scan(
                list(roots), store, config, on_duplicate=actor.handle, progress=progress, workers=workers,
                on_forgotten=None if dry_run else original_gone,
                on_renamed=None if dry_run else original_renamed,
            )
        finally:
            store.close()
    result = summary.as_dict()
    result["actions"] = dict(sorted(actor.counts.items()))
    log.info("scan_finished", db=ctx.db_path, dry_run=dry_run, **result)
    if bar:
        _echo_found(summary.found, sum(summary.duplicates.values()))
    _echo_summary(result)
    if summary.internal_errors:  # a bug met on some files: that, not "some files were unreadable", is the news
        click.echo(f"{summary.internal_errors} {'file' if summary.internal_errors == 1 else 'files'} skipped "
                   "because of an internal error (a bug in dedupd; please report it: see worker_error in the log)")
        sys.exit(errors.EX_SOFTWARE)
    if summary.errors:
        sys.exit(errors.EX_PARTIAL)


def _echo_found(found: list[Found], total: int, shown: int = 50) -> None:
    """The duplicates a scan found, after its progress bar: a line each, then how many more."""
    for f in found[:shown]:
        click.echo(f"{f.tier:<7} {f.similarity:5.1f}%  {display_path(str(f.path))}")
        click.echo(f"{'':15}of {display_path(str(f.original))}")
    if total > shown:
        click.echo(f"... and {total - shown} more: 'dedupd groups' lists them all")


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
@click.option(
    "--tier", "tiers", multiple=True, type=click.Choice([t.value for t in Tier]),
    help="Only entries of this tier (repeatable). Default: every tier.",
)  # fmt: skip
def groups(db: StoreLocation | None, config_path: Path | None, fmt: str, tiers: tuple[str, ...]) -> None:
    """List duplicate groups: the original first, then each duplicate with its
    tier, distance, similarity and the reason it matched.

    Entries of the similar tier (another capture of the same scene, or a copy
    changed in a region or strongly recoloured) are listed apart in the
    table: they are for review and never acted on.
    """
    ctx = Context(config_path, db)
    store = ctx.store(readonly=True)
    wanted = set(tiers) or {t.value for t in Tier}
    try:
        data: list[dict[str, Any]] = []
        for original, members in store.groups():
            entries = [
                {
                    "path": str(path),
                    "tier": m.tier.value,
                    "distance": m.distances.phash,
                    "similarity": m.similarity,
                    "reason": m.reason + ("; no keep rule decided the original: no action" if tie else ""),
                }
                for path, m, tie in members
                if m.tier.value in wanted
            ]
            if entries:
                data.append({"original": str(original), "duplicates": entries})
    finally:
        store.close()
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(["original", "path", "tier", "distance", "similarity", "reason"])
        for g in data:
            for d in g["duplicates"]:
                writer.writerow([g["original"], d["path"], d["tier"], d["distance"], d["similarity"], d["reason"]])
    else:
        counts = {"duplicates": 0, "similar": 0}
        for g in data:
            click.echo(display_path(str(g["original"])))
            same = [d for d in g["duplicates"] if Tier(d["tier"]).actionable]
            similar = [d for d in g["duplicates"] if not Tier(d["tier"]).actionable]
            for d in same:
                click.echo(
                    f"  {d['tier']:<7} {d['similarity']:>5.1f}%  d={d['distance']:<2} "
                    f"{display_path(d['path'])}\n          {d['reason']}"
                )
            if similar:
                click.echo("  similar, for review (never acted on):")
            for d in similar:
                click.echo(
                    f"  {d['tier']:<7} {d['similarity']:>5.1f}%  d={d['distance']:<2} "
                    f"{display_path(d['path'])}\n          {d['reason']}"
                )
            counts["duplicates"] += len(same)
            counts["similar"] += len(similar)
        similar_note = f", {counts['similar']} similar for review" if counts["similar"] else ""
        click.echo(f"{len(data)} groups, {counts['duplicates']} duplicates{similar_note}")


@cli.command()
@click.option(
    "--listen",
    help="HOST:PORT to serve on. Default: review.listen from the config, else 127.0.0.1:8765. "
    "Any address but loopback requires a token (printed at start).",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A file whose first line is the token browsers must present (default: review.token_file or "
    "review.token from the config; on loopback none is needed).",
)
@db_option
@config_option
@log_options
def review(listen: str | None, token_file: Path | None, db: StoreLocation | None, config_path: Path | None) -> None:
    """Serve a web page to review the groups and decide, while the daemon runs or not.

    Groups as thumbnails (original first) with size, resolution, format,
    dates, tier, similarity and reason; where two pictures differ; similar
    pairs in their own queue; moved files to restore. Each decision (keep
    all, choose another original, not duplicates, apply, restore) goes through the
    same code as the command line ('dedupd apply', 'dedupd ignore', 'dedupd
    restore') and into the audit log with the browser's user agent as
    decided_by. Stop with Ctrl-C or SIGTERM.
    """
    from dedupd.identity import resolve
    from dedupd.web.app import serve

    ctx = Context(config_path, db)
    serve(
        resolve(ctx.config, strict=False),
        ctx.db_path,
        listen or ctx.config.review.listen,
        token_file=token_file,
        echo=lambda line: click.echo(line),
    )


#: ``dedupd compare`` exit statuses: the same picture, different pictures, only similar
EX_SAME, EX_DIFFERENT, EX_SIMILAR = 0, 1, 4


@cli.command()
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@config_option
@log_options
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def compare(a: Path, b: Path, config_path: Path | None, fmt: str) -> None:
    """Fingerprint two files, compare their pixels and explain whether B is a copy of A.

    Exits 0 when they are the same picture (exact, pixel or near tier), 4 when
    they are only similar (another capture, or a copy changed in a region or
    strongly recoloured: never acted on), 1 when they are different pictures.
    """
    # here, not at the top: hashing brings numpy's and scipy's start-up cost to every command
    from dedupd.hashing import fingerprint_file, verification_pixels
    from dedupd.matching import compare as compare_fingerprints

    cfg = config_module.load(config_path)
    prints = []
    pixels = []
    for path in (a, b):
        try:
            prints.append(fingerprint_file(path, max_pixels=cfg.max_pixels, max_bytes=cfg.max_file_bytes)[1])
            pixels.append(verification_pixels(path, max_pixels=cfg.max_pixels, max_bytes=cfg.max_file_bytes))
        except errors.FileSkipped as exc:
            raise errors.InputPathError(exc.message) from exc
    def closer(side: int) -> tuple[Any, Any]:  # the verifier's second look, at a page-like pair
        new, old = (verification_pixels(p, max_pixels=cfg.max_pixels, max_bytes=cfg.max_file_bytes, side=side) for p in (b, a))
        return new, old

    verdict = compare_fingerprints(prints[1], prints[0], cfg.match, (pixels[1], pixels[0]), closer)
    m = verdict.match
    d = verdict.distances
    out: dict[str, Any] = {
        "a": str(a),
        "b": str(b),
        "duplicate": m is not None and m.tier.actionable,
        "tier": m.tier.value if m else None,
        "similarity": m.similarity if m else None,
        "orientation": m.orientation.value if m else None,
        "distances": {"phash": d.phash, "dhash": d.dhash, "colour": round(d.colour, 2)} if d else None,
        "reason": verdict.reason if m is None else m.reason,
        "files": [
            {"path": str(p), "format": f.format, "width": f.width, "height": f.height, "detail": f.detail, "sha256": f.sha256}
            for p, f in zip((a, b), prints, strict=True)
        ],
    }
    if fmt == "json":
        click.echo(json.dumps(out, indent=2))
    else:
        for f in out["files"]:
            click.echo(f"{display_path(f['path'])}: {f['format']} {f['width']}x{f['height']}, detail {f['detail']}")
        if m is None:
            verdict_word = "NOT duplicates"
        elif m.tier.actionable:
            verdict_word = f"DUPLICATE ({out['tier']}, {out['similarity']}% similar)"
        else:
            verdict_word = f"SIMILAR, not duplicates ({out['similarity']}% of the frame agrees; never acted on)"
        click.echo(f"{verdict_word}: {out['reason']}")
    sys.exit(EX_SAME if m is not None and m.tier.actionable else EX_SIMILAR if m is not None else EX_DIFFERENT)


@cli.command()
@click.option("--watch", "watch", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="A directory to watch (repeatable); added to 'roots' from the config.")
@db_option
@config_option
@log_options
def run(watch: tuple[Path, ...], db: StoreLocation | None, config_path: Path | None) -> None:
    """Run the daemon: watch directories and handle images as they arrive.

    On start it catches up with what changed while it was stopped (without
    re-reading unchanged files), then handles each file once it is complete
    (closed after writing, or unchanged for settle_seconds). SIGTERM/SIGINT
    finish the file in hand and exit 0; SIGHUP reloads the config (an
    invalid one is refused and the running one kept). Speaks systemd's
    notify protocol when NOTIFY_SOCKET is set.
    """
    import dataclasses

    from dedupd.daemon import run as run_daemon
    from dedupd.identity import resolve

    ctx = Context(config_path, db)
    cfg = ctx.config
    if watch:
        roots = tuple(dict.fromkeys([*cfg.roots, *(Path(os.path.abspath(w)) for w in watch)]))
        cfg = dataclasses.replace(cfg, roots=roots)
    if not cfg.roots:
        raise errors.ConfigError("nothing to watch: give --watch DIR or 'roots' in the config", source=config_path, key="roots")
    # missing or overlapping roots are a configuration problem (78), so that
    # systemd's RestartPreventExitStatus=78 stops a restart loop
    cfg = resolve(cfg, strict=True)
    sys.exit(run_daemon(cfg, ctx.db_path, config_path))


@cli.command()
@db_option
@config_option
@log_options
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def status(db: StoreLocation | None, config_path: Path | None, fmt: str) -> None:
    """Whether a daemon is running on this store, what it watches and how, and what it has done."""
    from dedupd.audit import Audit
    from dedupd.store import read_daemon_status

    ctx = Context(config_path, db)
    store = ctx.store(readonly=True)
    try:
        pid = store.writer_pid()
        daemon = read_daemon_status(store)
        hosts = store.daemon_hosts() if store.host else []  # a store several hosts share
        questions = store.pixel_questions() if store.host else None
        counts = store.counts()
        actions = store.action_counts()
        last = [r.as_json() for r in Audit(store).rows(not_log=True, newest=5)] if actions else []
    finally:
        store.close()
    running = pid is not None and daemon is not None and daemon.get("pid") == pid and daemon.get("state") == "running"
    if daemon:  # one time format everywhere
        daemon = {k: iso_time(v) if k in ("started_at", "heartbeat_at", "rate_breaker") and isinstance(v, float) else v
                  for k, v in daemon.items()}
    out: dict[str, Any] = {
        "db": str(ctx.db_path),
        "daemon": {"running": running, "pid": pid, **({k: v for k, v in daemon.items() if k != "pid"} if daemon else {})},
        **counts,
        "actions": actions,
        "last_actions": last,
    }
    if hosts:
        out["host"] = store.host
        out["hosts"] = [
            {"host": h["host"], "state": h["state"], "pid": h["pid"],
             "started_at": iso_time(h["started_at"]), "heartbeat_at": iso_time(h["heartbeat_at"])}
            for h in hosts
        ]
    if questions is not None:
        out["pixels"] = questions
    if fmt == "json":
        click.echo(json.dumps(out, indent=2, default=str))
        return
    click.echo(f"store:    {display_path(str(ctx.db_path))}")
    if running and daemon:
        age = time.time() - dt.datetime.fromisoformat(daemon["heartbeat_at"]).timestamp()
        click.echo(f"daemon:   running, pid {pid}, last heartbeat {age:.0f}s ago, queue {daemon.get('queue_depth', 0)}")
        for r in daemon.get("roots", []):
            breaker = f"  CIRCUIT BREAKER: {r['circuit_breaker']}" if r.get("circuit_breaker") else ""
            click.echo(f"  root {display_path(r['path'])}: {r['observer']} ({r['why']}){breaker}")
        if daemon.get("rate_breaker"):
            click.echo("  CIRCUIT BREAKER: too many actions per minute; actions paused until reload")
    else:
        click.echo("daemon:   not running" + (f" (a writer holds the store: pid {pid})" if pid else ""))
    if hosts:
        click.echo(f"hosts:    {len(hosts)} sharing this store (this one: {store.host})")
        for h in hosts:
            age = time.time() - h["heartbeat_at"]
            click.echo(f"  {h['host']}: {h['state']}, pid {h['pid']}, last heartbeat {age:.0f}s ago")
    if questions is not None and (questions["waiting"] or questions["to_answer"]):
        waiting = ", ".join(f"{n} on {host}" for host, n in questions["waiting"].items()) or "none"
        click.echo(f"pixels:   files here waiting for another host's pixels: {waiting}; "
                   f"questions of other hosts to answer here: {questions['to_answer']}")
    click.echo(f"files:    {counts['files']} indexed, {counts['errors']} errors")
    click.echo(f"groups:   {counts['groups']} ({counts['duplicates']} duplicates: exact {counts['duplicates_exact']}, "
               f"pixel {counts['duplicates_pixel']}, near {counts['duplicates_near']})")
    click.echo("actions:  " + (", ".join(f"{k} {v}" for k, v in actions.items()) or "none"))
    for r in last:
        click.echo(f"  #{r['id']} {r['time']} {r['action']} {r['outcome']} {display_path(r['path'])}")


@cli.command()
@click.option("--to", "to", required=True, help="The PostgreSQL store to fill: postgresql://user@host/dbname "
              "(empty, or shared by other hosts; the password from ~/.pgpass, PGPASSFILE or PGPASSWORD).")
@db_option
@config_option
@log_options
def migrate(to: str, db: StoreLocation | None, config_path: Path | None) -> None:
    """Copy a SQLite store (--db, else the config's or the default one) into a
    PostgreSQL store, in one transaction: an empty one (ids kept), or one other
    hosts share already (ids moved past theirs; this host's files are then placed
    among theirs, and a run cut short while placing them resumes when run again).
    Stop the daemon first: both stores are held as their writer while it runs. Then set 'db:' (and 'host:', if not the machine's name) in the
    config to the URL."""
    from dedupd.actions import resolve_intents
    from dedupd.audit import Audit
    from dedupd.store.postgres import PostgresStore
    from dedupd.store.sqlite import Store
    from dedupd.store.transfer import copy_sqlite_to_postgres

    ctx = Context(config_path, db)
    if not isinstance(ctx.db_path, Path):
        raise errors.InputPathError(f"--db {ctx.db_path}: the store to copy from must be a SQLite file")
    target = location_of(to)
    if not isinstance(target, PostgresUrl):
        raise errors.InputPathError(f"--to {to}: must be a postgresql:// URL")
    if not ctx.db_path.is_file():
        raise errors.InputPathError(f"{display_path(str(ctx.db_path))}: no store here to copy")
    source = Store.open(ctx.db_path)
    dest = PostgresStore.open(target, host=ctx.config.host)  # the copied rows are this host's
    joined = 0
    try:
        source.lock_writer()
        dest.lock_writer()
        # a move a crash left half done is settled here first, as the daemon would at start:
        # what is copied is what happened, and no roll-back is left to the other store
        settled = resolve_intents(source, Audit(source, ctx.config.audit_jsonl))
        if settled:
            click.echo(f"settled {settled} move(s) a crash had left half done")
        resumed = dest.regroup_pending()
        if resumed is not None:  # copied by a migrate cut short while it placed the files
            click.echo(f"{display_path(str(ctx.db_path))} was copied into {target} already: "
                       "placing its files among the other hosts' where that stopped")
        else:
            copied = copy_sqlite_to_postgres(source, dest)
            log.info("store_migrated", source=ctx.db_path, dest=target, **copied)
            click.echo(", ".join(f"{table}: {n}" for table, n in copied.items()))
            click.echo(f"copied {display_path(str(ctx.db_path))} into {target}")
        shared = dest.regroup_pending() is not None  # other hosts' files there
        if shared:
            renumbered = _renumber_records(dest, ctx.config)
            if renumbered:
                click.echo(f"{renumbered} quarantine record(s) now name their moves' ids in {target}")
            joined = _regroup_migrated(dest, ctx.config)
    finally:
        dest.close()
        source.close()
    if shared:
        click.echo(
            f"placed among the other hosts' files: {joined} grouped with theirs; the copies of their "
            "pictures that need their pixels are verified once those hosts share them (their daemons do), "
            "and acted on by this host's daemon"
        )


def _renumber_records(store: AnyStore, config: Config) -> int:
    """Point the quarantine records beside this host's quarantined files at their
    moves' ids in the shared store (a migrate moved them past the other hosts'):
    a roll-back, a relink and ``restore --from-quarantine`` find their records by
    them.  Each move is found by where it put the file and what it moved, so this
    can run again (a migrate resumed) and changes nothing the second time."""
    from dedupd import identity, sidecar
    from dedupd.audit import Audit

    if config.quarantine_dir is None or not config.quarantine_dir.is_dir():
        return 0
    top = identity.real(config.quarantine_dir)  # the moves name it resolved
    audit = Audit(store)

    def ids_for(quarantined: Path, rec: sidecar.QuarantineRecord) -> tuple[int, int | None] | None:
        moves = [i for i in audit.intents_at(quarantined) if i.sha256 == rec.sha256 and i.action == rec.action]
        if not moves:
            return None
        move = moves[-1]  # the latest move to that name
        # the record names its audit row only when it was adopted from a lost store
        return move.id, (move.audit_id if rec.audit_id is not None else None)

    return sidecar.renumber(top, ids_for)


def _regroup_migrated(store: AnyStore, config: Config) -> int:
    """Place the originals just copied into a shared store among every host's
    files (they were grouped among this host's only); how many were found copies
    of (or originals of) another host's files."""
    from tqdm import tqdm

    from dedupd.grouping import Grouping

    grouping = Grouping(store, config)
    joined, after = 0, store.regroup_pending() or 0
    with tqdm(total=store.counts()["files"], desc="regrouping", unit="file", disable=None, leave=False) as bar:
        while ids := store.originals_here(after, limit=100):
            for file_id in ids:
                joined += bool(grouping.regroup([file_id]))
                bar.update(1)
            after = ids[-1]
            with store.atomic():  # where this stands, should it be cut short
                store.set_regroup_pending(after)
    with store.atomic():
        store.set_regroup_pending(None)
    log.info("migrated_files_regrouped", joined=joined)
    return joined


@cli.command("check-config")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@log_options
def check_config(file: Path) -> None:
    """Validate a config file and print the effective configuration (exit 78 if invalid).

    Paths are printed resolved (symlinks followed); the roots and the
    quarantine_dir must exist, and must not overlap in ways that cannot work.
    """
    import yaml

    from dedupd.identity import resolve

    cfg = resolve(config_module.load(file), strict=True)
    click.echo(yaml.safe_dump(cfg.to_dict(), sort_keys=False), nl=False)


@cli.command()
@click.option("--pid", type=click.IntRange(min=1), required=True,
              help="The process ID of the running daemon (in the unit: $MAINPID).")
@db_option
@config_option
@log_options
def reload(pid: int, db: StoreLocation | None, config_path: Path | None) -> None:
    """Check the config, then ask the daemon at --pid to re-read it (SIGHUP).

    The units' ExecReload= runs this in the service's own sandbox, so a file
    the daemon would refuse, or a root or quarantine it could not use, fails
    `systemctl reload` with exit 78 and the reason, and the daemon keeps
    running as it was. Exit 69 if no daemon runs with that process ID.
    """
    import signal

    from dedupd import startup

    from dedupd.identity import resolve

    ctx = Context(config_path, db)
    startup.check(resolve(ctx.config, strict=True), ctx.db_path)
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        raise errors.DaemonUnreachable(f"pid {pid}: {exc.strerror}") from exc
    log.info("reload_requested", pid=pid, config=config_path)


def parse_since(text: str) -> float:
    """``2h``, ``3d``, ``30m``, ``1w`` ago, or an ISO 8601 date/time; returns a Unix time."""
    import datetime as dt

    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    t = text.strip()
    if t[:-1].isdigit() and t[-1:] in units:
        return time.time() - int(t[:-1]) * units[t[-1]]
    try:
        when = dt.datetime.fromisoformat(t)
    except ValueError:
        raise click.BadParameter(f"{text!r}: use 30m, 2h, 3d, 1w or an ISO date such as 2026-11-01T12:00") from None
    if when.tzinfo is None:
        when = when.astimezone()
    return when.timestamp()


@cli.command()
@db_option
@config_option
@log_options
@click.option("--since", help="Only entries newer than this: 30m, 2h, 3d, 1w or an ISO date.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def audit(db: StoreLocation | None, config_path: Path | None, since: str | None, fmt: str) -> None:
    """Show the audit log: every action taken or skipped, on which file,
    because of which original, how similar they were, and why."""
    from dedupd.audit import Audit

    ctx = Context(config_path, db)
    store = ctx.store(readonly=True)
    try:
        rows = Audit(store).rows(since=parse_since(since) if since else None)
    finally:
        store.close()
    if fmt == "json":
        click.echo(json.dumps([r.as_json() for r in rows], indent=2))
        return
    for r in rows:
        when = iso_time(r.at)
        line = f"#{r.id:<5} {when}  {r.action:<10} {r.outcome:<8} {display_path(str(r.path))}"
        if r.original is not None:
            line += f"\n         original: {display_path(str(r.original))}"
        if r.tier:
            line += f" ({r.tier}, {r.similarity}% similar, distance {r.phash_distance})"
        if r.destination is not None and r.action != "restore":
            line += f"\n         now at:   {display_path(str(r.destination))}"
        line += f"\n         {r.detail}"
        click.echo(line)
    click.echo(f"{len(rows)} entries")


@cli.command()
@click.argument("ids", nargs=-1, type=int)
@click.option("--since", help="Restore every move newer than this: 30m, 2h, 3d, 1w or an ISO date.")
@click.option("--all", "everything", is_flag=True, help="Restore every move not yet restored.")
@click.option(
    "--from-quarantine",
    "from_quarantine",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Restore every file under this quarantine directory from the record beside it "
    "(works without the store that recorded the moves).",
)
@click.option("--dry-run", is_flag=True, help="Say what would be restored; move nothing.")
@db_option
@config_option
@log_options
def restore(
    ids: tuple[int, ...],
    since: str | None,
    everything: bool,
    from_quarantine: Path | None,
    dry_run: bool,
    db: StoreLocation | None,
    config_path: Path | None,
) -> None:
    """Undo moves: put quarantined (or symlinked) files back where they were.

    IDS are audit entry numbers (see 'dedupd audit'). Each file comes back
    byte-identical (verified by SHA-256), never over a file that now exists
    at its path, never outside its watched root (its directory resolved).
    A restore is final: the file is kept (dedupd does not act on these bytes
    at this path again until 'dedupd ignores remove ID'; a file edited since,
    its metadata included, is judged afresh) and the pair is remembered as
    "not duplicates". Exits 3 if any could not be restored.
    """
    from dedupd.audit import Audit
    from dedupd.identity import resolve
    from dedupd.restore import RestoreResult, resolve_pending_restores, restore_from_quarantine, restore_rows

    if sum(bool(x) for x in (ids, since, everything, from_quarantine)) != 1:
        raise click.UsageError("give audit IDS, or --since, or --all, or --from-quarantine DIR")
    ctx = Context(config_path, db)
    roots = resolve(ctx.config, strict=False).roots
    store = ctx.store()
    store.lock_writer_or_share()
    results: list[RestoreResult] = []
    try:
        trail = Audit(store, ctx.config.audit_jsonl)
        if not dry_run:
            resolve_pending_restores(store, trail)
        if from_quarantine is not None:
            results = restore_from_quarantine(store, trail, from_quarantine, roots=roots, dry_run=dry_run)
        else:
            if ids:
                rows = []
                for i in ids:
                    row = trail.get(i)
                    if row is None:
                        raise errors.InputPathError(f"no audit entry #{i}")
                    rows.append(row)
            else:
                rows = trail.rows(moves=True, since=parse_since(since) if since else None, mine=True)
            # --all and --since skip what is already restored rather than report it
            results = restore_rows(store, trail, rows, roots=roots, dry_run=dry_run, decided_by="cli",
                                   pending_only=not ids)
    finally:
        store.close()
    failed = sum(not r.ok for r in results)
    for result in results:
        mark = "ok  " if result.ok else "FAIL"
        number = f"#{result.audit_id} " if result.audit_id is not None else ""
        click.echo(f"{mark} {number}{display_path(str(result.path))}: {result.detail}")
    click.echo(f"{len(results) - failed} restored{' (dry run)' if dry_run else ''}, {failed} refused")
    if failed:
        sys.exit(errors.EX_PARTIAL)


def _size(n: int) -> str:
    """Bytes for a person: 1.2 MB (powers of 1000, as file managers show them)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"  # pragma: no cover - the loop returns


@cli.command("errors")
@db_option
@config_option
@log_options
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def errors_command(db: StoreLocation | None, config_path: Path | None, fmt: str) -> None:
    """List the files that were skipped and why (corrupt, not an image, too
    large, unreadable...). Each is looked at again when it changes."""
    ctx = Context(config_path, db)
    store = ctx.store(readonly=True)
    try:
        found = store.errors()
    finally:
        store.close()
    if fmt == "json":
        click.echo(json.dumps([{"path": str(p), "reason": r, "detail": d, "time": iso_time(t)} for p, r, d, t in found], indent=2))
        return
    for path, reason, detail, _ in found:
        click.echo(f"{reason:<22} {display_path(str(path))}\n{'':<22} {detail}")
    by_reason: dict[str, int] = {}
    for _, reason, _, _ in found:
        by_reason[reason] = by_reason.get(reason, 0) + 1
    click.echo(f"{len(found)} files skipped" + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(by_reason.items()))})" if found else ""))


@cli.command("apply")
@db_option
@config_option
@log_options
@click.option("--dry-run", is_flag=True, help="Print the plan; move nothing.")
@click.option(
    "--tier", "tiers", multiple=True, type=click.Choice([t.value for t in Tier if t.actionable]),
    help="Only duplicates of this tier (repeatable). Default: every tier whose action is not log.",
)  # fmt: skip
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def apply_command(db: StoreLocation | None, config_path: Path | None, dry_run: bool, tiers: tuple[str, ...], fmt: str) -> None:
    """Act now on duplicates recorded earlier (by a scan or the daemon with
    actions on log) that have no completed action, with the actions the
    config gives their tiers.

    Prints the plan: each file, its original, tier, action and the bytes it
    frees, and a total. Every safety rule holds: each file and its original
    are checked again just before the move, and a file that changed is
    skipped. Pairs a person restored or marked as not duplicates are never
    planned. Safe while the daemon runs (the two take turns writing the
    store). Exits 0 when every planned action was done (or there was
    nothing to do), 3 when some were skipped or failed.
    """
    from dedupd import apply as applying
    from dedupd.actions import resolve_intents
    from dedupd.audit import Audit
    from dedupd.identity import resolve

    ctx = Context(config_path, db)
    config = resolve(ctx.config, strict=False)
    wanted = {Tier(t) for t in tiers} or None
    store = ctx.store(readonly=dry_run)
    try:
        if not dry_run and store.lock_writer_or_share():
            # the only writer: moves an earlier run left half done are ours to settle
            resolve_intents(store, Audit(store, config.audit_jsonl))
        items = applying.plan(store, config, tiers=wanted)
        results = None if dry_run else applying.execute(items, store, config, decided_by="cli")
    finally:
        store.close()
    rows: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        row: dict[str, Any] = {
            "file_id": item.file_id,
            "path": str(item.path),
            "original_id": item.original_id,
            "original": str(item.original_path),
            "tier": item.tier.value,
            "similarity": item.similarity,
            "action": item.action.value,
            "bytes_freed": item.bytes_freed,
        }
        if results is not None:
            r = results[i]
            row |= {"outcome": r.outcome, "detail": r.detail, "audit_id": r.audit_id}
            if not r.done:
                row["bytes_freed"] = 0
        rows.append(row)
    done = len(rows) if results is None else sum(r.done for r in results)
    freed = sum(r["bytes_freed"] for r in rows)
    if not items and not any(config.actions.for_tier(t) is not Action.LOG for t in Tier):
        note = "nothing to apply: the config's action for every tier is log (set 'actions:' in the config)"
    elif not items:
        note = "nothing to apply: every recorded duplicate has been acted on or decided"
    else:
        note = None
    if fmt == "json":
        total = {"planned": len(items), "done": 0 if results is None else done, "bytes_freed": freed}
        click.echo(json.dumps({"dry_run": dry_run, "actions": rows, "total": total, "note": note}, indent=2))
    else:
        for row in rows:
            outcome = "" if results is None else ("done" if row["outcome"] == "done" else row["outcome"].upper())
            click.echo(
                f"{outcome + ' ' if outcome else ''}{row['action']:<10} {row['tier']:<5} {row['similarity']:>5.1f}%"
                f" {_size(row['bytes_freed']):>9}  {display_path(row['path'])}"
                f"\n          original: {display_path(row['original'])}"
                + (f"\n          {row['detail']}" if results is not None and row["outcome"] != "done" else "")
            )
        if note:
            click.echo(note)
        elif results is None:
            click.echo(f"{len(rows)} files would be moved, {_size(freed)} freed (dry run: nothing moved)")
        else:
            click.echo(f"{done} of {len(rows)} files moved, {_size(freed)} freed"
                       + (f"; {len(rows) - done} not moved (see above)" if done < len(rows) else ""))
            held = sum(r.detail.startswith(applying.BREAKER) for r in results)
            if held:
                click.echo(f"the rate breaker (max_actions_per_minute) held back {held}: "
                           "run 'dedupd apply' again to go on")
    if results is not None and done < len(rows):
        sys.exit(errors.EX_PARTIAL)


@cli.command()
@click.argument("a", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("b", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@db_option
@config_option
@log_options
def ignore(a: Path, b: Path, db: StoreLocation | None, config_path: Path | None) -> None:
    """Remember that A and B are not duplicates: dedupd will not pair them again.

    The decision is about these two files (their content at their paths): it
    holds across rescans, renames and the same files saved again, and it
    does not stop other copies of either picture from being grouped.
    'dedupd ignores' lists decisions, 'dedupd ignores remove ID' takes one back.
    """
    from dedupd import decisions

    ctx = Context(config_path, db)
    store = ctx.store()
    store.lock_writer_or_share()
    try:
        done = decisions.ignore_pair(store, ctx.config, a, b, decided_by="cli")
    finally:
        store.close()
    if done.decision_id is not None:
        click.echo(f"recorded: not duplicates (decision #{done.decision_id})")
    else:
        click.echo("already recorded")
    if done.regrouped:
        click.echo(f"{len(done.regrouped)} files regrouped")


@cli.group(invoke_without_command=True)
@db_option
@config_option
@click.pass_context
def ignores(click_ctx: click.Context, db: StoreLocation | None, config_path: Path | None) -> None:
    """The decisions people made: pairs marked as not duplicates, and files
    restored (which dedupd leaves alone from then on). Without a subcommand: list."""
    click_ctx.obj = {"db": db, "config_path": config_path}  # the subcommands' defaults
    if click_ctx.invoked_subcommand is None:
        click_ctx.invoke(ignores_list, db=db, config_path=config_path)


def _group_option(name: str, value: Path | None) -> Path | None:
    """An option given to the subcommand, else to its group (``dedupd ignores --db X list``)."""
    ctx = click.get_current_context()
    if value is None and isinstance(ctx.obj, dict):
        given = ctx.obj.get(name)
        return given if isinstance(given, Path) else None
    return value


def _group_db(value: StoreLocation | None) -> StoreLocation | None:
    """``--db`` given to the subcommand, else to its group: a path or a PostgreSQL URL."""
    ctx = click.get_current_context()
    if value is None and isinstance(ctx.obj, dict):
        given = ctx.obj.get("db")
        return given if isinstance(given, (Path, PostgresUrl)) else None
    return value


@ignores.command("list")
@db_option
@config_option
@log_options
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def ignores_list(db: StoreLocation | None = None, config_path: Path | None = None, fmt: str = "table") -> None:
    """List every decision, oldest first, with its ID."""
    ctx = Context(_group_option("config_path", config_path), _group_db(db))
    store = ctx.store(readonly=True)
    try:
        found = store.decisions()
    finally:
        store.close()
    if fmt == "json":
        click.echo(json.dumps([
            {
                "id": d.id, "kind": d.kind.value,
                "path": None if d.path is None else str(d.path), "sha256": d.sha256,
                "other_path": None if d.other_path is None else str(d.other_path), "other_sha256": d.other_sha256,
                "time": iso_time(d.decided_at), "decided_by": d.decided_by, "note": d.note,
            }
            for d in found
        ], indent=2))  # fmt: skip
        return
    for d in found:
        def name(path: Path | None, sha: str | None) -> str:
            return display_path(str(path)) if path is not None else f"any file with SHA-256 {(sha or '')[:12]}..."

        if d.kind.value == "keep":
            what = f"kept (restored): {name(d.path, d.sha256)}"
        else:
            what = f"not duplicates: {name(d.path, d.sha256)}\n         and {name(d.other_path, d.other_sha256)}"
        by = f" by {d.decided_by}" if d.decided_by else ""
        click.echo(f"#{d.id:<5} {iso_time(d.decided_at)}{by}  {what}\n         {d.note}")
    click.echo(f"{len(found)} decisions")


@ignores.command("remove")
@click.argument("decision_id", metavar="ID", type=int)
@db_option
@config_option
@log_options
def ignores_remove(decision_id: int, db: StoreLocation | None, config_path: Path | None) -> None:
    """Take back decision ID: the files may be grouped and acted on again (by
    'dedupd apply', or by the daemon when they next change)."""
    from dedupd import decisions

    ctx = Context(_group_option("config_path", config_path), _group_db(db))
    store = ctx.store()
    store.lock_writer_or_share()
    try:
        done = decisions.remove(store, ctx.config, decision_id, decided_by="cli")
    finally:
        store.close()
    click.echo(f"removed decision #{decision_id}")
    if done.regrouped:
        click.echo(f"{len(done.regrouped)} files regrouped; 'dedupd apply' acts on them")


#: Set for the process and its workers unless already set.  dedupd's numpy work is
#: small (a 3-vector product over a picture's pixels, 2x2 to 4x4 solves) and its
#: parallelism is a pool of processes, but each OpenBLAS that numpy and scipy load
#: starts a thread per core, and their start costs up to 0.3 s of CPU per process
#: (docs/benchmarks.md, "Start-up of a dedupd process").  One thread computes the
#: same results.
BLAS_ENVIRONMENT = {"OPENBLAS_NUM_THREADS": "1"}


def main() -> None:
    """Entry point: one handler maps every expected error to a log line and an exit code."""
    for name, value in BLAS_ENVIRONMENT.items():
        os.environ.setdefault(name, value)  # before numpy loads (no command imports it at the top)
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
        if sys.stderr.isatty():  # a person reads this: one plain line
            click.echo(f"dedupd: error: {display_path(exc.message)}", err=True)
            sys.exit(exc.exit_code)
        if not structlog.is_configured():
            logs.configure()
        log.error("dedupd_error", error=exc.message, exit_code=exc.exit_code)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last resort: a bug gets a traceback in the log and exit 70
        if not structlog.is_configured():
            logs.configure()
        if _store_damage(exc):  # not a bug: the store's file is damaged or cannot be read
            log.error("dedupd_error", error=f"the store is damaged: {exc}; 'dedupd restore --from-quarantine DIR' "
                      "works from the records beside each quarantined file", exit_code=errors.EX_IOERR)
            sys.exit(errors.EX_IOERR)
        log.exception("internal_error", note="this is a bug in dedupd; please report it")
        sys.exit(errors.EX_SOFTWARE)


def _store_damage(exc: BaseException) -> bool:
    """SQLite's own words for a damaged or unreadable file (a read anywhere can meet
    it first), as opposed to a mistake in dedupd's SQL, which stays a bug (70)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    text = str(exc).lower()
    return any(words in text for words in ("malformed", "not a database", "disk i/o error", "corrupt"))
