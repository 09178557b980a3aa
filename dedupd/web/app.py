"""``dedupd review``: a web page over the store, to look at groups as pictures and decide.

A Flask application served by waitress.  Every page reads the store
through a read-only connection opened for the request (so it works beside a
running daemon, which keeps writing); every decision opens a writing one
and calls :mod:`dedupd.web.decide`, the same code as the command line, which
writes the audit row with the deciding user agent.  Pages are keyset-paged
on indexes (:meth:`~dedupd.store.Store.review_group_page`), so the last
page of ten thousand groups costs what the first does.  The security rules
are in :mod:`dedupd.web.security`.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import structlog
from flask import Flask, Response, abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from dedupd.web import decide
from dedupd.actions import resolve_intents
from dedupd.audit import Audit, iso_time
from dedupd.config import Config
from dedupd.errors import display_path
from dedupd.models import Action, Match, Orientation, Record, Tier
from dedupd.models import StoreLocation
from dedupd.store import AnyStore, default_db_path, open_store
from dedupd.web import security
from dedupd.web.images import SIZES, ImageUnavailable, Images

log = structlog.get_logger()

#: groups (or pairs, or moves) on one page
PAGE = 25
ACTIONABLE = tuple(t.value for t in Tier if t.actionable)


@dataclass(frozen=True)
class Shown:
    """One file as a page shows it."""

    record: Record
    indexed_at: float
    match: Match | None = None
    tie: bool = False


@dataclass(frozen=True)
class Filters:
    """What the groups page and a bulk decision are narrowed to."""

    tiers: tuple[str, ...] = ()
    folder: Path | None = None
    min_similarity: float | None = None
    max_similarity: float | None = None

    @classmethod
    def parse(cls, args: Any) -> Filters:
        tiers = tuple(t for t in ACTIONABLE if t in args.getlist("tier"))
        folder_text = (args.get("folder") or "").strip()
        return cls(
            tiers=tiers,
            folder=Path(os.path.normpath(folder_text)) if folder_text else None,
            min_similarity=_number(args.get("min_similarity")),
            max_similarity=_number(args.get("max_similarity")),
        )

    def query(self) -> dict[str, Any]:
        """As query arguments (for links that keep them)."""
        out: dict[str, Any] = {}
        if self.tiers:
            out["tier"] = list(self.tiers)
        if self.folder is not None:
            out["folder"] = str(self.folder)
        if self.min_similarity is not None:
            out["min_similarity"] = self.min_similarity
        if self.max_similarity is not None:
            out["max_similarity"] = self.max_similarity
        return out

    def sql(self) -> dict[str, Any]:
        return {
            "tiers": self.tiers,
            "folder": self.folder,
            "min_similarity": self.min_similarity,
            "max_similarity": self.max_similarity,
        }

    @property
    def active(self) -> bool:
        return bool(self.query())


def _number(text: str | None) -> float | None:
    try:
        return None if not text else max(0.0, min(100.0, float(text)))
    except ValueError:
        return None


def create_app(config: Config, db_path: StoreLocation, guard: security.Guard, cache_dir: Path) -> Flask:
    """The review application for the store at ``db_path``.

    ``guard`` is kept in ``app.config["DEDUPD_GUARD"]``, where :func:`serve`
    replaces it once the port the server got is known."""
    here = Path(__file__).parent
    app = Flask("dedupd.web", template_folder=str(here / "templates"), static_folder=str(here / "static"))
    app.secret_key = secrets.token_bytes(32)  # for flashed messages only; a restart forgets them
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_NAME="dedupd_review_session",
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    app.jinja_env.autoescape = True  # every template, whatever its name
    app.jinja_env.filters.update(
        shown=lambda p: display_path(p),
        size=_human_size,
        when=_when,
    )
    app.config["DEDUPD_GUARD"] = guard
    images = Images(config, cache_dir)

    def current() -> security.Guard:
        found = app.config["DEDUPD_GUARD"]
        assert isinstance(found, security.Guard)
        return found

    @contextmanager
    def reading() -> Iterator[AnyStore]:
        store = open_store(db_path, readonly=True, host=config.host)
        try:
            yield store
        finally:
            store.close()

    @contextmanager
    def writing() -> Iterator[AnyStore]:
        store = open_store(db_path, host=config.host)
        try:
            # beside a running daemon each write waits its turn; as the only
            # writer, moves an earlier run left half done are settled first
            if store.lock_writer_or_share():
                resolve_intents(store, Audit(store, config.audit_jsonl))
            yield store
        finally:
            store.close()

    # --- the rules every request passes (dedupd.web.security) -------------------

    @app.before_request
    def check_request() -> ResponseReturnValue | None:
        guard = current()
        if not guard.host_allowed(request.headers.get("Host")):
            log.warning("review_refused", reason="foreign_host", host=request.headers.get("Host"))
            return _refuse(403, "Refused: this page does not answer to that Host name.")
        offered = request.args.get("token")
        if guard.token is not None and offered is not None and request.method == "GET":
            if not guard.token_ok(offered):
                return _refuse(401, "Refused: wrong token.")
            args = {k: v for k, v in request.args.items(multi=True) if k != "token"}
            target = request.path + ("?" + urlencode(args) if args else "")
            response = redirect(target, 303)
            response.set_cookie(security.TOKEN_COOKIE, offered, httponly=True, samesite="Strict", path="/")
            return response
        if guard.token is not None:
            header = request.headers.get("Authorization", "")
            bearer = header[7:] if header.startswith("Bearer ") else None
            if not guard.token_ok(request.cookies.get(security.TOKEN_COOKIE) or bearer):
                log.warning("review_refused", reason="no_token", path=request.path)
                return _refuse(401, "Refused: open the address with the token that 'dedupd review' printed.")
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            presented = request.form.get(security.CSRF_FIELD) or request.headers.get(security.CSRF_HEADER)
            if not guard.csrf_ok(presented) or not guard.origin_allowed(request.headers.get("Origin")):
                log.warning("review_refused", reason="csrf", path=request.path)
                return _refuse(403, "Refused: this form did not come from the review page (CSRF token missing or wrong). Reload the page.")
        return None

    @app.after_request
    def secure_headers(response: Response) -> Response:
        for key, value in security.HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    @app.context_processor
    def page_values() -> dict[str, Any]:
        return {"csrf_token": current().csrf, "csrf_field": security.CSRF_FIELD, "return_to": request.full_path.rstrip("?")}

    # --- pages -------------------------------------------------------------------

    @app.get("/")
    def index() -> ResponseReturnValue:
        return redirect(url_for("groups"))

    @app.get("/groups")
    def groups() -> str:
        filters = Filters.parse(request.args)
        after, before = _cursor(request.args.get("after")), _cursor(request.args.get("before"))
        with reading() as store:
            page = store.review_group_page(after=after, before=before, limit=PAGE + 1, **filters.sql())
            more = len(page) > PAGE
            page = page[-PAGE:] if before is not None else page[:PAGE]
            members = store.review_members([i for i, _ in page])
            ids = [i for i, _ in page] + [m for ms in members.values() for m, _, _ in ms]
            records = store.records(ids)
            indexed = store.indexed_at(ids)
            counts = store.counts()
            matching = store.review_count(**filters.sql()) if filters.active else None
        shown = []
        for original_id, _ in page:
            rec = records.get(original_id)
            if rec is None:
                continue
            files = [
                Shown(records[m], indexed.get(m, 0.0), match, tie)
                for m, match, tie in members[original_id]
                if m in records and (not filters.tiers or match.tier.value in filters.tiers)
            ]
            owed = [f for f in files if f.match is not None and not f.tie and _action(config, f.match) is not Action.LOG]
            shown.append((Shown(rec, indexed.get(original_id, 0.0)), files, owed))
        query = filters.query()
        first, last = (f"{page[0][1].hex()}.{page[0][0]}", f"{page[-1][1].hex()}.{page[-1][0]}") if page else (None, None)
        has_next = (more and before is None) or before is not None
        has_prev = (more and before is not None) or after is not None
        return render_template(
            "groups.html",
            groups=shown,
            filters=filters,
            tiers=ACTIONABLE,
            actions={t: config.actions.for_tier(Tier(t)).value for t in ACTIONABLE},
            counts=counts,
            matching=matching,
            next_page=_link("groups", query, after=last) if last is not None and has_next else None,
            prev_page=_link("groups", query, before=first) if first is not None and has_prev else None,
            bulk_query=query,
        )

    @app.get("/similar")
    def similar() -> str:
        after_text = request.args.get("after", "")
        after = None
        if after_text:
            a, _, b = after_text.partition("-")
            if not (a.isdigit() and b.isdigit()):
                abort(400)
            after = (int(a), int(b))
        with reading() as store:
            pairs = store.review_similar_page(after=after, limit=PAGE + 1)
            more = len(pairs) > PAGE
            pairs = pairs[:PAGE]
            ids = [i for p in pairs for i in p[:2]]
            records = store.records(ids)
            indexed = store.indexed_at(ids)
            shown = []
            for file_id, other_id, match in pairs:
                new, old = records.get(file_id), records.get(other_id)
                if new is None or old is None or new.fingerprint is None or old.fingerprint is None:
                    continue
                ignored = store.is_ignored(new.fingerprint.sha256, old.fingerprint.sha256, path_a=new.path,
                                           path_b=old.path, host_a=new.host, host_b=old.host)  # fmt: skip
                shown.append((Shown(old, indexed.get(other_id, 0.0)), Shown(new, indexed.get(file_id, 0.0), match), ignored))
        last = pairs[-1] if pairs else None
        return render_template(
            "similar.html",
            pairs=shown,
            next_page=url_for("similar", after=f"{last[0]}-{last[1]}") if more and last else None,
        )

    @app.get("/moves")
    def moves() -> str:
        before = request.args.get("before", "")
        if before and not before.isdigit():
            abort(400)
        with reading() as store:
            ids = store.review_moves_page(before=int(before) if before else None, limit=PAGE + 1)
            trail = Audit(store)
            rows = [r for r in (trail.get(i) for i in ids[:PAGE]) if r is not None]
        return render_template(
            "moves.html",
            rows=rows,
            next_page=url_for("moves", before=ids[PAGE - 1]) if len(ids) > PAGE else None,
        )

    @app.get("/compare/<int:new_id>/<int:old_id>")
    def compare(new_id: int, old_id: int) -> str:
        with reading() as store:
            new, old = store.record(new_id), store.record(old_id)
            if new is None or old is None:
                abort(404)
            match = _pair_match(store, new_id, old_id)
            indexed = store.indexed_at([new_id, old_id])
        return render_template(
            "compare.html",
            new=Shown(new, indexed.get(new_id, 0.0), match),
            old=Shown(old, indexed.get(old_id, 0.0)),
        )

    # --- pictures, by id only ------------------------------------------------------

    @app.get("/thumb/<int:file_id>/<size>")
    def thumbnail(file_id: int, size: str) -> Response:
        if size not in SIZES:
            abort(404)
        with reading() as store:
            rec = store.record(file_id)
        if rec is None:
            abort(404)
        return _picture(lambda: images.thumbnail(rec, size), "image/jpeg")

    @app.get("/diff/<int:new_id>/<int:old_id>")
    def difference(new_id: int, old_id: int) -> Response:
        with reading() as store:
            new, old = store.record(new_id), store.record(old_id)
            match = _pair_match(store, new_id, old_id)
        if new is None or old is None:
            abort(404)
        orientation = match.orientation if match is not None else Orientation.IDENTITY
        return _picture(lambda: images.difference(new, old, orientation), "image/png")

    # --- decisions: dedupd.web.decide, as the command line ---------------------------

    @app.post("/groups/<int:original_id>/keep-all")
    def keep_all(original_id: int) -> ResponseReturnValue:
        with writing() as store:
            done = decide.keep_all(store, config, original_id, by=_by())
        return _after(done)

    @app.post("/groups/<int:original_id>/original")
    def choose_original(original_id: int) -> ResponseReturnValue:
        chosen = request.form.get("file_id", "")
        if not chosen.isdigit():
            abort(400)
        with writing() as store:
            done = decide.choose_original(store, config, original_id, int(chosen), by=_by())
        return _after(done)

    @app.post("/groups/<int:original_id>/apply")
    def apply_group(original_id: int) -> ResponseReturnValue:
        with writing() as store:
            done = decide.apply_files(store, config, group_ids={original_id}, by=_by())
        return _after(done)

    @app.post("/pairs/<int:new_id>/<int:old_id>/not-duplicates")
    def not_duplicates(new_id: int, old_id: int) -> ResponseReturnValue:
        with writing() as store:
            done = decide.not_duplicates(store, config, new_id, old_id, by=_by())
        return _after(done)

    @app.post("/moves/<int:audit_id>/restore")
    def restore(audit_id: int) -> ResponseReturnValue:
        with writing() as store:
            done = decide.restore_move(store, config, audit_id, by=_by())
        return _after(done)

    @app.post("/bulk")
    def bulk() -> ResponseReturnValue:
        filters = Filters.parse(request.form)
        decision = request.form.get("decision")
        if decision not in ("keep-all", "apply") or not filters.active:
            abort(400)
        with writing() as store:
            pairs = store.review_duplicates(**filters.sql())
            if decision == "apply":
                done = decide.apply_files(store, config, file_ids={d for d, _ in pairs}, by=_by())
            else:
                done = decide.kept_all([decide.not_duplicates(store, config, d, o, by=_by()) for d, o in pairs])
        return _after(done)

    return app


# --- helpers --------------------------------------------------------------------------


def _action(config: Config, match: Match) -> Action:
    return config.actions.for_tier(match.tier)


def _refuse(status: int, text: str) -> Response:
    return Response(text + "\n", status=status, mimetype="text/plain")


def _by() -> str:
    return decide.by_review(request.headers.get("User-Agent"))


def _after(done: decide.Decided) -> ResponseReturnValue:
    """Back to the page the form was on, with what came of it."""
    flash(done.detail, "ok" if done.ok else "refused")
    target = request.form.get("next") or url_for("groups")
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        target = url_for("groups")  # only a path on this page: never an open redirect
    return redirect(target, 303)


def _picture(make: Callable[[], bytes], mimetype: str) -> Response:
    try:
        data = make()
    except ImageUnavailable as exc:
        return _refuse(404, exc.message)
    response = Response(data, mimetype=mimetype)
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response


def _cursor(text: str | None) -> tuple[bytes, int] | None:
    """A page's edge as a link carries it: the original's path (hex) and id,
    ``PATH.ID``; a path alone stands before every file at that path."""
    if not text:
        return None
    path, _, file_id = text.partition(".")
    try:
        return bytes.fromhex(path), int(file_id) if file_id else 0
    except ValueError:
        abort(400)


def _link(endpoint: str, query: dict[str, Any], **more: Any) -> str:
    return url_for(endpoint) + "?" + urlencode({**query, **more}, doseq=True)


def _pair_match(store: AnyStore, new_id: int, old_id: int) -> Match | None:
    """The verdict recorded between two files (a group membership or a similar pair), if any."""
    known = store.match_of(new_id)
    if known is not None and known[0] == old_id:
        return known[1]
    for other, match in store.similar_of(new_id):
        if other == old_id:
            return match
    return None


def _human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover - the loop returns


def _when(seconds: float | int) -> str:
    """A time as everywhere in dedupd: ISO 8601, local time with its zone."""
    return iso_time(float(seconds)) if seconds else "unknown"


def serve(config: Config, db_path: StoreLocation, listen: str, *, token_file: Path | None, echo: Callable[[str], None]) -> None:
    """Serve the review page until interrupted (SIGINT or SIGTERM)."""
    import signal

    import waitress

    from dedupd.config import parse_listen

    host, port = parse_listen(listen)
    token, made_up = security.choose_token(
        host, given=config.review.token, token_file=token_file or config.review.token_file
    )
    open_store(db_path, readonly=True).close()  # no store yet: say so now, not on the first page
    guard = security.Guard(host, port, token, config.review.allowed_hosts)
    state = db_path.parent if isinstance(db_path, Path) else default_db_path().parent
    app = create_app(config, db_path, guard, state / "review-cache")
    server = waitress.create_server(app, host=host, port=port, threads=4, ident="dedupd")
    port = int(server.effective_port)
    app.config["DEDUPD_GUARD"] = dataclasses.replace(guard, port=port)
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{port}/"
    log.info("review_listening", url=url, token_required=token is not None, db=db_path)
    echo(f"dedupd review: {url}" + (f"?token={token}" if token else ""))
    if made_up:
        echo("a token was made up for this address (it changes at every start; set review.token_file to keep one)")

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        server.run()
    finally:
        server.close()
        log.info("review_stopped")
