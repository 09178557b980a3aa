"""Tests for dedupd.config: the YAML loader, its types, ranges and error messages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from dedupd import config
from dedupd.config import Config, KeepRule, MatchSettings, SymlinkStyle, distance_for_similarity, similarity_for_distance
from dedupd.errors import EX_CONFIG, ConfigError
from dedupd.models import Action, Tier


def write(tmp_path: Path, text: str, name: str = "dedupd.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str) -> Config:
    return config.load(write(tmp_path, text))


def config_error(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert info.value.exit_code == EX_CONFIG
    assert info.value.source == path
    assert str(path) in str(info.value)
    return info.value


# --- defaults -----------------------------------------------------------------


def test_no_file_gives_the_embedded_defaults() -> None:
    """load(None) is the default Config, with the documented values."""
    cfg = config.load(None)
    assert cfg == Config()
    assert cfg.source is None and cfg.db is None
    assert cfg.match == MatchSettings(near_distance=10, verify_distance=14, colour_distance=14.0, min_detail=6.0, rotations=True)
    assert cfg.keep == (KeepRule.REFERENCE, KeepRule.HIGHEST_RESOLUTION, KeepRule.LARGEST_FILE, KeepRule.FIRST_SEEN)
    assert all(cfg.actions.for_tier(t) is Action.LOG for t in Tier)
    assert "*.jpg" in cfg.include and "*.heic" in cfg.include and "*.avif" in cfg.include
    assert cfg.effective_workers() >= 1


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_file_gives_the_defaults(tmp_path: Path, text: str) -> None:
    """An empty (or comment-only) file is the defaults, remembering its source."""
    cfg = load_text(tmp_path, text)
    assert cfg == Config(source=tmp_path / "dedupd.yaml")


# --- every key, with its type ------------------------------------------------------

FULL = """\
db: state/dedupd.db
roots: [/srv/photos, inbox]
reference_dirs: [/srv/archive]
quarantine_dir: /srv/quarantine
include: ["*.jpg", "*.PNG"]
exclude: ["*.tmp"]
match:
  near_distance: 8
  verify_distance: "80%"
  colour_distance: 10
  min_detail: 4.5
  rotations: false
actions:
  exact: quarantine
  pixel: symlink
  near: log
keep: [reference, highest_resolution, largest_file, preferred_format, oldest, first_seen]
preferred_formats: [png, jpeg]
max_pixels: 1000000
max_file_bytes: 1048576
workers: 3
settle_seconds: 0.5
polling: true
poll_interval: 2
reconcile_interval: 3600
max_actions_per_minute: 10
audit_jsonl: audit.jsonl
symlink: absolute
"""


def test_every_key_is_parsed_to_its_type(tmp_path: Path) -> None:
    """Each key of a full file becomes a typed value: paths, enums, ints, floats, booleans."""
    cfg = load_text(tmp_path, FULL)
    assert cfg.db == tmp_path / "state/dedupd.db"
    assert cfg.roots == (Path("/srv/photos"), tmp_path / "inbox")
    assert cfg.reference_dirs == (Path("/srv/archive"),)
    assert cfg.quarantine_dir == Path("/srv/quarantine")
    assert cfg.include == ("*.jpg", "*.PNG") and cfg.exclude == ("*.tmp",)
    assert cfg.match == MatchSettings(near_distance=8, verify_distance=12, colour_distance=10.0, min_detail=4.5, rotations=False)
    assert isinstance(cfg.match.colour_distance, float)
    assert cfg.actions.for_tier(Tier.EXACT) is Action.QUARANTINE
    assert cfg.actions.for_tier(Tier.PIXEL) is Action.SYMLINK
    assert cfg.actions.for_tier(Tier.NEAR) is Action.LOG
    assert cfg.keep == tuple(KeepRule)
    assert all(isinstance(k, KeepRule) for k in cfg.keep)
    assert cfg.preferred_formats == ("PNG", "JPEG")
    assert (cfg.max_pixels, cfg.max_file_bytes, cfg.workers) == (1_000_000, 1_048_576, 3)
    assert cfg.settle_seconds == 0.5 and cfg.polling is True
    assert cfg.poll_interval == 2.0 and isinstance(cfg.poll_interval, float)
    assert cfg.reconcile_interval == 3600.0 and cfg.max_actions_per_minute == 10
    assert cfg.audit_jsonl == tmp_path / "audit.jsonl"
    assert cfg.symlink is SymlinkStyle.ABSOLUTE and Config().symlink is SymlinkStyle.RELATIVE
    assert cfg.effective_workers() == 3


def test_a_host_name_is_kept_as_written(tmp_path: Path) -> None:
    """``host`` names this machine in a shared store: kept as written (default None: the host name)."""
    assert load_text(tmp_path, "host: nas-2.example\n").host == "nas-2.example" and Config().host is None


def test_effective_config_round_trips_through_yaml(tmp_path: Path) -> None:
    """to_dict() dumped as YAML and loaded again gives the same configuration."""
    cfg = load_text(tmp_path, FULL)
    again = load_text(tmp_path, yaml.safe_dump(cfg.to_dict()))
    assert again == cfg


@pytest.mark.parametrize("key", ["db", "host", "quarantine_dir", "audit_jsonl", "polling"])
def test_nullable_keys_accept_null(tmp_path: Path, key: str) -> None:
    """The keys whose default is None accept an explicit null."""
    assert getattr(load_text(tmp_path, f"{key}: null\n"), key) is None


# --- unknown keys ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("near_distance: 5\n", "near_distance"),  # a nested key at the top level
        ("frobnicate: 1\n", "frobnicate"),
        ("match:\n  near_distanse: 5\n", "match.near_distanse"),
        ("actions:\n  fuzzy: log\n", "actions.fuzzy"),
        ("1: x\n", "1"),
    ],
)
def test_unknown_key_is_named(tmp_path: Path, text: str, key: str) -> None:
    """An unknown key, at the top or nested, is a ConfigError naming the file and the dotted key."""
    exc = config_error(tmp_path, text)
    assert exc.key == key
    assert repr(key) in str(exc)


# --- values out of range or of the wrong type -----------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("match:\n  near_distance: 33\n", "match.near_distance"),
        ("match:\n  near_distance: -1\n", "match.near_distance"),
        ("match:\n  near_distance: 8.5\n", "match.near_distance"),
        ("match:\n  near_distance: true\n", "match.near_distance"),
        ("match:\n  near_distance: '8'\n", "match.near_distance"),
        ("match:\n  verify_distance: 65\n", "match.verify_distance"),
        ("match:\n  colour_distance: 256\n", "match.colour_distance"),
        ("match:\n  colour_distance: '85%'\n", "match.colour_distance"),
        ("match:\n  min_detail: 129\n", "match.min_detail"),
        ("match:\n  rotations: maybe\n", "match.rotations"),
        ("match:\n  rotations: 1\n", "match.rotations"),
        ("match: 5\n", "match"),
        ("actions: [log]\n", "actions"),
        ("workers: 257\n", "workers"),
        ("workers: -1\n", "workers"),
        ("workers: '4'\n", "workers"),
        ("workers: null\n", "workers"),
        ("max_pixels: 0\n", "max_pixels"),
        ("max_file_bytes: 1.5\n", "max_file_bytes"),
        ("settle_seconds: -0.1\n", "settle_seconds"),
        ("poll_interval: 0.01\n", "poll_interval"),
        ("reconcile_interval: 1e99\n", "reconcile_interval"),
        ("max_actions_per_minute: 0\n", "max_actions_per_minute"),
        ("polling: sometimes\n", "polling"),
        ("roots: /srv/photos\n", "roots"),
        ("include: ['']\n", "include"),
        ("exclude: [3]\n", "exclude"),
        ("db: ''\n", "db"),
        ("keep: []\n", "keep"),
        ("host: 'nas:1'\n", "host"),
        ("host: ' nas'\n", "host"),
        ("host: 7\n", "host"),
    ],
)
def test_bad_value_names_its_key(tmp_path: Path, text: str, key: str) -> None:
    """A value of the wrong type or out of range is a ConfigError naming its key."""
    assert config_error(tmp_path, text).key == key


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("keep: [biggest]\n", "keep", "'biggest'"),
        ("actions:\n  exact: delete\n", "actions.exact", "'delete'"),
        ("actions:\n  near: QUARANTINE\n", "actions.near", "'QUARANTINE'"),
    ],
)
def test_bad_enum_lists_the_choices(tmp_path: Path, text: str, key: str, value: str) -> None:
    """A value outside an enum is refused, naming the key, the value and the choices."""
    exc = config_error(tmp_path, "quarantine_dir: /q\n" + text)
    assert exc.key == key
    assert value in str(exc)
    assert "log" in str(exc) or "first_seen" in str(exc)


def test_acting_without_a_quarantine_dir_is_refused(tmp_path: Path) -> None:
    """Quarantine or symlink actions without a quarantine_dir are a ConfigError on quarantine_dir."""
    assert config_error(tmp_path, "actions:\n  exact: quarantine\n").key == "quarantine_dir"


# --- the file itself ------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["- a\n- b\n", "just a string\n", "42\n"],
    ids=["list", "string", "number"],
)
def test_non_mapping_top_level_is_refused(tmp_path: Path, text: str) -> None:
    """A document that is not a mapping is a ConfigError naming the file."""
    assert "mapping" in str(config_error(tmp_path, text))


def test_bad_yaml_is_refused(tmp_path: Path) -> None:
    """YAML that does not parse is a ConfigError naming the file."""
    assert "YAML" in str(config_error(tmp_path, "match: {near_distance: 5\nkeep: [\n"))


def test_non_utf8_file_is_refused(tmp_path: Path) -> None:
    """A file that is not UTF-8 is a ConfigError naming the file."""
    path = tmp_path / "latin1.yaml"
    path.write_bytes("db: /tmp/caf\xe9.db\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="UTF-8"):
        config.load(path)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    """A config path with no file is a ConfigError, not an OSError."""
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "nope.yaml")


# --- similarity in percent -----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "bits"),
    [("85%", 9), ("85 %", 9), (" 90% ", 6), ("100%", 0), ("50%", 32), ("84.375%", 10), (7, 7)],
)
def test_similarity_percent_becomes_a_distance(tmp_path: Path, value: object, bits: int) -> None:
    """near_distance as a percentage is converted to the largest Hamming distance that keeps that similarity."""
    cfg = load_text(tmp_path, yaml.safe_dump({"match": {"near_distance": value}}))
    assert cfg.match.near_distance == bits


def test_unquoted_percent_in_yaml_is_read_as_a_similarity(tmp_path: Path) -> None:
    """`near_distance: 85%` written bare in YAML means 85% similar, i.e. 9 bits."""
    assert load_text(tmp_path, "match:\n  near_distance: 85%\n").match.near_distance == 9


@pytest.mark.parametrize("value", ["49%", "101%", "abc%", "%", "85", 85])
def test_bad_similarity_is_refused(tmp_path: Path, value: object) -> None:
    """A percentage outside 50-100%, not a number, or a bare 85 (bits, out of range) is refused."""
    text = yaml.safe_dump({"match": {"near_distance": value}})
    assert config_error(tmp_path, text).key == "match.near_distance"


@given(st.floats(min_value=50.0, max_value=100.0, allow_nan=False))
def test_distance_for_similarity_is_the_largest_that_keeps_it(percent: float) -> None:
    """distance_for_similarity(p) keeps at least p percent, and one more bit would not."""
    d = distance_for_similarity(percent)
    assert 0 <= d <= 32
    assert 100.0 * (1 - d / 64) >= percent - 1e-6
    assert 100.0 * (1 - (d + 1) / 64) < percent
    assert similarity_for_distance(d) >= round(percent, 1) - 0.05


# --- paths ------------------------------------------------------------------------


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    """A relative path in the file is taken relative to the file's directory, not the cwd."""
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    cfg = config.load(write(conf_dir, "reference_dirs: [archive]\nquarantine_dir: q\n"))
    assert cfg.reference_dirs == (conf_dir / "archive",)
    assert cfg.quarantine_dir == conf_dir / "q"


def test_home_and_variables_are_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """~ and $VARIABLES in paths are expanded."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DEDUPD_TEST_DIR", str(tmp_path / "var"))
    cfg = load_text(tmp_path, "db: ~/state.db\nroots: [$DEDUPD_TEST_DIR/photos]\n")
    assert cfg.db == tmp_path / "home" / "state.db"
    assert cfg.roots == (tmp_path / "var" / "photos",)


def test_mapping_without_a_file_is_relative_to_the_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """from_mapping with no source takes relative paths from the current directory."""
    monkeypatch.chdir(tmp_path)
    assert config.from_mapping({"roots": ["pics"]}).roots == (tmp_path / "pics",)


def test_paths_are_absolute_when_the_config_path_is_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading `conf/dedupd.yaml` (a relative path) still gives absolute paths."""
    (tmp_path / "conf").mkdir()
    write(tmp_path / "conf", "reference_dirs: [archive]\n")
    monkeypatch.chdir(tmp_path)
    cfg = config.load(Path("conf/dedupd.yaml"))
    assert cfg.reference_dirs == (tmp_path / "conf" / "archive",)
    assert cfg.reference_dirs[0].is_absolute()


def test_dot_dot_in_paths_is_normalised(tmp_path: Path) -> None:
    """`../archive` relative to the file becomes the normalised sibling directory."""
    (tmp_path / "conf").mkdir()
    cfg = config.load(write(tmp_path / "conf", "reference_dirs: [../archive]\n"))
    assert str(cfg.reference_dirs[0]) == os.path.normpath(tmp_path / "archive")


def test_db_takes_a_postgresql_url_and_never_shows_its_password(tmp_path: Path) -> None:
    """``db: postgresql://...`` selects a PostgreSQL store (a path keeps SQLite); a password
    in the URL appears neither in the effective config nor in a repr."""
    from dedupd.models import PostgresUrl

    cfg = load_text(tmp_path, "db: postgresql://dedupd:s3cret@db.example/photos?sslmode=require\n")
    assert cfg.db == PostgresUrl("postgresql://dedupd:s3cret@db.example/photos?sslmode=require")
    shown = yaml.safe_dump(cfg.to_dict()) + repr(cfg) + str(cfg.db)
    assert "s3cret" not in shown and "postgresql://dedupd:***@db.example/photos" in shown
    assert load_text(tmp_path, "db: state/dedupd.db\n").db == tmp_path / "state" / "dedupd.db"
