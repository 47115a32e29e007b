"""One client (an institution) of a federated run: vireid's Trainer on the client's own data.

Per round the client receives the global shared tensors and a plan (round, local epochs, FedProx mu,
DP clipping/noise, the server's nonce), loads the shared tensors into its model (its private
classifier head and loss-term state stay as they were), trains ``local_epochs`` epochs with
:class:`FederatedTrainer`, saves its own ``last.pt`` (so the client resumes too), and returns only the
shared tensors, signed with the shared token. Before training it checks the server's signature and that
the server asks for no tensor this client keeps private, so a classifier head never leaves the client.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vireid.config import Config
from vireid.engine.checkpoint import atomic_write_text
from vireid.engine.trainer import Trainer, build_model
from vireid.errors import VireidError
from vireid.workflows.federated.updates import (
    UpdateRejected,
    clip_and_noise,
    load_arrays,
    model_arrays,
    proximal_term,
    sign,
    split_state,
    verify,
)

STATE_FILE = "federated_client.json"


@dataclass
class RoundPlan:
    """What the server asks of a client in one round (sent as the round's config)."""

    server_round: int
    rounds: int
    local_epochs: int = 1
    mu: float = 0.0  # FedProx proximal weight (0: FedAvg)
    dp_clip: float = 0.0  # L2 bound of the update (0: no clipping)
    dp_noise: float = 0.0  # Gaussian noise std as a multiple of dp_clip
    nonce: str = ""
    signature: str = ""  # the server's HMAC over the global tensors
    names: str = ""  # the shared tensors' names, one a line (the network transport sends tensors by position)

    def to_config(self) -> dict:
        return dict(vars(self))

    @classmethod
    def from_config(cls, config: dict) -> RoundPlan:
        try:
            return cls(server_round=int(config["server_round"]), rounds=int(config["rounds"]),
                       local_epochs=int(config["local_epochs"]), mu=float(config["mu"]),
                       dp_clip=float(config["dp_clip"]), dp_noise=float(config["dp_noise"]),
                       nonce=str(config["nonce"]), signature=str(config.get("signature", "")),
                       names=str(config.get("names", "")))
        except (KeyError, TypeError, ValueError) as err:
            raise VireidError(f"the server's round instructions are incomplete ({err}); is it a vireid federated "
                              "server of the same version?") from None


class FederatedTrainer(Trainer):
    """:class:`~vireid.engine.trainer.Trainer` whose loss gains FedProx's proximal term
    ``mu / 2 * ||w - w_t||^2`` (Li et al. 2020, Eq. 2) while ``prox_mu > 0``."""

    prox_mu: float = 0.0
    prox_reference: dict | None = None

    def _compute_losses(self, outputs, labels, modalities):  # noqa: ANN001 - Trainer's signature
        terms = super()._compute_losses(outputs, labels, modalities)
        if self.prox_mu > 0 and self.prox_reference:
            terms["fedprox"] = proximal_term(self.core_model, self.prox_reference, self.prox_mu)
        return terms


@dataclass
class RoundResult:
    arrays: OrderedDict
    num_examples: int
    metrics: dict


class FederatedClient:
    """A client's state between rounds: its config (its own data), run folder and token.

    The :class:`FederatedTrainer` is kept in memory between rounds and rebuilt from the folder's
    ``last.pt`` when the folder moved on without it (Flower's simulation may run a client's rounds in
    different worker processes) or after a restart."""

    def __init__(self, cfg: Config, run_dir: str | Path, token: bytes, name: str = "client") -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.token = token
        self.name = name
        self.trainer: FederatedTrainer | None = None
        self.rounds_done = -1
        self._split: tuple | None = None
        self._rng = np.random.default_rng()

    # ------------------------------------------------------------------ state
    def _recorded_round(self) -> int:
        path = self.run_dir / STATE_FILE
        if not path.is_file():
            return 0
        return int(json.loads(path.read_text()).get("round", 0))

    def _ensure_trainer(self, plan: RoundPlan) -> FederatedTrainer:
        recorded = self._recorded_round()
        if self.trainer is not None and self.rounds_done == recorded:
            return self.trainer
        self.close()
        cfg = self.cfg
        cfg.train.epochs = max(plan.rounds * plan.local_epochs, 1)
        cfg.train.eval_every = 0  # the client has no validation identities of its own; the server evaluates
        cfg.train.select_best = "last"
        resume = (self.run_dir / "last.pt").is_file()
        self.trainer = FederatedTrainer(cfg, self.run_dir, resume=resume)
        self.rounds_done = recorded if resume else 0
        return self.trainer

    def _layout_and_private(self) -> tuple:
        if self._split is None:
            self._split = split_state(lambda n: build_model(self.cfg, n))
        return self._split

    def shared_layout(self) -> OrderedDict:
        """``name -> (shape, dtype)`` of the tensors this client's model shares (its config's model)."""
        return self._layout_and_private()[0]

    def private_keys(self) -> set[str]:
        """The tensors that never leave this client (identity classifier(s), integer buffers)."""
        return self._layout_and_private()[1]

    # ------------------------------------------------------------------ one round
    def train_round(self, arrays: OrderedDict, plan: RoundPlan) -> RoundResult:
        """Train one round from the global ``arrays``; returns the signed shared tensors."""
        if not verify(self.token, arrays, "server", plan.server_round, plan.nonce, plan.signature):
            raise UpdateRejected(f"{self.name}: the server's model for round {plan.server_round} is not signed with "
                                 "this client's token; refusing to train on it (check --token-file on both sides)")
        asked_private = sorted(set(arrays) & self.private_keys())
        if asked_private:
            raise UpdateRejected(f"{self.name}: the server sent tensor {asked_private[0]}, which is this client's "
                                 "private identity classifier; refusing (heads never leave a client)")
        t0 = time.perf_counter()
        trainer = self._ensure_trainer(plan)
        try:
            return self._train(trainer, arrays, plan, t0)
        finally:
            trainer.release_lock()  # another worker process may train this client next round

    def _train(self, trainer: FederatedTrainer, arrays: OrderedDict, plan: RoundPlan, t0: float) -> RoundResult:
        model = trainer.core_model
        load_arrays(model, arrays)
        trainer.prox_mu = float(plan.mu)
        trainer.prox_reference = ({k: torch.from_numpy(np.array(v)).to(trainer.device) for k, v in arrays.items()}
                                  if plan.mu > 0 else None)
        sums: dict[str, float] = {}
        for _ in range(max(plan.local_epochs, 1)):
            stats = trainer.train_epoch(trainer.state.epoch)
            trainer.state.epoch += 1
            trainer.logger.log("epoch", trainer.state.step, trainer.state.epoch, round=plan.server_round, **stats)
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        trainer._save("last.pt")
        self.rounds_done = plan.server_round
        atomic_write_text(self.run_dir / STATE_FILE, json.dumps({"round": plan.server_round}))
        new = model_arrays(model, arrays)
        report = {}
        if plan.dp_clip > 0 or plan.dp_noise > 0:
            new, report = clip_and_noise(new, arrays, plan.dp_clip or None, plan.dp_noise, self._rng)
        epochs = max(plan.local_epochs, 1)
        metrics = {"loss": sums.get("loss", float("nan")) / epochs, "seconds": time.perf_counter() - t0,
                   "client": self.name, **{f"dp_{k}": float(v) for k, v in report.items()},
                   "signature": sign(self.token, new, "client", plan.server_round, plan.nonce)}
        return RoundResult(new, len(trainer.data.train_records), metrics)

    def close(self) -> None:
        if self.trainer is not None:
            self.trainer.close()
            self.trainer = None
