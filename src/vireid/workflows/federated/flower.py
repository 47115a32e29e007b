"""Flower (``flwr``) as the transport of vireid's federated rounds.

**Simulation** (:func:`simulate`) uses Flower's current Message API: a ``ServerApp`` whose main loop
asks every node for a round through ``Grid.send_and_receive`` and a ``ClientApp`` whose ``train``
handler runs :class:`~vireid.workflows.federated.client.FederatedClient`, both run by
``flwr.simulation.run_simulation``. Its only backend is Ray; with ``client_resources.num_cpus = 1`` and
Ray started with ``num_cpus = workers``, at most ``workers`` clients train at once (one per core), each
in a Ray worker process that keeps its client's trainer between rounds. This is Flower's lightest
supported way to run N clients on one machine (the older ``start_simulation`` is deprecated and also
Ray-based).

**Network** (:func:`serve` / :func:`connect`) uses Flower's gRPC server and client
(``flwr.server.start_server`` / ``flwr.client.start_client``): one server process and one process per
client, talking gRPC. Flower marks these as superseded (since 1.13) by the SuperLink/SuperNode
deployment runtime (``flower-superlink``, ``flower-supernode``, ``flwr run``), which needs a packaged
Flower App, a SuperLink plus two processes per client, and installs the app's dependencies at run time;
the gRPC pair still ships with Flower, runs the same rounds with two kinds of processes, and lets a
test start a real server and two clients on localhost in seconds. Moving to the deployment runtime
changes only this module.

Both transports call the same :class:`~vireid.workflows.federated.server.FederatedServer` (checks,
FedAvg, checkpoint, resume) and client code; a reply that is an error (a client that crashed or
dropped out) is reported and left out of the round, like a refused update.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from vireid.errors import VireidError
from vireid.workflows.federated.client import FederatedClient, RoundPlan
from vireid.workflows.federated.server import FederatedServer
from vireid.workflows.federated.updates import UpdateRejected, named_update

DEFAULT_ADDRESS = "127.0.0.1:8088"
DEFAULT_MAX_MESSAGE_MB = 256


def require_flower():
    """The ``flwr`` module, or one sentence on how to install it."""
    try:
        import flwr
    except ImportError:
        raise VireidError("federated training needs Flower: pip install 'vireid[federated]' (flwr[simulation])") from None
    return flwr


def quiet_flower(verbose: bool = False) -> None:
    """Flower logs every message at INFO and warns on each start that ``run_simulation`` /
    ``start_server`` / ``start_client`` are superseded (see the module docstring); vireid reports rounds,
    refusals and drop-outs itself, so only Flower's errors are shown unless ``verbose``."""
    logging.getLogger("flwr").setLevel(logging.INFO if verbose else logging.ERROR)


# ----------------------------------------------------------------------------- simulation (Message API)

#: one FederatedClient per (worker process, client folder): Ray keeps its workers between rounds
_WORKER_CLIENTS: dict[str, FederatedClient] = {}


def simulate(server: FederatedServer, make_client: Callable[[int], FederatedClient], clients: int, *,
             workers: int = 2, round_timeout: float = 3600.0, verbose: bool = False) -> None:
    """Run the server's remaining rounds with ``clients`` simulated clients (``make_client(i)`` builds
    client ``i``; it is sent to Ray's workers, so it must be picklable)."""
    require_flower()
    quiet_flower(verbose)
    from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    client_app = ClientApp()

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        index = int(context.node_config["partition-id"])
        client = _WORKER_CLIENTS.get(str(index))
        if client is None:
            client = _WORKER_CLIENTS[str(index)] = make_client(index)
        arrays = OrderedDict((k, v.numpy()) for k, v in msg.content["arrays"].items())
        plan = RoundPlan.from_config(dict(msg.content["config"]))
        result = client.train_round(arrays, plan)
        meta = {k: v for k, v in result.metrics.items() if isinstance(v, str)}
        numbers = {k: float(v) for k, v in result.metrics.items() if isinstance(v, (int, float))}
        return Message(RecordDict({
            "arrays": ArrayRecord(OrderedDict((k, Array(np.array(v, order="C"))) for k, v in result.arrays.items())),
            "metrics": MetricRecord({"num-examples": int(result.num_examples), **numbers}),
            "meta": ConfigRecord(meta),
        }), reply_to=msg)

    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        nodes = _wait_for_nodes(grid, clients, timeout=120.0)
        while not server.done:
            arrays, plan = server.begin_round()
            record = RecordDict({
                "arrays": ArrayRecord(OrderedDict((k, Array(v)) for k, v in arrays.items())),
                "config": ConfigRecord(plan.to_config()),
            })
            messages = [Message(content=record, message_type=MessageType.TRAIN, dst_node_id=n) for n in nodes]
            server.sent(len(messages))
            replies = list(grid.send_and_receive(messages, timeout=round_timeout))
            answered = {r.metadata.src_node_id for r in replies}
            for node in nodes:
                if node not in answered:
                    server.fail(f"node {node}", f"no reply within {round_timeout:.0f} s")
            for reply in replies:
                _take_message_reply(server, reply)
            server.finish_round()

    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=clients,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": max(int(workers), 1), "logging_level": "error",
                                                 "log_to_driver": bool(verbose)}},
                   verbose_logging=verbose)


def _wait_for_nodes(grid: Any, count: int, timeout: float) -> list[int]:
    """The simulated nodes' ids once ``count`` of them have registered (they start in the background)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= count or time.monotonic() > deadline:
            return nodes
        time.sleep(0.2)


def _take_message_reply(server: FederatedServer, reply: Any) -> None:
    node = reply.metadata.src_node_id
    if reply.has_error():
        server.fail(f"node {node}", _first_line(reply.error.reason))
        return
    content = reply.content
    try:
        arrays = OrderedDict((k, v.numpy()) for k, v in content["arrays"].items())
        metrics = dict(content["metrics"])
        meta = dict(content["meta"]) if "meta" in content.config_records else {}
    except Exception as err:  # noqa: BLE001 - a malformed message is the client's mistake, not the server's
        server.refuse(f"node {node}", f"node {node} sent a malformed reply ({type(err).__name__}); it is left out")
        return
    who = client_label(meta.get("client"), f"node {node}")
    num = metrics.pop("num-examples", None)
    server.receive(who, arrays, int(num) if isinstance(num, (int, float)) else num, {**metrics, **meta})


def client_label(name: object, fallback: str) -> str:
    """A client's self-chosen name for the logs: letters, digits, ``-``, ``_`` and ``.``, at most 64."""
    text = "".join(ch for ch in str(name or "") if ch.isalnum() or ch in "-_.")[:64]
    return text or fallback


def _first_line(text: str) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    # a ClientApp exception arrives as its traceback; its last line is the exception itself
    return lines[-1].strip()[:500] if lines else "no reason given"


# ----------------------------------------------------------------------------- network (gRPC)


def serve(server: FederatedServer, address: str = DEFAULT_ADDRESS, *, clients: int = 2,
          round_timeout: float = 3600.0, connect_timeout: float = 600.0,
          max_message_mb: int = DEFAULT_MAX_MESSAGE_MB, max_clients: int | None = None,
          certificates: tuple[bytes, bytes, bytes] | None = None, verbose: bool = False) -> None:
    """Serve the remaining rounds over gRPC at ``address``. The first round waits up to
    ``connect_timeout`` seconds for ``clients`` clients; later rounds ask every client still connected.
    At most ``max_clients`` (default ``clients``) may be connected at once. ``certificates`` (CA, server
    certificate, server key; PEM bytes checked by :func:`.tls.server_certificates`) serve over TLS."""
    flwr = require_flower()
    quiet_flower(verbose)
    from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import ServerConfig, SimpleClientManager
    from flwr.server.strategy import Strategy

    limit = max_clients or clients
    waited: list = []  # the first round of this process waits for the expected clients

    class BoundedClientManager(SimpleClientManager):
        def register(self, client) -> bool:  # noqa: ANN001 - Flower's signature
            if self.num_available() >= limit:
                server.log(f"refused a connection: {limit} client(s) are already connected (--max-clients)")
                return False
            return super().register(client)

    class VireidStrategy(Strategy):
        """Flower's server-side hooks, each handing over to the FederatedServer."""

        def initialize_parameters(self, client_manager):  # noqa: ANN001, ANN201
            return ndarrays_to_parameters(list(server.arrays.values()))

        def configure_fit(self, server_round, parameters, client_manager):  # noqa: ANN001, ANN201
            if not waited:
                waited.append(True)
                if not client_manager.wait_for(clients, timeout=int(connect_timeout)):
                    server.log(f"only {client_manager.num_available()} of {clients} clients connected within "
                               f"{connect_timeout:.0f} s; training with those")
            chosen = list(client_manager.all().values())
            arrays, plan = server.begin_round()
            server.sent(len(chosen))
            ins = FitIns(ndarrays_to_parameters(list(arrays.values())), plan.to_config())
            if not chosen:  # Flower skips the round's aggregation then: record it here
                server.log(f"round {plan.server_round}: no client is connected")
                server.finish_round()
            return [(c, ins) for c in chosen]

        def aggregate_fit(self, server_round, results, failures):  # noqa: ANN001, ANN201
            for proxy, res in results:
                who = client_label(res.metrics.get("client"), f"client {proxy.cid}")
                try:
                    arrays = named_update(parameters_to_ndarrays(res.parameters), server.layout, who)
                except UpdateRejected as err:
                    server.refuse(who, str(err))
                    continue
                except Exception as err:  # noqa: BLE001 - undecodable tensors are the client's mistake
                    server.refuse(who, f"{who} sent tensors that cannot be decoded ({type(err).__name__}); "
                                       "its update is left out of this round")
                    continue
                server.receive(who, arrays, res.num_examples, dict(res.metrics))
            for failure in failures:
                if isinstance(failure, BaseException):
                    server.fail("a client", f"{type(failure).__name__}: {_first_line(str(failure)) or 'connection lost'}")
                else:
                    proxy, res = failure
                    server.fail(f"client {proxy.cid}", _first_line(res.status.message))
            if server.current is not None:
                server.finish_round()
            return ndarrays_to_parameters(list(server.arrays.values())), {}

        def configure_evaluate(self, server_round, parameters, client_manager):  # noqa: ANN001, ANN201
            return []

        def aggregate_evaluate(self, server_round, results, failures):  # noqa: ANN001, ANN201
            return None, {}

        def evaluate(self, server_round, parameters):  # noqa: ANN001, ANN201
            return None

    remaining = server.settings.rounds - server.round
    if remaining <= 0:
        server.log(f"the run already finished its {server.settings.rounds} rounds")
        return
    channel = "TLS" if certificates else "no encryption"
    server.log(f"federated server on {address} ({channel}): {remaining} round(s), waiting for {clients} client(s)")
    flwr.server.start_server(server_address=address, config=ServerConfig(num_rounds=remaining, round_timeout=round_timeout),
                             strategy=VireidStrategy(), client_manager=BoundedClientManager(),
                             grpc_max_message_length=int(max_message_mb) * 1024 * 1024, certificates=certificates)


def connect(client: FederatedClient, address: str = DEFAULT_ADDRESS, *, max_message_mb: int = DEFAULT_MAX_MESSAGE_MB,
            max_wait: float = 600.0, root_certificates: bytes | None = None, verbose: bool = False) -> None:
    """Join the server at ``address`` and train every round it asks for, until it ends the run. With
    ``root_certificates`` (the CA's PEM bytes) the channel is TLS: the server's certificate must chain to
    that CA and name the host of ``address`` (:func:`.tls.check_server` checks both first with a clear
    message; gRPC itself would only retry a failing handshake until ``max_wait``)."""
    flwr = require_flower()
    quiet_flower(verbose)
    from flwr.client import NumPyClient

    class VireidNumPyClient(NumPyClient):
        def fit(self, parameters, config):  # noqa: ANN001, ANN201
            plan = RoundPlan.from_config(dict(config))
            names = plan.names.split("\n") if plan.names else list(client.shared_layout())
            arrays = named_update([np.asarray(p) for p in parameters], dict.fromkeys(names), "the server")
            result = client.train_round(arrays, plan)
            return list(result.arrays.values()), int(result.num_examples), result.metrics

    flwr.client.start_client(server_address=address, client=VireidNumPyClient().to_client(),
                             insecure=root_certificates is None, root_certificates=root_certificates,
                             grpc_max_message_length=int(max_message_mb) * 1024 * 1024, max_wait_time=max_wait)

