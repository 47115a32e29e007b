"""The search service (``vireid serve``): ranking and verdicts through the JSON API, every kind of
bad request answered with a 4xx and one sentence, no way to read files outside the gallery, the
access token, and a real uvicorn server that survives a batch of malformed and concurrent requests."""

from __future__ import annotations

import io
import socket
import struct
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from _serve_fixtures import build_service, running_server
from vireid.errors import VireidError
from vireid.serve import ServeLimits, create_app
from vireid.serve.security import (LOOPBACK_HOSTS, TOKEN_ENV, check_bind_address, is_loopback, resolve_token,
                                   tokens_match)

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def service(tiny_synth_root, tmp_path_factory):
    return build_service(tiny_synth_root, tmp_path_factory.mktemp("serve"), escapes=True)


@pytest.fixture(scope="module")
def client(service):
    return TestClient(create_app(service.embedder, service.index))


def search(client, path_or_bytes, **fields):
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
    return client.post("/api/search", files={"file": ("query.jpg", data, "image/jpeg")},
                       data={k: str(v) for k, v in fields.items()})


def encode(fmt: str, size=(32, 64), mode="RGB") -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).convert(mode).save(buf, fmt)
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose header claims ``width`` x ``height`` pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def one_sentence(response) -> str:
    """The error message of a refused request, checked to be one plain sentence."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"}, body
    message = body["error"]
    assert 15 < len(message) < 300 and "\n" not in message and "Traceback" not in message, message
    assert ". " not in message.rstrip("."), f"more than one sentence: {message!r}"
    return message


# --------------------------------------------------------------------------------------------- helpers
def test_security_helpers(monkeypatch):
    for host in ("127.0.0.1", "127.5.6.7", "localhost", "::1", "[::1]"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "192.168.1.4", "::", "example.org", ""):
        assert not is_loopback(host), host
    with pytest.raises(VireidError, match="refusing to listen on 0.0.0.0 without an access token"):
        check_bind_address("0.0.0.0", None)
    check_bind_address("0.0.0.0", TOKEN)
    check_bind_address("127.0.0.1", None)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert resolve_token(None) == TOKEN and resolve_token("another-token") == "another-token"
    monkeypatch.delenv(TOKEN_ENV)
    assert resolve_token(None) is None
    for bad in ("short", "has spaces in it", "semi;colon;token", "plus+slash/token"):
        with pytest.raises(VireidError, match="at least 8 characters of"):
            resolve_token(bad)
    assert resolve_token("  Ab0._~-xyz  ") == "Ab0._~-xyz"
    assert tokens_match(TOKEN, TOKEN) and not tokens_match(TOKEN + "x", TOKEN) and not tokens_match(None, TOKEN)
    assert not tokens_match("\udcff", TOKEN)  # a token that is not valid UTF-8 is simply wrong


# --------------------------------------------------------------------------------------------- search
def test_search_ranks_the_gallery_and_gives_the_verdict(client, service):
    health = client.get("/api/health").json()
    assert health["gallery"] == {"size": len(service.index), "modalities": {"visible": 11, "infrared": 8}}
    assert health["model"]["threshold"] == pytest.approx(service.threshold)
    assert health["model"]["input_size"] == [64, 32]

    # the query is gallery row 0 (visible): searching the visible gallery finds it first, a match
    res = search(client, service.query_member, modality="visible", gallery_modality="visible", k=19)
    assert res.status_code == 200, res.text
    body = res.json()
    ids = [r["id"] for r in body["results"]]
    scores = [r["score"] for r in body["results"]]
    assert body["gallery_modality"] == "visible" and len(ids) == 11  # fewer visible images than k
    assert {r["modality"] for r in body["results"]} == {"visible"}
    assert 0 in ids[:3] and scores[0] == pytest.approx(1.0, abs=1e-4)  # rows 17/18 duplicate row 0
    assert scores == sorted(scores, reverse=True)
    assert body["verdict"]["match"] is True and body["threshold"] == pytest.approx(service.threshold)
    assert all(r["match"] == (r["score"] >= service.threshold) for r in body["results"])
    row0 = next(r for r in body["results"] if r["id"] == 0)
    assert (row0["pid"], row0["camid"], row0["name"], row0["image_url"]) == (1, 1, "cam1/0001/0001.jpg", "/api/gallery/0/image")

    # the scores are the cosine similarities of the query's embedding with every gallery feature
    query = service.embedder.embed_paths([service.query_member], ["visible"])[0]
    expected = service.features @ query
    assert np.allclose(scores, expected[ids], atol=1e-4)

    # default: cross-modality (a visible query searches the infrared gallery); 'all' searches both
    cross = search(client, service.query_member, modality="visible", k=3).json()
    assert cross["gallery_modality"] == "infrared" and len(cross["results"]) == 3
    assert {r["modality"] for r in cross["results"]} == {"infrared"}
    infrared_rows = np.flatnonzero(service.index.metadata.modalities == "infrared")
    best = infrared_rows[np.argsort(-expected[infrared_rows], kind="stable")[:3]]
    assert [r["id"] for r in cross["results"]] == best.tolist()
    both = search(client, service.query_member, modality="visible", gallery_modality="all", k=19).json()
    assert len(both["results"]) == 19 and both["gallery_modality"] == "all"
    assert search(client, service.query_member, modality="thermal").json()["gallery_modality"] == "visible"

    # no modality: guessed from the pixels (the one policy of vireid.data.modality), and said so
    guessed = search(client, service.query_member, k=3).json()
    assert guessed["query_modality"] == "visible" and guessed["query_modality_guessed"] is True
    assert guessed["gallery_modality"] == "infrared" and "warnings" not in guessed
    grey = io.BytesIO()
    Image.open(service.query_member).convert("L").convert("RGB").save(grey, "PNG")
    as_ir = search(client, grey.getvalue(), k=3).json()
    assert as_ir["query_modality"] == "infrared" and as_ir["gallery_modality"] == "visible"
    told = search(client, grey.getvalue(), modality="vis", k=3).json()
    assert told["query_modality"] == "visible" and told["query_modality_guessed"] is False
    assert "grey-level" in told["warnings"][0]

    # an identity that is not in the gallery: no match at the calibrated threshold
    other = search(client, service.query_other, modality="visible", gallery_modality="all").json()
    assert other["verdict"]["match"] is False and other["verdict"]["matches"] == 0

    # every accepted format gives the same ranking for the same pixels
    pixels = Image.open(service.query_member).convert("RGB")
    for fmt in ("PNG", "BMP", "WEBP"):
        buf = io.BytesIO()
        pixels.save(buf, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
        res = search(client, buf.getvalue(), modality="visible", gallery_modality="visible", k=3)
        assert res.status_code == 200 and res.json()["results"][0]["score"] > 0.999, (fmt, res.text)


def test_without_a_threshold_scores_only(service):
    class NoThreshold:
        def __init__(self, inner):
            self.inner, self.dim, self.input_size, self.verification = inner, inner.dim, inner.input_size, None

        def embed_arrays(self, images, modalities):
            return self.inner.embed_arrays(images, modalities)

    c = TestClient(create_app(NoThreshold(service.embedder), service.index))
    body = search(c, service.query_member, k=2).json()
    assert body["threshold"] is None and body["verdict"] is None
    assert [r["match"] for r in body["results"]] == [None, None]
    assert c.get("/api/health").json()["model"]["threshold"] is None


def test_a_failing_model_gives_500_and_the_service_goes_on(service):
    class Flaky:
        dim, input_size, verification = service.embedder.dim, service.embedder.input_size, None
        calls = 0

        def embed_arrays(self, images, modalities):
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise RuntimeError("CUDA out of memory (simulated)")
            return service.embedder.embed_arrays(images, modalities)

    c = TestClient(create_app(Flaky(), service.index), raise_server_exceptions=False)
    failed = search(c, service.query_member)
    assert failed.status_code == 500 and "failed on this request" in failed.json()["error"]
    assert "CUDA" not in failed.text  # internals stay in the server log
    assert search(c, service.query_member).status_code == 200
    schema = c.get("/api/openapi.json").json()
    assert {"/api/search", "/api/health", "/api/gallery/{item}/image"} <= set(schema["paths"])
    assert "multipart/form-data" in schema["paths"]["/api/search"]["post"]["requestBody"]["content"]


def test_a_mismatched_index_is_refused(service):
    class OtherDim:
        dim, input_size, verification = 7, (64, 32), None

    with pytest.raises(VireidError, match="512-dimensional features but the model makes 7"):
        create_app(OtherDim(), service.index)


# --------------------------------------------------------------------------------------------- bad requests
BAD_UPLOADS = {
    "not an image": (b"hello, this is plain text\n" * 5, 415, "not an image"),
    "zero bytes": (b"", 400, "empty"),
    "truncated jpeg": (encode("JPEG", (320, 640))[:2500], 400, "truncated"),
    "truncated png": (encode("PNG", (320, 640))[:2500], 400, "truncated"),
    "header only png": (encode("PNG")[:40], 400, "corrupt or truncated"),
    "huge dimensions": (png_claiming(100_000, 100_000), 400, "too large"),
    "one huge side": (png_claiming(20_000, 8), 400, "20000x8 pixels"),
    "gif": (encode("GIF"), 415, "GIF images are not accepted"),
    "tiff": (encode("TIFF"), 415, "TIFF images are not accepted"),
    "svg": (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', 415, "SVG images"),
}


@pytest.mark.parametrize("name", list(BAD_UPLOADS))
def test_bad_images_get_4xx_and_one_sentence(client, name):
    data, status, words = BAD_UPLOADS[name]
    res = search(client, data)
    assert res.status_code == status, res.text
    assert words in one_sentence(res)


def test_bad_forms_get_4xx_and_one_sentence(client, service):
    image = service.query_member.read_bytes()
    cases = [
        (dict(files={"image": ("q.jpg", image)}), 400, "no 'file' field (a file was sent in the field 'image')"),
        (dict(data={"modality": "visible"}, files={"other": ("x", b"")}), 400, "no 'file' field"),
        (dict(content=b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\nnot a file\r\n--b--\r\n',
              headers={"content-type": "multipart/form-data; boundary=b"}), 400, "must be a file upload"),
        (dict(files={"file": ("q.jpg", image)}, data={"colour": "red"}), 400, "unknown form field 'colour'"),
        (dict(files={"file": ("q.jpg", image)}, data={"modality": "ultraviolet"}), 400, "modality 'ultraviolet' is unknown"),
        (dict(files={"file": ("q.jpg", image)}, data={"gallery_modality": "xray"}), 400, "gallery_modality 'xray'"),
        (dict(files={"file": ("q.jpg", image)}, data={"k": "0"}), 400, "k must be a whole number from 1 to 100"),
        (dict(files={"file": ("q.jpg", image)}, data={"k": "101"}), 400, "k must be"),
        (dict(files={"file": ("q.jpg", image)}, data={"k": "2.5"}), 400, "k must be"),
        (dict(files={"file": ("q.jpg", image)}, data={"k": "１"}), 400, "k must be"),
        (dict(files={"file": ("q.jpg", image)}, data={"k": ["3", "4"]}), 400, "sent more than once"),
        (dict(files=[("file", ("a.jpg", image)), ("file", ("b.jpg", image))]), 400, "more than one file"),
        (dict(files={"file": ("q.jpg", image), "modality": ("m.txt", b"visible")}), 400, "more than one file"),
        (dict(json={"file": "x"}), 415, "multipart/form-data"),
        (dict(content=b"--nope\r\ngarbage", headers={"content-type": "multipart/form-data; boundary=nope"}), 400, "no 'file' field"),
        (dict(content=b"x" * 100, headers={"content-type": "multipart/form-data"}), 400, "malformed"),
        (dict(files={"file": ("q.jpg", image)}, data={"modality": "v" * 2000}), 400, "longer than 1 KiB"),
    ]
    for kwargs, status, words in cases:
        res = client.post("/api/search", **kwargs)
        assert res.status_code == status, (kwargs.get("data"), res.status_code, res.text)
        assert words in one_sentence(res), res.text
    # wrong routes and methods
    for method, url, status in (("GET", "/api/search", 405), ("DELETE", "/api/health", 405), ("GET", "/api/nothing", 404),
                                ("GET", "/static/index.html", 404), ("POST", "/", 405)):
        res = client.request(method, url)
        assert res.status_code == status, url
        one_sentence(res)


def test_body_size_is_limited_before_parsing(service):
    limits = ServeLimits(max_upload_bytes=50_000, max_request_bytes=60_000)
    c = TestClient(create_app(service.embedder, service.index, limits=limits))
    big = b"\xff\xd8\xff" + b"\0" * 80_000
    assert "larger than" in one_sentence(search(c, big))  # declared Content-Length
    assert c.post("/api/search", files={"file": ("q.jpg", big)}).status_code == 413

    def chunks():  # no Content-Length: the limit is enforced while the body streams in
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"q.jpg\"\r\n\r\n"
        for _ in range(40):
            yield b"\0" * 4096
        yield b"\r\n--b--\r\n"

    res = c.post("/api/search", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert res.status_code == 413 and "larger than" in one_sentence(res)
    medium = b"\xff\xd8\xff" + b"\0" * 55_000  # under the request limit, over the file limit
    assert "the uploaded file is larger than 49 KiB" in one_sentence(search(c, medium))
    assert search(c, service.query_member).status_code == 200


# --------------------------------------------------------------------------------------------- gallery files
def test_only_gallery_files_are_served(client, service):
    secret = service.outside_file.read_bytes()
    ok = client.get("/api/gallery/0/image")
    assert ok.status_code == 200 and ok.headers["content-type"] == "image/jpeg"
    assert ok.content == service.query_member.read_bytes()
    assert ok.headers["x-content-type-options"] == "nosniff"
    rows = {Path(p).name: i for i, p in enumerate(service.index.metadata.paths)}
    assert client.get(f"/api/gallery/{rows['alias.jpg']}/image").content == ok.content  # symlink inside: fine
    escape = client.get(f"/api/gallery/{rows['escape.jpg']}/image")  # symlink to a file outside the gallery
    assert escape.status_code == 404 and "outside the gallery folder" in one_sentence(escape)
    notes = client.get(f"/api/gallery/{rows['notes.jpg']}/image")  # listed, but not an image
    assert notes.status_code == 404 and b"hunter2" not in notes.content

    attempts = [
        "/api/gallery/-1/image", f"/api/gallery/{len(service.index)}/image", "/api/gallery/99999999999999/image",
        "/api/gallery/1.0/image", "/api/gallery/0x1/image", "/api/gallery/%EF%BC%91/image", "/api/gallery/ 1/image",
        "/api/gallery/../../../../etc/passwd", "/api/gallery/..%2F..%2F..%2Fetc%2Fpasswd/image",
        "/api/gallery/%2e%2e/%2e%2e/outside/secret.jpg", "/api/gallery/%2Fetc%2Fpasswd/image",
        f"/api/gallery/{service.outside_file}/image", f"/api/gallery/{service.outside_file}",
        "/api/gallery/0/image/../../../../outside/secret.jpg", "/api/gallery/0/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd", "/..%5c..%5cetc%5cpasswd", "/api/gallery/0%00/image",
        f"/{service.outside_file}", "/outside/secret.jpg", "/gallery/cam1/0001/0001.jpg",
    ]
    for url in attempts:
        res = client.get(url)
        assert res.status_code in (400, 404), (url, res.status_code)
        assert secret not in res.content and b"root:" not in res.content and b"hunter2" not in res.content, url
        one_sentence(res)


# --------------------------------------------------------------------------------------------- access
def test_token_is_required_on_every_route(service):
    c = TestClient(create_app(service.embedder, service.index, token=TOKEN))
    for method, url in (("GET", "/api/health"), ("GET", "/api/gallery/0/image"), ("POST", "/api/search"), ("GET", "/nope")):
        res = c.request(method, url)
        assert res.status_code == 401 and res.headers["www-authenticate"] == "Bearer", url
        assert "needs an access token" in one_sentence(res)
    wrong = c.get("/api/health", headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401 and "wrong access token" in one_sentence(wrong)
    assert c.get("/api/health", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert c.get("/api/health", params={"token": TOKEN}).status_code == 401  # never in an API URL
    res = c.post("/api/search", headers={"Authorization": f"Bearer {TOKEN}"},
                 files={"file": ("q.jpg", service.query_member.read_bytes())})
    assert res.status_code == 200 and res.json()["results"]

    # the page: a token form without a token, /?token= sets an HttpOnly SameSite=Strict cookie
    page = c.get("/")
    assert page.status_code == 401 and "needs an access token" in page.text and "<script" not in page.text
    assert c.get("/", params={"token": "wrong-token"}).status_code == 401
    login = c.get("/", params={"token": TOKEN}, follow_redirects=False)
    assert login.status_code == 303 and login.headers["location"] == "/"
    cookie = login.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    page = c.get("/")  # the client now holds the cookie
    assert page.status_code == 200 and "vireid search" in page.text
    assert "script-src 'sha256-" in page.headers["content-security-policy"]
    assert c.get("/api/gallery/0/image").status_code == 200


def test_loopback_service_refuses_other_host_names(service):
    c = TestClient(create_app(service.embedder, service.index, allowed_hosts=LOOPBACK_HOSTS), base_url="http://127.0.0.1:8000")
    assert c.get("/api/health").status_code == 200
    assert c.get("/api/health", headers={"Host": "localhost:8000"}).status_code == 200
    rebound = c.get("/api/health", headers={"Host": "attacker.example:8000"})
    assert rebound.status_code == 421 and "not accepted" in one_sentence(rebound)


def test_cli_serve_wiring_and_refusals(service, monkeypatch, tmp_path):
    import uvicorn
    from typer.testing import CliRunner

    import vireid.cli.commands  # noqa: F401
    from vireid.cli import app
    from vireid.serve.launch import bind_socket

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    args = ["serve", "--checkpoint", str(service.checkpoint), "--index", str(service.index_dir), "--port", "0"]
    refused = CliRunner().invoke(app, [*args, "--host", "0.0.0.0"])
    assert isinstance(refused.exception, VireidError), refused.output
    assert "refusing to listen on 0.0.0.0 without an access token" in str(refused.exception)
    assert "at least 8" in str(CliRunner().invoke(app, [*args, "--token", "short"]).exception)

    started = {}

    def fake_run(self, sockets=None):  # capture what would be served instead of blocking in uvicorn
        started.update(app=self.config.app, sockets=sockets)

    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    out = CliRunner().invoke(app, [*args, "--max-k", "7"])
    assert out.exit_code == 0, out.output
    assert "flat index of 19 images" in out.output and "open http://127.0.0.1:" in out.output
    assert f"match threshold {service.threshold:.4f}" in out.output
    assert started["sockets"][0].fileno() == -1  # the listening socket is closed again
    c = TestClient(started["app"], base_url="http://127.0.0.1")
    assert c.get("/api/health").json()["limits"]["max_k"] == 7
    assert c.get("/api/health", headers={"Host": "evil.example"}).status_code == 421  # loopback names only

    monkeypatch.setenv(TOKEN_ENV, TOKEN)  # with a token: any address, token on every route
    out = CliRunner().invoke(app, [*args, "--host", "0.0.0.0"])
    assert out.exit_code == 0 and "?token=<your token>" in out.output and TOKEN not in out.output
    c = TestClient(started["app"])
    assert c.get("/api/health").status_code == 401
    assert c.get("/api/health", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200

    # a checkpoint that would run code when unpickled is refused (weights_only=True), nothing runs
    import torch

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": {}, "num_classes": 1, "payload": Payload()}, evil)
    bad = CliRunner().invoke(app, ["serve", "--checkpoint", str(evil), "--index", str(service.index_dir), "--port", "0"])
    assert isinstance(bad.exception, VireidError) and "cannot be read" in str(bad.exception)
    assert not marker.exists()

    taken = bind_socket("127.0.0.1", 0)
    try:
        with pytest.raises(VireidError, match="cannot listen on 127.0.0.1"):
            bind_socket("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()


# --------------------------------------------------------------------------------------------- real server
def _raw(base: str, payload: bytes) -> bytes:
    """Send raw bytes to the server and return whatever it answers (or b'' if it just closes)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(payload)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except (socket.timeout, ConnectionResetError):
            pass
    return b"".join(chunks)


def test_real_server_survives_malformed_and_concurrent_requests(service):
    limits = ServeLimits(max_pending=64, workers=2, max_upload_bytes=2**20, max_request_bytes=2**20 + 2**16)
    app = create_app(service.embedder, service.index, limits=limits)
    secret = service.outside_file.read_bytes()
    good = service.query_member.read_bytes()
    with running_server(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        def request(i: int) -> httpx.Response:
            kind = i % 8
            if kind == 0:
                return http.post("/api/search", files={"file": ("q.jpg", good)}, data={"k": "5"})
            if kind == 1:
                return http.post("/api/search", files={"file": ("q.jpg", good[: len(good) // 2])})
            if kind == 2:
                return http.post("/api/search", files={"file": ("q.png", png_claiming(60_000, 60_000))})
            if kind == 3:
                return http.post("/api/search", files={"file": ("q.jpg", b"")})
            if kind == 4:
                return http.post("/api/search", files={"image": ("q.jpg", good)})
            if kind == 5:
                return http.get("/api/gallery/..%2F..%2Foutside%2Fsecret.jpg/image")
            if kind == 6:
                return http.get(f"/api/gallery/{i % len(service.index)}/image")
            return http.post("/api/search", content=b"--x\r\n\r\n\xff\xfe", headers={"content-type": "multipart/form-data; boundary=x"})

        with ThreadPoolExecutor(max_workers=8) as pool:
            responses = list(pool.map(request, range(48)))
        for i, res in enumerate(responses):
            assert res.status_code < 500, (i, res.status_code, res.text)
            assert secret not in res.content
            if i % 8 == 0:
                assert res.status_code == 200 and len(res.json()["results"]) == 5
            elif i % 8 != 6:
                assert res.status_code >= 400 and res.json()["error"]
        def chunked_body():  # 2 MiB without a Content-Length: refused while it streams in
            yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="q.jpg"\r\n\r\n'
            for _ in range(512):
                yield b"\0" * 4096
            yield b"\r\n--b--\r\n"

        big = http.post("/api/search", content=chunked_body(), headers={"content-type": "multipart/form-data; boundary=b"})
        assert big.status_code == 413 and "larger than 1.1 MiB" in one_sentence(big)
        # not HTTP at all, an unfinished request, a lying Content-Length: the server answers or hangs up
        assert b"500" not in _raw(base, b"GARBAGE\r\n\r\n")[:20]
        assert b"500" not in _raw(base, b"POST /api/search HTTP/1.1\r\nHost: x\r\nContent-Length: 999\r\n\r\npartial")[:20]
        assert b"400" in _raw(base, b"POST /api/search HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n")[:20]
        # still serving, with the same answer as before the storm
        after = http.post("/api/search", files={"file": ("q.jpg", good)}, data={"k": "5"})
        assert after.status_code == 200 and after.json()["results"] == responses[0].json()["results"]
        assert http.get("/api/health").json()["status"] == "ok"


def test_busy_server_answers_503_and_recovers(service):
    gate = threading.Event()
    entered = threading.Semaphore(0)

    class Slow:
        dim, input_size, verification = service.embedder.dim, service.embedder.input_size, None

        def embed_arrays(self, images, modalities):
            entered.release()
            gate.wait(30)
            return service.embedder.embed_arrays(images, modalities)

    # one search slot: once a search is inside the model (``entered``), the server is full whatever the timing
    # (with two slots the test raced: under load the second queued search had not arrived yet, so the "busy"
    # request was admitted and waited for the gate)
    app = create_app(Slow(), service.index, limits=ServeLimits(max_pending=1, workers=1))
    good = service.query_member.read_bytes()
    with running_server(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        with ThreadPoolExecutor(max_workers=1) as pool:
            first = pool.submit(http.post, "/api/search", files={"file": ("q.jpg", good)})
            assert entered.acquire(timeout=30)  # the search is in the model and holds the only slot
            busy = http.post("/api/search", files={"file": ("q.jpg", good)})
            assert busy.status_code == 503 and "busy" in busy.json()["error"]
            assert http.get("/api/health").status_code == 200  # the event loop is not blocked
            gate.set()
            assert first.result().status_code == 200
        assert http.post("/api/search", files={"file": ("q.jpg", good)}).status_code == 200
