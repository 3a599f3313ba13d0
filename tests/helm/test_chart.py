"""The Helm chart, proven without a cluster: Helm's own Go code (helm-python-sdk) lints and renders
it for every values file under helm/bus/ci/; every manifest passes kubernetes-validate in strict
mode, the operator's and KEDA's resources pass their CRD schemas, checkov finds nothing, the
wiring holds (selectors, ports, probes, scale targets), and the hub accepts the config it renders."""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from bus.adapter_api import AdapterRegistry
from bus.app.cli import _parser
from bus.config.loader import load_config
from schemas.catalog import SchemaCatalog
from tests.support.tools import ROOT, tool

CHART = ROOT / "helm" / "bus"
VALUES = sorted((CHART / "ci").glob("*.yaml"))
KUBE_VERSION = "1.30.0"
CRD_GROUPS = {"monitoring.coreos.com/v1", "keda.sh/v1alpha1"}
Manifest = dict[str, Any]


def render(values: dict[str, Any] | None = None) -> list[Manifest]:
    chart = helm.Chart.load(str(CHART))
    rendered = chart.render(values or {}, name="bus", namespace="integration", is_install=True)
    return [doc for path, text in sorted(rendered.items()) if path.endswith(".yaml") for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="module", params=VALUES, ids=[p.stem for p in VALUES])
def case(request: pytest.FixtureRequest) -> tuple[Path, list[Manifest]]:
    path: Path = request.param
    return path, render(yaml.safe_load(path.read_text()))


def by_kind(manifests: list[Manifest], kind: str) -> Iterator[Manifest]:
    return (m for m in manifests if m["kind"] == kind)


def test_helm_lint_finds_no_warning(case: tuple[Path, list[Manifest]]) -> None:
    path, _ = case
    report = helm.lint(str(CHART), yaml.safe_load(path.read_text()), strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == []
    serious = [m for m in report["messages"] if m["severity"] >= 2]
    assert serious == [], serious


def test_every_manifest_is_valid_kubernetes_in_strict_mode(case: tuple[Path, list[Manifest]]) -> None:
    _, manifests = case
    for manifest in manifests:
        if manifest["apiVersion"] in CRD_GROUPS:
            continue
        kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)  # raises with the path of the bad field


def test_custom_resources_match_their_crd_schemas(case: tuple[Path, list[Manifest]]) -> None:
    _, manifests = case
    custom = [m for m in manifests if m["apiVersion"] in CRD_GROUPS]
    if not custom:
        return
    results = crd_check(custom)
    assert [r for r in results if r["error"]] == []
    assert len(results) == len(custom)


def crd_check(resources: list[Manifest]) -> list[dict[str, Any]]:
    script = Path(__file__).with_name("validate_crds.mjs")
    done = subprocess.run(
        [tool("node"), str(script), tool("crd-models")], input=json.dumps(resources), capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


def test_the_crd_check_does_refuse_a_broken_resource() -> None:
    [result] = crd_check([{"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"}, "spec": {"triggers": []}}])
    assert "scaleTargetRef" in result["error"]


# Findings a values file accepts knowingly. The production file accepts none. Defaults cannot pin an
# image digest (none exists before a release is built), and a tag is pulled IfNotPresent; the
# all-in-one staging file also switches NetworkPolicy off.
ACCEPTED = {
    "production-values": set(),
    "roles-values": {"CKV_K8S_43", "CKV_K8S_15"},
    "all-in-one-values": {"CKV_K8S_43", "CKV_K8S_15", "CKV2_K8S_6"},
    # Strimzi's example pulls the chart's default image by tag (CKV_K8S_43, _15), as roles-values does.
    "strimzi-values": {"CKV_K8S_43", "CKV_K8S_15"},
    "escape-hatches-values": {"CKV_K8S_43", "CKV_K8S_15"},
}


def test_checkov_security_policies_pass(case: tuple[Path, list[Manifest]], tmp_path: Path) -> None:
    path, manifests = case
    (tmp_path / "chart.yaml").write_text(yaml.safe_dump_all(manifests))
    done = subprocess.run(
        [tool("checkov"), "--skip-download", "--quiet", "--compact", "--framework", "kubernetes", "-o", "json", "-d", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    report = json.loads(done.stdout)
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"] if c["check_id"] not in ACCEPTED[path.stem]]
    assert failed == [], failed
    assert report["summary"]["passed"] > 50  # the policies did run


def test_checkov_passes_the_dockerfile() -> None:
    done = subprocess.run(
        [tool("checkov"), "--skip-download", "--quiet", "--framework", "dockerfile", "-o", "json", "-f", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    report = json.loads(done.stdout)
    assert report["results"]["failed_checks"] == []
    assert report["summary"]["passed"] > 20


def test_wiring_points_at_things_that_exist(case: tuple[Path, list[Manifest]]) -> None:
    _, manifests = case
    deployments = {d["metadata"]["name"]: d for d in by_kind(manifests, "Deployment")}
    assert deployments
    for deployment in deployments.values():
        selector = deployment["spec"]["selector"]["matchLabels"]
        pod = deployment["spec"]["template"]
        assert selector.items() <= pod["metadata"]["labels"].items()
        container = next(c for c in pod["spec"]["containers"] if c["name"] == "bus")  # sidecars may stand beside it
        ports = {p["name"] for p in container["ports"]}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["port"] in ports, probe
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        # The command line is one the hub's own CLI accepts, and it runs the config the chart mounts.
        args = _parser().parse_args(container["args"])
        assert args.command == "run" and str(args.config) == "/etc/bus/bus.yaml"
        assert args.role == deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        mounts = {m["name"] for m in container["volumeMounts"]}
        assert mounts == {v["name"] for v in pod["spec"]["volumes"]}
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] and security["capabilities"]["drop"] == ["ALL"]
        assert (
            pod["spec"]["securityContext"]["runAsNonRoot"] and pod["spec"]["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        )
    pods = [d["spec"]["template"] for d in deployments.values()]
    services = {s["metadata"]["name"]: s for s in by_kind(manifests, "Service")}
    for service in services.values():
        # Every Service selects some pod, and each of its ports names a port those pods declare.
        chosen = [p for p in pods if service["spec"]["selector"].items() <= p["metadata"]["labels"].items()]
        assert chosen, f"Service {service['metadata']['name']} selects no pod"
        for port in service["spec"]["ports"]:
            assert all(port["targetPort"] in {c["name"] for c in p["spec"]["containers"][0]["ports"]} for p in chosen)
    for monitor in by_kind(manifests, "ServiceMonitor"):
        labels = monitor["spec"]["selector"]["matchLabels"]
        watched = [s for s in services.values() if labels.items() <= s["metadata"]["labels"].items()]
        assert watched and all(any(p["name"] == "ops" for p in s["spec"]["ports"]) for s in watched)
        assert len(watched) == len(deployments)  # every role is scraped
    for scaler in [*by_kind(manifests, "ScaledObject"), *by_kind(manifests, "HorizontalPodAutoscaler")]:
        assert scaler["spec"]["scaleTargetRef"]["name"] in deployments
        target = deployments[scaler["spec"]["scaleTargetRef"]["name"]]
        assert "replicas" not in target["spec"], "a scaled Deployment must leave replicas to its scaler"
    for scaler in by_kind(manifests, "ScaledObject"):
        if (ref := scaler["spec"]["triggers"][0].get("authenticationRef")) is not None:
            assert ref["name"] in {t["metadata"]["name"] for t in by_kind(manifests, "TriggerAuthentication")}
    for budget in by_kind(manifests, "PodDisruptionBudget"):
        assert any(budget["spec"]["selector"]["matchLabels"].items() <= p["metadata"]["labels"].items() for p in pods)
    for ingress in by_kind(manifests, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] in services
                assert backend["port"]["name"] in {p["name"] for p in services[backend["name"]]["spec"]["ports"]}
    for test_pod in by_kind(manifests, "Pod"):
        urls = test_pod["spec"]["containers"][0]["args"][1:]
        assert {u.split("/")[2].split(":")[0] for u in urls} == {n for n in services if n.endswith("-ops")}


def test_the_hub_accepts_the_config_the_chart_renders(case: tuple[Path, list[Manifest]], tmp_path: Path) -> None:
    _, manifests = case
    [configmap] = [m for m in by_kind(manifests, "ConfigMap") if m["metadata"]["name"].endswith("-config")]
    text = configmap["data"]["bus.yaml"]
    # The Secrets the pods would mount, as files with stand-in values.
    for reference in {part.split("}")[0] for part in text.split("${file:")[1:]}:
        secret = tmp_path / reference.lstrip("/")
        secret.parent.mkdir(parents=True, exist_ok=True)
        # A URL-shaped stand-in where a URL is expected (a DSN), a plain token elsewhere.
        secret.write_text("postgresql://bus:pw@ledger-db:5432/erp" if reference.endswith("/url") else "stand-in-secret")
    config = tmp_path / "bus.yaml"
    config.write_text(text.replace("${file:/", f"${{file:{tmp_path}/"))
    catalog = SchemaCatalog.load()
    env = {"ERP_URL": "http://erp.internal/api"}  # roles-values sets it through `env`
    loaded = load_config(config, AdapterRegistry.from_entry_points(), known_schemas=lambda hub: catalog.parsed(), env=env)
    assert loaded.warnings == []  # the config checker found nothing to say
    assert loaded.hub.ops.port == 9090 and loaded.hub.http.port == 8080


def test_a_config_change_rolls_the_roles_that_read_it_and_no_other() -> None:
    values = yaml.safe_load((CHART / "ci" / "roles-values.yaml").read_text())

    def checksums(change: Callable[[dict[str, Any]], None]) -> dict[str, str]:
        changed = copy.deepcopy(values)
        change(changed)
        return {
            d["metadata"]["labels"]["app.kubernetes.io/component"]: d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            for d in by_kind(render(changed), "Deployment")
        }

    def rolled(change: Callable[[dict[str, Any]], None]) -> set[str]:
        return {role for role, value in checksums(change).items() if value != before[role]}

    before = checksums(lambda v: None)
    assert set(before) == {"inbound", "router", "outbound"}
    assert rolled(lambda v: v["config"]["routes"].append({"name": "r", "from": "Order", "to": ["erp"]})) == {"router"}
    assert rolled(lambda v: v["config"]["outbound"][0].update(url="http://erp2.internal/api")) == {"outbound"}
    assert rolled(lambda v: v["config"]["inbound"][0].update(path="/hooks/shop")) == {"inbound"}
    assert rolled(lambda v: v["config"]["kafka"].update(partitions=12)) == {"inbound", "router", "outbound"}
    assert rolled(lambda v: v.update(configFiles={"erp.wsdl": "<definitions/>"})) == {"inbound", "router", "outbound"}
    assert rolled(lambda v: v.setdefault("kafka", {}).update(bootstrap="kafka-0:9092")) == {"inbound", "router", "outbound"}


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"mode": "cluster"}, "mode"),
        ({"kafka": {"bootstrap": "kafka"}}, "bootstrap"),  # no port
        ({"kafka": {"bootstrap": "k:9092", "sasl": {"mechanism": "GSSAPI"}}}, "mechanism"),
        ({"kafka": {"bootstrap": "k:9092", "tls": {"enabled": True, "secretName": ""}}}, "secretName"),
        ({"config": {"kafka": {"bootstrap": "elsewhere:9092"}}}, "kafka"),  # set through kafka.bootstrap, not config
        ({"config": {"outbound": [{"type": "http"}]}}, "name"),
        ({"roles": {"router": {"enabled": True, "replicas": -1}}}, "replicas"),
        ({"image": {"repository": "r", "digest": "latest"}}, "digest"),
        ({"metrics": {"serviceMonitor": {"interval": "often"}}}, "interval"),
        ({"replicaCount": 3}, "replicaCount"),  # a typo of another chart's habit
        ({"opsTokens": {"tokens": [{"name": "admin", "key": "admin"}]}}, "secretName"),  # tokens from which Secret?
        ({"opsTokens": {"secretName": "t", "tokens": [{"name": "admin", "key": "a", "scope": "admin"}]}}, "scope"),
        ({"migration": {"run": "Legacy Payments"}}, "run"),  # not a migration name
        ({"migration": {"run": "m", "args": ["--force"]}}, "args"),  # only what a run takes
        ({"migration": {"run": "m", "state": {"size": "5GB"}}}, "size"),
        ({"tmpSizeLimit": "1 GB"}, "tmpSizeLimit"),
    ],
)
def test_bad_values_are_refused_by_the_schema_naming_the_field(values: dict[str, Any], complaint: str) -> None:
    chart = helm.Chart.load(str(CHART))
    with pytest.raises(helm.HelmError) as refused:
        chart.render(values, name="bus", namespace="integration")
    assert complaint in str(refused.value)


def test_helm_refuses_a_config_with_a_misspelt_field() -> None:
    values = yaml.safe_load((CHART / "ci" / "roles-values.yaml").read_text())
    values["config"].setdefault("routes", [{"name": "r", "from": "Payment", "to": ["erp"]}])
    values["config"]["routes"][0]["whn"] = 'status == "failed"'
    with pytest.raises(Exception, match="additional properties 'whn' not allowed"):
        render(values)


def test_api_tokens_come_from_a_secret_as_files() -> None:
    """The chart's only way to give the hub API tokens (config.ops is the chart's own: ports, host)."""
    manifests = render(
        {
            "opsTokens": {
                "secretName": "bus-ops-tokens",
                "tokens": [{"name": "team", "key": "admin", "scope": "write"}, {"name": "ro", "key": "viewer"}],
            },
        }
    )
    [configmap] = [m for m in by_kind(manifests, "ConfigMap") if m["metadata"]["name"].endswith("-config")]
    tokens = yaml.safe_load(configmap["data"]["bus.yaml"])["ops"]["tokens"]
    assert tokens == [
        {"name": "team", "token": "${file:/etc/bus-secrets/ops-tokens/admin}", "scope": "write"},
        {"name": "ro", "token": "${file:/etc/bus-secrets/ops-tokens/viewer}", "scope": "read"},  # read unless said
    ]
    for deployment in by_kind(manifests, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert {"name": "ops-tokens", "secret": {"secretName": "bus-ops-tokens"}} in pod["volumes"]
        mounts = pod["containers"][0]["volumeMounts"]
        assert {"name": "ops-tokens", "mountPath": "/etc/bus-secrets/ops-tokens", "readOnly": True} in mounts


def migration_jobs(manifests: list[Manifest]) -> list[Manifest]:
    return [j for j in by_kind(manifests, "Job") if j["metadata"]["labels"]["app.kubernetes.io/component"] != "validate"]


def test_a_migration_runs_as_a_job_with_its_journal_on_a_volume() -> None:
    """``migration.run``: `bus migrate run NAME` as a Job whose command the hub's CLI accepts, naming
    a migration of the config, with the journal (BUS_MIGRATE_STATE) on a claim that outlives the pod."""
    values = yaml.safe_load((CHART / "ci" / "production-values.yaml").read_text())
    manifests = render(values)
    [job] = migration_jobs(manifests)
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    args = _parser().parse_args(container["args"])
    assert (args.command, args.migrate_command, args.name) == ("migrate", "run", "legacy-payments")
    assert str(args.config) == "/etc/bus/bus.yaml" and args.metrics_port == 9090
    [configmap] = [m for m in by_kind(manifests, "ConfigMap") if m["metadata"]["name"].endswith("-config")]
    assert args.name in {m["name"] for m in yaml.safe_load(configmap["data"]["bus.yaml"])["migrations"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["BUS_MIGRATE_USER"] == "jane.doe@example.com"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts[env["BUS_MIGRATE_STATE"]] == "migrate-state"
    assert {m["name"] for m in container["volumeMounts"]} == {v["name"] for v in pod["volumes"]}
    claim = next(v for v in pod["volumes"] if v["name"] == "migrate-state")["persistentVolumeClaim"]["claimName"]
    [made] = by_kind(manifests, "PersistentVolumeClaim")
    assert made["metadata"]["name"] == claim and made["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert made["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"  # rollback reads it after an uninstall too
    assert pod["restartPolicy"] == "Never" and container["securityContext"]["readOnlyRootFilesystem"]

    values["migration"]["state"] = {"existingClaim": "our-journal"}
    manifests = render(values)
    assert not list(by_kind(manifests, "PersistentVolumeClaim"))
    [job] = migration_jobs(manifests)
    volumes = job["spec"]["template"]["spec"]["volumes"]
    assert {"name": "migrate-state", "persistentVolumeClaim": {"claimName": "our-journal"}} in volumes
    assert not migration_jobs(render({}))  # no migration named: no Job


def test_files_the_config_names_are_mounted_beside_it(tmp_path: Path) -> None:
    """configFiles: a WSDL beside bus.yaml in the pod, so a soap outbound's `wsdl: ledger.wsdl` loads."""
    wsdl = (Path(__file__).resolve().parents[2] / "examples/shop-orders-to-soap-erp/ledger.wsdl").read_text()
    soap = {
        "name": "erp",
        "type": "soap",
        "wsdl": "ledger.wsdl",
        "operation": "ListInvoices",
        "url": "http://erp.internal/soap",
        "body": {"ChangedSince": "$time"},
    }
    routes = [{"name": "all", "from": "Order", "to": ["erp"]}]
    manifests = render({"config": {"routes": routes, "outbound": [soap]}, "configFiles": {"ledger.wsdl": wsdl}})
    [configmap] = [m for m in by_kind(manifests, "ConfigMap") if m["metadata"]["name"].endswith("-config")]
    assert configmap["data"]["ledger.wsdl"] == wsdl
    for name, text in configmap["data"].items():  # the ConfigMap as the pod mounts it: /etc/bus/<key>
        (tmp_path / name).write_text(text)
    catalog = SchemaCatalog.load()
    loaded = load_config(tmp_path / "bus.yaml", AdapterRegistry.from_entry_points(), known_schemas=lambda hub: catalog.parsed())
    assert [c.name for c in loaded.outbound] == ["erp"]
    # A new WSDL rolls the pods, as a config change does.
    changed = render({"config": {"routes": routes, "outbound": [soap]}, "configFiles": {"ledger.wsdl": wsdl + "\n"}})
    annotations = [next(by_kind(m, "Deployment"))["spec"]["template"]["metadata"]["annotations"] for m in (manifests, changed)]
    assert annotations[0]["checksum/config"] != annotations[1]["checksum/config"]
    with pytest.raises(Exception, match=r"bus\.yaml"):
        render({"configFiles": {"bus.yaml": "inbound: []"}})  # the config itself cannot be overwritten


def test_helm_install_and_upgrade_validate_the_config_first() -> None:
    """A pre-install/pre-upgrade hook runs `bus validate` (a command the hub's CLI accepts) on its
    own copy of the config the release renders, with the secrets mounted as the pods have them."""
    values = yaml.safe_load((CHART / "ci" / "production-values.yaml").read_text())
    manifests = render(values)
    [job] = [j for j in by_kind(manifests, "Job") if j["metadata"]["name"].endswith("-validate")]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    [config] = [m for m in by_kind(manifests, "ConfigMap") if m["metadata"]["name"].endswith("-config")]
    [copy] = [m for m in by_kind(manifests, "ConfigMap") if m["metadata"]["name"] == job["metadata"]["name"]]
    assert copy["data"] == config["data"] and copy["metadata"]["annotations"]["helm.sh/hook-weight"] == "-10"
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    args = _parser().parse_args(container["args"])
    assert args.command == "validate" and str(args.config) == "/etc/bus/bus.yaml"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == copy["metadata"]["name"]
    deployment = next(by_kind(manifests, "Deployment"))["spec"]["template"]["spec"]
    assert container["volumeMounts"] == deployment["containers"][0]["volumeMounts"]
    assert {n for n in volumes if n != "config"} == {v["name"] for v in deployment["volumes"] if v["name"] != "config"}
    assert pod["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] == 0
    assert not [j for j in by_kind(render({"validateHook": {"enabled": False}}), "Job")]


def test_the_pods_and_the_validate_hook_know_the_grace_period_their_stop_must_fit() -> None:
    """The config check warns when a subscriber's delivery.drain_at_stop, with a stop's other
    waits, outlasts the pod's grace period: it reads that from BUS_TERMINATION_GRACE_S, which the
    chart sets from terminationGracePeriodSeconds in every hub pod and in `bus validate`'s hook,
    beside the user's own env."""
    manifests = render({"terminationGracePeriodSeconds": 60, "env": [{"name": "TZ", "value": "UTC"}]})
    pods = [d["spec"]["template"]["spec"] for d in by_kind(manifests, "Deployment")]
    pods += [j["spec"]["template"]["spec"] for j in by_kind(manifests, "Job") if j["metadata"]["name"].endswith("-validate")]
    assert len(pods) >= 2
    for pod in pods:
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env["BUS_TERMINATION_GRACE_S"] == "60" and env["TZ"] == "UTC", env
    for deployment in by_kind(manifests, "Deployment"):
        assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 60


def test_the_strimzi_preset_finds_the_cluster_ca_and_the_kafka_user() -> None:
    manifests = render(yaml.safe_load((CHART / "ci" / "strimzi-values.yaml").read_text()))
    [config] = [m for m in by_kind(manifests, "ConfigMap") if m["metadata"]["name"].endswith("-config")]
    security = yaml.safe_load(config["data"]["bus.yaml"])["kafka"]["security"]
    assert security == {
        "protocol": "SASL_SSL",
        "ssl_cafile": "/etc/bus-kafka-tls/ca.crt",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "bus",  # the KafkaUser's name: Strimzi's Secret holds only the password
        "sasl_password": "${file:/etc/bus-secrets/kafka-sasl/password}",
    }
    pod = next(by_kind(manifests, "Deployment"))["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    [ca] = volumes["kafka-tls"]["projected"]["sources"]
    assert ca["secret"] == {"name": "events-cluster-ca-cert", "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    assert volumes["kafka-sasl"]["secret"]["secretName"] == "bus"
    [rules] = by_kind(manifests, "PrometheusRule")
    urls = {r["annotations"]["runbook_url"] for g in rules["spec"]["groups"] for r in g["rules"]}
    assert urls and all(u.startswith("https://wiki.example.com/runbooks/integration-bus#bus") for u in urls)
    [monitor] = by_kind(manifests, "ServiceMonitor")
    assert {"targetLabel": "hub", "replacement": "integration-bus"} in monitor["spec"]["endpoints"][0]["relabelings"]


def test_every_escape_hatch_lands_where_it_should() -> None:
    values = yaml.safe_load((CHART / "ci" / "escape-hatches-values.yaml").read_text())
    manifests = render(values)
    assert all(m["metadata"]["name"].startswith("payments-hub") for m in manifests if m["kind"] != "Pod")
    assert all(m["metadata"]["labels"]["team"] == "payments" for m in manifests if "labels" in m["metadata"])
    for deployment in by_kind(manifests, "Deployment"):
        assert deployment["metadata"]["labels"]["app.kubernetes.io/name"] == "hub"
        pod = deployment["spec"]["template"]["spec"]
        assert pod["priorityClassName"] == "integration-critical"
        assert [c["name"] for c in pod["initContainers"]] == ["wait-for-dns"]
        assert [c["name"] for c in pod["containers"]] == ["bus", "log-shipper"]
        bus = pod["containers"][0]
        assert {"name": "corporate-ca", "mountPath": "/etc/ssl/corporate", "readOnly": True} in bus["volumeMounts"]
        assert {"name": "corporate-ca", "configMap": {"name": "corporate-ca"}} in pod["volumes"]
        assert bus["startupProbe"]["failureThreshold"] == 120 and bus["startupProbe"]["httpGet"]["path"] == "/healthz"
        assert bus["readinessProbe"]["periodSeconds"] == 10 and bus["readinessProbe"]["timeoutSeconds"] == 3
        assert deployment["spec"]["template"]["metadata"]["annotations"]["vault.hashicorp.com/agent-inject"] == "false"
        sources = {v["name"]: v for v in pod["volumes"]}["kafka-tls"]["projected"]["sources"]
        assert [s["secret"]["name"] for s in sources] == ["bus-kafka-client", "bus-kafka-client"]  # cert-manager's one Secret
    [config] = [m for m in by_kind(manifests, "ConfigMap") if m["metadata"]["name"] == "payments-hub-config"]
    security = yaml.safe_load(config["data"]["bus.yaml"])["kafka"]["security"]
    assert security["protocol"] == "SASL_SSL" and security["ssl_certfile"] == "/etc/bus-kafka-tls/tls.crt"
    assert security["oauth"] == {
        "token_url": "https://login.example.com/oauth2/token",
        "client_id": "payments-hub",
        "client_secret": "${file:/etc/bus-secrets/kafka-sasl/client-secret}",
        "scope": "kafka",
    }


def test_each_hub_pod_has_a_tmp_large_enough_for_a_reconcile() -> None:
    """A reconcile keeps about 170 bytes per event of a delivery topic on /tmp while it runs: the
    chart's 256Mi evicted the pod at some 1.5 million events."""
    for values, size in (({}, "1Gi"), ({"tmpSizeLimit": "4Gi"}, "4Gi")):
        for deployment in by_kind(render(values), "Deployment"):
            pod = deployment["spec"]["template"]["spec"]
            assert {v["name"]: v for v in pod["volumes"]}["tmp"] == {"name": "tmp", "emptyDir": {"sizeLimit": size}}
            assert {"name": "tmp", "mountPath": "/tmp"} in pod["containers"][0]["volumeMounts"]


def test_keda_reads_the_same_secrets_and_keys_as_the_hub() -> None:
    """KEDA's Kafka scaler authenticates with the hub's own Secrets and key names (no KEDA-only keys):
    `sasl` and `tls` go in each trigger's metadata, the credentials through the TriggerAuthentication."""
    values = yaml.safe_load((CHART / "ci" / "production-values.yaml").read_text())
    values["kafka"]["tls"] |= {"certKey": "user.crt", "keyKey": "user.key", "caSecretName": "events-cluster-ca-cert"}
    manifests = render(values)
    [auth] = by_kind(manifests, "TriggerAuthentication")
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    sasl, tls = values["kafka"]["sasl"], values["kafka"]["tls"]
    assert refs["username"] == (sasl["secretName"], "username") and refs["password"] == (sasl["secretName"], "password")
    assert refs["ca"] == ("events-cluster-ca-cert", "ca.crt")
    if tls.get("mutual"):
        assert refs["cert"] == (tls["secretName"], "user.crt") and refs["key"] == (tls["secretName"], "user.key")
    for scaler in by_kind(manifests, "ScaledObject"):
        for trigger in scaler["spec"]["triggers"]:
            assert trigger["metadata"]["sasl"] == sasl["mechanism"].lower().replace("-", "_").replace("_sha_", "_sha")
            assert trigger["metadata"]["tls"] == "enable"
    # A literal user name (Strimzi's KafkaUser) cannot reach KEDA: refused at render, with the way out.
    strimzi = yaml.safe_load((CHART / "ci" / "strimzi-values.yaml").read_text()) | {"keda": {"enabled": True}}
    with pytest.raises(Exception, match="reads the user name \\(client id\\) from a Secret only"):
        render(strimzi)


def previous_chart(into: Path) -> Path:
    """The chart as it was last released under the previous version: the state just before the
    commit that set the current `version:` in Chart.yaml, from git."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

    bump = git("log", "-1", "--format=%H", "-G^version:", "--", "helm/bus/Chart.yaml")
    archive = subprocess.run(["git", "archive", f"{bump}^", "helm/bus"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "helm" / "bus"


def test_an_upgrade_from_the_previous_chart_version_is_safe(tmp_path: Path) -> None:
    """`helm upgrade` from the previous version with that version's own values: they still render
    (the schema did not start refusing them), no immutable field changes (Deployment selectors,
    Service selectors, a claim's spec), and nothing is renamed away (deleted and made anew)."""
    old_chart = previous_chart(tmp_path)
    assert (
        yaml.safe_load((old_chart / "Chart.yaml").read_text())["version"] != yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
    )
    for values_file in sorted((old_chart / "ci").glob("*.yaml")):
        values = yaml.safe_load(values_file.read_text())
        rendered = helm.Chart.load(str(old_chart)).render(values, name="bus", namespace="integration", is_install=True)
        old = [d for path, text in sorted(rendered.items()) if path.endswith(".yaml") for d in yaml.safe_load_all(text) if d]
        new = render(values)
        kept = {(m["kind"], m["metadata"]["name"]): m for m in new}
        for before in old:
            if before["kind"] == "Pod":  # the helm test pod is made anew each time
                continue
            key = (before["kind"], before["metadata"]["name"])
            assert key in kept, f"{values_file.name}: {key} would be deleted by the upgrade"
            after = kept[key]
            if before["kind"] == "Deployment":
                assert after["spec"]["selector"] == before["spec"]["selector"], key
            if before["kind"] == "Service":
                assert after["spec"]["selector"] == before["spec"]["selector"], key
            if before["kind"] == "PersistentVolumeClaim":
                assert {k: v for k, v in after["spec"].items() if k != "resources"} == {
                    k: v for k, v in before["spec"].items() if k != "resources"
                }, key
