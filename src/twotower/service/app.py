"""The HTTP API: a thin shell over ``TwoTower`` (recommend, similar items, item metadata).

Every handler reads ``holder.current`` once and answers from that snapshot, so a model swap
(``POST /admin/reload`` or SIGHUP) never mixes two models in one answer; an error answer
names that snapshot's model too.

Threads: the search endpoints are ``async`` and score small requests right on the event loop
(an exact search over a few thousand items takes ~40 us, a thread pool hop costs several times
that in CPU); requests scoring more than ``inline_max_scores`` (query, item) pairs go to the
thread pool, where numpy/faiss release the GIL. The other endpoints are plain ``def`` (thread
pool). Hot-path responses are serialised from precomputed JSON fragments.
"""

import functools
import hmac
import json
import re
import time
from pathlib import Path
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, unquote_to_bytes

import numpy as np
from fastapi import Body, Depends, FastAPI, HTTPException, Path as PathParam, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from fastapi.responses import JSONResponse as _JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from twotower.data.vocabulary import INT_ID, Vocabulary, other_form_hint, plain_id
from twotower.errors import ConfigError, DataError, UnknownIdError
from twotower.models.retriever import untrained_item_error, untrained_user_error
from twotower.service import schemas as S
from twotower.service.observability import (REQUEST_MODEL, SECURITY_HEADERS, Metrics,
                                            RequestMiddleware, gauge)
from twotower.service.deny import DenyList
from twotower.service.state import (ModelHolder, ReloadInProgress, ReloadRefused, ServedModel,
                                     utf8_ok)

STATIC = Path(__file__).with_name("static")
#: FastAPI's detail when it cannot read a body that is valid JSON (fastapi.routing)
_FASTAPI_PARSE_ERROR = "There was an error parsing the body"
_JSON = "application/json"


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {400: "Unreadable body, query string or path (not UTF-8), or not possible "
                 "with this model", 401: "Missing bearer token",
            403: "Wrong bearer token", 404: "Unknown user or item id",
            409: "A reload is already running", 413: "Request body too large",
            415: "The body is not sent as JSON (Content-Type: application/json)",
            422: "Invalid parameter or body (the message names the field)"}
    return {c: {"model": S.Error, "description": text[c]} for c in codes}


def _dumps(v: Any) -> str:
    """JSON text, UTF-8 as it is; escaped where it holds a lone surrogate (an id may: the
    body could not be encoded, a 500)."""
    text = json.dumps(v, ensure_ascii=False)
    return text if utf8_ok(text) else json.dumps(v)


class JSONResponse(_JSONResponse):
    """Starlette's, with a lone surrogate in an id or a title escaped, not a 500."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, allow_nan=False, separators=(",", ":")).encode()


#: ``k`` when a request gives none, capped at what the catalogue can fill
DEFAULT_K = 10
#: a request body's bytes per id, for the default body limit (``default_max_body``): an
#: id of 24 characters (a UUID without its dashes is 32, a 64-bit number 20 at most),
#: its two quotes, and the ", " json.dumps writes after it, with 4 bytes of room
BODY_BYTES_PER_ID = 32
#: the rest of a body at every maximum (keys, ``k``, flags: under 200 bytes), with room
BODY_OVERHEAD_BYTES = 4096


def default_max_body(max_batch: int, max_filter: int) -> int:
    """The body limit that admits a request at every maximum: ``max_batch`` user (or
    history) ids and ``max_filter`` ids in both ``allow`` and ``deny``, each of
    ``BODY_BYTES_PER_ID`` bytes, plus ``BODY_OVERHEAD_BYTES``: 676,096 bytes (660 KiB) at
    the defaults (1,000 and 10,000)."""
    return BODY_OVERHEAD_BYTES + BODY_BYTES_PER_ID * (max_batch + 2 * max_filter)
#: one listed item's share of a response's cost, in scored pairs (``offload``; a rough
#: weight, not measured)
_JSON_ITEM_COST = 512


def _check_k(k: int | None, n: int, what: str = "the catalogue size", *,
             default: int = DEFAULT_K) -> int:
    """The list length: ``k``, or ``default`` (``DEFAULT_K`` capped at the service's
    ``max_k``) capped at ``n`` when not given (0 when ``n`` is: a one-item catalogue has no
    similar item)."""
    if k is None:
        k = min(default, max(n, 0))
    if k > n and n == 0:
        raise HTTPException(422, f"`k` is {k}, but there is nothing to list ({what} is 0): "
                                 "leave k out for an empty list")
    if k > n:
        raise HTTPException(422, f"`k` must be between 1 and {n} ({what}), got {k}")
    return k


def _unknown(kind: str, ids: list[Any], total: int, vocab: Vocabulary, hint: str = "") -> str:
    shown = ", ".join(map(repr, ids[:10])) + (", ..." if len(ids) > 10 else "")
    return (f"unknown {kind} id{'s' if len(ids) > 1 else ''} {shown} ({len(ids)} of {total}): "
            f"not among the {len(vocab)} {kind} ids the model knows"
            f"{other_form_hint(vocab, ids[0])}{hint}")


def _validation_detail(errors: list[dict[str, Any]]) -> str:
    where = {"query": "query parameter", "path": "path parameter", "body": "body field",
             "header": "header"}
    parts = []
    for e in errors:
        loc = [str(x) for x in e.get("loc", ())]
        if e.get("type") == "json_invalid":  # its loc is ("body", character offset)
            at = f" (at character {loc[1]})" if len(loc) > 1 else ""
            parts.append(f"request body is not valid JSON{at}: "
                         f"{(e.get('ctx') or {}).get('error', e.get('msg', 'invalid'))}")
            continue
        kind = where.get(loc[0], loc[0]) if loc else "request"
        name = ".".join(loc[1:])
        part = f"{kind} `{name}`: {e.get('msg', 'invalid')}" if name else \
            f"request {loc[0] if loc else 'body'}: {e.get('msg', 'invalid')}"
        if e.get("type") != "missing" and "input" in e and not isinstance(e["input"],
                                                                          (dict, list)):
            got = repr(e["input"])
            part += f", got {got[:60] + '...' if len(got) > 60 else got}"
        parts.append(part)
    return "; ".join(parts)


def _query_names(dependant: Any) -> set[str]:
    """The query parameter names an endpoint takes, its dependencies' included."""
    names = {q.alias for q in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def _not_utf8(what: str, bad: UnicodeDecodeError) -> StarletteHTTPException:
    return StarletteHTTPException(400, f"{what} is not UTF-8 (after its %-escapes, byte "
                                       f"0x{bad.object[bad.start]:02x}): percent-encode ids "
                                       "as UTF-8")


def _check_query(request: Request, path: str, known: frozenset[str]) -> None:
    """An API request's query string (``_StrictQueryRoute``): a parameter the endpoint
    does not take is refused, as an unknown body field is (``exlude_seen=false`` was
    ignored: seen items stayed out), and percent-escapes that are not UTF-8 are refused,
    as such body bytes are (``user_id=%FF`` was looked up as the id U+FFFD)."""
    scope = request.scope
    raw_path = scope.get("raw_path") or b""
    if b"%" in raw_path:
        try:
            unquote_to_bytes(raw_path).decode("utf-8")
        except UnicodeDecodeError as bad:
            raise _not_utf8("path", bad) from None
    raw = scope.get("query_string", b"")
    if not raw:
        return
    try:
        if b"%" in raw or b"+" in raw or not raw.isascii():
            names = [k for k, _ in parse_qsl(raw.decode("latin-1"), keep_blank_values=True,
                                             encoding="utf-8", errors="strict")]
        else:  # the usual query: plain names, nothing to decode
            names = [kv.split(b"=", 1)[0].decode() for kv in raw.split(b"&") if kv]
    except UnicodeDecodeError as bad:
        raise _not_utf8("query string", bad) from None
    unknown = [n for n in dict.fromkeys(names) if n not in known]
    twice = [n for n in dict.fromkeys(names) if n in known and names.count(n) > 1]
    # `?user_id=42&user_id=43` was answered for 43 alone, with no word; every fault of the
    # query is named in one answer (a repeated one hid an unknown one)
    takes = ", ".join(f"`{k}`" for k in sorted(known)) or "none"
    faults = [{"loc": ("query", n), "type": "repeated",
               "msg": f"given {names.count(n)} times; give it once"} for n in twice]
    faults += [{"loc": ("query", n), "type": "extra_forbidden",
                "input": request.query_params[n],
                "msg": f"not a parameter of {request.method} {path} (it takes {takes})"}
               for n in unknown]
    if faults:
        raise RequestValidationError(faults)


class _StrictQueryRoute(APIRoute):
    """The API's routes (``/v1/...``, ``/admin/...``) check their query string first
    (``_check_query``); the page (``/``) takes any query. A wrapper of the route's handler,
    not a FastAPI dependency, whose machinery costs more per request."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if path.startswith(("/v1/", "/admin/")):  # what `_check_query` answers, documented
            kwargs["responses"] = {**_errors(400, 422), **(kwargs.get("responses") or {})}
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()
        if not self.path.startswith(("/v1/", "/admin/")):
            return handler
        path, known = self.path, frozenset(_query_names(self.dependant))

        async def checked(request: Request) -> Response:
            if REQUEST_MODEL.get(None) is None:  # (RequestMiddleware sets one per request)
                REQUEST_MODEL.set({})  # this request's own (``served``), in its own context
            _check_query(request, path, known)
            if request.method == "POST" and _json_type(request.headers.get("content-type",
                                                                           "")):
                await _check_body_keys(request)
            return await handler(request)
        return checked


async def _check_body_keys(request: Request) -> None:
    """A JSON body's objects name each key once: ``{"user_ids": [1], "user_ids": [2]}`` was
    answered for ``[2]`` alone, with no word (a repeated query parameter is refused). The
    body is read here once and kept for FastAPI (``Request.json`` reads ``_json``); a body
    that is not valid JSON is left to FastAPI's own answer."""
    import json
    raw = await request.body()
    if not raw:
        return
    repeated: dict[str, int] = {}

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(items)
        if len(out) < len(items):
            keys = [k for k, _ in items]
            for k in dict.fromkeys(keys):
                if keys.count(k) > 1:
                    repeated.setdefault(k, keys.count(k))
        return out
    try:
        parsed = json.loads(raw, object_pairs_hook=pairs)
    except (ValueError, RecursionError):  # (JSONDecodeError, UnicodeDecodeError, digits)
        return
    if repeated:
        raise RequestValidationError([
            {"loc": ("body", k), "type": "repeated",
             "msg": f"given {n} times; give it once"} for k, n in repeated.items()])
    request._json = parsed  # what Request.json() returns: not parsed again


def create_app(run_dir: str | Path, *, admin_token: str | None = None, max_k: int = 1000,
               max_batch: int = 1000, max_results: int = 100_000,
               max_body_bytes: int | None = None, allowed_hosts: Sequence[str] | None = None,
               access_log: bool = True, inline_max_scores: int = 1 << 20,
               max_filter: int = 10_000, deny: Iterable[Any] | DenyList | None = None,
               deny_file: str | Path | None = None) -> FastAPI:
    """Build the FastAPI app serving one run directory.

    Args:
        run_dir: a run saved by ``TwoTower.save`` / ``twotower train --out``.
        admin_token: enables ``POST /admin/reload`` for ``Authorization: Bearer <token>``;
            None leaves admin endpoints out (404).
        max_k: largest ``k`` a request may ask for (also bounded by the catalogue size).
        max_batch: most user ids (or history items) in one request body.
        max_results: most (user, item) entries one batch request may ask for (users x k;
            a 6 KB body of 1,000 users at k = 1,000 asked for a 71 MB answer).
        max_body_bytes: larger request bodies are refused with 413 (``twotower serve
            --max-body``); None: ``default_max_body(max_batch, max_filter)``, large
            enough for a request at every maximum with ids of 24 characters.
        allowed_hosts: the host names requests may name in their Host header (others get
            400; a guard against DNS rebinding of a loopback service); None or ``"*"``:
            any.
        access_log: one JSON line per request on the ``twotower.access`` logger.
        inline_max_scores: searches scoring at most this many (query, item) pairs run on
            the event loop; bigger ones (large batches or catalogues) in the thread pool.
        max_filter: most item ids in one request's ``allow`` or ``deny`` list.
        deny: external item ids no answer lists, whatever the request (e.g. out of
            stock): mapped to the run's items and prepared once when a run is loaded,
            and kept across reloads; ids the run does not know are ignored (counted in
            ``GET /v1/model``'s ``deny``).
        deny_file: the same list as a file of one item id a line, read now and again by
            every reload (``POST /admin/reload``, SIGHUP): a reload whose file is missing,
            unreadable or has a bad line is refused as a whole (the old model and list
            keep serving). ``-``: standard input, read now, once (kept across reloads).

    Returns:
        The app; ``app.state.holder`` holds the served model.

    Raises:
        ArtifactError: the run cannot be loaded.
        ConfigError: a setting is out of range, or both ``deny`` and ``deny_file`` are
            given.
        DataError: ``deny_file`` cannot be read or has a bad line (naming it).

    Example:
        >>> from fastapi.testclient import TestClient          # doctest: +SKIP
        >>> client = TestClient(create_app("runs/ml100k"))     # doctest: +SKIP
        >>> client.get("/v1/recommendations", params={"user_id": 42}).json()  # doctest: +SKIP
    """
    import twotower

    if not 1 <= max_k:
        raise ConfigError(f"`max_k` must be >= 1, got {max_k}")
    if not 1 <= max_batch:
        raise ConfigError(f"`max_batch` must be >= 1, got {max_batch}")
    if not 1 <= max_results:
        raise ConfigError(f"`max_results` must be >= 1, got {max_results}")
    if not 1 <= max_filter:
        raise ConfigError(f"`max_filter` must be >= 1, got {max_filter}")
    if max_body_bytes is None:
        max_body_bytes = default_max_body(max_batch, max_filter)
    elif isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int) or \
            max_body_bytes < 1:
        raise ConfigError(f"`max_body_bytes` must be an integer >= 1, got {max_body_bytes!r}")
    if deny is not None and deny_file is not None:
        raise ConfigError("`deny` and `deny_file` both give the deny list: give one")
    if deny_file is not None:
        deny = DenyList.read(deny_file)
    elif deny is not None and not isinstance(deny, DenyList):
        deny = DenyList.of_ids(deny)
    if allowed_hosts is not None:
        allowed_hosts = [h.strip() for h in allowed_hosts if str(h).strip()]
        if not allowed_hosts:
            raise ConfigError("`allowed_hosts` is empty: every request would be refused; "
                              "give host names, or [\"*\"] for any")
    holder = ModelHolder(run_dir, deny)
    metrics = Metrics()
    bodies = S.request_models(max_k, max_batch, max_filter)
    BatchRequest, HistoryRequest = bodies["batch"], bodies["history"]  # noqa: N806
    SimilarRequest = bodies["similar"]  # noqa: N806

    app = FastAPI(title="twotower", version=twotower.__version__, docs_url=None,
                  redoc_url=None,
                  description="Top-K candidate retrieval from a trained two-tower model.")
    app.router.route_class = _StrictQueryRoute  # for the routes added below
    app.state.holder = holder
    app.state.metrics = metrics
    app.add_middleware(RequestMiddleware, metrics=metrics, max_body_bytes=max_body_bytes,
                       log_requests=access_log, allowed_hosts=allowed_hosts)

    default_k = min(DEFAULT_K, max_k)
    check_k = functools.partial(_check_k, default=default_k)

    def served() -> ServedModel:
        """The snapshot a handler answers from (``holder.current``, read once), noted on
        the request, so that an error raised after it names that model, not the one a
        reload swapped in meanwhile."""
        s = holder.current
        box = REQUEST_MODEL.get(None)
        if box is not None:
            box["label"] = s.label
        return s

    def error(status: int, body: dict[str, Any], headers: Any = None) -> JSONResponse:
        # errors name the model too, as every answer does: the one the handler used
        box = REQUEST_MODEL.get(None)
        label = (box or {}).get("label") or holder.current.label
        if box is not None:  # the access log names it too (a refusal before the handler)
            box["label"] = label
        return JSONResponse({"model": label, **body}, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        ct = request.headers.get("content-type", "")
        if not _json_type(ct) and any(tuple(e.get("loc", ())) == ("body",)
                                      and e.get("type") != "missing" for e in exc.errors()):
            # e.g. curl's -d without -H 'content-type: application/json': the body was
            # not read as JSON, and pydantic's message about a dictionary misleads
            got = f"content type {ct!r}" if ct.strip() else "no Content-Type header"
            return error(415, {"detail": "request body: send it as JSON, with the header "
                                         f"`Content-Type: application/json`; got {got}"})
        errs = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")),
                 "type": str(e.get("type", ""))} for e in exc.errors()]
        return error(422, {"detail": _validation_detail(list(exc.errors())), "errors": errs})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == _FASTAPI_PARSE_ERROR:
            coding = request.headers.get("content-encoding", "").strip()
            if coding and coding.lower() != "identity":  # e.g. a gzipped body
                return error(415, {"detail": f"request body: Content-Encoding {coding!r} is "
                                             "not accepted; send the JSON uncompressed"})
            try:  # the body FastAPI read (cached on the request)
                (await request.body()).decode("utf-8")
            except UnicodeDecodeError as bad:
                return error(400, {"detail": f"request body is not UTF-8 (byte "
                                             f"0x{bad.object[bad.start]:02x} at offset "
                                             f"{bad.start}): send JSON encoded as UTF-8"})
            # valid JSON that Python will not read: a number of more than 4,300 digits, or
            # nesting deeper than its recursion limit; invalid JSON is a 422 too
            return error(422, {"detail": "request body is not readable JSON (a number of "
                                         "more than 4,300 digits, or nesting too deep)"})
        if exc.status_code == 405:  # every route at this path, not the first one's alone
            path, root = request.scope.get("path", ""), request.scope.get("root_path", "")
            if root and path.startswith(root):  # mounted under a prefix: routes match after it
                path = path[len(root):]
            allowed = sorted({m for r in request.app.router.routes
                              if getattr(r, "methods", None) and r.path_regex.match(path)
                              for m in r.methods})
            return error(405, {"detail": f"method {request.method} is not allowed on "
                                         f"{request.url.path}; allowed: {', '.join(allowed)}"},
                         {"Allow": ", ".join(allowed)})
        if exc.status_code == 404 and exc.detail == "Not Found":  # no route at all
            return error(404, {"detail": f"nothing is served at {request.url.path}; the "
                                         "endpoints are listed in /openapi.json"})
        return error(exc.status_code, {"detail": exc.detail},
                     getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        # a bug still answers in JSON, as every other error does (uvicorn logs the
        # traceback: starlette re-raises after this handler)
        # (sent from outside the middleware that adds the security headers: added here)
        return error(500, {"detail": f"internal error ({type(exc).__name__}); the server "
                                     "log has the details"},
                     {k.decode("latin-1"): v.decode("latin-1") for k, v in SECURITY_HEADERS})

    K = Annotated[int, Query(ge=1, le=max_k,  # noqa: N806
                             description=f"list length, 1..{max_k} and at most the catalogue "
                                         f"size; default {min(DEFAULT_K, max_k)}, or the "
                                         "catalogue size when smaller")]
    IdParam = Annotated[str, Query(min_length=1, max_length=S.MAX_ID_LENGTH)]  # noqa: N806

    # ------------------------------------------------------------ recommendations
    def cost(queries: int, k: int | None) -> int:
        """A request's cost in scored (query, item) pairs: the search, plus the answer's
        JSON, weighted as 512 pairs per listed item (a rough weight, not measured: when
        only the pairs counted, a 623-user, k=1,000 batch was answered on the event
        loop)."""
        return queries * (holder.current.n_items + _JSON_ITEM_COST * (k or default_k))

    def filter_cost(req: Any) -> int:
        """An ``allow``/``deny`` list's share of a request's cost: its ids' lookup and an
        item mask (a rough weight, as ``cost``'s)."""
        n = sum(len(v) for v in (getattr(req, "allow", None), getattr(req, "deny", None))
                if v is not None)
        return 0 if not n else holder.current.n_items + 64 * n

    async def offload(work: int, fn: Callable[..., Response], *args: Any) -> Response:
        # A thread hop costs more CPU than a small exact search (measured ad hoc): score up to
        # `inline_max_scores` (query, item) pairs on the event loop, hand bigger jobs to the
        # thread pool (numpy/faiss release the GIL there) so they never stall other requests.
        if work <= inline_max_scores:
            return fn(*args)
        return await run_in_threadpool(fn, *args)

    def filters(s: ServedModel, req: Any) -> tuple[Any, Any, Any, str]:
        """A request's ``allow``/``deny`` (external ids, mapped once here) as item indices,
        with the server's deny list: (allow rows, the search's deny, the request's own
        deny rows, the response's ``unknown_filter_ids`` member, "" without lists)."""
        allow, deny = getattr(req, "allow", None), getattr(req, "deny", None)
        if allow is None and deny is None:
            return None, s.deny, None, ""
        m = s.model
        allow_rows, deny_rows, n_allow, n_deny = None, None, 0, 0
        if allow is not None:
            try:
                allow_rows, n_allow = m._allow_rows(allow)
            except DataError as exc:  # no known id: as unknown ids are elsewhere, a 404
                raise HTTPException(404, f"body field {exc}") from None
        search_deny = s.deny
        if deny is not None:
            deny_rows, n_deny = m.known_items(deny, "deny")
            search_deny = deny_rows if s.deny is None else np.union1d(deny_rows, s.deny.rows)
        return (allow_rows, search_deny, deny_rows,
                f',"unknown_filter_ids":{{"allow":{n_allow},"deny":{n_deny}}}')

    def _recommend(user_id: str, k: int | None, exclude_seen: bool, fallback: str
                   ) -> Response:
        s = served()
        m = s.model
        k = check_k(k, s.n_items)
        try:
            u = m.user_vocab.index_of(user_id)
            if m.untrained_users()[u]:  # served as an unknown user
                raise untrained_user_error(user_id)
        except UnknownIdError as exc:
            if fallback != "popular":
                raise HTTPException(404, f"{exc}; pass fallback=popular for popular items"
                                    ) from None
            body = _user_json(s, _echo(m, user_id), s.popular_json(k), "popular")
        else:
            users = np.array([u])
            scores, idx = m.recommend(users, k, m.seen_items(users) if exclude_seen else None,
                                      deny=s.deny)
            body = _user_json(s, plain_id(m.user_vocab.ids[u]), s.items_json(idx[0], scores[0]))
        return Response(f'{{"model":{_dumps(s.label)},{body[1:]}', media_type=_JSON)

    @app.get("/v1/recommendations", response_model=S.Recommendations,
             responses=_errors(404, 422), tags=["recommendations"])
    async def recommendations(user_id: IdParam, k: K | None = None, exclude_seen: bool = True,
                              fallback: Literal["none", "popular"] = "none") -> Response:
        """Top-k items for one user, items they already interacted with left out."""
        return await offload(cost(1, k), _recommend, user_id, k, exclude_seen,
                             fallback)

    def _batch(req: Any) -> Response:
        s = served()
        m = s.model
        k = check_k(req.k, s.n_items)
        allow, deny, own_deny, unknown_ids = filters(s, req)
        if len(req.user_ids) * k > max_results:
            raise HTTPException(422, f"{len(req.user_ids)} users x k {k} = "
                                     f"{len(req.user_ids) * k:,} results, over the limit of "
                                     f"{max_results:,} per request (twotower serve "
                                     "--max-results): ask for fewer users or a smaller k; "
                                     "for lists in bulk, `twotower recommend --out FILE`")
        users = m.servable_users(req.user_ids)  # -1: unknown, or never trained on
        unknown = users < 0
        if unknown.any() and req.fallback != "popular":
            hint = "; pass fallback=popular for popular items"
            at = np.flatnonzero(unknown)
            known_id = m.user_vocab.lookup_or([req.user_ids[i] for i in at]) >= 0
            bad = [req.user_ids[i] for i in at[~known_id]]
            if bad:  # not in the vocabulary at all
                raise HTTPException(404, _unknown("user", bad, len(users), m.user_vocab,
                                                  hint))
            untrained = [req.user_ids[i] for i in at]  # known, but never trained on
            shown = ", ".join(map(repr, untrained[:10])) + (", ..." if len(untrained) > 10
                                                            else "")
            raise HTTPException(404, f"user id{'s' if len(untrained) > 1 else ''} {shown} "
                                     f"({len(untrained)} of {len(users)}) "
                                     f"{'have' if len(untrained) > 1 else 'has'} no training "
                                     f"interactions (the model never trained "
                                     f"{'their queries' if len(untrained) > 1 else 'its query'})"
                                     f"{hint}")
        known = users[~unknown]
        if len(known):
            exclude = m.seen_exclusions(known) if req.exclude_seen else None
            scores, idx = m.recommend(known, k, exclude, allow=allow, deny=deny)
        popular = s.popular_json(k, allow, own_deny) if unknown.any() else ""
        ids = m.user_vocab.ids
        rows, j = [], 0
        for raw, u in zip(req.user_ids, users.tolist()):
            if u < 0:
                rows.append(_user_json(s, _echo(m, raw), popular, "popular"))
            else:
                rows.append(_user_json(s, plain_id(ids[u]), s.items_json(idx[j], scores[j])))
                j += 1
        return Response(f'{{"model":{_dumps(s.label)},"k":{k},"results":[{",".join(rows)}]'
                        f'{unknown_ids}}}', media_type=_JSON)

    @app.post("/v1/recommendations", response_model=S.BatchRecommendations,
              responses=_errors(400, 404, 413, 415, 422), tags=["recommendations"])
    async def batch_recommendations(req: BatchRequest) -> Response:  # type: ignore[valid-type]
        """Top-k items for many users in one search call."""
        return await offload(cost(len(req.user_ids), req.k) + filter_cost(req), _batch, req)

    def _by_history(req: Any) -> Response:
        s = served()
        m = s.model
        if not s.supports_history:
            raise HTTPException(400, f"model {s.label} has query tower "
                                     f"'{m.config.query_tower}': it cannot recommend from a "
                                     "history; serve a run trained with query_tower "
                                     "'history' or 'id+history'")
        k = check_k(req.k, s.n_items)
        allow, deny, _, unknown_ids = filters(s, req)
        items = m.item_vocab.lookup_or(req.item_ids, -1)
        if (items < 0).any():
            bad = [req.item_ids[i] for i in np.flatnonzero(items < 0)]
            raise HTTPException(404, _unknown("item", bad, len(items), m.item_vocab))
        # as an untrained user is: a history vector is trained by an item's training rows
        # (item features do not reach the history table), so these give no query
        if len(items) and (np.asarray(m.item_popularity)[items] == 0).all():
            shown = ", ".join(map(repr, req.item_ids[:10])) + (
                ", ..." if len(req.item_ids) > 10 else "")
            raise HTTPException(404, f"item id(s) {shown}: none has training interactions, "
                                     "so the model has no query to build from this history")
        try:
            scores, idx = m.recommend_from_history(
                [items], k, [items] if req.exclude_history else None, allow=allow, deny=deny)
        except ConfigError as exc:
            raise HTTPException(400, str(exc)) from None
        return Response(f'{{"model":{_dumps(s.label)},"items":'
                        f'{s.items_json(idx[0], scores[0])}{unknown_ids}}}', media_type=_JSON)

    @app.post("/v1/recommendations/by-history", response_model=S.HistoryRecommendations,
              responses=_errors(400, 404, 413, 415, 422), tags=["recommendations"])
    async def history_recommendations(req: HistoryRequest  # type: ignore[valid-type]
                                      ) -> Response:
        """Top-k items for a user known only by the items they interacted with (works for
        users the model never saw, when it has a history query tower)."""
        return await offload(cost(1, req.k) + len(req.item_ids) + filter_cost(req),
                             _by_history, req)

    # ------------------------------------------------------------ items
    def _similar(item_id: Any, k: int | None, req: Any = None) -> Response:
        s = served()
        k = check_k(k, s.n_items - 1, "the catalogue size less the item itself")
        allow, deny, _, unknown_ids = filters(s, req)
        try:
            i = s.model.item_vocab.index_of(item_id)
        except UnknownIdError as exc:
            raise HTTPException(404, str(exc)) from None
        if s.model.untrained_items()[i]:  # as a user never trained on is refused
            raise HTTPException(404, str(untrained_item_error(plain_id(item_id))))
        if k == 0:  # a one-item catalogue: nothing is similar
            items = "[]"
        else:
            scores, idx = s.model.similar_items(np.array([i]), k, allow=allow, deny=deny)
            items = s.items_json(idx[0], scores[0])
        return Response(f'{{"model":{_dumps(s.label)},"item_id":{_dumps(s.item_ids[i])},'
                        f'"title":{_dumps(s.titles[i])},"items":{items}{unknown_ids}}}',
                        media_type=_JSON)

    @app.get("/v1/similar-items", response_model=S.SimilarItems,
             responses=_errors(404, 422), tags=["items"])
    async def similar_items(item_id: IdParam, k: K | None = None) -> Response:
        """The k items nearest to an item (cosine on item embeddings), never itself."""
        return await offload(cost(1, k), _similar, item_id, k)

    @app.post("/v1/similar-items", response_model=S.SimilarItems,
              responses=_errors(400, 404, 413, 415, 422), tags=["items"])
    async def similar_items_filtered(req: SimilarRequest  # type: ignore[valid-type]
                                     ) -> Response:
        """The same, with `allow`/`deny` lists of item ids in the body (too long for a
        query string)."""
        return await offload(cost(1, req.k) + filter_cost(req), _similar, req.item_id,
                             req.k, req)

    # `:path`: an id may hold "/" (sent as %2F, which the router sees decoded)
    @app.get("/v1/items/{item_id:path}", response_model=S.ItemDetail,
             responses=_errors(404, 422), tags=["items"])
    def item(item_id: Annotated[str, PathParam(min_length=1, max_length=S.MAX_ID_LENGTH)]
             ) -> JSONResponse:
        """Metadata of one item (title, genres, year, ... as the run holds them)."""
        s = served()
        try:
            i = s.model.item_vocab.index_of(item_id)
        except UnknownIdError as exc:
            raise HTTPException(404, str(exc)) from None
        # a metadata column named `model` (a phone's, a car's) does not replace the served
        # model's label, which every answer names (it did: "X1", or null for a blank cell)
        meta = s.item_metadata(i)
        meta.pop("model", None)
        return JSONResponse({"model": s.label, **meta})

    @app.get("/v1/item", response_model=S.ItemDetail, responses=_errors(404, 422),
             tags=["items"])
    def item_query(item_id: IdParam) -> JSONResponse:
        """The same as ``/v1/items/{item_id}``, the id as a query parameter (any id, ``.``
        and ``..`` too, which a path cannot carry)."""
        return item(item_id)

    @app.get("/v1/items", response_model=S.ItemSearch, responses=_errors(422), tags=["items"])
    def search_items(search: Annotated[str, Query(max_length=S.MAX_ID_LENGTH, description=(
                         "case-insensitive part of a title, or an exact item id; empty: "
                         "the most popular items"))] = "",
                     limit: Annotated[int, Query(ge=1, le=100)] = 20) -> JSONResponse:
        """Find items by title, most popular first (for picking an item)."""
        s = served()
        q = search.strip().lower()
        if not q:  # the page's first view: no list of the whole catalogue
            return JSONResponse({"model": s.label, "total": len(s.popular), "items": [
                {**s.item_ref(i), "popularity": plain_id(s.model.item_popularity[i])}
                for i in s.popular[:limit].tolist()]})
        hits = s.items_matching(q)
        total = len(hits)
        top = hits[:limit].tolist()
        if search.strip() in s.model.item_vocab:  # an exact id first, counted once
            exact = s.model.item_vocab.index_of(search.strip())
            total += int(not np.any(hits == exact))
            top = [exact] + [i for i in hits[:limit + 1].tolist() if i != exact][:limit - 1]
        pop = s.model.item_popularity
        return JSONResponse({"model": s.label, "total": total, "items": [
            {**s.item_ref(i), "popularity": plain_id(pop[i])} for i in top]})

    # ------------------------------------------------------------ users
    # `:path`, as for items; the fixed suffix still ends the id (the last "/history")
    @app.get("/v1/users/{user_id:path}/history", response_model=S.UserHistory,
             responses=_errors(404, 422), tags=["users"])
    def user_history(user_id: Annotated[str, PathParam(min_length=1, max_length=S.MAX_ID_LENGTH)],
                     limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> JSONResponse:
        """The items a user interacted with in training (what exclude_seen leaves out)."""
        s = served()
        m = s.model
        try:
            u = m.user_vocab.index_of(user_id)
        except UnknownIdError as exc:
            raise HTTPException(404, str(exc)) from None
        seen = m.seen_items(np.array([u]))[0].tolist()
        return JSONResponse({"model": s.label, "user_id": plain_id(m.user_vocab.ids[u]),
                             "count": len(seen), "items": [s.item_ref(i) for i in seen[:limit]]})

    @app.get("/v1/history", response_model=S.UserHistory, responses=_errors(404, 422),
             tags=["users"])
    def user_history_query(user_id: IdParam,
                           limit: Annotated[int, Query(ge=1, le=10_000)] = 1000
                           ) -> JSONResponse:
        """The same as ``/v1/users/{user_id}/history``, the id as a query parameter (any
        id, ``.`` and ``..`` too, which a path cannot carry)."""
        return user_history(user_id, limit)

    @app.get("/v1/users", response_model=S.UserList, responses=_errors(422), tags=["users"])
    def users(offset: Annotated[int, Query(ge=0)] = 0,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100,
              search: Annotated[str, Query(max_length=S.MAX_ID_LENGTH, description=(
                  "only ids whose text starts with this, in text order; empty: every id, "
                  "in vocabulary order"))] = "") -> JSONResponse:
        """Known user ids (for picking a user): ``total`` of them, ``limit`` from
        ``offset``."""
        s = served()
        if search:
            total, ids = s.users_starting(search, offset, limit)
            return JSONResponse({"model": s.label, "total": total, "user_ids": ids})
        ids = s.model.user_vocab.ids
        return JSONResponse({"model": s.label, "total": len(ids),
                             "user_ids": ids[offset:offset + limit].tolist()})

    # ------------------------------------------------------------ operations
    @app.get("/healthz", response_model=S.Health, tags=["operations"])
    async def healthz() -> JSONResponse:
        """Liveness and readiness: the service has a model loaded."""
        return JSONResponse({"status": "ok", "model": served().label})

    @app.get("/v1/model", response_model=S.ModelInfo, tags=["operations"])
    async def model_info() -> JSONResponse:
        """Which model is served: name, version, training time, metrics, config."""
        return JSONResponse({**served().describe(), "max_k": max_k})

    @app.get("/metrics", response_class=PlainTextResponse, tags=["operations"])
    async def prometheus() -> PlainTextResponse:
        """Prometheus text format: requests by route/status, latency histogram."""
        # async on purpose: the counters are updated on the event loop thread, so they are
        # read there too (no lock, no torn reads)
        s = holder.current
        extra = gauge("twotower_model_info", "The served model (value is always 1).",
                      [({"name": s.name, "version": s.version}, 1)])
        extra += gauge("twotower_model_reloads_total", "Model reloads by result.",
                       [({"result": r}, n) for r, n in sorted(holder.reloads.items())],
                       kind="counter")
        extra += gauge("twotower_model_items", "Catalogue size of the served model.",
                       [({}, s.n_items)])
        return PlainTextResponse(metrics.render(extra),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    if admin_token:
        bearer = HTTPBearer(auto_error=False, description="the service's admin token")

        def require_admin(cred: Annotated[HTTPAuthorizationCredentials | None,
                                          Depends(bearer)]) -> None:
            if cred is None or cred.scheme.lower() != "bearer":
                raise HTTPException(401, "admin endpoints need `Authorization: Bearer <token>`",
                                    headers={"WWW-Authenticate": "Bearer"})
            if not hmac.compare_digest(cred.credentials.encode(), admin_token.encode()):
                raise HTTPException(403, "wrong admin token")

        @app.post("/admin/reload", response_model=S.ReloadResult,
                  responses=_errors(400, 401, 403, 409, 413, 415, 422), tags=["admin"],
                  dependencies=[Depends(require_admin)])
        def reload(req: Annotated[S.ReloadRequest | None, Body()] = None) -> JSONResponse:
            """Load a run next to the current one, then switch to it atomically.

            In-flight requests finish on the old model; a run that fails to load, or a
            deny list file (``--deny FILE``, read again) that cannot be read or has a bad
            line, is refused (422, with the reason) and the old model and list keep
            serving. A run whose files are those served keeps its model in memory
            (``run_loaded`` false): only the deny list is read again."""
            t0 = time.perf_counter()
            try:
                old, new = holder.reload(req.run_dir if req is not None else None)
            except ReloadInProgress as exc:
                raise HTTPException(409, str(exc)) from None
            except ReloadRefused as exc:
                raise HTTPException(422, str(exc)) from None
            box = REQUEST_MODEL.get(None)
            if box is not None:  # the access log names the model it serves from now on
                box["label"] = new.label
            return JSONResponse({"status": "reloaded", "previous": old.label,
                                 "current": new.label,
                                 "load_seconds": round(time.perf_counter() - t0, 3),
                                 "run_loaded": new.model is not old.model})

    # ------------------------------------------------------------ the page
    index_html = (STATIC / "index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(index_html)

    # HEAD, as load balancers and uptime checks probe (the server sends no body)
    for path, endpoint in (("/", page), ("/healthz", healthz), ("/metrics", prometheus)):
        app.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _json_type(content_type: str) -> bool:
    """Whether FastAPI reads a body of this content type as JSON (``application/json`` or
    ``application/*+json``; a request without the header is not: FastAPI's
    ``strict_content_type``, whose default keeps a plain cross-site form post out)."""
    if not content_type.strip():
        return False
    main = content_type.split(";", 1)[0].strip().lower()
    return main == "application/json" or (main.startswith("application/")
                                          and main.endswith("+json"))


def _echo(m: Any, user_id: Any) -> Any:
    """A requested user id as answers echo it: with the vocabulary's id type (an integer
    for integer ids, text for text ids, as a known user's id is), whitespace around an
    integer ignored."""
    if not m.user_vocab.is_int:
        return user_id if isinstance(user_id, str) else str(user_id)
    if isinstance(user_id, str) and (INT_ID.fullmatch(user_id.strip()) or (
            len(user_id) <= 4000 and _ANY_INT.fullmatch(user_id.strip()))):
        # an integer beyond int64 too (no id of the run, echoed as the number it is, as
        # the batch endpoint echoes it; it was text here)
        return int(user_id)
    return user_id


#: an integer written plainly, of any length (INT_ID: those int64 holds)
_ANY_INT = re.compile(r"0|-?[1-9][0-9]*")


def _user_json(s: ServedModel, user_id: Any, items_json: str,
               fallback: str | None = None) -> str:
    fb = "null" if fallback is None else _dumps(fallback)
    return f'{{"user_id":{_dumps(user_id)},"items":{items_json},"fallback":{fb}}}'
