"""The few calls of MLflow's REST API this service makes, over the standard library's HTTP client.

Not MLflow's own client: importing it would cost every web worker seconds and tens of MiB, where
this needs a handful of JSON calls and file transfers (``benchmarks/mlflow_client_cost.py`` measures
it; docs/performance.md has the figures).  The calls are MLflow's documented REST
API 2.0 (``/api/2.0/mlflow/...``) and its artifact proxy (``/api/2.0/mlflow-artifacts/...``, which
``mlflow server`` serves by default), so any MLflow 2.x or 3.x tracking server answers them.

Every call has a deadline (``timeout_s``).  :class:`MlflowUnreachable`: the server did not answer
(down, slow, a 5xx); :class:`MlflowRefused`: it answered no (a 4xx, e.g. an alias that is not set,
``RESOURCE_DOES_NOT_EXIST``).  No LightGBM, no Flask: the web workers and the CLI both use it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from forecast.errors import ForecastError

ARTIFACTS_SCHEME = "mlflow-artifacts:"


class MlflowUnreachable(ForecastError):
    """The tracking server did not answer in time, or failed (5xx): try again later."""

    code = "mlflow_unreachable"


class MlflowRefused(ForecastError):
    """The tracking server answered with an error (4xx): ``error_code`` is MLflow's."""

    code = "mlflow_refused"

    def __init__(self, message: str, error_code: str = "") -> None:
        super().__init__(message)
        self.error_code = error_code


@dataclass(frozen=True)
class MlflowApi:
    """A tracking server at ``tracking_uri`` (``http://host:port``), each call answered within ``timeout_s``."""

    tracking_uri: str
    timeout_s: float = 10.0

    def get(self, path: str, **params: str) -> dict[str, Any]:
        """``GET /api/2.0/mlflow/<path>?params``: the JSON answer."""
        return self._json("GET", f"/api/2.0/mlflow/{path}?{urllib.parse.urlencode(params)}")

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /api/2.0/mlflow/<path>`` with a JSON body: the JSON answer."""
        return self._json("POST", f"/api/2.0/mlflow/{path}", json.dumps(body).encode())

    def patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """``PATCH /api/2.0/mlflow/<path>`` with a JSON body (model version updates)."""
        return self._json("PATCH", f"/api/2.0/mlflow/{path}", json.dumps(body).encode())

    def delete(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """``DELETE /api/2.0/mlflow/<path>`` with a JSON body (an alias)."""
        return self._json("DELETE", f"/api/2.0/mlflow/{path}", json.dumps(body).encode())

    def list_artifacts(self, artifact_uri: str) -> list[str]:
        """The file names directly under ``artifact_uri`` (an ``mlflow-artifacts:`` folder)."""
        answer = self._json("GET", "/api/2.0/mlflow-artifacts/artifacts?" + urllib.parse.urlencode(
            {"path": _artifact_path(artifact_uri)}))  # fmt: skip
        return [entry["path"] for entry in answer.get("files", []) if not entry.get("is_dir")]

    def download(self, artifact_uri: str, name: str) -> bytes:
        """The bytes of the file ``name`` under ``artifact_uri``."""
        return self._call("GET", _artifact_url(artifact_uri, name))

    def upload(self, artifact_uri: str, name: str, data: bytes) -> None:
        """Store ``data`` as the file ``name`` under ``artifact_uri``."""
        self._call("PUT", _artifact_url(artifact_uri, name), data, "application/octet-stream")

    def _json(self, method: str, path: str, body: bytes | None = None) -> dict[str, Any]:
        data = self._call(method, path, body, "application/json")
        try:
            answer = json.loads(data or b"{}")
        except ValueError:
            raise MlflowUnreachable(f"MLflow at {self.tracking_uri} answered {method} {path} with no JSON") from None
        if not isinstance(answer, dict):
            raise MlflowUnreachable(f"MLflow at {self.tracking_uri} answered {method} {path} with no JSON object")
        return answer

    def _call(self, method: str, path: str, body: bytes | None = None, content_type: str = "") -> bytes:
        request = urllib.request.Request(self.tracking_uri.rstrip("/") + path, body, method=method)
        if content_type and body is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                data: bytes = response.read()
                return data
        except urllib.error.HTTPError as exc:
            if exc.code >= 500:
                raise MlflowUnreachable(f"MLflow at {self.tracking_uri}: HTTP {exc.code} on {method} {path}") from None
            raise _refusal(exc, method, path) from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise MlflowUnreachable(f"MLflow at {self.tracking_uri} cannot be reached ({reason})") from None


def _refusal(exc: urllib.error.HTTPError, method: str, path: str) -> MlflowRefused:
    """MLflow's ``{"error_code": ..., "message": ...}`` as an error, or the bare status."""
    try:
        body = json.loads(exc.read())
        return MlflowRefused(f"MLflow: {body['message']}", str(body.get("error_code", "")))
    except (ValueError, KeyError, TypeError, OSError):
        return MlflowRefused(f"MLflow: HTTP {exc.code} on {method} {path.split('?')[0]}")


def _artifact_path(artifact_uri: str) -> str:
    """The proxy's path of an ``mlflow-artifacts:/exp/.../artifacts`` URI; anything else is refused."""
    if not artifact_uri.startswith(ARTIFACTS_SCHEME):
        raise MlflowRefused(
            f"artifacts at {artifact_uri!r} are not served by the tracking server: run `mlflow server` with its "
            "artifact proxy (the default; --artifacts-destination), so artifacts are mlflow-artifacts: URIs"
        )
    parsed = urllib.parse.urlparse(artifact_uri)
    return parsed.path.lstrip("/")


def _artifact_url(artifact_uri: str, name: str) -> str:
    path = f"{_artifact_path(artifact_uri)}/{name}".strip("/")
    return "/api/2.0/mlflow-artifacts/artifacts/" + urllib.parse.quote(path)
