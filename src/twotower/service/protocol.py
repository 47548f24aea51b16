"""uvicorn's HTTP protocol with the service's JSON error shape for requests it cannot parse.

uvicorn answers a request it cannot parse before any app code runs, as plain text
``Invalid HTTP request received.``: with httptools, a URL of 65,536 bytes or more (a GET
whose query string lists many ids); with h11, a request line and headers over 16 KiB. This
protocol answers them as the service answers every error, JSON with a ``detail`` naming the
limit (no ``model``: the request reached no model), and the security headers.
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.auto import AutoHTTPProtocol

from twotower.service.observability import SECURITY_HEADERS

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
            f"line or header, a URL over {MAX_URL_BYTES:,} bytes, or headers over the "
            "server's limit)")


class JSONErrorsHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
    """uvicorn's own protocol (httptools, else h11), its 400 for an unparsable request in
    the service's JSON error shape."""

    def send_400_response(self, msg: str) -> None:
        url = getattr(self, "url", None)  # httptools' URL as read so far
        body = json.dumps({"detail": unparsed_detail(
            len(url) if isinstance(url, bytes) else None)}).encode()
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        for name, value in [*self.server_state.default_headers, *SECURITY_HEADERS,
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]:
            head.append(name + b": " + value + b"\r\n")
        self.transport.write(b"".join(head) + b"\r\n" + body)
        self.transport.close()
