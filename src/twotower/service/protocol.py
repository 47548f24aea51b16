"""uvicorn's HTTP protocol with the service's JSON error shape for requests it cannot parse.

uvicorn answers a request it cannot parse before any app code runs, as plain text
``Invalid HTTP request received.``: with httptools, a URL of 65,536 bytes or more (a GET
whose query string lists many ids), or a body whose framing is broken (a malformed chunk
of a chunked upload, two ``Content-Length`` headers); with h11, a request line and headers
over 16 KiB. This protocol answers them as the service answers every error: JSON with the
``model`` served (as the body-size and Host refusals name it, made before any handler too)
and a ``detail`` naming the limit, and the security headers.
"""

from __future__ import annotations

import json
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

from twotower.service.observability import SECURITY_HEADERS, UNPARSED

#: the longest URL httptools parses (its URL parser keeps 16-bit offsets)
MAX_URL_BYTES = 65_535


def unparsed_detail(url_bytes: int | None) -> str:
    """The ``detail`` of the 400 a request uvicorn could not parse gets; ``url_bytes``:
    the length of its URL as read, when known."""
    if url_bytes is not None and url_bytes > MAX_URL_BYTES:
        return (f"request URL too long: {url_bytes:,} bytes, the limit is {MAX_URL_BYTES:,}; "
                "send long id lists in a POST body (POST /v1/recommendations, "
                "/v1/recommendations/by-history)")
    return ("invalid HTTP request: it could not be read as HTTP/1.1 (a malformed request "
            f"line or header, a URL over {MAX_URL_BYTES:,} bytes, headers over the "
            "server's limit, or a body whose chunked framing or Content-Length is "
            "malformed)")


def served_label(app: Any) -> str | None:
    """The label of the model the app serves (``app.state.holder``), looked up through
    the middleware uvicorn wraps it in (their ``app``); None where there is none."""
    for _ in range(8):  # (a few wrappers: proxy headers, message logger, ASGI 2)
        try:
            return app.state.holder.current.label  # type: ignore[no-any-return]
        except AttributeError:
            app = getattr(app, "app", None)
            if app is None:
                return None
    return None


class JSONErrorsHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
    """uvicorn's own protocol (httptools, else h11), its 400 for an unparsable request in
    the service's JSON error shape, and a request's ``Upgrade`` header ignored quietly."""

    def _unsupported_upgrade_warning(self) -> None:
        # A request asking to switch protocols (``Upgrade: h2c``, which ``curl --http2``
        # sends on plain HTTP; ``websocket``) is served as HTTP/1.1, as HTTP allows: the
        # service has no other protocol to offer. uvicorn logged two WARNING lines per
        # such request, one telling the operator to install a WebSocket library, which
        # the service has no use for.
        self.logger.debug("Upgrade header ignored: the request is served as HTTP/1.1")

    def send_400_response(self, msg: str) -> None:
        cycle = getattr(self, "cycle", None)  # the request whose body could not be read
        if cycle is not None and not cycle.response_started:
            cycle.scope[UNPARSED] = True  # its app run ends in a disconnect: not an error
        url = getattr(self, "url", None)  # httptools' URL as read so far
        body = json.dumps({"model": served_label(getattr(self, "app", None)),
                           "detail": unparsed_detail(len(url) if isinstance(url, bytes)
                                                     else None)}).encode()
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        for name, value in [*self.server_state.default_headers, *SECURITY_HEADERS,
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]:
            head.append(name + b": " + value + b"\r\n")
        self.transport.write(b"".join(head) + b"\r\n" + body)
        self.transport.close()
