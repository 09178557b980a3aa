"""What a decoder may cost and what it must cover, against the real CLI and daemon.

Reproductions 3 and 9: two multi-page TIFFs (or animated GIFs) that share
only their first page were "pixel, 100%" and one was replaced by a symlink
to the other; a 1 MB float TIFF inside max_pixels took gigabytes per
worker, and under a memory limit the daemon died on every restart without
recording anything against the file.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from daemon_helpers import (
    Env,
    cli,
    scan,
    sha256,
    wait_until,
    write,
)
from PIL import Image
from structlog.testing import capture_logs

from dedupd import config as config_module
from dedupd.pipeline import Failed, Pipeline, fingerprint_job
from dedupd.store import Store

from helpers import photo


def pages(fmt: str, *frames: Image.Image, **params: object) -> bytes:
    out = io.BytesIO()
    if fmt == "GIF":
        params["duration"] = 200
    frames[0].save(out, fmt, save_all=True, append_images=list(frames[1:]), **params)
    return out.getvalue()


def float_tiff(side: int) -> bytes:
    """A float (mode F) TIFF: tiny on disk (deflated gradient), 4 bytes a pixel decoded."""
    ramp = np.linspace(0.0, 1.0, side * side, dtype=np.float32).reshape(side, side)
    out = io.BytesIO()
    Image.fromarray(ramp, "F").save(out, "TIFF", compression="tiff_deflate")
    return out.getvalue()


def test_files_that_share_only_their_first_page_or_frame_are_not_pixel_duplicates(env: Env) -> None:
    """Two 3-page TIFFs with the same cover page, and two animated GIFs with the same
    first frame, with symlink set for the exact and pixel tiers: neither is linked, and
    no pixel or exact pair is recorded; the same pages with other metadata still are."""
    cover, p2, p3, other = (photo(7700 + i, (160, 120)) for i in range(4))
    contract_a = write(env.root / "contract_A.tif", pages("TIFF", cover, p2, p3))
    contract_b = write(env.root / "contract_B.tif", pages("TIFF", cover, other, p3))
    anim_a = write(env.root / "anim_A.gif", pages("GIF", cover, p2))
    anim_b = write(env.root / "anim_B.gif", pages("GIF", cover, other))
    env.write_config(actions={"exact": "symlink", "pixel": "symlink", "near": "log"})
    code, _, err = scan(env)
    assert code == 0, err
    for p in (contract_a, contract_b, anim_a, anim_b):
        assert p.is_file() and not p.is_symlink(), f"{p.name} was acted on"
    tiers = {r[0] for r in env.query("SELECT tier FROM matches")}
    assert not tiers & {"exact", "pixel"}, tiers

    # the same three pages with other metadata are still the same picture, pixel for pixel
    retagged = write(env.outside / "contract_A retagged.tif", pages("TIFF", cover, p2, p3, description="signed"))
    code, out, err = cli(env, "compare", str(contract_a), str(retagged), "--format", "json")
    assert code == 0 and json.loads(out)["tier"] == "pixel", out + err
    code, out, err = cli(env, "compare", str(contract_a), str(contract_b), "--format", "json")
    assert json.loads(out)["tier"] != "pixel", out + err


def test_a_decode_over_the_memory_budget_is_recorded_against_the_file_and_not_retried(env: Env) -> None:
    """A float TIFF whose decode needs more bytes than max_decode_bytes (bands and bit depth
    counted, not pixels) is skipped as over_memory_budget, recorded, and a second scan does
    not read it again."""
    big = write(env.root / "float.tif", float_tiff(1200))
    env.write_config(max_decode_bytes=8_000_000)
    code, _, err = scan(env)
    assert code == 3, err
    rec = env.record(big)
    assert rec is not None and rec["error"] == "over_memory_budget", rec
    code, out, err = scan(env)
    assert "1 unchanged" in out, out + err


def test_a_file_that_exhausts_a_workers_memory_is_recorded_and_the_daemon_lives(env: Env) -> None:
    """Under a worker memory limit, a float TIFF that needs more fails inside the worker,
    is recorded as out_of_memory, and the daemon goes on; restarted, it does not try the
    file again (the record survives) and still handles other files."""
    heavy = write(env.root / "heavy.tif", float_tiff(3000))
    daemon = env.start(worker_memory_bytes=48_000_000)
    event = daemon.wait_event("file_skipped", path=heavy)
    assert event["reason"] == "out_of_memory", event
    rec = env.record(heavy)
    assert rec is not None and rec["error"] == "out_of_memory"
    assert daemon.alive()
    assert daemon.stop() == 0

    second = env.start()
    light = write(env.root / "light.jpg", _jpeg())
    env.wait_indexed(light)
    env.wait_idle(second, after=time.time())
    assert second.events("file_skipped", path=heavy) == [], "the file was read again after a restart"
    assert second.stop() == 0


def test_a_skipped_file_is_logged_only_once_its_record_is_committed(tmp_path: Path) -> None:
    """When ``file_skipped`` is logged, another connection already reads the file's error
    record: the log line follows the commit (the daemon test above reads it then)."""
    broken = write(tmp_path / "broken.jpg", b"\xff\xd8\xff\xe0 not a picture" * 40)
    pipeline = Pipeline(Store.open(tmp_path / "s.db"), config_module.from_mapping({}))
    reader = Store.open(tmp_path / "s.db", readonly=True)
    seen: list[str | None] = []

    def read_at_log_time(_: object, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if event["event"] == "file_skipped":
            record = reader.record_for_path(broken)
            seen.append(record.error if record is not None else None)
        return event

    result = fingerprint_job(broken, 10**8, 10**9)
    assert isinstance(result, Failed), result
    with capture_logs() as logs:
        structlog.configure(processors=[read_at_log_time, *structlog.get_config()["processors"]])
        pipeline.ingest(result)
    assert [e["event"] for e in logs if e["event"] == "file_skipped"] == ["file_skipped"], logs
    assert seen == [result.reason], seen
    reader.close()
    pipeline.store.close()


def _jpeg() -> bytes:
    out = io.BytesIO()
    photo(7790, (96, 72)).save(out, "JPEG")
    return out.getvalue()



def test_a_gif_written_in_chunks_with_closes_between_is_never_split_or_grown_through(env: Env) -> None:
    """Reproduction 2: a 6-frame GIF copied in 6 chunks, closed between chunks and paused
    longer than settle_seconds, with the symlink action: no partial version is acted on
    (a later frame that does not decode makes the file corrupt, not 'the same picture'),
    the original never grows, and the finished copy ends whole: linked, or left as it is."""
    frames = [photo(7800 + i, (200, 150)) for i in range(6)]
    data = pages("GIF", *frames)
    original = write(env.root / "A.gif", data)
    daemon = env.start(actions={"exact": "symlink", "pixel": "symlink", "near": "log"})
    env.wait_indexed(original)
    copy = env.root / "B.gif"
    step = len(data) // 6 + 1
    for start in range(0, len(data), step):
        with open(copy, "ab") as f:
            f.write(data[start : start + step])
        deadline = time.monotonic() + 1.2  # longer than settle_seconds (0.5): the pause of a slow writer
        while time.monotonic() < deadline:
            assert sha256(original) == sha256(data), "the original grew: appended through a symlink"
            assert not copy.is_symlink() or start + step >= len(data), "a partial copy was acted on"
            time.sleep(0.05)
    wait_until(lambda: copy.is_symlink(), "the finished copy symlinked")
    env.wait_idle(daemon, after=time.time())
    assert daemon.stop() == 0
    assert sha256(original) == sha256(data)
    [move] = env.moves()
    assert sha256(Path(str(move["destination"]))) == sha256(data), "the quarantined copy is not whole"
