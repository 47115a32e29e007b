"""``vireid serve``: the search web page and JSON API over a gallery index (FastAPI + uvicorn)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vireid.cli.app import app, plugin_options


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
    from vireid.serve.launch import serve_index

    serve_index(checkpoint, index, host=host, port=port, token=token, device=device, amp=amp,
                gallery_root=gallery_root, max_upload_mb=max_upload_mb, max_side=max_side, max_k=max_k,
                workers=workers, threads=threads, header_timeout=header_timeout, body_timeout=body_timeout,
                max_connections=max_connections, flip=flip, force=force, say=typer.echo,
                warn=lambda line: typer.secho(line, fg=typer.colors.YELLOW, err=True))
