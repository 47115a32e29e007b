"""Starting the search server (``vireid serve``): bind the socket, load the model and the gallery index,
check they belong together, build the app (:func:`vireid.serve.app.create_app`) and run uvicorn on it."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Callable, Optional

from vireid.errors import VireidError

Say = Callable[[str], None]


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


def serve_index(checkpoint: Path, index: Path, *, host: str = "127.0.0.1", port: int = 8000,
                token: Optional[str] = None, device: str = "cpu", amp: Optional[str] = None,
                gallery_root: Optional[Path] = None, max_upload_mb: float = 10.0, max_side: int = 8192,
                max_k: int = 100, workers: int = 2, threads: Optional[int] = None, header_timeout: float = 10.0,
                body_timeout: float = 60.0, max_connections: int = 64, flip: Optional[bool] = None,
                force: bool = False, say: Say = print, warn: Say = print) -> None:
    """Serve the web page and JSON API over ``index`` until stopped. ``say`` gets the startup lines
    (what is served, the address), ``warn`` the warnings (another model's index, another input size).
    A refused bind address or bad limit fails before anything slow is loaded."""
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
        from vireid.inference.embedder import check_fingerprint
        from vireid.inference.loading import load_embedder
        from vireid.retrieval.index import GalleryIndex
        from vireid.serve.app import create_app
        from vireid.serve.protocol import uvicorn_config
        from vireid.serve.uploads import ServeLimits

        if threads is not None:
            torch.set_num_threads(max(1, threads))
        embedder = load_embedder(checkpoint, device=device, amp=amp)
        gallery = GalleryIndex.load(index)
        warning = check_fingerprint(gallery.info.get("fingerprint"), embedder, f"index {index}", force=force)
        if warning:
            warn(warning)
        recorded_flip = gallery.info.get("flip")
        embedder.flip = flip if flip is not None else (bool(recorded_flip) if recorded_flip is not None else embedder.flip)
        built = gallery.info.get("input_size")
        if built is not None and tuple(built) != tuple(embedder.input_size):
            warn(f"warning: the index was built by {gallery.info.get('model', 'another model')} at input size "
                 f"{tuple(built)}, this model takes {tuple(embedder.input_size)}; its scores will not be "
                 "meaningful, rebuild the index with this model")
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
        say(f"vireid search: {gallery.describe()}; model input {embedder.input_size[0]}x{embedder.input_size[1]}, "
            f"{verdict}{', test-time flip' if embedder.flip else ''}")
        say(f"open http://{shown}:{bound}/" + ("?token=<your token>" if token else "") + "  (Ctrl+C stops)")
        uvicorn.Server(uvicorn_config(web, limits, log_level="info")).run(sockets=[sock])
    finally:
        sock.close()
