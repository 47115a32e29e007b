"""Federated training of a VI-ReID model across institutions that cannot pool their footage.

The survey's §6 names federated learning as a way for camera owners to train one model while "each
institution only shares the gradient parameters of the model instead of the original multi-modal
data". Here each client (an institution with its own cameras and identities) trains vireid's
:class:`~vireid.engine.trainer.Trainer` on its own data; the server aggregates the shared backbone
with FedAvg (McMahan et al., AISTATS 2017, Algorithm 1) or FedProx (Li et al., MLSys 2020, Eq. 2),
and every identity classifier stays private to its client, as in FedReID (Zhuang et al., ACM MM 2020).

* :mod:`.updates` - which tensors are shared, checks of incoming updates, FedAvg, the FedProx term,
  DP-style clipping + Gaussian noise, the shared-token signatures (no Flower import);
* :mod:`.split` - one dataset split into per-client CSV manifests by camera or by identity;
* :mod:`.client` / :mod:`.server` - one client's local training and the server's rounds, checkpoint
  and resume (no Flower import);
* :mod:`.flower` - the Flower transport: simulation of N clients on one machine, and a real server
  and clients over the network.
"""
