"""The search service: a FastAPI app with one web page and a small JSON API.

Routes (all answer errors as ``{"error": "<one sentence>"}`` with a 4xx status):

* ``GET /`` - the page (``static/index.html``: drop or choose a query image, pick the query and
  gallery modalities, see the ranked gallery with scores and the match verdict).
* ``GET /api/health`` - model and gallery summary, limits.
* ``POST /api/search`` - multipart form: ``file`` (the query image, JPEG/PNG/BMP/WebP),
  ``modality`` (``auto`` (default: grey-level images are infrared, :mod:`vireid.data.modality`),
  ``visible`` or ``infrared``, any spelling of that module), ``gallery_modality``
  (``opposite`` (default), ``visible``, ``infrared`` or ``all``), ``k`` (1..``max_k``, default 10),
  ``where`` (optional attribute filter, ``modality=infrared,backpack=yes``: the syntax of
  :mod:`vireid.retrieval.attributes`; its ``modality`` replaces ``gallery_modality``).
  Answers the ranked results with cosine scores and, when the model carries a calibrated
  verification threshold, a match flag per result and a verdict for the best one; with a filter, also
  ``where`` and ``attribute_labels`` (``stored`` or ``predicted``: which labels it used), and each result's
  ``attributes`` when the gallery has labels. An optional ``text`` field (a description of the person, at
  most :data:`~vireid.retrieval.text_search.MAX_QUERY_CHARS` characters) searches with the image and the
  words together (a text model only: :mod:`vireid.retrieval.text_search`; no match verdict).
* ``POST /api/search-text`` - JSON ``{"text": "...", "gallery_modality": "all" | "visible" | "infrared",
  "k": 10, "where": "backpack=yes"}``: the gallery ranked for a description alone (a text model only; no
  match verdict: the threshold is calibrated for image pairs); ``where`` filters as above.
* ``GET /api/openapi.json`` - the OpenAPI description of these routes.
* ``GET /api/gallery/{id}/image`` - the file of gallery image ``id`` (an integer row of the index;
  the client never names a path, and only files inside the gallery root are served).

:func:`create_app` builds the app from an already loaded embedder and index, so tests drive it
in-process; ``vireid serve`` (:mod:`vireid.serve.launch`) adds loading, address checks and uvicorn.
Inference runs in worker threads (the event loop keeps serving), the model one call at a time
under a lock; at most ``limits.max_pending`` searches wait, more are told to retry (503).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import threading
import time
from importlib import resources
from typing import Any

import anyio
import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vireid.data.datasets.base import MODALITY_ALIASES as _MODALITY_ALIASES  # the one spelling table
from vireid.errors import VireidError
from vireid.serve.gallery import ServedGallery
from vireid.serve.security import TOKEN_COOKIE, bearer_token, resolve_token, tokens_match
from vireid.serve.uploads import ALLOWED_FORMATS, ServeLimits, UploadError, decode_upload, format_bytes

log = logging.getLogger("vireid.serve")

#: Form fields accepted by ``POST /api/search``.
SEARCH_FIELDS = ("file", "modality", "gallery_modality", "k", "where", "text")
_NO_TEXT = ("this model was not trained with text descriptions, so it cannot search with words; serve a text model "
            "(text_synth, text_fusion_synth) and its index")
#: Fields of ``POST /api/search-text`` (a JSON object).
TEXT_FIELDS = ("text", "gallery_modality", "k", "where")
_GALLERY_CHOICES = ("opposite", "visible", "infrared", "all")

_BASE_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
_DEFAULT_CSP = b"default-src 'none'; frame-ancestors 'none'"


def _page() -> tuple[str, str]:
    """The page's HTML and a Content-Security-Policy that allows exactly its inline script and style."""
    html = resources.files("vireid.serve").joinpath("static/index.html").read_text(encoding="utf-8")

    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.S)
        return " ".join("'sha256-" + base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() + "'" for b in blocks)

    csp = (f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
           "img-src 'self' blob:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
    return html, csp


def _login_page(message: str) -> str:
    """A script-free page asking for the access token (the form sends it as ``/?token=``)."""
    from html import escape

    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>vireid search: access token</title>"
            "</head><body><h1>vireid search</h1>"
            f"<p>{escape(message)}</p><form method=\"get\" action=\"/\"><label>Access token "
            "<input type=\"password\" name=\"token\" autocomplete=\"current-password\" required></label> "
            "<button type=\"submit\">Open</button></form></body></html>")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class _BodyTooLarge(Exception):
    """Raised from the wrapped ``receive`` when a request body passes the size limit."""


class _BodyTooSlow(Exception):
    """Raised from the wrapped ``receive`` when a request body does not arrive within its deadline."""


class RequestGuard:
    """ASGI middleware in front of every route: Host check, access token, body size, security headers.

    The token check runs before routing, so without the token not even the existence of a route
    is revealed. ``GET /`` is left to the page route, which turns ``?token=`` into a cookie.
    The body size is enforced on the declared ``Content-Length`` and again while the body
    streams in (chunked uploads), before any multipart parsing spools it.
    """

    def __init__(self, app: ASGIApp, *, token: str | None, max_body: int, allowed_hosts: tuple[str, ...] | None,
                 body_timeout: float = 60.0) -> None:
        self.app = app
        self.token = token
        self.max_body = int(max_body)
        self.body_timeout = float(body_timeout)
        self.allowed_hosts = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in _BASE_HEADERS if k not in names]
                if b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", _DEFAULT_CSP))
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        headers = Headers(scope=scope)
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
            return

        received = 0
        body_done = False
        deadline: float | None = None

        async def limited_receive() -> Message:
            nonlocal received, body_done, deadline
            if body_done:  # after the body only a disconnect can come: no deadline
                return await receive()
            if deadline is None:
                deadline = anyio.current_time() + self.body_timeout
            with anyio.move_on_after(max(deadline - anyio.current_time(), 0.0)) as scope_:
                message = await receive()
            if scope_.cancelled_caught:
                raise _BodyTooSlow
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise _BodyTooLarge
                body_done = not message.get("more_body", False)
            return message

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except _BodyTooLarge:
            if started:
                raise
            await self._too_large()(scope, receive, send_with_headers)
        except _BodyTooSlow:
            if started:
                raise
            message = (f"the request body did not arrive within {self.body_timeout:g} s; send the image again over a "
                       "faster connection")
            await _error(408, message, {"Connection": "close"})(scope, receive, send_with_headers)
        except ClientDisconnect:  # the client went away: nothing to answer, no traceback in the log
            log.info("client disconnected during %s %s", scope.get("method"), scope.get("path"))

    def _too_large(self) -> Response:
        return _error(413, f"the request body is larger than {format_bytes(self.max_body)}, the limit; send a smaller image")

    def _refusal(self, scope: Scope, headers: Headers) -> Response | None:
        if self.allowed_hosts is not None:
            host = headers.get("host", "").strip().lower()
            name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
            if name not in self.allowed_hosts:
                return _error(421, f"requests for host {host or '(none)'!r} are not accepted; open the service at "
                                   "http://127.0.0.1:<port>/ (or start it with --token to serve other names)")
        if self.token is not None and not (scope["path"] == "/" and scope["method"] in ("GET", "HEAD")):
            given = bearer_token(headers.get("authorization"))
            if given is None:
                given = _cookie(headers.get("cookie"), TOKEN_COOKIE)
            if not tokens_match(given, self.token):
                what = "a wrong access token was sent" if given else "this server needs an access token"
                return _error(401, f"{what}; send the header 'Authorization: Bearer <token>' "
                                   "(or open /?token=<token> in a browser)", {"WWW-Authenticate": "Bearer"})
        length = headers.get("content-length")
        if length is not None:
            if not (length.strip().isascii() and length.strip().isdigit()):
                return _error(400, "the Content-Length header is not a number; send a well-formed HTTP request")
            if int(length) > self.max_body:
                return self._too_large()
        return None


def _cookie(header: str | None, name: str) -> str | None:
    """One cookie's value from a ``Cookie`` header (no decoding: tokens are plain printable text)."""
    if not header:
        return None
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"') or None
    return None


def _threshold(verification: Any) -> float | None:
    """The calibrated cosine threshold stored with the model, or None."""
    if not isinstance(verification, dict) or verification.get("threshold") is None:
        return None
    metric = str(verification.get("metric", "cosine")).lower()
    if metric != "cosine":
        log.warning("the model's verification threshold is for metric %r, not cosine; showing scores only", metric)
        return None
    return float(verification["threshold"])


def create_app(embedder: Any, index: Any, *, token: str | None = None, limits: ServeLimits | None = None,
               gallery_root: str | None = None, allowed_hosts: tuple[str, ...] | None = None) -> FastAPI:
    """The FastAPI app serving ``index`` searched with ``embedder`` (see the module docstring).

    ``token``: required on every route when set (header, or cookie for the page).
    ``gallery_root``: the only folder gallery images are served from (default: the index's image
    root). ``allowed_hosts``: accepted ``Host`` header names (``vireid serve`` sets the loopback
    names when bound to 127.0.0.1 without a token); None accepts any.
    """
    limits = limits or ServeLimits()
    if token is not None:
        token = resolve_token(token)
    gallery = ServedGallery(index, root=gallery_root)
    if gallery.dim is not None and int(gallery.dim) != int(embedder.dim):
        raise VireidError(f"the index holds {gallery.dim}-dimensional features but the model makes {embedder.dim}-dimensional "
                          "ones; build the index with this model (vireid index) or serve the model it was built with")
    threshold = _threshold(getattr(embedder, "verification", None))
    page_html, page_csp = _page()
    model_lock = threading.Lock()
    limiter = anyio.CapacityLimiter(limits.workers)
    pending = {"n": 0}

    # no /docs or /redoc: they load scripts from a CDN; the schema itself is served
    app = FastAPI(title="vireid search", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.gallery = gallery
    app.state.limits = limits
    app.state.threshold = threshold
    app.add_middleware(RequestGuard, token=token, max_body=limits.max_request_bytes, allowed_hosts=allowed_hosts,
                       body_timeout=limits.body_timeout_s)

    @app.exception_handler(UploadError)
    async def _upload_error(request: Request, exc: UploadError) -> JSONResponse:
        return _error(exc.status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"there is nothing at {request.url.path}; the page is at / and the API under /api (see /api/health)"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; see the API description in the README"
        else:
            message = str(exc.detail).rstrip(".") if exc.detail else "the request was refused"
            message = message[0].lower() + message[1:] if message else message
        return _error(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _server_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("search service error on %s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return _error(500, "the server failed on this request (see its log); other requests are not affected")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "request"
        return _error(400, f"{where} is not valid ({first.get('msg', 'bad value')}); check the API description")

    @app.get("/", include_in_schema=False)
    async def page(request: Request) -> Response:
        headers = {"Content-Security-Policy": page_csp, "Cache-Control": "no-store"}
        if token is not None:
            given = request.query_params.get("token")
            if given is not None:
                if not tokens_match(given, token):
                    return HTMLResponse(_login_page("That access token is wrong; try again."), status_code=401)
                resp = RedirectResponse("/", status_code=303)
                resp.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict", path="/")
                return resp
            if not tokens_match(_cookie(request.headers.get("cookie"), TOKEN_COOKIE), token):
                return HTMLResponse(_login_page("This search server needs an access token."), status_code=401)
        return HTMLResponse(page_html, headers=headers)

    def text_ready() -> bool:
        from vireid.retrieval.text_search import text_model

        try:
            text_model(embedder)
        except VireidError:
            return False
        return True

    takes_text = text_ready()

    @app.get("/api/health")
    async def health() -> dict:
        return {
            "status": "ok",
            "model": {"input_size": list(embedder.input_size), "dim": int(embedder.dim), "threshold": threshold,
                      "metric": "cosine", "text": takes_text},
            "gallery": {"size": gallery.size, "modalities": gallery.modality_counts()},
            "limits": {"max_upload_bytes": limits.max_upload_bytes, "max_side": limits.max_side,
                       "max_pixels": limits.max_pixels, "max_k": limits.max_k, "formats": list(ALLOWED_FORMATS)},
        }

    @app.get("/api/gallery/{item}/image")
    async def gallery_image(item: str) -> Response:
        if not item.isascii() or not item.isdigit() or len(item) > 12:
            raise UploadError(404, f"gallery image ids are integers from 0 to {gallery.size - 1}; {item[:40]!r} is not one")
        data, media_type = await anyio.to_thread.run_sync(gallery.read_image, int(item))
        return Response(data, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})

    def _filtered(feats: np.ndarray, k: int, gallery_modality: str | None, where: Any) -> tuple:
        """The gallery search, through the attribute filter ``where`` (:func:`_where_field`) when it has clauses."""
        from vireid.retrieval.attributes import filtered_search

        if where is not None and where["filter"].clauses:
            return filtered_search(gallery.index, feats, k, gallery_modality, where["keep"])
        return gallery.search(feats, k, gallery_modality)

    def _attribute_answer(answer: dict, where: Any) -> None:
        """Each result's attribute labels (when the gallery has them) and what the filter did."""
        labels = getattr(gallery.index, "attributes", None)
        if labels is not None:
            from vireid.retrieval.attributes import describe_labels

            for result in answer["results"]:
                result["attributes"] = describe_labels(labels, result["id"])
        if where is not None:
            answer["where"] = where["filter"].describe()
            answer["attribute_labels"] = where["source"]
            if not answer["results"]:
                answer["note"] = "no gallery image passes the filter"

    def run_search(data: bytes, modality: str, wanted: str, k: int, where: Any = None, text: str | None = None) -> dict:
        """Decode, resolve the query modality (auto: guessed), embed (with the description ``text`` when
        given) and search, through the attribute filter ``where`` when given (in a worker thread)."""
        from vireid.data.modality import resolve_modalities
        from vireid.retrieval.text_search import embed_text_queries

        t0 = time.perf_counter()
        image = decode_upload(data, limits, size=embedder.input_size, resample=getattr(embedder, "resample", "bilinear"))
        (modality,), warnings, (guessed,) = resolve_modalities([image], modality, ["the query image"])
        gallery_modality = {"opposite": "infrared" if modality == "visible" else "visible",
                            "all": None}.get(wanted, wanted)
        if where is not None and where["filter"].modality is not None:
            gallery_modality = where["filter"].modality
        with model_lock:
            if text is None:
                feats = np.asarray(embedder.embed_arrays([image], [modality]), dtype=np.float32)
            else:
                feats = np.asarray(embed_text_queries(embedder, [text], [image], [modality]), dtype=np.float32)
            scores, ids = _filtered(feats, k, gallery_modality, where)
        elapsed = 1000 * (time.perf_counter() - t0)
        return {"scores": scores, "ids": ids, "elapsed_ms": elapsed, "modality": modality, "guessed": guessed,
                "gallery_modality": gallery_modality, "warnings": warnings}

    @app.post("/api/search", openapi_extra={"requestBody": {"content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary"}, "modality": {"type": "string", "enum": ["auto", "visible", "infrared"]},
            "gallery_modality": {"type": "string", "enum": list(_GALLERY_CHOICES)},
            "k": {"type": "integer", "minimum": 1, "maximum": limits.max_k}}}}}}})
    async def search(request: Request) -> JSONResponse:
        content_type = request.headers.get("content-type", "")
        if not content_type.lower().startswith("multipart/form-data"):
            raise UploadError(415, "send the query as multipart/form-data with the image in the field 'file'")
        try:
            form = await request.form(max_files=1, max_fields=len(SEARCH_FIELDS), max_part_size=1024)
        except StarletteHTTPException as err:  # starlette's multipart limits and parse errors
            raise UploadError(400, _form_problem(str(err.detail))) from None
        try:
            fields = _search_fields(form, limits)
            fields["where"] = _where_field(fields["where"], gallery)
            upload: UploadFile = fields.pop("file")
            data = await upload.read(limits.max_upload_bytes + 1)
        finally:
            await form.close()
        if fields["text"] is not None and not takes_text:
            raise UploadError(400, _NO_TEXT)
        # only decoding and inference count as pending: a slow upload holds no search slot
        if pending["n"] >= limits.max_pending:
            raise UploadError(503, f"the server is busy with {pending['n']} searches; retry in a moment")
        pending["n"] += 1
        try:
            out = await anyio.to_thread.run_sync(run_search, data, fields["modality"], fields["gallery_modality"],
                                                 fields["k"], fields["where"], fields["text"], limiter=limiter)
        finally:
            pending["n"] -= 1
        answer = _search_answer(out, gallery, None if fields["text"] else threshold, out["modality"],
                                out["gallery_modality"], fields["k"])
        if fields["text"]:
            answer["text"] = fields["text"]
        _attribute_answer(answer, fields["where"])
        answer["query_modality_guessed"] = bool(out["guessed"])
        if out["warnings"]:
            answer["warnings"] = out["warnings"]
        return JSONResponse(answer)

    def run_text_search(text: str, wanted: str, k: int, where: Any = None) -> dict:
        from vireid.retrieval.text_search import embed_text_queries

        t0 = time.perf_counter()
        gallery_modality = None if wanted == "all" else wanted
        if where is not None and where["filter"].modality is not None:
            gallery_modality = where["filter"].modality
        with model_lock:
            feats = np.asarray(embed_text_queries(embedder, [text]), dtype=np.float32)
            scores, ids = _filtered(feats, k, gallery_modality, where)
        return {"scores": scores, "ids": ids, "elapsed_ms": 1000 * (time.perf_counter() - t0),
                "gallery_modality": gallery_modality}

    @app.post("/api/search-text", openapi_extra={"requestBody": {"content": {"application/json": {"schema": {
        "type": "object", "required": ["text"], "properties": {
            "text": {"type": "string", "maxLength": _max_text()},
            "gallery_modality": {"type": "string", "enum": ["all", "visible", "infrared"]},
            "k": {"type": "integer", "minimum": 1, "maximum": limits.max_k},
            "where": {"type": "string", "maxLength": 300}}}}}}})
    async def search_text(request: Request) -> JSONResponse:
        if not request.headers.get("content-type", "").lower().startswith("application/json"):
            raise UploadError(415, "send the description as JSON, such as {\"text\": \"man, dark coat, backpack\"}")
        try:
            body = await request.json()
        except ValueError:
            raise UploadError(400, "the body is not valid JSON; send {\"text\": \"...\", \"k\": 10}") from None
        fields = _text_fields(body, limits)
        if not takes_text:
            raise UploadError(400, _NO_TEXT)
        fields["where"] = _where_field(fields["where"], gallery)
        if pending["n"] >= limits.max_pending:
            raise UploadError(503, f"the server is busy with {pending['n']} searches; retry in a moment")
        pending["n"] += 1
        try:
            out = await anyio.to_thread.run_sync(run_text_search, fields["text"], fields["gallery_modality"],
                                                 fields["k"], fields["where"], limiter=limiter)
        finally:
            pending["n"] -= 1
        answer = _search_answer(out, gallery, None, "text", out["gallery_modality"], fields["k"])
        answer["text"] = fields["text"]
        _attribute_answer(answer, fields["where"])
        return JSONResponse(answer)

    return app


def _max_text() -> int:
    from vireid.retrieval.text_search import MAX_QUERY_CHARS

    return MAX_QUERY_CHARS


def _query_text(value: Any) -> str | None:
    """A description field, stripped; an empty or too long one is a 400 with one sentence."""
    from vireid.retrieval.text_search import check_query_text

    try:
        return check_query_text(value)
    except VireidError as err:
        raise UploadError(400, str(err)) from None


def _text_fields(body: Any, limits: ServeLimits) -> dict:
    """Validated fields of ``POST /api/search-text`` (UploadError naming the first bad one)."""
    if not isinstance(body, dict):
        raise UploadError(400, "the body must be a JSON object such as {\"text\": \"man, dark coat, backpack\"}")
    unknown = [name for name in body if name not in TEXT_FIELDS]
    if unknown:
        raise UploadError(400, f"unknown field {str(unknown[0])[:40]!r}; the accepted fields are {', '.join(TEXT_FIELDS)}")
    if not isinstance(body.get("text"), str):
        raise UploadError(400, "the field 'text' (a description of the person, as a string) is missing")
    text = _query_text(body["text"])
    wanted = str(body.get("gallery_modality", "all")).strip().lower()
    wanted = {"any": "all", "both": "all"}.get(wanted, wanted)
    wanted = _MODALITY_ALIASES.get(wanted, wanted)
    if wanted not in ("all", "visible", "infrared"):
        raise UploadError(400, f"gallery_modality {str(body.get('gallery_modality'))[:40]!r} is unknown; use all, "
                               "visible or infrared")
    k = body.get("k", limits.default_k)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= limits.max_k:
        raise UploadError(400, f"k must be a whole number from 1 to {limits.max_k}, got {str(k)[:20]!r}")
    where = body.get("where", "")
    if not isinstance(where, str):
        raise UploadError(400, "the field 'where' must be a string such as \"modality=infrared,backpack=yes\"")
    return {"text": text, "gallery_modality": wanted, "k": k, "where": where}


def _form_problem(detail: str) -> str:
    """One sentence for a multipart body that starlette refused to parse."""
    if detail.startswith("Too many files"):
        return "the form holds more than one file; send exactly one image, in the field 'file'"
    if detail.startswith("Too many fields"):
        return f"the form has too many fields; the accepted fields are {', '.join(SEARCH_FIELDS)}"
    if "exceeded maximum size" in detail:
        return "a text field of the form is longer than 1 KiB; send short values for modality, gallery_modality and k"
    return "the multipart body is malformed; send a multipart/form-data request with the image in the field 'file'"


def _search_fields(form, limits: ServeLimits) -> dict:
    """Validated search fields from the parsed form (UploadError naming the first bad one)."""
    names = list(form.keys())
    unknown = [n for n in names if n not in SEARCH_FIELDS]
    if "file" not in names:
        files = [n for n in names if isinstance(form.get(n), UploadFile)]
        hint = f" (a file was sent in the field {files[0]!r})" if files else ""
        raise UploadError(400, f"the request has no 'file' field{hint}; send the query image as the multipart field 'file'")
    if unknown:
        raise UploadError(400, f"unknown form field {unknown[0]!r}; the accepted fields are {', '.join(SEARCH_FIELDS)}")
    for name in set(names):
        if len(form.getlist(name)) > 1:
            raise UploadError(400, f"the form field {name!r} was sent more than once; send it once")
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise UploadError(400, "the field 'file' must be a file upload (multipart with a filename), not a text value")

    def text(name: str, default: str) -> str:
        value = form.get(name, default)
        if isinstance(value, UploadFile):
            raise UploadError(400, f"the field {name!r} must be a text value, not a file")
        return str(value).strip().lower()

    modality = text("modality", "auto")
    modality = "auto" if modality in ("auto", "") else _MODALITY_ALIASES.get(modality)
    if modality is None:
        raise UploadError(400, f"modality {text('modality', '')[:40]!r} is unknown; use 'auto', 'visible' or 'infrared'")
    gallery_modality = text("gallery_modality", "opposite")
    gallery_modality = {"any": "all", "both": "all", "other": "opposite"}.get(gallery_modality, gallery_modality)
    gallery_modality = _MODALITY_ALIASES.get(gallery_modality, gallery_modality)
    if gallery_modality not in _GALLERY_CHOICES:
        raise UploadError(400, f"gallery_modality {text('gallery_modality', '')[:40]!r} is unknown; "
                               f"use one of {', '.join(_GALLERY_CHOICES)}")
    raw_k = text("k", str(limits.default_k))
    if not raw_k.isascii() or not raw_k.isdigit() or not 1 <= int(raw_k) <= limits.max_k:
        raise UploadError(400, f"k must be a whole number from 1 to {limits.max_k}, got {raw_k[:20]!r}")
    where = text("where", "")
    text = None
    if "text" in names:
        value = form.get("text")
        if isinstance(value, UploadFile):
            raise UploadError(400, "the field 'text' must be a text value, not a file")
        text = _query_text(value)
    return {"file": upload, "modality": modality, "gallery_modality": gallery_modality, "k": int(raw_k),
            "where": where, "text": text}


def _where_field(text: str, gallery: ServedGallery) -> dict | None:
    """The parsed ``where`` filter with its gallery mask and label source (UploadError 400 for a bad one)."""
    from vireid.errors import VireidError
    from vireid.retrieval.attributes import gallery_mask, parse_where

    try:
        where = parse_where(text)
        if where is None:
            return None
        keep, source = gallery_mask(gallery.index, where)
    except VireidError as err:
        raise UploadError(400, str(err)) from None
    return {"filter": where, "keep": keep, "source": source}


def _search_answer(out: dict, gallery: ServedGallery, threshold: float | None, query_modality: str,
                   gallery_modality: str | None, k: int) -> dict:
    """The JSON body of a search answer."""
    scores = np.asarray(out["scores"], dtype=np.float64).reshape(-1)
    ids = np.asarray(out["ids"], dtype=np.int64).reshape(-1)
    keep = ids >= 0  # an index pads with -1 when it holds fewer than k images
    scores, ids = scores[keep], ids[keep]
    results = []
    for rank, (i, s) in enumerate(zip(ids.tolist(), scores.tolist()), start=1):
        row = gallery.row(i)
        results.append({"rank": rank, "id": i, "score": round(s, 6),
                        "match": None if threshold is None else bool(s >= threshold),
                        "pid": row["pid"], "camid": row["camid"], "modality": row["modality"], "name": row["name"],
                        "image_url": f"/api/gallery/{i}/image"})
    verdict = None
    if threshold is not None and results:
        matches = sum(r["match"] for r in results)
        verdict = {"match": bool(results[0]["match"]), "best_score": results[0]["score"], "matches": matches}
    answer = {"query_modality": query_modality, "gallery_modality": gallery_modality or "all", "k": k,
              "metric": "cosine", "threshold": threshold, "verdict": verdict, "results": results,
              "elapsed_ms": round(float(out["elapsed_ms"]), 2)}
    if not results:
        answer["note"] = f"the gallery holds no {gallery_modality or ''} images".replace("  ", " ")
    return answer
