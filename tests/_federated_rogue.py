"""A misbehaving federated client for tests/workflows/test_federated.py (run as a process).

``python _federated_rogue.py ADDRESS TOKEN_FILE MODE1,MODE2,...``: in round i it does MODEi:
``wrong-token`` (a well-formed update signed with another token), ``float64`` (the right tensors as
float64, correctly signed), ``short`` (one tensor missing), ``drop`` (the process dies mid-round)."""

import os
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
from flwr.client import NumPyClient, start_client

from vireid.workflows.federated.updates import sign

address, token_file, modes = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
token = Path(token_file).read_text().strip().encode()


class Rogue(NumPyClient):
    def fit(self, parameters, config):
        r = int(config["server_round"])
        mode = modes[min(r, len(modes)) - 1]
        names = str(config["names"]).split("\n")
        arrays = OrderedDict(zip(names, [np.asarray(p) for p in parameters]))
        key = token
        if mode == "drop":
            os._exit(3)
        if mode == "wrong-token":
            key = b"not-the-shared-token-0123456789"
        if mode == "float64":
            arrays = OrderedDict((k, v.astype(np.float64)) for k, v in arrays.items())
        if mode == "short":
            arrays.popitem()
        signature = sign(key, arrays, "client", r, str(config["nonce"]))
        return list(arrays.values()), 10, {"client": f"rogue-{mode}", "signature": signature}


start_client(server_address=address, client=Rogue().to_client(), insecure=True, max_wait_time=300)
