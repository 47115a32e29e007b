"""The HTTP connection layer of ``vireid serve``: slow clients cannot block the service.

uvicorn waits for a request's headers without a time limit and counts every open connection
against its concurrency limit, so a few dozen connections that send half a request line and
stall ("slowloris") make it refuse every real search, in plain text. Here each connection gets:

* a header deadline (``ServeLimits.header_timeout_s``): a request whose headers are not complete
  in time is answered ``408`` (JSON) and closed; this runs below the application, so before the
  access-token check;
* a connection cap (``ServeLimits.max_connections``): a new connection over the cap evicts the
  connection that has waited longest for its headers (``408``); when none is waiting, the new one
  is refused with ``503`` and ``Retry-After`` (JSON);
* JSON for uvicorn's own refusals (malformed HTTP is ``400`` JSON, not text).

The request *body* deadline (``ServeLimits.body_timeout_s``) is enforced above, in
:class:`vireid.serve.app.RequestGuard`, where the body is read.
"""

from __future__ import annotations

import json
from typing import Any

_PHRASES = {400: "Bad Request", 408: "Request Timeout", 503: "Service Unavailable"}


def json_refusal(status: int, message: str) -> bytes:
    """A complete HTTP/1.1 response with body ``{"error": message}`` that closes the connection."""
    body = json.dumps({"error": message}).encode()
    head = (f"HTTP/1.1 {status} {_PHRASES.get(status, 'Error')}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\ncache-control: no-store\r\n"
            + ("retry-after: 1\r\n" if status == 503 else "") + "\r\n")
    return head.encode() + body


def guarded_protocol(header_timeout: float, max_connections: int) -> type:
    """uvicorn's h11 protocol class with a header deadline, a connection cap and JSON refusals."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        _header_timer: Any = None
        _waiting_since: float | None = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm(None)
            if len(self.connections) > max_connections:
                waiting = [c for c in self.connections if c is not self and getattr(c, "_waiting_since", None) is not None]
                if waiting:  # the connection stalled longest before its headers makes room
                    min(waiting, key=lambda c: c._waiting_since)._header_timed_out()
                else:
                    self._refuse(503, f"the server has {max_connections} connections open, its limit; retry in a moment")

        def data_received(self, data: bytes) -> None:
            if self._header_timer is None and (self.cycle is None or self.cycle.response_complete):
                self._arm(self.cycle)  # a new request starts on this connection
            super().data_received(data)
            if self._header_timer is not None and self.cycle is not self._armed_cycle:
                self._disarm()  # its headers are complete

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:
            self._refuse(400, "the request is not well-formed HTTP/1.1; send a valid request")

        def _arm(self, cycle: Any) -> None:
            self._armed_cycle = cycle
            self._waiting_since = self.loop.time()
            self._header_timer = self.loop.call_later(header_timeout, self._header_timed_out)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            self._header_timer = None
            self._waiting_since = None

        def _header_timed_out(self) -> None:
            self._disarm()
            if self.cycle is self._armed_cycle:
                self._refuse(408, f"the request headers did not arrive within {header_timeout:g} s; send the "
                                  "whole request at once")

        def _refuse(self, status: int, message: str) -> None:
            self._disarm()
            if not self.transport.is_closing():
                self.transport.write(json_refusal(status, message))
                self.transport.close()

    return GuardedH11Protocol


def uvicorn_config(app: Any, limits: Any, **options: Any) -> Any:
    """The ``uvicorn.Config`` of the search service: the guarded protocol with ``limits``' header
    deadline and connection cap (uvicorn's own plain-text concurrency limit off); ``options`` are
    passed on (log level, keep-alive, ...)."""
    import uvicorn

    options.setdefault("timeout_keep_alive", 5)
    return uvicorn.Config(app, http=guarded_protocol(limits.header_timeout_s, limits.max_connections),
                          limit_concurrency=None, server_header=False, proxy_headers=False, lifespan="off", **options)


__all__ = ["guarded_protocol", "json_refusal", "uvicorn_config"]
