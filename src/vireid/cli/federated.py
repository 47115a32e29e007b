"""``vireid federated simulate | server | client | split``: federated training on Flower
(vireid.workflows.federated)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vireid.cli.app import app, plugin_options
from vireid.errors import ConfigError, VireidError

federated_app = typer.Typer(
    help="Federated training: institutions train one backbone on Flower without pooling their images "
         "(classifier heads stay private).",
    no_args_is_help=True, add_completion=False,
)
app.add_typer(federated_app, name="federated")

STRATEGY_HELP = "fedavg (McMahan et al. 2017) or fedprox (Li et al. 2020: proximal term --mu in each client's loss)."
TOKEN_HELP = ("File whose first line is the shared token (16+ characters; the same on the server and every client); "
              "default: the VIREID_FED_TOKEN environment variable. The token is never sent or logged.")
ADDRESS_HELP = "HOST:PORT of the server (default 127.0.0.1:8088: this machine only; use an address others can reach deliberately)."


def _settings(rounds: int, local_epochs: int, strategy: str, mu: float, dp_clip: float, dp_noise: float,
              min_clients: int, resume: Optional[Path] = None):
    """The run's settings; a resumed run keeps its own (strategy, mu, DP, ...) and may only get more --rounds."""
    from vireid.workflows.federated.server import FederatedSettings

    if resume is not None:
        from vireid.engine.checkpoint import load_checkpoint

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


def _config(config: Optional[str], overrides: Optional[list[str]], resume: Optional[Path]):
    """The experiment config: the run's own when resuming, else --config plus overrides."""
    from vireid.workflows.train_run import resolve_config
    from vireid.engine.checkpoint import load_checkpoint
    from vireid.plugins import stored_config, user_config

    if resume is not None:
        if config is not None or overrides:
            raise VireidError("--resume continues a federated run with its own config; drop --config and the key=value overrides")
        if not (resume / "last.pt").is_file():
            raise VireidError(f"cannot resume: {resume / 'last.pt'} does not exist; pass the folder of a federated run "
                              "that finished at least one round")
        return stored_config(load_checkpoint(resume / "last.pt")["config"], source=f"run {resume}")
    return user_config(resolve_config(config) if config else None, list(overrides or []))


def _run_dir(cfg, run_dir: Optional[Path], resume: Optional[Path], suffix: str) -> Path:
    if resume is not None:
        return resume
    folder = run_dir or Path(cfg.output_dir) / f"{cfg.name}_{suffix}"
    if (folder / "last.pt").exists():
        raise VireidError(f"run folder {folder} already holds a run; continue it with --resume {folder}, or choose "
                          "another folder with --run-dir")
    return folder


def _check_address(address: str) -> str:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--address {address!r} is not HOST:PORT (e.g. 127.0.0.1:8088)")
    return address


def _print_test(summary: dict) -> None:
    for r in summary.get("test", []):
        m = r["mean"]
        typer.echo(f"global model  {r['name']}: mAP {m['mAP']:.2f}  rank-1 {m['rank1']:.2f}  mINP {m['mINP']:.2f}")


@federated_app.command("simulate")
@plugin_options
def simulate_command(
    overrides: Optional[list[str]] = typer.Argument(None, help="Config overrides key=value (as for vireid train)."),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="YAML config or shipped config name: the model, losses and the dataset to split."),
    clients: int = typer.Option(3, "--clients", help="Number of institutions the training data is split into."),
    split_by: str = typer.Option("identity", "--split-by", help="identity (disjoint people, all cameras) or camera (disjoint cameras, each client owning both modalities)."),
    rounds: int = typer.Option(5, "--rounds", help="Federated rounds."),
    local_epochs: int = typer.Option(1, "--local-epochs", help="Epochs each client trains per round."),
    strategy: str = typer.Option("fedavg", "--strategy", help=STRATEGY_HELP),
    mu: float = typer.Option(0.01, "--mu", help="FedProx proximal weight (with --strategy fedprox)."),
    dp_clip: float = typer.Option(0.0, "--dp-clip", help="Clip each client's update to this L2 norm (0: off)."),
    dp_noise: float = typer.Option(0.0, "--dp-noise", help="Gaussian noise std on each update, as a multiple of --dp-clip (0: off)."),
    min_clients: int = typer.Option(1, "--min-clients", help="Fewest valid updates that make a new global model."),
    workers: int = typer.Option(2, "--workers", help="Clients that train at the same time (CPU cores for Flower's Ray workers)."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Run folder (default: output_dir/<name>_federated)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue this federated run after its last round."),
    evaluate: bool = typer.Option(True, "--eval/--no-eval", help="Evaluate the global model on the dataset's test protocols at the end."),
    verbose: bool = typer.Option(False, "--verbose", help="Show Flower's and Ray's own logs."),
) -> None:
    """Split a dataset into N institutions and train them with Flower's simulation on this machine."""
    from vireid.workflows.federated.run import simulate_run

    cfg = _config(config, overrides, resume)
    settings = _settings(rounds, local_epochs, strategy, mu, dp_clip, dp_noise, min_clients, resume)
    if workers < 1:
        raise ConfigError(f"--workers is {workers}; use at least 1")
    folder = _run_dir(cfg, run_dir, resume, "federated")
    summary = simulate_run(cfg, folder, settings, clients, split_by, workers=workers, resume=resume is not None,
                           evaluate=evaluate, verbose=verbose)
    _print_test(summary)
    typer.echo(f"federated run in {folder} (global model: best.pt; rounds: federated.json)")


@federated_app.command("server")
@plugin_options
def server_command(
    overrides: Optional[list[str]] = typer.Argument(None, help="Config overrides key=value."),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="YAML config or shipped config name (the model every client trains; its data is only used by --eval)."),
    clients: int = typer.Option(2, "--clients", help="Clients the first round waits for."),
    rounds: int = typer.Option(5, "--rounds", help="Federated rounds."),
    local_epochs: int = typer.Option(1, "--local-epochs", help="Epochs each client trains per round."),
    strategy: str = typer.Option("fedavg", "--strategy", help=STRATEGY_HELP),
    mu: float = typer.Option(0.01, "--mu", help="FedProx proximal weight (with --strategy fedprox)."),
    dp_clip: float = typer.Option(0.0, "--dp-clip", help="Clients clip their update to this L2 norm (0: off)."),
    dp_noise: float = typer.Option(0.0, "--dp-noise", help="Gaussian noise std on each update, as a multiple of --dp-clip (0: off)."),
    min_clients: int = typer.Option(1, "--min-clients", help="Fewest valid updates that make a new global model."),
    address: str = typer.Option("127.0.0.1:8088", "--address", help=ADDRESS_HELP),
    token_file: Optional[Path] = typer.Option(None, "--token-file", help=TOKEN_HELP),
    round_timeout: float = typer.Option(3600.0, "--round-timeout", help="Seconds a round waits for its clients; later ones are left out."),
    connect_timeout: float = typer.Option(600.0, "--connect-timeout", help="Seconds the first round waits for --clients clients."),
    max_clients: Optional[int] = typer.Option(None, "--max-clients", help="Most clients connected at once (default: --clients); more are turned away."),
    max_message_mb: int = typer.Option(256, "--max-message-mb", help="Largest message accepted (MB)."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Run folder (default: output_dir/<name>_federated)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue this federated run after its last round."),
    evaluate: bool = typer.Option(False, "--eval/--no-eval", help="Evaluate the global model on the config's test data at the end."),
    verbose: bool = typer.Option(False, "--verbose", help="Show Flower's own logs."),
) -> None:
    """Run the federated server: clients connect over gRPC, the server aggregates their backbones."""
    from vireid.workflows.federated.run import server_run
    from vireid.workflows.federated.updates import read_token

    token = read_token(token_file)
    cfg = _config(config, overrides, resume)
    settings = _settings(rounds, local_epochs, strategy, mu, dp_clip, dp_noise, min_clients, resume)
    if not 1 <= clients <= 1000 or (max_clients is not None and max_clients < clients):
        raise ConfigError("--clients must be 1 to 1000 and --max-clients at least --clients")
    if not 1 <= max_message_mb <= 2047:
        raise ConfigError(f"--max-message-mb is {max_message_mb}; use 1 to 2047 (gRPC's limit)")
    folder = _run_dir(cfg, run_dir, resume, "federated")
    summary = server_run(cfg, folder, token, settings, address=_check_address(address), clients=clients,
                         round_timeout=round_timeout, connect_timeout=connect_timeout, max_message_mb=max_message_mb,
                         max_clients=max_clients, resume=resume is not None, evaluate=evaluate, verbose=verbose)
    _print_test(summary)
    typer.echo(f"federated run in {folder}: {summary['rounds']} round(s) (global model: best.pt; rounds: federated.json)")


@federated_app.command("client")
def client_command(
    overrides: Optional[list[str]] = typer.Argument(None, help="Config overrides key=value (e.g. data.format=csv data.root=mine/manifest.csv)."),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="YAML config with the server's model and this institution's own data."),
    address: str = typer.Option("127.0.0.1:8088", "--server", help="HOST:PORT of the federated server."),
    token_file: Optional[Path] = typer.Option(None, "--token-file", help=TOKEN_HELP),
    name: str = typer.Option("client", "--name", help="This institution's name in the server's reports."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="This client's run folder (its private head); default output_dir/<name>."),
    max_message_mb: int = typer.Option(256, "--max-message-mb", help="Largest message accepted (MB)."),
    max_wait: float = typer.Option(600.0, "--max-wait", help="Seconds to keep trying to reach the server."),
    verbose: bool = typer.Option(False, "--verbose", help="Show Flower's own logs."),
) -> None:
    """Join a federated run as one institution: train on your own data, send only the shared backbone."""
    from vireid.plugins import user_config
    from vireid.workflows.train_run import resolve_config
    from vireid.engine.trainer import validate_config
    from vireid.workflows.federated.run import client_run
    from vireid.workflows.federated.updates import read_token

    token = read_token(token_file)
    cfg = user_config(resolve_config(config) if config else None, list(overrides or []))
    validate_config(cfg)
    if not name.replace("_", "").replace("-", "").isalnum() or len(name) > 64:
        raise ConfigError(f"--name {name!r}: use up to 64 letters, digits, - and _")
    folder = run_dir or Path(cfg.output_dir) / name
    client_run(cfg, folder, token, address=_check_address(address), name=name, max_message_mb=max_message_mb,
               max_wait=max_wait, verbose=verbose)
    typer.echo(f"{name}: the server ended the run; this client's model (with its private head) is in {folder}/last.pt")


@federated_app.command("split")
def split_command(
    overrides: Optional[list[str]] = typer.Argument(None, help="Config overrides key=value."),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="YAML config or shipped config name whose training data is split."),
    clients: int = typer.Option(3, "--clients", help="Number of institutions."),
    split_by: str = typer.Option("identity", "--split-by", help="identity or camera."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for client_<i>/manifest.csv."),
) -> None:
    """Split a dataset's training images into per-institution CSV manifests (for vireid federated client)."""
    from vireid.plugins import user_config
    from vireid.workflows.train_run import resolve_config
    from vireid.workflows.federated.run import write_split

    cfg = user_config(resolve_config(config) if config else None, list(overrides or []))
    parts = write_split(cfg, clients, split_by, out)
    for i, part in enumerate(parts):
        typer.echo(f"{out / f'client_{i}' / 'manifest.csv'}: {part['images']} images, {part['identities']} identities, "
                   f"cameras {part['cameras']}")
