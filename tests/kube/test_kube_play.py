"""The Kubernetes manifests of ``k8s/`` played by podman (``podman kube play``), as far as podman 4.3 runs them.

The Secret and the PersistentVolumeClaim as podman makes them (a podman secret, a named volume),
the Deployment's pod from ``k8s/deployment.yaml`` with two changes podman 4.3 forces, made here and
nowhere else: no ``ports`` (podman 4.3 publishes a container port on every address of the host, and
the second replica's port 80 then clashes: it cannot run two), so one replica, on no network (the
probes and the requests run inside the pod). podman 4.3 runs neither the readiness nor the startup
probe (only the liveness probe, as a healthcheck, whose timer needs systemd), so this test is their
kubelet: it runs the manifest's own readiness probe until it passes, within the startup probe's
budget.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from forecast.registry import Registry
from tests.docker.conftest import measured
from tests.docker.test_image import ROWS, lightgbm_sales
from tests.helpers import wait_for
from tests.kube.podman import Podman

pytestmark = pytest.mark.timeout(900)  # the first test also builds the image (minutes on a clean machine)

K8S = Path(__file__).resolve().parents[2] / "k8s"
TOKEN = "kube-play-test-token"


def podman_deployment(target: Path) -> tuple[Path, dict[str, Any]]:
    """``k8s/deployment.yaml`` as podman 4.3 can play it (see the module's docstring), written to ``target``;
    the path and the pod's spec."""
    manifest = yaml.safe_load((K8S / "deployment.yaml").read_text())
    manifest["spec"]["replicas"] = 1
    pod: dict[str, Any] = manifest["spec"]["template"]["spec"]
    container = pod["containers"][0]
    ports = {port["name"]: port["containerPort"] for port in container.pop("ports")}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        action = container[probe]["httpGet"]
        action["port"] = ports.get(action["port"], action["port"])  # a named port names one of ``ports``
    target.write_text(yaml.safe_dump(manifest))
    return target, pod


def probe_passes(podman: Podman, name: str, probe: dict[str, Any]) -> bool:
    """An ``httpGet`` probe run as the kubelet runs it: passes on a 2xx or 3xx answer within its timeout."""
    action = probe["httpGet"]
    url = f"http://127.0.0.1:{action['port']}{action['path']}"
    timeout = str(probe.get("timeoutSeconds", 1))
    answer = podman("exec", name, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", timeout, url,
                    check=False)  # fmt: skip
    return answer.returncode == 0 and answer.stdout.decode().startswith(("2", "3"))


def test_the_deployment_plays_gets_ready_predicts_and_stops_gracefully(podman: Podman, tmp_path: Path) -> None:
    manifest, spec = podman_deployment(tmp_path / "deployment.yaml")
    container = spec["containers"][0]
    pod = "forecast-pod-0"
    name = f"{pod}-{container['name']}"
    secret = json.dumps({"token": base64.b64encode(TOKEN.encode()).decode()})  # podman's form of a Secret's data
    podman("secret", "create", "forecast-admin", "-", stdin=secret.encode())
    try:
        podman("kube", "play", str(K8S / "registry-pvc.yaml"))
        started = time.monotonic()
        podman("kube", "play", "--network", "none", str(manifest))
        startup = container["startupProbe"]
        budget = startup["periodSeconds"] * startup["failureThreshold"]
        wait_for(lambda: probe_passes(podman, name, container["readinessProbe"]), budget,
                 lambda: podman.text("logs", name, check=False))  # fmt: skip
        measured(f"kube play -> the readiness probe passes: {time.monotonic() - started:.1f} s")
        # the liveness probe, as podman converted it into the container's healthcheck
        podman("healthcheck", "run", name)
        assert podman.text("inspect", "--format", "{{.State.Health.Status}}", name).strip() == "healthy"

        status = json.loads(podman.text("exec", name, "curl", "-s", "http://127.0.0.1:80/status"))
        assert status["ready"]
        env = json.loads(podman.text("inspect", "--format", "{{json .Config.Env}}", name))
        assert f"FORECAST_ADMIN_TOKEN={TOKEN}" in env  # the Secret reached the container
        instances = json.dumps([{"date": d, "store": s, "item": i} for d, s, i in ROWS])
        answer = podman.text("exec", name, "curl", "-s", "-X", "POST", "-H", "Content-Type: application/json",
                             "-d", instances, "http://127.0.0.1:80/predict")  # fmt: skip
        sales = np.array([p["sales"] for p in json.loads(answer)["predictions"]])
        podman("cp", f"{name}:/var/lib/forecast/registry", str(tmp_path / "registry"))
        assert np.max(np.abs(sales - lightgbm_sales(Registry(tmp_path / "registry"), ROWS))) <= 1e-9

        # podman 4.3's `kube down` kills the pod (exit 137): the pod is stopped gracefully first, with the
        # manifest's terminationGracePeriodSeconds, then `kube down` removes it
        grace: int = spec["terminationGracePeriodSeconds"]
        stopping = time.monotonic()
        podman("pod", "stop", "--time", str(grace), pod, timeout_s=grace + 60)
        measured(f"pod stop (grace {grace} s): {time.monotonic() - stopping:.1f} s")
        assert podman.text("inspect", "--format", "{{.State.ExitCode}}", name).strip() == "0"
        podman("kube", "down", str(manifest))
        assert podman.text("pod", "ps", "-q", "--filter", f"name={pod}").strip() == ""
    finally:
        podman("pod", "rm", "-f", pod, check=False)
        podman("volume", "rm", "-f", "forecast-registry", check=False)
        podman("secret", "rm", "forecast-admin", check=False)
