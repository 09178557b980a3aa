"""The configuration: the only module that reads YAML.

The file is turned into typed, frozen values once: paths expanded, enums
parsed, thresholds range-checked.  An unknown key or a bad value is a
:class:`~dedupd.errors.ConfigError` naming the file and the key.  Every
default is embedded here, so dedupd runs with no file at all.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dedupd.errors import ConfigError
from dedupd.models import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_DECODE_BYTES,
    DEFAULT_MAX_PIXELS,
    Action,
    PostgresUrl,
    StoreLocation,
    Tier,
)


class KeepRule(enum.StrEnum):
    """Rules that decide which file of a pair is the original, tried in order."""

    REFERENCE = "reference"  # a file under a reference directory
    HIGHEST_RESOLUTION = "highest_resolution"
    LARGEST_FILE = "largest_file"
    PREFERRED_FORMAT = "preferred_format"  # earlier in preferred_formats
    OLDEST = "oldest"  # smallest modification time
    FIRST_SEEN = "first_seen"  # the one dedupd indexed first


class SymlinkStyle(enum.StrEnum):
    """How the ``symlink`` action points at the original."""

    #: a path from the link's directory (``../2024/a.jpg``): stays valid when
    #: the share is mounted elsewhere (NFS and SMB clients) or moved as a whole
    RELATIVE = "relative"
    ABSOLUTE = "absolute"  # the original's full path, as dedupd sees it


DEFAULT_INCLUDE = (
    "*.jpg", "*.jpeg", "*.jpe", "*.jfif", "*.png", "*.webp", "*.gif", "*.tif", "*.tiff",
    "*.bmp", "*.heic", "*.heif", "*.avif",
)  # fmt: skip
DEFAULT_EXCLUDE = (
    "*.part", "*.tmp", "*.crdownload", "*.partial", "*.download", "*.swp",
    ".~*", "~$*", ".*.??????",  # rsync's temporary ".name.XXXXXX"
    "@eaDir", ".thumbnails", "#recycle", "#snapshot", ".Trash-*", ".git", "lost+found",
    "._*",  # macOS AppleDouble files (resource forks on SMB/NFS shares), not pictures
)  # fmt: skip


@dataclass(frozen=True)
class MatchSettings:
    """When two pictures count as the same.  Defaults are conservative."""

    #: pHash Hamming distance (of 64 bits) at most, for a near-duplicate candidate
    near_distance: int = 10
    #: dHash Hamming distance (of 64 bits) at most, to confirm a candidate
    verify_distance: int = 14
    #: mean absolute difference of the 4x4 colour grids (0-255) at most
    colour_distance: float = 14.0
    #: pictures whose grey thumbnail has a standard deviation below this are
    #: "low information" (flat, nearly flat) and never near-match anything
    min_detail: float = 6.0
    #: also match rotated (90/180/270) and mirrored copies
    rotations: bool = True


@dataclass(frozen=True)
class ActionSettings:
    """What to do with a duplicate of each tier."""

    exact: Action = Action.LOG
    pixel: Action = Action.LOG
    near: Action = Action.LOG

    def for_tier(self, tier: Tier) -> Action:
        if not tier.actionable:  # similar pairs are for review, never acted on
            return Action.LOG
        return Action(getattr(self, tier.value))


#: where ``dedupd review`` listens unless told otherwise: loopback only
DEFAULT_REVIEW_LISTEN = "127.0.0.1:8765"


@dataclass(frozen=True)
class ReviewSettings:
    """``dedupd review``: the local web page over the store."""

    #: HOST:PORT; any address but loopback requires a token
    listen: str = DEFAULT_REVIEW_LISTEN
    #: the token a browser must present (given once as ``?token=``, then a
    #: cookie); None with ``token_file`` None: one is made up and printed at
    #: start when the address is not loopback
    token: str | None = None
    #: a file holding the token (first line), instead of writing it in the config
    token_file: Path | None = None
    #: host names (besides the address itself) the page answers to; any
    #: other Host header is refused (DNS rebinding)
    allowed_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    """Everything dedupd can be told, with its embedded defaults."""

    source: Path | None = None  # the file this came from, None for the defaults
    #: a SQLite file, or a PostgreSQL URL; None: the default location (see dedupd.store.default_db_path)
    db: StoreLocation | None = None
    #: this machine's name in a store several hosts share (PostgreSQL): its
    #: files, intents and audit rows are the ones with this name.  None: the
    #: host name.  Set it when the host name may change: a host renamed finds
    #: its files under its old name, another host's to it
    host: str | None = None
    roots: tuple[Path, ...] = ()  # directories the daemon watches
    reference_dirs: tuple[Path, ...] = ()  # never acted on; their files are originals
    quarantine_dir: Path | None = None
    include: tuple[str, ...] = DEFAULT_INCLUDE
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    match: MatchSettings = field(default_factory=MatchSettings)
    actions: ActionSettings = field(default_factory=ActionSettings)
    review: ReviewSettings = field(default_factory=ReviewSettings)
    #: the best copy is the original: a reference copy, else the most pixels,
    #: else the largest file (less compressed; never decides between files
    #: whose picture data is identical, where size is only metadata), else the
    #: one seen first (per path: touching or re-tagging does not change it)
    keep: tuple[KeepRule, ...] = (
        KeepRule.REFERENCE, KeepRule.HIGHEST_RESOLUTION, KeepRule.LARGEST_FILE, KeepRule.FIRST_SEEN,
    )  # fmt: skip
    preferred_formats: tuple[str, ...] = ("PNG", "TIFF", "HEIF", "AVIF", "WEBP", "JPEG")
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_file_bytes: int = DEFAULT_MAX_BYTES
    #: memory one decoded frame and its working copies may take (bands and bit
    #: depth counted, not just pixels): above it a file is skipped, recorded
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES
    #: address space a fingerprinting worker may use beyond what it holds once
    #: started; a file that exhausts it is recorded as out_of_memory (0: no limit)
    worker_memory_bytes: int = DEFAULT_MAX_DECODE_BYTES + 512 * 1024 * 1024
    workers: int = 0  # 0: one per CPU core
    settle_seconds: float = 2.0
    polling: bool | None = None  # None: poll only roots on network filesystems
    poll_interval: float = 5.0
    reconcile_interval: float = 0.0  # seconds; 0: only at start
    max_actions_per_minute: int = 120
    audit_jsonl: Path | None = None
    symlink: SymlinkStyle = SymlinkStyle.RELATIVE

    def effective_workers(self) -> int:
        return self.workers or max(1, len(os.sched_getaffinity(0)))

    def to_dict(self) -> dict[str, Any]:
        """The effective configuration as plain YAML-able values."""

        def plain(value: Any) -> Any:
            if isinstance(value, (Path, PostgresUrl)):
                return str(value)  # a URL without its password
            if isinstance(value, enum.Enum):
                return value.value
            if isinstance(value, tuple):
                return [plain(v) for v in value]
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
            return value

        out = plain(self)
        out.pop("source")
        if out["review"]["token"] is not None:
            out["review"]["token"] = "(set; not shown)"
        return out  # type: ignore[no-any-return]


# --- parsing -----------------------------------------------------------------


def load(path: Path | None) -> Config:
    """Read and check a configuration file; ``None`` gives the defaults."""
    if path is None:
        return Config()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", source=path) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError("not UTF-8 text", source=path) from exc
    import yaml  # noqa: PLC0415 - about 0.05 s of CPU; a command run without a config file never needs it

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", source=path) from exc
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError("the top level must be a mapping of keys to values", source=path)
    return from_mapping(data, source=path)


def from_mapping(data: Mapping[str, Any], *, source: Path | None = None) -> Config:
    """Build a :class:`Config` from already-parsed values (a YAML document)."""
    p = _Parser(source)
    base = source.absolute().parent if source else Path.cwd()
    kwargs: dict[str, Any] = {"source": source}
    simple: dict[str, Callable[[str, Any], Any]] = {
        "db": lambda k, v: PostgresUrl(v) if isinstance(v, str) and PostgresUrl.matches(v) else p.path(k, v, base),
        "host": lambda k, v: _host_name(p, k, v),
        "roots": lambda k, v: tuple(p.path(k, x, base) for x in p.seq(k, v)),
        "reference_dirs": lambda k, v: tuple(p.path(k, x, base) for x in p.seq(k, v)),
        "quarantine_dir": lambda k, v: p.path(k, v, base),
        "include": lambda k, v: tuple(p.string(k, x) for x in p.seq(k, v)),
        "exclude": lambda k, v: tuple(p.string(k, x) for x in p.seq(k, v)),
        "keep": lambda k, v: tuple(p.enum(k, x, KeepRule) for x in p.seq(k, v)),
        "preferred_formats": lambda k, v: tuple(p.string(k, x).upper() for x in p.seq(k, v)),
        "max_pixels": lambda k, v: p.number(k, v, int, 1, 10**12),
        "max_file_bytes": lambda k, v: p.number(k, v, int, 1, 2**40),
        "max_decode_bytes": lambda k, v: p.number(k, v, int, 1, 2**44),
        "worker_memory_bytes": lambda k, v: p.number(k, v, int, 0, 2**46),
        "workers": lambda k, v: p.number(k, v, int, 0, 256),
        "settle_seconds": lambda k, v: p.number(k, v, float, 0.0, 3600.0),
        "polling": lambda k, v: None if v is None else p.boolean(k, v),
        "poll_interval": lambda k, v: p.number(k, v, float, 0.1, 3600.0),
        "reconcile_interval": lambda k, v: p.number(k, v, float, 0.0, 7 * 86400.0),
        "max_actions_per_minute": lambda k, v: p.number(k, v, int, 1, 1_000_000),
        "audit_jsonl": lambda k, v: p.path(k, v, base),
        "symlink": lambda k, v: p.enum(k, v, SymlinkStyle),
    }
    for key, value in data.items():
        if key in simple:
            kwargs[key] = None if value is None and key in _NULLABLE else simple[key](key, value)
        elif key == "match":
            kwargs[key] = _match(p, p.mapping(key, value))
        elif key == "actions":
            kwargs[key] = _actions(p, p.mapping(key, value))
        elif key == "review":
            kwargs[key] = _review(p, p.mapping(key, value), base)
        else:
            known = ", ".join(sorted([*simple, "match", "actions", "review"]))
            raise ConfigError(f"unknown key (known: {known})", source=source, key=str(key))
    if kwargs.get("keep") == ():
        raise ConfigError("needs at least one rule", source=source, key="keep")
    config = Config(**kwargs)
    acts = config.actions
    if config.quarantine_dir is None and any(
        acts.for_tier(t) is not Action.LOG for t in Tier
    ):
        raise ConfigError(
            "quarantine and symlink actions need a quarantine_dir", source=source, key="quarantine_dir"
        )
    return config


_NULLABLE = frozenset({"db", "host", "quarantine_dir", "audit_jsonl", "polling"})


def _host_name(p: _Parser, key: str, value: Any) -> str:
    """A host's name: printable, no ':' (output writes another host's files as ``host:/path``)."""
    name = p.string(key, value)
    if not name or len(name) > 255 or ":" in name or not name.isprintable() or name != name.strip():
        raise p.fail(key, "must be a name of 1 to 255 printable characters, without ':' or surrounding spaces")
    return name


def _match(p: _Parser, data: Mapping[str, Any]) -> MatchSettings:
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = f"match.{key}"
        if key in ("near_distance", "verify_distance"):
            kwargs[key] = p.distance(name, value)
        elif key == "colour_distance":
            kwargs[key] = p.number(name, value, float, 0.0, 255.0)
        elif key == "min_detail":
            kwargs[key] = p.number(name, value, float, 0.0, 128.0)
        elif key == "rotations":
            kwargs[key] = p.boolean(name, value)
        else:
            raise ConfigError("unknown key", source=p.source, key=name)
    return MatchSettings(**kwargs)


def _actions(p: _Parser, data: Mapping[str, Any]) -> ActionSettings:
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = f"actions.{key}"
        if key == Tier.SIMILAR.value:
            action = p.enum(name, value, Action)
            if action is not Action.LOG:
                raise ConfigError(
                    "similar pairs may be other captures of a scene and are only ever logged "
                    "for review; no action can be set for them",
                    source=p.source,
                    key=name,
                )
            continue
        if key not in {t.value for t in Tier}:
            raise ConfigError("unknown tier (exact, pixel, near)", source=p.source, key=name)
        kwargs[key] = p.enum(name, value, Action)
    return ActionSettings(**kwargs)


def _review(p: _Parser, data: Mapping[str, Any], base: Path) -> ReviewSettings:
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = f"review.{key}"
        if key == "listen":
            kwargs[key] = p.string(name, value)
            parse_listen(kwargs[key], source=p.source, key=name)
        elif key == "token":
            token = None if value is None else p.string(name, value)
            if token is not None and len(token) < 16:
                raise p.fail(name, "must be at least 16 characters (or null: one is made up at start)")
            kwargs[key] = token
        elif key == "token_file":
            kwargs[key] = None if value is None else p.path(name, value, base)
        elif key == "allowed_hosts":
            kwargs[key] = tuple(p.string(name, x).lower() for x in p.seq(name, value))
        else:
            raise ConfigError("unknown key (known: allowed_hosts, listen, token, token_file)", source=p.source, key=name)
    return ReviewSettings(**kwargs)


def parse_listen(text: str, *, source: Path | None = None, key: str = "review.listen") -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8765`` for IPv6) as a host and a port number."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{text!r} is not HOST:PORT (such as 127.0.0.1:8765 or [::1]:8765)", source=source, key=key)
    return host, int(port)


class _Parser:
    """Checks one value at a time and names the key when it is wrong."""

    def __init__(self, source: Path | None) -> None:
        self.source = source

    def fail(self, key: str, detail: str) -> ConfigError:
        return ConfigError(detail, source=self.source, key=key)

    def mapping(self, key: str, value: Any) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(key, "must be a mapping")
        return value

    def seq(self, key: str, value: Any) -> list[Any]:
        if isinstance(value, (str, bytes)) or not isinstance(value, list):
            raise self.fail(key, "must be a list")
        return value

    def string(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key, "must be a non-empty string")
        return value

    def path(self, key: str, value: Any, base: Path) -> Path:
        text = os.path.expandvars(os.path.expanduser(self.string(key, value)))
        # normalised, so that comparisons of paths as text (is_under) hold
        return Path(os.path.normpath(base / text))

    def boolean(self, key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, "must be true or false")
        return value

    def number(self, key: str, value: Any, kind: type, low: float, high: float) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, f"must be a number from {low} to {high}")
        if kind is int and not isinstance(value, int):
            raise self.fail(key, f"must be a whole number from {low} to {high}")
        if not low <= value <= high:
            raise self.fail(key, f"{value} is out of range ({low} to {high})")
        return kind(value)

    def enum(self, key: str, value: Any, kind: type[enum.StrEnum]) -> Any:
        try:
            return kind(value)
        except ValueError:
            choices = ", ".join(m.value for m in kind)
            raise self.fail(key, f"{value!r} is not one of: {choices}") from None

    def distance(self, key: str, value: Any) -> int:
        """A Hamming distance in bits (``10``) or a similarity in percent (``"85%"``)."""
        if isinstance(value, str) and value.strip().endswith("%"):
            try:
                percent = float(value.strip()[:-1])
            except ValueError:
                raise self.fail(key, f"{value!r} is not a percentage") from None
            if not 50.0 <= percent <= 100.0:
                raise self.fail(key, f"{value} is out of range (50% to 100%)")
            return distance_for_similarity(percent)
        return int(self.number(key, value, int, 0, 32))


def similarity_for_distance(distance: int, bits: int = 64) -> float:
    """Similarity in percent for a Hamming distance: 0 bits apart is 100%."""
    return round(100.0 * (1.0 - distance / bits), 1)


def distance_for_similarity(percent: float, bits: int = 64) -> int:
    """The largest Hamming distance whose similarity is at least ``percent``."""
    return int((1.0 - percent / 100.0) * bits + 1e-9)
