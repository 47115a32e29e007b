"""The four federated jobs a user starts (``vireid federated simulate|server|client|split``): each checks
its options, resolves the config (a resumed run keeps its own), picks the run folder, calls
:mod:`.run` and returns the text the command prints."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from vireid.errors import ConfigError, VireidError


def run_settings(rounds: int, local_epochs: int, strategy: str, mu: float, dp_clip: float, dp_noise: float,
                 min_clients: int, resume: Optional[Path] = None):
    """The run's :class:`~.server.FederatedSettings`; a resumed run keeps its own (strategy, mu, DP, ...)
    and may only get more ``rounds``."""
    from vireid.engine.checkpoint import load_checkpoint
    from vireid.workflows.federated.server import FederatedSettings

    if resume is not None:
        fed = load_checkpoint(resume / "last.pt").get("federated")
        if not isinstance(fed, dict) or "settings" not in fed:
            raise VireidError(f"cannot resume: {resume / 'last.pt'} is not the checkpoint of a federated run")
        saved = fed["settings"]
        settings = FederatedSettings(**{**saved, "rounds": max(rounds, int(saved["rounds"]))})
        settings.check()
        return settings
    settings = FederatedSettings(rounds=rounds, local_epochs=local_epochs, strategy=strategy.lower(), mu=mu,
                                 dp_clip=dp_clip, dp_noise=dp_noise, min_clients=min_clients)
    settings.check()
    return settings


def user_run_config(config: Optional[str], overrides: Sequence[str] = ()):
    """``--config`` (a file or shipped name, default the built-in defaults) with ``key=value`` overrides."""
    from vireid.plugins import user_config
    from vireid.workflows.train_run import resolve_config

    return user_config(resolve_config(config) if config else None, list(overrides or []))


def run_config(config: Optional[str], overrides: Optional[Sequence[str]], resume: Optional[Path]):
    """The experiment config: the run's own when resuming, else ``--config`` plus overrides."""
    from vireid.engine.checkpoint import load_checkpoint
    from vireid.plugins import stored_config

    if resume is not None:
        if config is not None or overrides:
            raise VireidError("--resume continues a federated run with its own config; drop --config and the key=value overrides")
        if not (resume / "last.pt").is_file():
            raise VireidError(f"cannot resume: {resume / 'last.pt'} does not exist; pass the folder of a federated run "
                              "that finished at least one round")
        return stored_config(load_checkpoint(resume / "last.pt")["config"], source=f"run {resume}")
    return user_run_config(config, overrides or [])


def run_folder(cfg, run_dir: Optional[Path], resume: Optional[Path], suffix: str) -> Path:
    """``--resume``, ``--run-dir`` or output_dir/<name>_<suffix>; a folder that already holds a run is refused."""
    if resume is not None:
        return resume
    folder = run_dir or Path(cfg.output_dir) / f"{cfg.name}_{suffix}"
    if (folder / "last.pt").exists():
        raise VireidError(f"run folder {folder} already holds a run; continue it with --resume {folder}, or choose "
                          "another folder with --run-dir")
    return folder


def check_address(address: str) -> str:
    """``HOST:PORT`` with a port in 1..65535, or one sentence."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--address {address!r} is not HOST:PORT (e.g. 127.0.0.1:8088)")
    return address


def _test_lines(summary: dict) -> list[str]:
    lines = []
    for r in summary.get("test", []):
        m = r["mean"]
        lines.append(f"global model  {r['name']}: mAP {m['mAP']:.2f}  rank-1 {m['rank1']:.2f}  mINP {m['mINP']:.2f}")
    return lines


def simulate(*, config: Optional[str] = None, overrides: Sequence[str] = (), clients: int = 3,
             split_by: str = "identity", rounds: int = 5, local_epochs: int = 1, strategy: str = "fedavg",
             mu: float = 0.01, dp_clip: float = 0.0, dp_noise: float = 0.0, min_clients: int = 1, workers: int = 2,
             run_dir: Optional[Path] = None, resume: Optional[Path] = None, evaluate: bool = True,
             verbose: bool = False) -> str:
    """Split a dataset into ``clients`` institutions and train them with Flower's simulation
    (:func:`.run.simulate_run`)."""
    from vireid.workflows.federated.run import simulate_run

    cfg = run_config(config, overrides, resume)
    settings = run_settings(rounds, local_epochs, strategy, mu, dp_clip, dp_noise, min_clients, resume)
    if workers < 1:
        raise ConfigError(f"--workers is {workers}; use at least 1")
    folder = run_folder(cfg, run_dir, resume, "federated")
    summary = simulate_run(cfg, folder, settings, clients, split_by, workers=workers, resume=resume is not None,
                           evaluate=evaluate, verbose=verbose)
    return "\n".join(_test_lines(summary) + [f"federated run in {folder} (global model: best.pt; rounds: federated.json)"])


def serve_rounds(*, config: Optional[str] = None, overrides: Sequence[str] = (), clients: int = 2, rounds: int = 5,
                 local_epochs: int = 1, strategy: str = "fedavg", mu: float = 0.01, dp_clip: float = 0.0,
                 dp_noise: float = 0.0, min_clients: int = 1, address: str = "127.0.0.1:8088",
                 token_file: Optional[Path] = None, round_timeout: float = 3600.0, connect_timeout: float = 600.0,
                 max_clients: Optional[int] = None, max_message_mb: int = 256, run_dir: Optional[Path] = None,
                 resume: Optional[Path] = None, evaluate: bool = False, certificates: Optional[Sequence[Path]] = None,
                 insecure: bool = False, verbose: bool = False) -> str:
    """Run the federated server over gRPC (:func:`.run.server_run`) until its rounds are done; over TLS
    with ``certificates`` (CA, server certificate, server key), unencrypted only on loopback or with
    ``insecure`` (:func:`.tls.server_certificates`)."""
    from vireid.workflows.federated.run import server_run
    from vireid.workflows.federated.tls import server_certificates
    from vireid.workflows.federated.updates import read_token

    tls = server_certificates(certificates, check_address(address), insecure)
    token = read_token(token_file)
    cfg = run_config(config, overrides, resume)
    settings = run_settings(rounds, local_epochs, strategy, mu, dp_clip, dp_noise, min_clients, resume)
    if not 1 <= clients <= 1000 or (max_clients is not None and max_clients < clients):
        raise ConfigError("--clients must be 1 to 1000 and --max-clients at least --clients")
    if not 1 <= max_message_mb <= 2047:
        raise ConfigError(f"--max-message-mb is {max_message_mb}; use 1 to 2047 (gRPC's limit)")
    folder = run_folder(cfg, run_dir, resume, "federated")
    summary = server_run(cfg, folder, token, settings, address=check_address(address), clients=clients,
                         round_timeout=round_timeout, connect_timeout=connect_timeout, max_message_mb=max_message_mb,
                         max_clients=max_clients, resume=resume is not None, evaluate=evaluate, verbose=verbose,
                         certificates=tls)
    return "\n".join(_test_lines(summary) + [f"federated run in {folder}: {summary['rounds']} round(s) "
                                              "(global model: best.pt; rounds: federated.json)"])


def join(*, config: Optional[str] = None, overrides: Sequence[str] = (), address: str = "127.0.0.1:8088",
         token_file: Optional[Path] = None, name: str = "client", run_dir: Optional[Path] = None,
         max_message_mb: int = 256, max_wait: float = 600.0, ca_certificate: Optional[Path] = None,
         insecure: bool = False, verbose: bool = False) -> str:
    """Take part in a federated run as one institution (:func:`.run.client_run`); over TLS with
    ``ca_certificate`` (the CA that signed the server's certificate), unencrypted only to a loopback
    server or with ``insecure`` (:func:`.tls.client_ca`)."""
    from vireid.engine.trainer import validate_config
    from vireid.workflows.federated.run import client_run
    from vireid.workflows.federated.tls import client_ca
    from vireid.workflows.federated.updates import read_token

    ca = client_ca(ca_certificate, check_address(address), insecure)
    token = read_token(token_file)
    cfg = user_run_config(config, overrides)
    validate_config(cfg)
    if not name.replace("_", "").replace("-", "").isalnum() or len(name) > 64:
        raise ConfigError(f"--name {name!r}: use up to 64 letters, digits, - and _")
    folder = run_dir or Path(cfg.output_dir) / name
    client_run(cfg, folder, token, address=check_address(address), name=name, max_message_mb=max_message_mb,
               max_wait=max_wait, verbose=verbose, root_certificates=ca,
               ca_file=str(ca_certificate) if ca_certificate else None)
    return f"{name}: the server ended the run; this client's model (with its private head) is in {folder}/last.pt"


def split(*, config: Optional[str] = None, overrides: Sequence[str] = (), clients: int = 3,
          split_by: str = "identity", out: Path) -> str:
    """Split a dataset's training images into per-institution CSV manifests (:func:`.run.write_split`)."""
    from vireid.workflows.federated.run import write_split

    cfg = user_run_config(config, overrides)
    parts = write_split(cfg, clients, split_by, out)
    return "\n".join(f"{out / f'client_{i}' / 'manifest.csv'}: {part['images']} images, {part['identities']} identities, "
                     f"cameras {part['cameras']}" for i, part in enumerate(parts))
