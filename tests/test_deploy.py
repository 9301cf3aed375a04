"""deploy/kuberay.yaml is not run here (no Kubernetes): it parses, the RayCluster has a
capture group, a GPU group and labels for every host the config pins to, and the
streamer config inside is valid for --engine ray."""

from __future__ import annotations

from typing import Any

import yaml
from conftest import REPO

from streamer.cluster.plan import check_cluster_config, plan_shards
from streamer.cluster.settings import HOST_LABEL
from streamer.config import parse_config


def test_the_kuberay_example_is_consistent() -> None:
    text = (REPO / "deploy/kuberay.yaml").read_text()
    docs: list[dict[str, Any]] = list(yaml.safe_load_all(text))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"ConfigMap", "RayCluster", "Deployment"}
    cfg = parse_config(yaml.safe_load(kinds["ConfigMap"]["data"]["streamer.yaml"]))
    check_cluster_config(cfg)
    spec = kinds["RayCluster"]["spec"]
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert {"capture", "gpu"} <= set(groups)
    hosts = {g.get("labels", {}).get(HOST_LABEL) for g in [spec["headGroupSpec"], *groups.values()]}
    pinned = {p.host for p in plan_shards(cfg) if p.host is not None} | {cfg.ray.runner_host}
    assert pinned <= hosts, pinned - hosts
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == "1" and cfg.ray.runner_gpus == 1
    for pod in [spec["headGroupSpec"], *groups.values()]:  # token auth on every node
        env = {e["name"]: e for e in pod["template"]["spec"]["containers"][0]["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token" and "RAY_AUTH_TOKEN" in env
    controller = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert controller["command"][:3] == ["streamer", "run", "/etc/streamer/streamer.yaml"]
    assert "--engine" in controller["command"] and "ray" in controller["command"]
