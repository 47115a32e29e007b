"""What a federated round exchanges, and the arithmetic on it (no Flower import: tested on tiny tensors).

* **Shared and private tensors** (:func:`split_state`). FedReID (Zhuang et al., "Performance
  Optimization for Federated Person Re-identification via Benchmark Analysis", ACM MM 2020, §3) shares
  the backbone and keeps each client's identity classifier local, since every client has its own
  identities. Which tensors depend on the identities is found by building the model twice, for two
  identity counts: a tensor whose shape changes is identity-specific and never leaves its client.
  Integer buffers (BatchNorm's ``num_batches_tracked``) are counters, not weights, and stay local too.
* **FedAvg** (McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized
  Data", AISTATS 2017, Algorithm 1): the new global tensor is the average of the clients' tensors
  weighted by their number of training examples, ``w = sum_k n_k / n * w_k``.
* **FedProx** (Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020, Eq. 2): the
  client minimises ``F_k(w) + mu / 2 * ||w - w_t||^2``, ``w_t`` the global model it received
  (:func:`proximal_term`); the server aggregates as FedAvg.
* **DP-style updates** (the clipping and Gaussian noise of DP-FedAvg, McMahan et al., "Learning
  Differentially Private Recurrent Language Models", ICLR 2018, Algorithm 1): the client's update
  ``w_k - w_t`` is scaled to an L2 norm of at most ``clip`` and Gaussian noise of standard deviation
  ``noise * clip`` is added before it leaves the client (:func:`clip_and_noise`). No privacy budget
  (epsilon) is accounted: this bounds and blurs each update, it is not a formal guarantee.
* **Checks** (:func:`check_update`): an update must hold exactly the global model's shared tensors,
  each of its shape and dtype, with finite values; anything else is refused with one sentence.
* **Shared token** (:func:`sign` / :func:`verify`): both sides hold the same secret; each message
  carries an HMAC-SHA256 over the round, a fresh server nonce and the tensors, so the token itself is
  never sent or logged, and a signature cannot be replayed in another round.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vireid.errors import ConfigError, VireidError

#: ``name -> (shape, dtype name)`` of the tensors a round exchanges, in a fixed order
Layout = "OrderedDict[str, tuple[tuple[int, ...], str]]"

TOKEN_ENV = "VIREID_FED_TOKEN"
MIN_TOKEN_CHARS = 16


class UpdateRejected(VireidError):
    """An update that cannot be aggregated (wrong token, tensors, shapes, dtypes or values)."""


# ----------------------------------------------------------------------------- shared / private


def split_state(build: Callable[[int], nn.Module]) -> tuple[OrderedDict, set[str]]:
    """``(layout of the shared tensors, private keys)`` of the model that ``build(num_classes)`` makes.

    The model is built for 2 and for 3 identities; keys whose shape differs are the identity classifier(s)
    (private, FedReID); integer and boolean buffers are local counters (private)."""
    a = build(2).state_dict()
    b = build(3).state_dict()
    layout: OrderedDict = OrderedDict()
    private: set[str] = set()
    for name, tensor in a.items():
        other = b.get(name)
        if other is None or other.shape != tensor.shape or not tensor.is_floating_point():
            private.add(name)
        else:
            layout[name] = (tuple(tensor.shape), str(tensor.numpy().dtype) if tensor.dtype != torch.bfloat16 else "bfloat16")
    if not layout:
        raise ConfigError("the configured model has no tensors that do not depend on the identity count, so there "
                          "is nothing to share; federated training needs a backbone")
    return layout, private


def layout_of(arrays: Mapping[str, np.ndarray]) -> OrderedDict:
    return OrderedDict((k, (tuple(v.shape), str(v.dtype))) for k, v in arrays.items())


def model_arrays(model: nn.Module, layout: Mapping) -> OrderedDict:
    """Copies of ``model``'s shared tensors as numpy arrays, in ``layout`` order."""
    state = model.state_dict()
    return OrderedDict((k, state[k].detach().cpu().numpy().copy()) for k in layout)


def load_arrays(model: nn.Module, arrays: Mapping[str, np.ndarray]) -> None:
    """Copy the shared tensors ``arrays`` into ``model``; its private tensors are left as they are."""
    state = model.state_dict()
    for name, value in arrays.items():
        target = state.get(name)
        if target is None or tuple(target.shape) != tuple(value.shape):
            have = "absent" if target is None else f"of shape {tuple(target.shape)}"
            raise ConfigError(
                f"the global model's tensor {name} (shape {tuple(value.shape)}) is {have} in this client's model; "
                "use the same model.method and model.params as the server's config"
            )
        with torch.no_grad():
            target.copy_(torch.from_numpy(np.array(value, order="C")).to(target.dtype))


def nbytes(arrays: Mapping[str, np.ndarray] | Sequence[np.ndarray]) -> int:
    values = arrays.values() if isinstance(arrays, Mapping) else arrays
    return int(sum(np.asarray(v).nbytes for v in values))


# ----------------------------------------------------------------------------- checks


def named_update(values: Sequence[np.ndarray], layout: Mapping, who: str) -> OrderedDict:
    """A positional list of tensors (Flower's network transport) as ``name -> array`` in ``layout`` order."""
    if len(values) != len(layout):
        raise UpdateRejected(f"{who} sent {len(values)} tensors but the global model shares {len(layout)}; "
                             "its update is left out of this round (is it running the server's model config?)")
    return OrderedDict(zip(layout, values))


def check_update(arrays: Mapping[str, np.ndarray], layout: Mapping, who: str) -> None:
    """Refuse an update that is not exactly the global model's shared tensors (names, shapes, dtypes,
    finite values), naming the first problem."""
    missing = [k for k in layout if k not in arrays]
    extra = [k for k in arrays if k not in layout]
    if missing or extra:
        what = f"lacks tensor {missing[0]}" if missing else f"holds tensor {extra[0]}, which the global model does not share"
        raise UpdateRejected(f"{who} sent a malformed update: it {what}; it is left out of this round "
                             "(private classifier heads must never be sent)")
    for name, (shape, dtype) in layout.items():
        value = arrays[name]
        if not isinstance(value, np.ndarray):
            raise UpdateRejected(f"{who} sent a malformed update: tensor {name} is a {type(value).__name__}, "
                                 "not an array; it is left out of this round")
        if tuple(value.shape) != tuple(shape):
            raise UpdateRejected(f"{who} sent tensor {name} of shape {tuple(value.shape)} but the global model's is "
                                 f"{tuple(shape)}; its update is left out of this round")
        if str(value.dtype) != dtype:
            raise UpdateRejected(f"{who} sent tensor {name} as {value.dtype} but the global model holds {dtype}; "
                                 "its update is left out of this round")
        if not np.isfinite(value).all():
            raise UpdateRejected(f"{who} sent tensor {name} with NaN or infinite values; its update is left out "
                                 "of this round")


# ----------------------------------------------------------------------------- aggregation


def fedavg(updates: Sequence[tuple[Mapping[str, np.ndarray], float]]) -> OrderedDict:
    """FedAvg (McMahan et al. 2017, Algorithm 1): ``sum_k n_k w_k / sum_k n_k`` per tensor, in float64
    and cast back to each tensor's dtype."""
    if not updates:
        raise ValueError("fedavg needs at least one update")
    total = float(sum(weight for _, weight in updates))
    if total <= 0:
        raise UpdateRejected("every update reported zero training examples; nothing to average")
    first = updates[0][0]
    out: OrderedDict = OrderedDict()
    for name, value in first.items():
        acc = np.zeros(value.shape, dtype=np.float64)
        for arrays, weight in updates:
            acc += (float(weight) / total) * arrays[name].astype(np.float64)
        out[name] = acc.astype(value.dtype)
    return out


def proximal_term(model: nn.Module, reference: Mapping[str, torch.Tensor], mu: float) -> torch.Tensor:
    """FedProx's ``mu / 2 * ||w - w_t||^2`` (Li et al. 2020, Eq. 2) over the shared parameters that
    are trained (``reference``: name -> the received global tensor, on the model's device)."""
    total = None
    for name, param in model.named_parameters():
        ref = reference.get(name)
        if ref is None or not param.requires_grad:
            continue
        term = (param.float() - ref).pow(2).sum()
        total = term if total is None else total + term
    if total is None:
        return torch.zeros(())
    return 0.5 * mu * total


def clip_and_noise(new: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], clip: float | None,
                   noise: float, rng: np.random.Generator) -> tuple[OrderedDict, dict]:
    """DP-FedAvg's client step (McMahan et al. 2018, Algorithm 1): the update ``new - reference`` scaled to
    L2 norm <= ``clip``, plus N(0, (noise * clip)^2) per element; returns the noised model and a report
    (``update_norm`` before clipping, ``scale``)."""
    delta = {k: new[k].astype(np.float64) - reference[k].astype(np.float64) for k in new}
    norm = float(np.sqrt(sum(float((d * d).sum()) for d in delta.values())))
    scale = 1.0
    if clip is not None:
        if clip <= 0:
            raise ConfigError(f"the DP clipping norm must be positive, got {clip}")
        scale = min(1.0, clip / max(norm, 1e-12))
    if noise < 0:
        raise ConfigError(f"the DP noise multiplier must be >= 0, got {noise}")
    if noise > 0 and clip is None:
        raise ConfigError("DP noise is scaled by the clipping norm: give --dp-clip together with --dp-noise")
    out: OrderedDict = OrderedDict()
    for k, d in delta.items():
        d = d * scale
        if noise > 0:
            d = d + rng.normal(0.0, noise * clip, size=d.shape)
        out[k] = (reference[k].astype(np.float64) + d).astype(new[k].dtype)
    return out, {"update_norm": norm, "scale": scale}


# ----------------------------------------------------------------------------- shared token


def read_token(token_file: str | Path | None) -> bytes:
    """The shared secret from ``token_file`` (first line), else from the ``VIREID_FED_TOKEN`` environment
    variable; never from the command line, where other users of the machine could read it."""
    if token_file is not None:
        path = Path(token_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"token file {path} does not exist; write the shared token (at least {MIN_TOKEN_CHARS} "
                              "characters) into it, the same file content on the server and every client")
        text = path.read_text(encoding="utf-8").strip().splitlines()
        token = text[0].strip() if text else ""
        source = f"token file {path}"
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
        source = f"environment variable {TOKEN_ENV}"
        if not token:
            raise ConfigError(f"no shared token: pass --token-file FILE or set {TOKEN_ENV}; the server and its "
                              "clients must hold the same token")
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"the token in {source} has {len(token)} characters; use at least {MIN_TOKEN_CHARS} "
                          "(e.g. python -c 'import secrets; print(secrets.token_hex(16))')")
    return token.encode("utf-8")


def digest(arrays: Mapping[str, np.ndarray], role: str, server_round: int, nonce: str) -> bytes:
    h = hashlib.sha256()
    h.update(f"vireid-federated-1|{role}|{int(server_round)}|{nonce}".encode())
    for name, value in arrays.items():
        h.update(f"|{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        h.update(np.asarray(value).tobytes(order="C"))
    return h.digest()


def sign(token: bytes, arrays: Mapping[str, np.ndarray], role: str, server_round: int, nonce: str) -> str:
    """HMAC-SHA256 (RFC 2104) of the message under the shared token, hex."""
    return hmac.new(token, digest(arrays, role, server_round, nonce), hashlib.sha256).hexdigest()


def verify(token: bytes, arrays: Mapping[str, np.ndarray], role: str, server_round: int, nonce: str,
           signature: object) -> bool:
    if not isinstance(signature, str):
        return False
    return hmac.compare_digest(sign(token, arrays, role, server_round, nonce), signature)
