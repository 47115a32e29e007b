"""``vireid federated simulate | server | client | split``: federated training on Flower
(vireid.workflows.federated)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vireid.cli.app import app, plugin_options

federated_app = typer.Typer(
    help="Federated training: institutions train one backbone on Flower without pooling their images "
         "(classifier heads stay private).",
    no_args_is_help=True, add_completion=False,
)
app.add_typer(federated_app, name="federated")

STRATEGY_HELP = "fedavg (McMahan et al. 2017) or fedprox (Li et al. 2020: proximal term --mu in each client's loss)."
TOKEN_HELP = ("File whose first line is the shared token (16+ characters; the same on the server and every client); "
              "default: the VIREID_FED_TOKEN environment variable. The token is never sent or logged.")
ADDRESS_HELP = ("HOST:PORT to listen on (default 127.0.0.1:8088: this machine only); an address other machines can reach "
                "needs --certificates (TLS) or an explicit --insecure.")
CERTS_HELP = ("Serve over TLS: the CA certificate, the server certificate (signed by that CA, naming the host clients "
              "dial) and its unencrypted private key, PEM files (docs/federated.md shows how to make them with openssl).")
CA_HELP = "Connect over TLS, accepting only a server certificate signed by this CA certificate (PEM file)."
INSECURE_HELP = ("Allow an unencrypted channel to or from another machine (the weights are readable on the network); "
                 "without TLS only loopback addresses are allowed.")


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
    from vireid.workflows.federated.commands import simulate

    typer.echo(simulate(config=config, overrides=overrides or [], clients=clients, split_by=split_by, rounds=rounds,
                        local_epochs=local_epochs, strategy=strategy, mu=mu, dp_clip=dp_clip, dp_noise=dp_noise,
                        min_clients=min_clients, workers=workers, run_dir=run_dir, resume=resume, evaluate=evaluate,
                        verbose=verbose))


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
    certificates: Optional[tuple[Path, Path, Path]] = typer.Option(None, "--certificates", metavar="CA_CERT SERVER_CERT SERVER_KEY", help=CERTS_HELP),
    insecure: bool = typer.Option(False, "--insecure", help=INSECURE_HELP),
    verbose: bool = typer.Option(False, "--verbose", help="Show Flower's own logs."),
) -> None:
    """Run the federated server: clients connect over gRPC (TLS with --certificates), the server aggregates their backbones."""
    from vireid.workflows.federated.commands import serve_rounds

    typer.echo(serve_rounds(config=config, overrides=overrides or [], clients=clients, rounds=rounds,
                            local_epochs=local_epochs, strategy=strategy, mu=mu, dp_clip=dp_clip, dp_noise=dp_noise,
                            min_clients=min_clients, address=address, token_file=token_file,
                            round_timeout=round_timeout, connect_timeout=connect_timeout, max_clients=max_clients,
                            max_message_mb=max_message_mb, run_dir=run_dir, resume=resume, evaluate=evaluate,
                            certificates=certificates, insecure=insecure, verbose=verbose))


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
    ca_certificate: Optional[Path] = typer.Option(None, "--ca-certificate", metavar="CA_CERT", help=CA_HELP),
    insecure: bool = typer.Option(False, "--insecure", help=INSECURE_HELP),
    verbose: bool = typer.Option(False, "--verbose", help="Show Flower's own logs."),
) -> None:
    """Join a federated run as one institution: train on your own data, send only the shared backbone."""
    from vireid.workflows.federated.commands import join

    typer.echo(join(config=config, overrides=overrides or [], address=address, token_file=token_file, name=name,
                    run_dir=run_dir, max_message_mb=max_message_mb, max_wait=max_wait, ca_certificate=ca_certificate,
                    insecure=insecure, verbose=verbose))


@federated_app.command("split")
def split_command(
    overrides: Optional[list[str]] = typer.Argument(None, help="Config overrides key=value."),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="YAML config or shipped config name whose training data is split."),
    clients: int = typer.Option(3, "--clients", help="Number of institutions."),
    split_by: str = typer.Option("identity", "--split-by", help="identity or camera."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for client_<i>/manifest.csv."),
) -> None:
    """Split a dataset's training images into per-institution CSV manifests (for vireid federated client)."""
    from vireid.workflows.federated.commands import split

    typer.echo(split(config=config, overrides=overrides or [], clients=clients, split_by=split_by, out=out))
