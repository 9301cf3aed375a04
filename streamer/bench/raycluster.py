"""The bench on Ray: a local two-node cluster (``ray.cluster_utils.Cluster``, what Ray's
own tests use: each node its own raylet and object store, as on two machines), token
authentication on, each node labelled ``streamer.io/host=n0``/``n1``.

``--engine ray`` there, against the plain node on the same box in the same run:
``latency_ms`` at 8 paced streams (the Ray hop: the window's model inputs to a runner
actor and the probabilities back), and ``streams_realtime`` with two shards and a runner
per node, beside ``--workers 2``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from typing import Any

from streamer.cluster.settings import HOST_LABEL

NODES = 2


@contextlib.contextmanager
def local_cluster(nodes: int = NODES, cpus: int = 4) -> Iterator[str]:
    """Start ``nodes`` Ray nodes on this machine; their address; all of them gone after.
    Call it on the main thread (Ray sets signal handlers there)."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True, connect=False,
        head_node_args={"num_cpus": cpus, "include_dashboard": False,
                        "labels": {HOST_LABEL: "n0"}},
    )  # fmt: skip
    try:
        for i in range(1, nodes):
            cluster.add_node(num_cpus=cpus, labels={HOST_LABEL: f"n{i}"})
        yield str(cluster.address)
    finally:
        cluster.shutdown()  # type: ignore[no-untyped-call]


def ray_installed() -> bool:
    """Whether Ray imports here; first, token authentication for the bench's cluster and
    the controllers it starts (Ray reads the mode once, at its import)."""
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


async def ray_figures(
    port: int, *, device: str, quick: bool, say: Callable[[str], None],
    step: Callable[..., None],
) -> dict[str, Any]:  # fmt: skip
    from streamer.bench.live import run_trial, streams_realtime

    warmup = 15.0  # the controller says online before its actors have started
    with local_cluster() as address:
        say(f"      a local {NODES}-node Ray cluster at {address}; 8 paced streams …")
        trial = await run_trial(port, 8, seconds=4 if quick else 20, device=device,
                                workers=NODES, ray_address=address, warmup=warmup)  # fmt: skip
        say(f"      p50 {trial.p(50):.1f} ms, p99 {trial.p(99):.1f} ms "
            f"({len(trial.latencies_ms)} predictions)")  # fmt: skip
        say(f"      streams sustained in real time, {NODES} shards and runners (search) …")
        n = await streams_realtime(
            port, seconds=3 if quick else 10, start=2 if quick else 8, cap=4 if quick else 512,
            device=device, workers=NODES, progress=step, ray_address=address, warmup=warmup,
        )  # fmt: skip
    return {"nodes": NODES, "latency_ms": {"p50": round(trial.p(50), 2),
            "p99": round(trial.p(99), 2)}, "streams_realtime": n}  # fmt: skip
