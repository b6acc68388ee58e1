"""The Kubernetes manifests: valid against the Kubernetes schemas, and wired the way docs/kubernetes.md says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from serving.settings import Settings

K8S = Path(__file__).resolve().parents[2] / "k8s"
MANIFESTS = sorted(K8S.glob("*.yaml"))


@pytest.mark.parametrize("manifest", MANIFESTS, ids=[m.name for m in MANIFESTS])
def test_manifest_is_valid_against_the_kubernetes_schema(manifest: Path) -> None:
    validate = Path(sys.executable).with_name("kubernetes-validate")
    result = subprocess.run([str(validate), "--strict", str(manifest)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((K8S / name).read_text())
    return document


def test_deployment_probes_resources_and_graceful_termination() -> None:
    pod = load("deployment.yaml")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/status"
    assert container["livenessProbe"]["httpGet"]["path"] == "/"
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    assert set(container["resources"]["limits"]) == {"cpu", "memory"}
    assert pod["terminationGracePeriodSeconds"] > Settings().deadline_s + 5 + 5  # deadline + mule mercy + preStop
    mount = container["volumeMounts"][0]
    assert mount["mountPath"] == "/var/lib/forecast/registry"
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == load("registry-pvc.yaml")["metadata"]["name"]


def test_pods_read_the_registry_and_share_writable_rollout_leases() -> None:
    container = load("deployment.yaml")["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert mounts["/var/lib/forecast/registry"]["readOnly"] is True
    leases = mounts[env["FORECAST_ROLLOUT_LEASE_DIR"]]
    assert leases["name"] == mounts["/var/lib/forecast/registry"]["name"]  # the same volume: every pod sees them
    assert not leases.get("readOnly", False)


def test_service_and_autoscaler_point_at_the_deployment() -> None:
    deployment = load("deployment.yaml")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert load("service.yaml")["spec"]["selector"] == labels
    assert load("hpa.yaml")["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]


def test_dockerfile_registry_path_matches_the_volume() -> None:
    dockerfile = (K8S.parent / "Dockerfile").read_text()
    assert "ENV FORECAST_REGISTRY_DIR=/var/lib/forecast/registry" in dockerfile
    assert 'VOLUME ["/var/lib/forecast/registry"]' in dockerfile
