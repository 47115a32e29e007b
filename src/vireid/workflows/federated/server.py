"""The server's side of a federated run, independent of the transport: the global model, the round's
instructions, the checks of each update, aggregation, the checkpoint and resume.

The run folder holds ``config.yaml``, ``last.pt`` and ``best.pt`` (the global model after the last
round that produced one, in vireid's checkpoint format, so ``vireid eval RUN`` evaluates it; its
identity classifier is a placeholder, the real heads stay with the clients), and ``federated.json``
(one record per round: clients asked, accepted, refused with the reason, failed, bytes each way, time).
A round in which no update passes the checks leaves the global model as it was. ``resume`` continues
after the last checkpointed round with the same global model.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vireid.config import Config, save_config
from vireid.plugins import stored_config
from vireid.engine.checkpoint import atomic_torch_save, atomic_write_text, load_checkpoint
from vireid.engine.run_folder import RunLock, check_fresh_run_folder
from vireid.engine.trainer import build_model, seed_everything, validate_config
from vireid.errors import ConfigError, VireidError
from vireid.workflows.federated.client import RoundPlan
from vireid.workflows.federated.updates import (
    UpdateRejected,
    check_update,
    fedavg,
    load_arrays,
    model_arrays,
    nbytes,
    sign,
    split_state,
    verify,
)

STRATEGIES = ("fedavg", "fedprox")
MAX_ROUNDS = 10_000
PLACEHOLDER_CLASSES = 2  # the global model's stand-in classifier (heads are private to the clients)


@dataclass
class FederatedSettings:
    rounds: int = 5
    local_epochs: int = 1
    strategy: str = "fedavg"
    mu: float = 0.01  # FedProx's proximal weight (used when strategy is fedprox)
    dp_clip: float = 0.0
    dp_noise: float = 0.0
    min_clients: int = 1  # fewest valid updates that make a new global model

    def check(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"--strategy is {self.strategy!r}; use fedavg or fedprox")
        if not 1 <= self.rounds <= MAX_ROUNDS:
            raise ConfigError(f"--rounds is {self.rounds}; use 1 to {MAX_ROUNDS}")
        if not 1 <= self.local_epochs <= 1000:
            raise ConfigError(f"--local-epochs is {self.local_epochs}; use 1 to 1000")
        if self.strategy == "fedprox" and self.mu <= 0:
            raise ConfigError(f"--mu is {self.mu}; FedProx needs a positive proximal weight (e.g. 0.01)")
        if self.dp_clip < 0 or self.dp_noise < 0:
            raise ConfigError("--dp-clip and --dp-noise must be >= 0")
        if self.dp_noise > 0 and self.dp_clip <= 0:
            raise ConfigError("--dp-noise is a multiple of the clipping norm: give --dp-clip too")
        if self.min_clients < 1:
            raise ConfigError(f"--min-clients is {self.min_clients}; use at least 1")


@dataclass
class _Round:
    number: int
    nonce: str
    started: float
    sent_to: int = 0
    accepted: list = field(default_factory=list)  # (who, arrays, num_examples, metrics)
    refused: list = field(default_factory=list)  # (who, reason)
    failed: list = field(default_factory=list)  # (who, reason)
    bytes_up: int = 0


class FederatedServer:
    """Global model and round bookkeeping of one federated run folder."""

    def __init__(self, cfg: Config, run_dir: str | Path, token: bytes, settings: FederatedSettings,
                 resume: bool = False, log=print) -> None:  # noqa: ANN001 - any print-like callable
        settings.check()
        validate_config(cfg)
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.token = token
        self.settings = settings
        self.log = log
        self.history: list[dict] = []
        self.round = 0
        seed_everything(cfg.seed)
        self.layout, self.private = split_state(lambda n: build_model(cfg, n))
        self.model = build_model(cfg, PLACEHOLDER_CLASSES)
        if resume:
            self._resume()
        else:
            check_fresh_run_folder(self.run_dir)
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self._lock = RunLock.acquire(self.run_dir)
        save_config(cfg, self.run_dir / "config.yaml")
        self.arrays = model_arrays(self.model, self.layout)
        self.current: _Round | None = None

    # ------------------------------------------------------------------ checkpoint
    def _checkpoint(self) -> dict:
        return {
            "format": "vireid-checkpoint-1",
            "config": self.cfg.to_dict(),
            "model": self.model.state_dict(),
            "num_classes": PLACEHOLDER_CLASSES,
            "embed_dim": int(getattr(self.model, "embed_dim", 0)),
            "federated": {"round": self.round, "settings": dict(vars(self.settings)),
                          "shared": list(self.layout), "private": sorted(self.private)},
        }

    def _save(self) -> None:
        ckpt = self._checkpoint()
        atomic_torch_save(ckpt, self.run_dir / "last.pt")
        atomic_torch_save(ckpt, self.run_dir / "best.pt")
        self._write_history()

    def _write_history(self) -> None:
        atomic_write_text(self.run_dir / "federated.json", json.dumps(
            {"round": self.round, "settings": dict(vars(self.settings)), "rounds": self.history}, indent=2))

    def _resume(self) -> None:
        path = self.run_dir / "last.pt"
        if not path.is_file():
            raise VireidError(f"cannot resume: {path} does not exist; start the federated run without --resume")
        ckpt = load_checkpoint(path)
        fed = ckpt.get("federated")
        if not isinstance(fed, dict) or "round" not in fed:
            raise VireidError(f"cannot resume: {path} is not the checkpoint of a federated run")
        saved = stored_config(ckpt["config"], source=f"checkpoint {path}")
        if saved.model.method != self.cfg.model.method or saved.model.params != self.cfg.model.params:
            raise ConfigError(f"cannot resume {self.run_dir}: it trained model {saved.model.method!r} with params "
                              f"{saved.model.params}, not the configured one; use the run's own config")
        self.model.load_state_dict(ckpt["model"])
        self.round = int(fed["round"])
        history = self.run_dir / "federated.json"
        if history.is_file():
            self.history = [r for r in json.loads(history.read_text()).get("rounds", []) if r["round"] <= self.round]
        self.log(f"resumed federated run {self.run_dir} after round {self.round} of {self.settings.rounds}")

    # ------------------------------------------------------------------ rounds
    @property
    def done(self) -> bool:
        return self.round >= self.settings.rounds

    def begin_round(self) -> tuple[OrderedDict, RoundPlan]:
        """The global tensors and this round's signed instructions."""
        number = self.round + 1
        nonce = secrets.token_hex(16)
        self.current = _Round(number, nonce, time.perf_counter())
        s = self.settings
        plan = RoundPlan(server_round=number, rounds=s.rounds, local_epochs=s.local_epochs,
                         mu=s.mu if s.strategy == "fedprox" else 0.0, dp_clip=s.dp_clip, dp_noise=s.dp_noise,
                         nonce=nonce, signature=sign(self.token, self.arrays, "server", number, nonce),
                         names="\n".join(self.layout))
        return self.arrays, plan

    def sent(self, count: int) -> None:
        self.current.sent_to = count

    def receive(self, who: str, arrays: OrderedDict, num_examples: object, metrics: dict) -> bool:
        """Check one client's reply; an accepted update joins the round, a refused one is reported."""
        r = self.current
        r.bytes_up += nbytes(arrays)
        try:
            if not verify(self.token, arrays, "client", r.number, r.nonce, metrics.get("signature")):
                raise UpdateRejected(f"{who} sent an update that is not signed with the shared token (wrong or "
                                     "missing token); it is left out of this round")
            check_update(arrays, self.layout, who)
            if not isinstance(num_examples, int) or num_examples < 1:
                raise UpdateRejected(f"{who} reported {num_examples!r} training examples; it is left out of this round")
        except UpdateRejected as err:
            self.refuse(who, str(err))
            return False
        clean = {k: v for k, v in metrics.items() if k != "signature" and isinstance(v, (int, float, str))}
        r.accepted.append((who, arrays, num_examples, clean))
        return True

    def refuse(self, who: str, reason: str) -> None:
        self.current.refused.append((who, reason))
        self.log(f"round {self.current.number}: refused: {reason}")

    def fail(self, who: str, reason: str) -> None:
        self.current.failed.append((who, reason))
        self.log(f"round {self.current.number}: {who} dropped out ({reason}); it is left out of this round")

    def finish_round(self) -> dict:
        """Aggregate the accepted updates (FedAvg weights by examples), checkpoint, record the round."""
        r = self.current
        updated = len(r.accepted) >= self.settings.min_clients
        if updated:
            self.arrays = fedavg([(arrays, n) for _, arrays, n, _ in r.accepted])
            load_arrays(self.model, self.arrays)
        else:
            self.log(f"round {r.number}: {len(r.accepted)} valid update(s), fewer than --min-clients "
                     f"{self.settings.min_clients}; the global model stays as it was")
        self.round = r.number
        losses = [m["loss"] for _, _, _, m in r.accepted if isinstance(m.get("loss"), float)]
        record = {
            "round": r.number,
            "clients_asked": r.sent_to,
            "accepted": [who for who, *_ in r.accepted],
            "examples": int(sum(n for _, _, n, _ in r.accepted)),
            "refused": [{"client": who, "reason": why} for who, why in r.refused],
            "failed": [{"client": who, "reason": why} for who, why in r.failed],
            "updated": updated,
            "bytes_down": nbytes(self.arrays) * r.sent_to,
            "bytes_up": r.bytes_up,
            "seconds": time.perf_counter() - r.started,
            "client_loss": float(np.mean(losses)) if losses else None,
        }
        self.history.append(record)
        self._save()
        self.current = None
        loss = f"  client loss {record['client_loss']:.4f}" if losses else ""
        self.log(f"round {r.number}/{self.settings.rounds}: {len(r.accepted)} of {r.sent_to} update(s) aggregated"
                 f" ({len(r.refused)} refused, {len(r.failed)} dropped){loss}  {record['seconds']:.1f} s  "
                 f"{record['bytes_up'] / 1e6:.2f} MB up, {record['bytes_down'] / 1e6:.2f} MB down")
        return record

    def summary(self) -> dict:
        return {"run_dir": str(self.run_dir), "rounds": self.round, "settings": dict(vars(self.settings)),
                "shared_tensors": len(self.layout), "private_tensors": sorted(self.private),
                "bytes_per_update": nbytes(self.arrays), "history": self.history}

    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def global_state_dict(run_dir: str | Path) -> dict[str, torch.Tensor]:
    """The global model's weights of a federated run folder (for inspection and tests)."""
    return load_checkpoint(Path(run_dir) / "last.pt")["model"]
