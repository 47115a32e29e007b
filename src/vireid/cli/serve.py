"""``vireid serve``: the search web page and JSON API over a gallery index (FastAPI + uvicorn)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Optional

import typer

from vireid.cli.app import app, plugin_options
from vireid.errors import VireidError


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv4 or IPv6); a clear error when it is taken."""
    if not 0 <= port <= 65535:
        raise VireidError(f"port {port} is not a TCP port; pass --port between 1 and 65535 (0 picks a free one)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise VireidError(f"cannot listen on {host!r} ({err.strerror}); pass --host an address such as 127.0.0.1") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        raise VireidError(f"cannot listen on {host}:{port} ({err.strerror}); choose another --port or stop the "
                          "program using it") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


@app.command("serve")
@plugin_options
def serve_command(
    checkpoint: Path = typer.Option(..., "--checkpoint", "-c", help="Run folder, .pt checkpoint or exported model."),
    index: Path = typer.Option(..., "--index", "-i", help="Gallery index folder written by vireid index."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; any but loopback needs a token."),
    port: int = typer.Option(8000, "--port", help="TCP port (0 picks a free one)."),
    token: Optional[str] = typer.Option(None, "--token", help="Access token required on every request "
                                        "(default: $VIREID_TOKEN); clients send 'Authorization: Bearer <token>'."),
    device: str = typer.Option("cpu", "--device", help="Torch device for the model, e.g. cpu or cuda."),
    amp: Optional[str] = typer.Option(None, "--amp", help="Mixed precision: auto, none, bf16 or fp16 (default: the model's train.amp)."),
    gallery_root: Optional[Path] = typer.Option(None, "--gallery-root", help="Only folder gallery images are served "
                                                "from (default: the index's image root)."),
    max_upload_mb: float = typer.Option(10.0, "--max-upload-mb", help="Largest query image accepted, in MiB."),
    max_side: int = typer.Option(8192, "--max-side", help="Largest query image side accepted, in pixels."),
    max_k: int = typer.Option(100, "--max-k", help="Most results one search may ask for."),
    workers: int = typer.Option(2, "--workers", help="Searches processed at the same time (decoding in parallel, "
                                "the model one at a time)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch CPU threads (default: torch's choice)."),
    header_timeout: float = typer.Option(10.0, "--header-timeout", help="Seconds a client may take to send a "
                                         "request's headers; slower ones get 408 (slow-client protection)."),
    body_timeout: float = typer.Option(60.0, "--body-timeout", help="Seconds a client may take to send a "
                                       "request's body (the uploaded image); slower ones get 408."),
    max_connections: int = typer.Option(64, "--max-connections", help="Open connections at most; a new one "
                                        "evicts the longest-stalled client, or gets 503 when none stalls."),
    flip: Optional[bool] = typer.Option(None, "--flip/--no-flip", help="Test-time flip for the queries (default: "
                                        "as the index's features were extracted)."),
    force: bool = typer.Option(False, "--force", help="Serve even when the index was built by another model "
                               "(its recorded fingerprint differs): a warning instead of a refusal."),
) -> None:
    """Serve a web page and JSON API that rank the gallery images of INDEX for an uploaded query image.
    Refuses an index built with another model (see --force)."""
    from vireid.serve.security import LOOPBACK_HOSTS, check_bind_address, is_loopback, resolve_token

    token = resolve_token(token)
    check_bind_address(host, token)  # before any slow loading: a refused address fails at once
    if max_upload_mb <= 0 or max_side < 1 or max_k < 1 or workers < 1 or max_connections < 1:
        raise VireidError("--max-upload-mb, --max-side, --max-k, --workers and --max-connections must be positive")
    if not (header_timeout > 0 and body_timeout > 0):
        raise VireidError("--header-timeout and --body-timeout must be positive numbers of seconds")
    sock = bind_socket(host, port)
    try:
        import torch
        import uvicorn

        from vireid.data.images import DEFAULT_MAX_PIXELS
        from vireid.inference.loading import load_embedder
        from vireid.retrieval.index import GalleryIndex
        from vireid.serve.app import create_app
        from vireid.serve.uploads import ServeLimits

        if threads is not None:
            torch.set_num_threads(max(1, threads))
        from vireid.inference.embedder import check_fingerprint

        embedder = load_embedder(checkpoint, device=device, amp=amp)
        gallery = GalleryIndex.load(index)
        warning = check_fingerprint(gallery.info.get("fingerprint"), embedder, f"index {index}", force=force)
        if warning:
            typer.secho(warning, fg=typer.colors.YELLOW, err=True)
        recorded_flip = gallery.info.get("flip")
        embedder.flip = flip if flip is not None else (bool(recorded_flip) if recorded_flip is not None else embedder.flip)
        built = gallery.info.get("input_size")
        if built is not None and tuple(built) != tuple(embedder.input_size):
            typer.secho(f"warning: the index was built by {gallery.info.get('model', 'another model')} at input size "
                        f"{tuple(built)}, this model takes {tuple(embedder.input_size)}; its scores will not be "
                        "meaningful, rebuild the index with this model", fg=typer.colors.YELLOW, err=True)
        upload = int(max_upload_mb * 2**20)
        limits = ServeLimits(max_upload_bytes=upload, max_request_bytes=upload + 64 * 1024, max_side=max_side,
                             max_pixels=min(max_side * max_side, DEFAULT_MAX_PIXELS), max_k=max_k,
                             default_k=min(10, max_k), workers=workers, header_timeout_s=header_timeout,
                             body_timeout_s=body_timeout, max_connections=max_connections)
        allowed_hosts = LOOPBACK_HOSTS if is_loopback(host) and token is None else None
        web = create_app(embedder, gallery, token=token, limits=limits,
                         gallery_root=None if gallery_root is None else str(gallery_root), allowed_hosts=allowed_hosts)
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        threshold = web.state.threshold
        verdict = "no calibrated threshold (scores only)" if threshold is None else f"match threshold {threshold:.4f}"
        typer.echo(f"vireid search: {gallery.describe()}; model input {embedder.input_size[0]}x{embedder.input_size[1]}, "
                   f"{verdict}{', test-time flip' if embedder.flip else ''}")
        typer.echo(f"open http://{shown}:{bound}/" + ("?token=<your token>" if token else "") + "  (Ctrl+C stops)")
        from vireid.serve.protocol import uvicorn_config

        uvicorn.Server(uvicorn_config(web, limits, log_level="info")).run(sockets=[sock])
    finally:
        sock.close()
