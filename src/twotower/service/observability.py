"""Request accounting: a JSON access log line, Prometheus metrics, and a body size limit.

One pure ASGI middleware does all three (no per-request task or thread; a
``BaseHTTPMiddleware`` would cost a task and a stream per request). The metrics are a
hand-rolled subset of the Prometheus text format (version 0.0.4): a request counter by
method/route/status and a latency histogram by method/route. Routes are the path templates
(``/v1/items/{item_id}``), never raw paths, so label sets stay bounded.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

access_log = logging.getLogger("twotower.access")

#: per request, ``{"label": ...}`` of the model snapshot its handler answered from (set by
#: the app's ``served``): its error answer and its access-log line name that model
REQUEST_MODEL: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar(
    "twotower_request_model")


class JsonLines(logging.Formatter):
    """Every log line of the service as one JSON object, like the access lines: ``ts``,
    ``level``, ``logger``, ``message`` (and ``exc``, a traceback): uvicorn's own lines
    (started, reloading, an invalid request) were plain text between the JSON ones."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": round(record.created, 3), "level": record.levelname,
                "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0)
UNMATCHED = "<unmatched>"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**kv: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in kv.items()) + "}"


class Metrics:
    """Counters and histograms, updated on the event loop thread only (no lock needed)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        # (method, route) -> [bucket counts..., +Inf count], sum
        self.latency: dict[tuple[str, str], list[int]] = {}
        self.latency_sum: dict[tuple[str, str], float] = defaultdict(float)
        self.started = time.time()

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests[(method, route, status)] += 1
        key = (method, route)
        counts = self.latency.get(key)
        if counts is None:
            counts = self.latency[key] = [0] * (len(LATENCY_BUCKETS) + 1)
        counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum[key] += seconds

    def render(self, extra: Iterable[str] = ()) -> str:
        """The Prometheus text exposition of everything observed so far."""
        out = ["# HELP twotower_http_requests_total HTTP requests by method, route, status.",
               "# TYPE twotower_http_requests_total counter"]
        for (method, route, status), n in sorted(self.requests.items()):
            out.append(f"twotower_http_requests_total"
                       f"{_labels(method=method, route=route, status=str(status))} {n}")
        out += ["# HELP twotower_http_request_duration_seconds Request latency (server side).",
                "# TYPE twotower_http_request_duration_seconds histogram"]
        name = "twotower_http_request_duration_seconds"
        for (method, route), counts in sorted(self.latency.items()):
            cum = 0
            for le, c in zip((*map(repr, LATENCY_BUCKETS), "+Inf"), counts):
                cum += c
                out.append(f"{name}_bucket{_labels(method=method, route=route, le=le)} {cum}")
            out.append(f"{name}_sum{_labels(method=method, route=route)} "
                       f"{self.latency_sum[(method, route)]:.6f}")
            out.append(f"{name}_count{_labels(method=method, route=route)} {cum}")
        out += ["# HELP twotower_process_start_time_seconds Start time of the service.",
                "# TYPE twotower_process_start_time_seconds gauge",
                f"twotower_process_start_time_seconds {self.started:.3f}"]
        out.extend(extra)
        return "\n".join(out) + "\n"


def gauge(name: str, help_: str, samples: Iterable[tuple[dict[str, str], float]],
          kind: str = "gauge") -> list[str]:
    """Text lines of one extra metric family."""
    lines = [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{_labels(**lab) if lab else ''} {val}" for lab, val in samples]
    return lines


#: set in a request's scope by the HTTP protocol when it answered 400 itself: the request's
#: body could not be parsed (``protocol.JSONErrorsHTTPProtocol``), the app's read of it
#: then ends in a disconnect (logged as a 500 and an "Exception in ASGI application"
#: traceback before)
UNPARSED = "twotower.unparsed"
#: the status logged for a request whose client hung up before its body was all sent (the
#: connection closed short of its ``Content-Length``, or of a chunked body's end): nginx's
#: "client closed request". No answer reached the client, and the server did nothing
#: wrong: not a 500 (a 4xx-like code, as the fault is the client's), not a 400 (no answer
#: was sent, and none the client could act on)
CLIENT_CLOSED = 499


def too_large(limit: int, length: int | None = None) -> str:
    """The 413's ``detail``: the limit, the flag that sets it, and the body's size when
    its ``Content-Length`` gave it (a chunked upload is refused past the limit unread)."""
    size = "" if length is None else f"{length:,} bytes, "
    return (f"request body too large: {size}the limit is {limit:,} bytes (twotower serve "
            "--max-body BYTES; create_app's max_body_bytes)")


def _served_label(scope: dict[str, Any]) -> str | None:
    """The label of the model the app serves (``app.state.holder``), for a refusal made
    before any handler ran; None outside an app that holds one."""
    try:
        return scope["app"].state.holder.current.label
    except (KeyError, AttributeError):
        return None


class RequestMiddleware:
    """Access log + metrics + request body limit (413) around an ASGI app.

    Args:
        app: the wrapped ASGI app.
        metrics: where observations go.
        max_body_bytes: larger bodies get 413 (checked on Content-Length up front and on
            the bytes actually received, for chunked uploads).
        log_requests: write one JSON line per request to the ``twotower.access`` logger.
    """

    def __init__(self, app: Any, *, metrics: Metrics, max_body_bytes: int,
                 log_requests: bool = True, allowed_hosts: Iterable[str] | None = None
                 ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body_bytes
        self.log_requests = log_requests
        # entries as requests' Host headers are read: "[::1]" and "localhost:8000" too
        hosts = None if allowed_hosts is None else [
            "*" if h.strip() == "*" else _host_name(h) for h in allowed_hosts]
        self.allowed_hosts = None if hosts is None or "*" in hosts else frozenset(hosts)

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any],
                       send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        state = {"status": 500, "started": False, "refused": False, "received": 0,
                 "body_done": False, "hung_up": False}
        model: dict[str, str] = {}
        REQUEST_MODEL.set(model)  # (this request's task: its own context)
        limit = self.max_body

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                if state["refused"]:
                    return
                state["status"] = message["status"]
                state["started"] = True
                message = {**message, "headers": [*message.get("headers", ()),
                                                  *SECURITY_HEADERS]}
            elif state["refused"]:
                return
            await send(message)

        async def refuse(status: int = 413, detail: str | None = None,
                         length: int | None = None) -> None:
            state["refused"] = True
            state["status"] = status
            # the service's error shape, the model named as every answer names it
            label = model.setdefault("label", _served_label(scope))
            body = json.dumps({"model": label, "detail": too_large(limit, length)
                               if detail is None else detail}, ensure_ascii=False).encode()
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode()),
                                    (b"connection", b"close"), *SECURITY_HEADERS]})
            await send({"type": "http.response.body", "body": body})

        async def receive_wrapper() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    if not state["started"] and not state["refused"]:
                        await refuse()
                    return {"type": "http.disconnect"}
                if not message.get("more_body", False):
                    state["body_done"] = True
            elif message["type"] == "http.disconnect" and not state["body_done"]:
                state["hung_up"] = True  # the client closed the connection mid-body
            return message

        try:
            length = _content_length(scope)
            host = None if self.allowed_hosts is None else _host(scope)
            if host is not None and host not in self.allowed_hosts:
                # e.g. DNS rebinding: a web page on another name reaching a loopback service
                await refuse(400, (
                    f"host {host!r} (the Host header) is not served here: allowed are "
                    f"{', '.join(sorted(self.allowed_hosts))} (twotower serve "
                    "--allowed-hosts)"))
            elif length is not None and length > limit:
                await refuse(length=length)
            else:
                await self.app(scope, receive_wrapper, send_wrapper)
        except Exception as exc:
            # a body cut short ends the app's read of it in starlette's ClientDisconnect:
            # uvicorn logged it as a 500 with an "Exception in ASGI application" traceback
            if not state["refused"] and not scope.get(UNPARSED) and not (
                    state["hung_up"] and _from_disconnect(exc)):
                state["hung_up"] = False  # a fault of ours all the same: logged as a 500
                raise
        finally:
            if scope.get(UNPARSED) and not state["started"]:  # what the client was sent
                state["status"] = 400
                model.setdefault("label", _served_label(scope))
            elif state["hung_up"] and not state["refused"]:
                # whatever the app tried to answer went nowhere (uvicorn drops what is sent
                # on a closed connection)
                state["status"] = CLIENT_CLOSED
            elapsed = time.perf_counter() - t0
            method = scope.get("method", "")
            status = int(state["status"])
            path_t = _route_label(scope, status)
            self.metrics.observe(method, path_t, status, elapsed)
            if self.log_requests and access_log.isEnabledFor(logging.INFO):
                access_log.info(json.dumps({
                    "ts": round(time.time(), 3), "method": method, "path": scope.get("path"),
                    "route": path_t, "status": status, "latency_ms": round(elapsed * 1e3, 3),
                    "client": (scope.get("client") or (None,))[0],
                    "model": model.get("label")}))


def _from_disconnect(exc: BaseException) -> bool:
    """Whether ``exc`` is, or was raised while handling, starlette's ``ClientDisconnect``
    (FastAPI turns one in its own read of a body into a 400 "error parsing the body")."""
    from starlette.requests import ClientDisconnect
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, ClientDisconnect):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def _route_label(scope: dict[str, Any], status: int) -> str:
    """The path template a request matched, as the API documents it (``{item_id}``, not
    ``{item_id:path}``). Routes starlette serves itself (``/openapi.json``, the page's
    ``/static`` files) set no template: their own path, or ``/static/{file}``; a path that
    matched nothing (404) is ``UNMATCHED``, so labels stay a bounded set."""
    template = getattr(scope.get("route"), "path", None)
    if template:
        return re.sub(r"\{(\w+):\w+\}", r"{\1}", template)
    path = scope.get("path") or ""
    if path.startswith("/static/"):
        return "/static/{file}"
    return path if status != 404 and path in _OWN_PATHS else UNMATCHED


#: paths starlette answers without a route template
_OWN_PATHS = frozenset({"/openapi.json"})


#: on every response: no MIME sniffing, no framing (clickjacking), the page's scripts and
#: styles from this service only (it has no inline ones), no referrer sent elsewhere
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy",
     b"default-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
)


def _host(scope: dict[str, Any]) -> str | None:
    """The request's host name (the Host header without its port; an IPv6 literal without
    its brackets), lower case; None when absent: an HTTP/1.0 client on this machine (a
    browser, which DNS rebinding goes through, always sends one)."""
    for k, v in scope.get("headers", ()):
        if k == b"host":
            return _host_name(v.decode("latin-1"))
    return None


def _host_name(value: str) -> str:
    """A host name as a Host header or an allowed-hosts entry gives it: no port, no IPv6
    brackets, no final dot (``localhost.`` is ``localhost``), lower case."""
    h = value.strip().lower()

    def port(p: str) -> bool:  # nothing, or ":" and digits, none too (RFC 3986's port is
        # *DIGIT: "localhost:" is localhost); "a:80.evil.example" has no port
        return p == "" or (p[:1] == ":" and p[1:].isascii() and (p[1:].isdigit() or not p[1:]))
    if h.startswith("["):  # [::1]:8000
        end = h.find("]")
        h = h[1:end] if end > 0 and port(h[end + 1:]) else h
    elif h.count(":") == 1:
        name, _, rest = h.partition(":")
        h = name if port(":" + rest) else h  # kept whole: no host:port, matches no host
    return h[:-1] if h.endswith(".") and h != "." else h


def _content_length(scope: dict[str, Any]) -> int | None:
    for k, v in scope.get("headers", ()):
        if k == b"content-length":
            try:
                return int(v)
            except ValueError:
                return None
    return None
