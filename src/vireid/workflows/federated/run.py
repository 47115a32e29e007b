"""The federated workflows behind ``vireid federated simulate | server | client | split``.

A simulation's run folder::

    RUN/config.yaml, last.pt, best.pt      the global model (vireid eval RUN evaluates it)
    RUN/federated.json                     one record per round (clients, refusals, bytes, seconds)
    RUN/federated_summary.json             settings, per-client data, rounds, test results
    RUN/data/client_<i>/manifest.csv       client i's images (vireid csv format) and its image cache
    RUN/clients/client_<i>/                client i's own run folder (its private head in last.pt)
"""

from __future__ import annotations

import copy
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from vireid.config import Config
from vireid.engine.checkpoint import atomic_write_text
from vireid.errors import ConfigError
from vireid.workflows.federated.client import FederatedClient
from vireid.workflows.federated.server import FederatedServer, FederatedSettings
from vireid.workflows.federated.split import describe, split_records, write_manifest


def client_config(cfg: Config, manifest: Path, cache_dir: Path | None, index: int) -> Config:
    """``cfg`` (the experiment's model, losses, optimiser, sampler) training on one client's manifest."""
    out = copy.deepcopy(cfg)
    out.name = f"{cfg.name}_client{index}"
    out.seed = cfg.seed + 1000 * (index + 1)
    out.data.format = "csv"
    out.data.root = str(Path(manifest).absolute())
    out.data.options = {}
    out.data.cache_dir = str(cache_dir) if cache_dir is not None else None
    out.train.progress = False
    out.train.init_from = None
    return out


@dataclass
class SimulatedClientFactory:
    """Builds client ``i`` of a simulation inside a Flower/Ray worker (picklable: plain fields only)."""

    config: dict
    run_dir: str
    token: bytes
    threads: int = 1

    def __call__(self, index: int) -> FederatedClient:
        from vireid.config import config_from_dict
        from vireid.plugins import import_plugins

        # the config the user named (or, on resume, the one the main process already accepted with its
        # plugin policy): its plugins are imported in this worker as they were in the main process
        cfg = config_from_dict(copy.deepcopy(self.config))
        if cfg.plugins:
            import_plugins(cfg.plugins)
        run = Path(self.run_dir)
        data = run / "data" / f"client_{index}"
        ccfg = client_config(cfg, data / "manifest.csv", data / "cache", index)
        ccfg.train.threads = self.threads
        return FederatedClient(ccfg, run / "clients" / f"client_{index}", self.token, name=f"client_{index}")


def write_split(cfg: Config, clients: int, split_by: str, out: Path, seed: int | None = None) -> list[dict]:
    """Split ``cfg``'s training images into ``out/client_<i>/manifest.csv``; returns per-client counts."""
    from vireid.data.build import prepare_dataset

    dataset = prepare_dataset(cfg.data, progress=cfg.train.progress)
    parts = split_records(list(dataset.train), clients, split_by, cfg.seed if seed is None else seed)
    for i, part in enumerate(parts):
        write_manifest(part, Path(out) / f"client_{i}" / "manifest.csv")
    return describe(parts)


def evaluate_global(run_dir: Path, progress: bool = False) -> list[dict]:
    """Test results of the global model (the config's test protocols), also saved in the run folder."""
    from vireid.workflows.evaluate_run import evaluate_run

    results = evaluate_run(run_dir, progress=progress, quiet=True, verification=False)
    return [r.to_dict() for r in results]


def simulate_run(cfg: Config, run_dir: Path, settings: FederatedSettings, clients: int, split_by: str, *,
                 workers: int = 2, resume: bool = False, evaluate: bool = True, verbose: bool = False,
                 log=print) -> dict:  # noqa: ANN001 - print-like
    """Split the config's training data into ``clients`` institutions and run the rounds in Flower's
    simulation; returns the summary (also ``RUN/federated_summary.json``)."""
    from vireid.workflows.federated.flower import require_flower, simulate

    require_flower()
    if not resume:
        cfg.data.root = str(Path(cfg.data.root).expanduser().absolute())
    token = secrets.token_hex(16).encode()  # the simulation's own token: kept in memory only
    server = FederatedServer(cfg, run_dir, token, settings, resume=resume, log=log)
    try:
        summary_path = run_dir / "federated_summary.json"
        if resume and summary_path.is_file():
            split = json.loads(summary_path.read_text()).get("clients", [])
            if len(split) != clients:
                raise ConfigError(f"cannot resume {run_dir} with --clients {clients}: it was split into {len(split)} "
                                  "clients; use the same --clients and --split-by")
        else:
            split = write_split(cfg, clients, split_by, run_dir / "data")
        for i, part in enumerate(split):
            log(f"client_{i}: {part['images']} images, {part['identities']} identities, cameras {part['cameras']}")
        factory = SimulatedClientFactory(cfg.to_dict(), str(run_dir.absolute()), token, threads=1)
        atomic_write_text(summary_path, json.dumps({"clients": split, "split_by": split_by, **server.summary()}, indent=2))
        simulate(server, factory, clients, workers=workers, verbose=verbose)
        summary = {"clients": split, "split_by": split_by, **server.summary()}
    finally:
        server.close()
    if evaluate:
        summary["test"] = evaluate_global(run_dir)
    atomic_write_text(run_dir / "federated_summary.json", json.dumps(summary, indent=2))
    return summary


def server_run(cfg: Config, run_dir: Path, token: bytes, settings: FederatedSettings, *, address: str, clients: int,
               round_timeout: float, connect_timeout: float, max_message_mb: int, max_clients: int | None = None,
               resume: bool = False, evaluate: bool = False, verbose: bool = False, log=print,  # noqa: ANN001
               certificates: tuple[bytes, bytes, bytes] | None = None) -> dict:
    """Serve a federated run over the network (``vireid federated server``); ``certificates`` (CA,
    certificate, key PEM bytes) serve it over TLS."""
    from vireid.workflows.federated.flower import require_flower, serve

    require_flower()
    server = FederatedServer(cfg, run_dir, token, settings, resume=resume, log=log)
    try:
        serve(server, address, clients=clients, round_timeout=round_timeout, connect_timeout=connect_timeout,
              max_message_mb=max_message_mb, max_clients=max_clients, certificates=certificates, verbose=verbose)
        summary = server.summary()
    finally:
        server.close()
    if evaluate:
        summary["test"] = evaluate_global(run_dir)
    atomic_write_text(run_dir / "federated_summary.json", json.dumps(summary, indent=2))
    return summary


def client_run(cfg: Config, run_dir: Path, token: bytes, *, address: str, name: str, max_message_mb: int,
               max_wait: float, verbose: bool = False, root_certificates: bytes | None = None,
               ca_file: str | None = None) -> None:
    """Join a federated run as one institution (``vireid federated client``); ``root_certificates`` (the
    CA's PEM bytes, read from ``ca_file``) connect over TLS."""
    from vireid.workflows.federated.flower import connect, require_flower
    from vireid.workflows.federated.tls import check_server

    require_flower()
    check_server(address, root_certificates, max_wait, ca_file=ca_file)  # before the data is read: fails fast
    cfg.train.progress = False
    client = FederatedClient(cfg, run_dir, token, name=name)
    try:
        connect(client, address, max_message_mb=max_message_mb, max_wait=max_wait,
                root_certificates=root_certificates, verbose=verbose)
    finally:
        client.close()
