"""Behaviour of the rendered chart: GPU, probes, security, credentials, jobs, policies."""

from __future__ import annotations

from typing import Any

import pytest

from .chart_render import CHART, NAMESPACE, SCENARIOS, Manifests, scenario_values

ALL_SCENARIOS = ["default", *SCENARIOS]
FULLNAME = "gs-guardstream"


def one(docs: Manifests, kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def kinds(docs: Manifests) -> set[str]:
    return {d["kind"] for d in docs}


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def pod_labels(doc: dict[str, Any]) -> dict[str, str]:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    return doc["spec"]["template"]["metadata"]["labels"]


def workloads(docs: Manifests) -> Manifests:
    return [d for d in docs if d["kind"] in {"Deployment", "Job", "CronJob"}]


def container(doc: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in pod_spec(doc)["containers"] if c["name"] == name]
    return found


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def stream_app(docs: Manifests) -> dict[str, Any]:
    return one(docs, "Deployment", f"{FULLNAME}-stream-app")


def triton(docs: Manifests) -> dict[str, Any]:
    return one(docs, "Deployment", f"{FULLNAME}-triton")


def retrain(docs: Manifests) -> dict[str, Any]:
    return one(docs, "CronJob", f"{FULLNAME}-retrain")


def config(docs: Manifests) -> dict[str, str]:
    return one(docs, "ConfigMap", f"{FULLNAME}-config")["data"]


# --- Triton ---------------------------------------------------------------------------


def test_triton_requests_one_gpu_by_default(render):
    resources = container(triton(render()), "triton")["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert resources["requests"]["nvidia.com/gpu"] == 1
    assert resources["limits"]["memory"] == "32Gi"  # the values' own resources are kept


def test_triton_gpu_count_and_gpu_node_scheduling_follow_values(render):
    docs = render(
        "default",
        "--set",
        "triton.gpu=4",
        "--set-string",
        "triton.nodeSelector.nvidia\\.com/gpu\\.present=true",
    )
    spec = pod_spec(triton(docs))
    assert container(triton(docs), "triton")["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]


def test_triton_without_gpu_has_no_gpu_resource(render):
    resources = container(triton(render("ssl-metrics-closed")), "triton")["resources"]
    assert "nvidia.com/gpu" not in resources.get("limits", {})
    assert "nvidia.com/gpu" not in resources.get("requests", {})


def test_triton_args_ports_and_model_repository_claim(render):
    docs = render()
    c = container(triton(docs), "triton")
    assert c["args"] == [
        "tritonserver",
        "--model-repository=/models",
        "--model-control-mode=explicit",
        "--load-model=guard",
        "--strict-readiness=true",
        "--http-port=8000",
        "--grpc-port=8001",
        "--metrics-port=8002",
        *restricted_flags("guardstream-model-control"),
    ]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
        "http": 8000,
        "grpc": 8001,
        "metrics": 8002,
    }
    service = one(docs, "Service", f"{FULLNAME}-triton")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
        "http": 8000,
        "grpc": 8001,
        "metrics": 8002,
    }
    assert selects(service["spec"]["selector"], pod_labels(triton(docs)))
    pvc = one(docs, "PersistentVolumeClaim", f"{FULLNAME}-models")
    volumes = {v["name"]: v for v in pod_spec(triton(docs))["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["models"] == {"name": "models", "mountPath": "/models", "readOnly": True}
    assert env_of(c)["GUARDSTREAM_MODEL_CHECKPOINT"]["value"] == "/models/checkpoints/guard"


def test_object_store_model_repository(render):
    docs = render("object-store")
    c = container(triton(docs), "triton")
    assert "--model-repository=s3://guardstream-models/prod" in c["args"]
    assert "--log-verbose=1" in c["args"]
    assert {"secretRef": {"name": "guardstream-s3"}} in c["envFrom"]
    assert "GUARDSTREAM_MODEL_CHECKPOINT" not in env_of(c)
    assert "PersistentVolumeClaim" not in kinds(docs)
    assert "CronJob" not in kinds(docs)
    assert all("persistentVolumeClaim" not in v for v in pod_spec(triton(docs))["volumes"])
    assert triton(docs)["spec"]["replicas"] == 2


def test_existing_claim_is_used_and_not_created(render):
    docs = render("no-gpu-retrain")
    assert "PersistentVolumeClaim" not in kinds(docs)
    for workload in (triton(docs), retrain(docs)):
        claims = [
            v["persistentVolumeClaim"]["claimName"]
            for v in pod_spec(workload)["volumes"]
            if "persistentVolumeClaim" in v
        ]
        assert claims == ["guardstream-models"]


# --- probes and security --------------------------------------------------------------


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_probes_on_both_deployments(render, scenario):
    docs = render(scenario)
    app = container(stream_app(docs), "stream-app")
    for probe in ("startupProbe", "livenessProbe"):
        assert app[probe]["httpGet"] == {"path": "/healthz", "port": "web"}
    # ready only once the Triton model is ready and matches the guard protocol
    assert app["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "web"}
    assert {"name": "web", "containerPort": 6066, "protocol": "TCP"} in app["ports"]

    t = container(triton(docs), "triton")
    assert t["startupProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert t["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert t["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    # Loading the model takes minutes: the start-up probe must allow for it.
    startup = t["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_security_context_on_every_pod_and_container(render, scenario):
    pods = workloads(render(scenario))
    assert len(pods) >= 2
    for workload in pods:
        spec = pod_spec(workload)
        where = f"{workload['kind']}/{workload['metadata']['name']}"
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["runAsUser"] == 10001, where
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec["automountServiceAccountToken"] is False, where
        containers = spec["containers"] + spec.get("initContainers", [])
        for c in containers:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True, where
            assert sc["runAsUser"] == 10001, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            # A read-only root needs a writable /tmp.
            tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert len(tmp) == 1, where
            volumes = {v["name"]: v for v in spec["volumes"]}
            assert "emptyDir" in volumes[tmp[0]["name"]], where


def test_stream_app_data_dir_is_a_writable_empty_dir(render):
    docs = render()
    app = container(stream_app(docs), "stream-app")
    (mount,) = [m for m in app["volumeMounts"] if m["mountPath"] == "/var/lib/guardstream"]
    volumes = {v["name"]: v for v in pod_spec(stream_app(docs))["volumes"]}
    assert "emptyDir" in volumes[mount["name"]]
    assert config(docs)["GUARDSTREAM_WORKER__DATA_DIR"] == "/var/lib/guardstream"


# --- settings and credentials ---------------------------------------------------------

REQUIRED_SETTINGS = {
    "GUARDSTREAM_KAFKA__BROKERS",
    "GUARDSTREAM_KAFKA__SECURITY_PROTOCOL",
    "GUARDSTREAM_TOPICS__INPUT",
    "GUARDSTREAM_TOPICS__VERDICTS",
    "GUARDSTREAM_TOPICS__FLAGGED",
    "GUARDSTREAM_TOPICS__DLQ",
    "GUARDSTREAM_TOPICS__REVIEWS",
    "GUARDSTREAM_TOPICS__REPLY_CHUNKS",
    "GUARDSTREAM_TOPICS__REPLY_VERDICTS",
    "GUARDSTREAM_TOPICS__PARTITIONS",
    "GUARDSTREAM_STREAMS__WINDOW_TOKENS",
    "GUARDSTREAM_STREAMS__OVERLAP_TOKENS",
    "GUARDSTREAM_STREAMS__IDLE_S",
    "GUARDSTREAM_WORKER__BATCH_SIZE",
    "GUARDSTREAM_WORKER__BATCH_WINDOW_S",
    "GUARDSTREAM_WORKER__MAX_IN_FLIGHT",
    "GUARDSTREAM_WORKER__MAX_CONTENT_BYTES",
    "GUARDSTREAM_WORKER__WEB_PORT",
    "GUARDSTREAM_WORKER__WEB_HOST",
    "GUARDSTREAM_WORKER__DATA_DIR",
    "GUARDSTREAM_TRITON__URL",
    "GUARDSTREAM_TRITON__MODEL_NAME",
    "GUARDSTREAM_POLICY__REVIEW_BAND_LOW",
    "GUARDSTREAM_POLICY__REVIEW_BAND_HIGH",
    "GUARDSTREAM_LOG_LEVEL",
}


def test_threshold_is_the_models_own_unless_set(render):
    assert "GUARDSTREAM_POLICY__THRESHOLD" not in config(render("default"))


def test_configmap_carries_the_settings_as_strings(render):
    docs = render(
        "default", "--set", "worker.maxContentBytes=1048576", "--set", "policy.threshold=0.7"
    )
    data = config(docs)
    assert set(data) >= REQUIRED_SETTINGS
    assert all(isinstance(v, str) for v in data.values())
    assert data["GUARDSTREAM_WORKER__MAX_CONTENT_BYTES"] == "1048576"  # not 1.048576e+06
    assert data["GUARDSTREAM_POLICY__THRESHOLD"] == "0.7"
    assert data["GUARDSTREAM_WORKER__BATCH_WINDOW_S"] == "0.05"
    assert data["GUARDSTREAM_WORKER__WEB_HOST"] == "0.0.0.0"
    assert data["GUARDSTREAM_KAFKA__SECURITY_PROTOCOL"] == "PLAINTEXT"
    assert not any("SASL" in k or "SSL" in k for k in data)
    app = container(stream_app(docs), "stream-app")
    assert app["command"] == ["guardstream", "worker"]
    assert {"configMapRef": {"name": f"{FULLNAME}-config"}} in app["envFrom"]


def test_config_change_rolls_the_stream_app(render):
    def checksum(docs: Manifests) -> str:
        return stream_app(docs)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert checksum(render()) != checksum(render("default", "--set", "worker.batchSize=64"))


def test_sasl_password_comes_from_a_secret(render):
    docs = render("sasl-tls-hpa-servicemonitor")
    data = config(docs)
    assert data["GUARDSTREAM_KAFKA__SECURITY_PROTOCOL"] == "SASL_SSL"
    assert data["GUARDSTREAM_KAFKA__SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert not any("USERNAME" in k or "PASSWORD" in k for k in data)
    # Credentials are referenced, never rendered: the one Secret is the chart's own
    # model-control key.
    assert [s["metadata"]["name"] for s in secrets(docs)] == [f"{FULLNAME}-model-control"]
    guardstream_containers = [
        container(stream_app(docs), "stream-app"),
        container(retrain(docs), "retrain"),
    ]
    for c in guardstream_containers:
        env = env_of(c)
        password = env["GUARDSTREAM_KAFKA__SASL_PASSWORD"]
        assert "value" not in password
        assert password["valueFrom"] == {
            "secretKeyRef": {"name": "guardstream-kafka-user", "key": "password"}
        }
        assert env["GUARDSTREAM_KAFKA__SASL_USERNAME"]["valueFrom"] == {
            "secretKeyRef": {"name": "guardstream-kafka-user", "key": "user"}
        }


def test_tls_secret_is_mounted_as_the_configured_files(render):
    docs = render("sasl-tls-hpa-servicemonitor")
    data = config(docs)
    spec = pod_spec(stream_app(docs))
    (tls,) = [v for v in spec["volumes"] if "secret" in v]
    assert tls["secret"]["secretName"] == "kafka-cluster-ca"
    files = {item["key"]: item["path"] for item in tls["secret"]["items"]}
    assert files == {"ca.crt": "ca.crt", "user.crt": "tls.crt", "user.key": "tls.key"}
    (mount,) = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == tls["name"]]
    assert mount["readOnly"] is True
    base = mount["mountPath"]
    assert data["GUARDSTREAM_KAFKA__SSL_CAFILE"] == f"{base}/ca.crt"
    assert data["GUARDSTREAM_KAFKA__SSL_CERTFILE"] == f"{base}/tls.crt"
    assert data["GUARDSTREAM_KAFKA__SSL_KEYFILE"] == f"{base}/tls.key"


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_no_credential_is_ever_a_literal_value(render, scenario):
    for workload in workloads(render(scenario)):
        for c in pod_spec(workload)["containers"]:
            for name, var in env_of(c).items():
                if any(word in name for word in ("PASSWORD", "USERNAME", "SECRET", "KEY")):
                    assert "value" not in var, f"{name} is inlined in {c['name']}"


def test_sasl_without_secret_fails_rendering(helm_template):
    proc = helm_template(
        "--set", "kafka.securityProtocol=SASL_SSL", "--set", "kafka.tls.secretName=ca"
    )
    assert proc.returncode != 0
    assert "needs kafka.sasl.secretName" in proc.stderr


# --- retraining and topics jobs -------------------------------------------------------


def test_retrain_cronjob_runs_guardstream_retrain_on_the_schedule(render):
    docs = render("default", "--set", "retrain.schedule=15 4 * * 1")
    cron = retrain(docs)
    assert cron["spec"]["schedule"] == "15 4 * * 1"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    c = container(cron, "retrain")
    assert c["command"] == ["guardstream", "retrain"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    # GPU training needs CUDA torch: the Triton image, not the CPU-only stream-app image.
    assert c["image"] == container(triton(docs), "triton")["image"]
    # The same claim as Triton, mounted read-write.
    volumes = {v["name"]: v for v in pod_spec(cron)["volumes"]}
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/models"]
    assert mount.get("readOnly", False) is False
    claim = volumes[mount["name"]]["persistentVolumeClaim"]
    assert claim["claimName"] == f"{FULLNAME}-models"
    assert claim.get("readOnly", False) is False
    # GUARDSTREAM_TRITON__URL reaches the Triton Service's gRPC port.
    assert {"configMapRef": {"name": f"{FULLNAME}-config"}} in c["envFrom"]
    service = one(docs, "Service", f"{FULLNAME}-triton")
    (grpc,) = [p for p in service["spec"]["ports"] if p["name"] == "grpc"]
    assert config(docs)["GUARDSTREAM_TRITON__URL"] == (
        f"{service['metadata']['name']}.{NAMESPACE}.svc:{grpc['port']}"
    )


def test_model_loads_reach_every_triton_replica_through_a_headless_service(render, monkeypatch):
    """Promotion and rollback send a model load to each replica, not to one behind the
    Service: the retrain job's control addresses name a headless Service of the Triton
    pods, which DNS resolves to every ready replica (training.promote.replica_addresses)."""
    from guard.settings import load_settings

    docs = render("default", "--set", "triton.replicas=3")
    raw = env_of(container(retrain(docs), "retrain"))["GUARDSTREAM_TRITON__CONTROL_URLS"]["value"]
    monkeypatch.setenv("GUARDSTREAM_TRITON__CONTROL_URLS", raw)
    (target,) = load_settings().triton.control_targets  # as the retrain job reads it
    host, port = target.rsplit(":", 1)
    name, namespace, suffix = host.split(".")
    assert (namespace, suffix) == (NAMESPACE, "svc")
    headless = one(docs, "Service", name)
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == triton(docs)["spec"]["selector"]["matchLabels"]
    (grpc,) = headless["spec"]["ports"]
    container_ports = {
        p["name"]: p["containerPort"] for p in container(triton(docs), "triton")["ports"]
    }
    assert (grpc["port"], grpc["targetPort"]) == (int(port), "grpc")
    assert container_ports["grpc"] == int(port)


def test_retrain_gets_the_reviewer_keys_from_a_secret_only_when_named(render):
    docs = render(
        "default",
        "--set",
        "retrain.reviewerKeys.secretName=reviewers",
        "--set",
        "retrain.reviewerKeys.secretKey=keys.json",
    )
    env = env_of(container(retrain(docs), "retrain"))
    assert env["GUARDSTREAM_REVIEW__REVIEWER_KEYS"]["valueFrom"] == {
        "secretKeyRef": {"name": "reviewers", "key": "keys.json"}
    }
    assert "GUARDSTREAM_REVIEW__REVIEWER_KEYS" not in env_of(
        container(retrain(render("default")), "retrain")
    )
    # Only the retrain job needs them (and the console, when deployed: it signs as the
    # signed-in reviewer): nothing else can read reviewers' keys.
    for doc in workloads(docs):
        if doc["kind"] != "CronJob":
            for c in pod_spec(doc)["containers"]:
                assert "GUARDSTREAM_REVIEW__REVIEWER_KEYS" not in env_of(c)


def test_retrain_stages_candidates_for_approval_when_told(render):
    from guard.settings import TrainingSettings

    for value, expected in (("true", True), ("false", False)):
        docs = render("default", "--set", f"retrain.requireApproval={value}")
        env = env_of(container(retrain(docs), "retrain"))
        raw = env["GUARDSTREAM_TRAINING__REQUIRE_APPROVAL"]["value"]
        parsed = TrainingSettings.model_validate({"require_approval": raw})
        assert parsed.require_approval is expected


def test_retrain_without_gpu(render):
    docs = render("no-gpu-retrain")
    c = container(retrain(docs), "retrain")
    assert "nvidia.com/gpu" not in c["resources"].get("limits", {})
    assert "nvidia.com/gpu" not in c["resources"].get("requests", {})
    assert "tolerations" not in pod_spec(retrain(docs))
    assert (
        retrain(docs)["spec"]["schedule"]
        == scenario_values("no-gpu-retrain")["retrain"]["schedule"]
    )
    assert c["args"] == ["--max-steps=200"]
    assert c["image"] == "guardstream/stream-app:0.1.0"


def test_retrain_needs_a_claim(helm_template):
    proc = helm_template(
        "-f", str(CHART / "ci" / "object-store.yaml"), "--set", "retrain.enabled=true"
    )
    assert proc.returncode != 0
    assert "retrain.enabled needs modelRepository.type pvc" in proc.stderr


# --- Review console -------------------------------------------------------------------


def console(docs: Manifests) -> dict[str, Any]:
    return one(docs, "Deployment", f"{FULLNAME}-console")


def test_the_console_is_deployed_only_when_enabled(render):
    assert not [d for d in render() if "console" in d["metadata"]["name"]]


def test_the_console_reads_accounts_keys_and_session_key_from_secrets(render):
    docs = render("console-ingress")
    c = container(console(docs), "console")
    assert c["command"] == ["guardstream", "console"]
    env = env_of(c)
    assert env["GUARDSTREAM_CONSOLE__SESSION_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "guardstream-console-session", "key": "session-key"}
    }
    assert env["GUARDSTREAM_REVIEW__REVIEWER_KEYS"]["valueFrom"]["secretKeyRef"]["name"] == (
        "guardstream-reviewer-keys"
    )
    # No reviewer id is configured: it comes from each reviewer's session.
    assert "GUARDSTREAM_REVIEW__REVIEWER" not in env
    accounts = env["GUARDSTREAM_CONSOLE__ACCOUNTS_FILE"]["value"]
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "accounts"]
    assert accounts.startswith(mount["mountPath"] + "/") and mount["readOnly"]
    (volume,) = [v for v in pod_spec(console(docs))["volumes"] if v["name"] == "accounts"]
    assert volume["secret"]["secretName"] == "guardstream-console-accounts"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    service = one(docs, "Service", f"{FULLNAME}-console")
    assert selects(service["spec"]["selector"], pod_labels(console(docs)))
    assert env["GUARDSTREAM_CONSOLE__SECURE_COOKIES"]["value"] == "true"


def test_the_console_ingress_routes_its_host_to_the_console_with_tls(render):
    ingress = one(render("console-ingress"), "Ingress", f"{FULLNAME}-console")
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "review.example.com"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": f"{FULLNAME}-console", "port": {"name": "http"}}
    assert ingress["spec"]["tls"] == [
        {"hosts": ["review.example.com"], "secretName": "review-example-com-tls"}
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "console.enabled=true"], "console.enabled needs console.accounts.secretName"),
        (
            [
                "--set",
                "console.enabled=true",
                "--set",
                "console.accounts.secretName=a",
                "--set",
                "console.ingress.enabled=true",
            ],
            "console.ingress.enabled needs console.ingress.host",
        ),
    ],
)
def test_a_console_without_accounts_or_an_ingress_without_host_fails_rendering(
    helm_template, args, message
):
    proc = helm_template(*args)
    assert proc.returncode != 0 and message in proc.stderr


def test_topics_job(render):
    assert "Job" not in kinds(render())
    docs = render("topics-job-no-netpol")
    job = one(docs, "Job", f"{FULLNAME}-topics")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    c = container(job, "topics")
    assert c["command"] == ["guardstream", "topics", "create"]
    env = env_of(c)
    # Runs before the ConfigMap exists: the same settings, inline.
    assert "envFrom" not in c
    for name, value in config(docs).items():
        assert env[name]["value"] == value
    assert env["GUARDSTREAM_TOPICS__PARTITIONS"]["value"] == "12"
    assert env["GUARDSTREAM_KAFKA__SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == (
        "guardstream-kafka-user"
    )
    assert pod_spec(job)["serviceAccountName"] == "guardstream"


# --- scaling --------------------------------------------------------------------------


def test_hpa_is_autoscaling_v2_within_partitions(render):
    scenario = "sasl-tls-hpa-servicemonitor"
    docs = render(scenario)
    (hpa,) = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    partitions = scenario_values(scenario)["kafka"]["topics"]["partitions"]
    assert hpa["spec"]["maxReplicas"] == 6
    assert hpa["spec"]["maxReplicas"] <= partitions
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": f"{FULLNAME}-stream-app",
    }
    assert "replicas" not in stream_app(docs)["spec"]  # the HPA owns the replica count


def test_no_hpa_by_default_and_fixed_replicas(render):
    docs = render()
    assert "HorizontalPodAutoscaler" not in kinds(docs)
    assert stream_app(docs)["spec"]["replicas"] == 2


def test_replicas_up_to_partitions_render(render):
    docs = render("default", "--set", "kafka.topics.partitions=3", "--set", "streamApp.replicas=3")
    assert stream_app(docs)["spec"]["replicas"] == 3


def test_replicas_over_partitions_fail_rendering(helm_template):
    proc = helm_template("--set", "kafka.topics.partitions=3", "--set", "streamApp.replicas=4")
    assert proc.returncode != 0
    assert "streamApp.replicas (4) must not exceed kafka.topics.partitions (3)" in proc.stderr


def test_hpa_max_replicas_over_partitions_fail_rendering(helm_template):
    proc = helm_template(
        "--set",
        "kafka.topics.partitions=3",
        "--set",
        "streamApp.autoscaling.enabled=true",
        "--set",
        "streamApp.autoscaling.maxReplicas=4",
    )
    assert proc.returncode != 0
    assert "maxReplicas (4) must not exceed kafka.topics.partitions (3)" in proc.stderr


def test_pdb_selects_the_stream_app(render):
    docs = render()
    (pdb,) = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels(stream_app(docs)))
    assert not selects(pdb["spec"]["selector"]["matchLabels"], pod_labels(triton(docs)))
    assert "PodDisruptionBudget" not in kinds(render("ssl-metrics-closed"))


# --- network policy and monitoring ----------------------------------------------------


def test_networkpolicy_lets_only_stream_app_and_retrain_reach_triton(render):
    docs = render()
    policy = one(docs, "NetworkPolicy", f"{FULLNAME}-triton")
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selects(selector, pod_labels(triton(docs)))
    assert not selects(selector, pod_labels(stream_app(docs)))
    assert policy["spec"]["policyTypes"] == ["Ingress"]

    inference = [
        r for r in policy["spec"]["ingress"] if {p["port"] for p in r["ports"]} & {"http", "grpc"}
    ]
    assert len(inference) == 1
    rule = inference[0]
    assert {p["port"] for p in rule["ports"]} == {"http", "grpc"}
    # Only pod selectors in this namespace: no namespaceSelector or ipBlock peers.
    assert all(set(peer) == {"podSelector"} for peer in rule["from"])
    allowed = [peer["podSelector"]["matchLabels"] for peer in rule["from"]]
    pods = {"stream-app": stream_app(docs), "retrain": retrain(docs), "triton": triton(docs)}
    reached = {
        name for name, pod in pods.items() if any(selects(s, pod_labels(pod)) for s in allowed)
    }
    assert reached == {"stream-app", "retrain"}
    # Nothing else opens the inference ports.
    metrics_rules = [r for r in policy["spec"]["ingress"] if r is not rule]
    assert all({p["port"] for p in r["ports"]} == {"metrics"} for r in metrics_rules)


def test_networkpolicy_metrics_open_to_monitoring_only(render):
    docs = render()
    app_policy = one(docs, "NetworkPolicy", f"{FULLNAME}-stream-app")
    assert selects(app_policy["spec"]["podSelector"]["matchLabels"], pod_labels(stream_app(docs)))
    monitoring = [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    assert app_policy["spec"]["ingress"] == [
        {"from": monitoring, "ports": [{"port": "web", "protocol": "TCP"}]}
    ]
    triton_policy = one(docs, "NetworkPolicy", f"{FULLNAME}-triton")
    assert {"from": monitoring, "ports": [{"port": "metrics", "protocol": "TCP"}]} in triton_policy[
        "spec"
    ]["ingress"]

    closed = render("ssl-metrics-closed")
    assert one(closed, "NetworkPolicy", f"{FULLNAME}-stream-app")["spec"]["ingress"] == []
    assert len(one(closed, "NetworkPolicy", f"{FULLNAME}-triton")["spec"]["ingress"]) == 1


def test_networkpolicy_can_be_disabled(render):
    assert "NetworkPolicy" not in kinds(render("topics-job-no-netpol"))


def test_servicemonitors(render):
    assert "ServiceMonitor" not in kinds(render())
    docs = render("sasl-tls-hpa-servicemonitor")
    app_sm = one(docs, "ServiceMonitor", f"{FULLNAME}-stream-app")
    assert app_sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert app_sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert app_sm["spec"]["endpoints"] == [{"port": "web", "path": "/metrics", "interval": "15s"}]
    app_service = one(docs, "Service", f"{FULLNAME}-stream-app")
    assert selects(app_sm["spec"]["selector"]["matchLabels"], app_service["metadata"]["labels"])
    assert [p["name"] for p in app_service["spec"]["ports"]] == ["web"]

    triton_sm = one(docs, "ServiceMonitor", f"{FULLNAME}-triton")
    assert triton_sm["spec"]["endpoints"][0]["port"] == "metrics"
    triton_service = one(docs, "Service", f"{FULLNAME}-triton")
    assert selects(
        triton_sm["spec"]["selector"]["matchLabels"], triton_service["metadata"]["labels"]
    )
    assert not selects(
        triton_sm["spec"]["selector"]["matchLabels"], app_service["metadata"]["labels"]
    )


# --- labels and values schema ---------------------------------------------------------


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_standard_labels_on_every_resource(render, scenario):
    for doc in render(scenario):
        labels = doc["metadata"]["labels"]
        for key in (
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/version",
            "app.kubernetes.io/managed-by",
            "app.kubernetes.io/component",
            "helm.sh/chart",
        ):
            assert key in labels, f"{doc['kind']}/{doc['metadata']['name']} lacks {key}"
        assert labels["app.kubernetes.io/instance"] == "gs"


def test_schema_rejects_unknown_values(helm_template):
    proc = helm_template("--set", "streamApp.replica=3")
    assert proc.returncode != 0
    assert "Additional property replica is not allowed" in proc.stderr
    proc = helm_template("--set", "kafka.securityProtocol=TLS")
    assert proc.returncode != 0
    assert "kafka.securityProtocol" in proc.stderr


# --- hostile input and operator safety ------------------------------------------------


def writable_volume(workload: dict[str, Any], c: dict[str, Any], path: str) -> str | None:
    """Name of the writable emptyDir or claim that ``path`` lies under in ``c``, if any."""
    volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
    for m in c["volumeMounts"]:
        if path != m["mountPath"] and not path.startswith(m["mountPath"].rstrip("/") + "/"):
            continue
        volume = volumes[m["name"]]
        claim = volume.get("persistentVolumeClaim")
        if m.get("readOnly") or (claim and claim.get("readOnly")):
            continue
        if "emptyDir" in volume or claim:
            return m["name"]
    return None


@pytest.mark.parametrize("scenario", ["default", "no-gpu-retrain", "ssl-metrics-closed"])
def test_retrain_writes_only_to_mounted_volumes(render, scenario):
    docs = render(scenario)
    cron = retrain(docs)
    c = container(cron, "retrain")
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    env = env_of(c)
    # Everything `guardstream retrain` writes: dataset snapshots and runs (the work dir),
    # temporary files, caches under HOME and the Hugging Face cache.
    for name in ("GUARDSTREAM_TRAINING__WORK_DIR", "TMPDIR", "HOME", "HF_HOME"):
        path = env[name]["value"]
        assert path.startswith("/"), f"{name}={path} is relative to the read-only image"
        assert writable_volume(cron, c, path), f"{name}={path} is on the read-only root"
    # Runs hold full checkpoints: the work dir has its own emptyDir, not /tmp's.
    work = writable_volume(cron, c, env["GUARDSTREAM_TRAINING__WORK_DIR"]["value"])
    volumes = {v["name"]: v for v in pod_spec(cron)["volumes"]}
    assert (
        volumes[work]["emptyDir"]["sizeLimit"]
        == scenario_values(scenario)["retrain"]["workDirSizeLimit"]
    )
    # The new versions themselves persist on the claim.
    assert writable_volume(cron, c, env["GUARDSTREAM_LOCAL__MODEL_REPOSITORY"]["value"]) == (
        "models"
    )


MODEL_CONTROL_ENV = "GUARDSTREAM_TRITON__MODEL_CONTROL_KEY"


def restricted_flags(header: str) -> list[str]:
    value = f"{header}=$({MODEL_CONTROL_ENV})"
    return [
        f"--grpc-restricted-protocol=model-repository:{value}",
        f"--http-restricted-api=model-repository:{value}",
    ]


def secrets(docs: Manifests) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == "Secret"]


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_model_control_api_is_open_only_to_retrain(render, scenario):
    from training.promote import MODEL_CONTROL_HEADER

    docs = render(scenario)
    t = container(triton(docs), "triton")
    assert set(restricted_flags(MODEL_CONTROL_HEADER)) <= set(t["args"])
    (secret,) = secrets(docs)
    assert secret["metadata"]["name"] == f"{FULLNAME}-model-control"
    assert secret["type"] == "Opaque"
    assert len(secret["data"]["key"]) >= 40  # base64 of a random key
    ref = {"secretKeyRef": {"name": f"{FULLNAME}-model-control", "key": "key"}}
    assert env_of(t)[MODEL_CONTROL_ENV] == {"name": MODEL_CONTROL_ENV, "valueFrom": ref}
    if "CronJob" in kinds(docs):
        env = env_of(container(retrain(docs), "retrain"))
        assert env[MODEL_CONTROL_ENV] == {"name": MODEL_CONTROL_ENV, "valueFrom": ref}
    # The worker handles hostile input: it never gets the key, nor does the topics job.
    assert MODEL_CONTROL_ENV not in config(docs)
    others = [container(stream_app(docs), "stream-app")]
    if "Job" in kinds(docs):
        others.append(container(one(docs, "Job", f"{FULLNAME}-topics"), "topics"))
    for c in others:
        assert MODEL_CONTROL_ENV not in env_of(c)
        assert all("secretRef" not in source for source in c.get("envFrom", []))


def test_model_control_key_from_an_existing_secret(render):
    docs = render(
        "default",
        "--set",
        "triton.modelControl.secretName=triton-admin",
        "--set",
        "triton.modelControl.secretKey=token",
    )
    assert secrets(docs) == []
    ref = {"secretKeyRef": {"name": "triton-admin", "key": "token"}}
    for c in (container(triton(docs), "triton"), container(retrain(docs), "retrain")):
        assert env_of(c)[MODEL_CONTROL_ENV]["valueFrom"] == ref


def test_model_control_restriction_can_be_turned_off(render):
    docs = render("default", "--set", "triton.modelControl.enabled=false")
    assert secrets(docs) == []
    t = container(triton(docs), "triton")
    assert not any("restricted" in arg for arg in t["args"])
    for c in (t, container(retrain(docs), "retrain")):
        assert MODEL_CONTROL_ENV not in env_of(c)


MIN_ISR = "GUARDSTREAM_TOPICS__MIN_INSYNC_REPLICAS"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ((), "2"),  # replicationFactor 3
        (("--set", "kafka.topics.replicationFactor=2"), "1"),
        (("--set", "kafka.topics.replicationFactor=1"), None),
        (("--set", "kafka.topics.minInsyncReplicas=3"), "3"),
    ],
)
def test_topics_are_created_with_min_insync_replicas(render, extra, expected):
    docs = render("topics-job-no-netpol", *extra)
    env = env_of(container(one(docs, "Job", f"{FULLNAME}-topics"), "topics"))
    if expected is None:
        assert MIN_ISR not in env
    else:
        assert env[MIN_ISR]["value"] == expected
        assert config(docs)[MIN_ISR] == expected


def test_min_insync_replicas_above_replication_fails_rendering(helm_template):
    proc = helm_template("--set", "kafka.topics.minInsyncReplicas=4")
    assert proc.returncode != 0
    assert "kafka.topics.minInsyncReplicas (4) must not exceed" in proc.stderr
    proc = helm_template("--set", "kafka.topics.minInsyncReplicas=0")
    assert proc.returncode != 0
    assert "minInsyncReplicas" in proc.stderr


# --- Policy values reach the served model ---------------------------------------------


POLICY_VALUES = (
    "--set",
    "policy.threshold=0.7",
    "--set",
    "policy.defaultPolicyId=shop",
    "--set",
    "policy.promptFormat=lg3",
    "--set",
    "policy.custom.shop.id=shop",
    "--set-string",
    "policy.custom.shop.version=2",
    "--set",
    "policy.custom.shop.categories[0].code=C1",
    "--set",
    "policy.custom.shop.categories[0].name=Scams",
    "--set",
    "policy.custom.shop.categories[0].description=Should not help defraud buyers.",
)


def test_policy_values_reach_the_model_every_triton_replica_loads(render, tmp_path, monkeypatch):
    """Render the chart, give the Triton container exactly the environment and policy files
    the manifests give it, and load the model configuration as the Triton model does."""
    from guard.serving import ServiceConfig
    from guard.taxonomy import PolicyRegistry
    from training.retrain import model_parameters

    from .chart_render import ROOT

    docs = render("default", *POLICY_VALUES)
    pod = pod_spec(triton(docs))
    t = container(triton(docs), "triton")
    (ref,) = [e["configMapRef"]["name"] for e in t["envFrom"] if "configMapRef" in e]
    settings = one(docs, "ConfigMap", ref)["data"]
    # Only the policy settings the model reads: no other setting can stop it from
    # loading, and a change to the review band (the stream app's) does not roll it.
    assert settings and all(k.startswith("GUARDSTREAM_POLICY__") for k in settings)
    assert not any("REVIEW_BAND" in k for k in settings)
    assert all(config(docs)[k] == v for k, v in settings.items())
    policy_dir = settings["GUARDSTREAM_POLICY__POLICY_DIR"]
    mount = next(m for m in t["volumeMounts"] if m["mountPath"] == policy_dir)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    files = one(docs, "ConfigMap", volume["configMap"]["name"])["data"]
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("GUARDSTREAM_POLICY__POLICY_DIR", str(tmp_path))  # where it is mounted
    monkeypatch.setenv("GUARDSTREAM_MODEL_CHECKPOINT", str(ROOT / "models" / "default"))
    # A policy change rolls every replica: the pods carry the policy settings' checksum,
    # and only that (a worker setting does not restart Triton).
    annotations = triton(docs)["spec"]["template"]["metadata"]["annotations"]
    other = triton(
        render(
            "default",
            *POLICY_VALUES,
            "--set",
            "worker.batchSize=7",
            "--set",
            "policy.reviewBandLow=0.2",
        )
    )
    changed = triton(render("default", "--set", "policy.threshold=0.6"))
    key = "checksum/policies"
    assert other["spec"]["template"]["metadata"]["annotations"][key] == annotations[key]
    assert changed["spec"]["template"]["metadata"]["annotations"][key] != annotations[key]

    model_dir = ROOT / "model_repo" / "guard"
    cfg = ServiceConfig.from_parameters(model_parameters(model_dir), model_dir / "1")
    assert cfg.scorer.threshold == 0.7
    assert str(cfg.scorer.prompt_format) == "lg3"
    assert cfg.default_policy_id == "shop"
    shop = PolicyRegistry.with_directory(cfg.policy_dir).get("shop")
    assert (shop.version, shop.codes) == ("2", ("C1",))
    assert shop.by_code("C1").description == "Should not help defraud buyers."


def test_without_policy_values_the_model_keeps_its_own(render, monkeypatch):
    from guard.serving import ServiceConfig
    from training.retrain import model_parameters

    from .chart_render import ROOT

    docs = render("default")
    for key, value in one(docs, "ConfigMap", f"{FULLNAME}-policy-settings")["data"].items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("GUARDSTREAM_MODEL_CHECKPOINT", str(ROOT / "models" / "default"))
    stream_app_only = ("REVIEW_BAND", "AUDIT_RATE")  # the stream app's, not the model's
    assert not any(
        k.startswith("GUARDSTREAM_POLICY__") and not any(w in k for w in stream_app_only)
        for k in config(docs)
    )
    model_dir = ROOT / "model_repo" / "guard"
    cfg = ServiceConfig.from_parameters(model_parameters(model_dir), model_dir / "1")
    assert cfg.scorer.threshold is None and cfg.scorer.prompt_format is None
    assert cfg.default_policy_id is None and cfg.policy_dir is None
    assert "policies" not in {v["name"] for v in pod_spec(triton(docs))["volumes"]}


def test_a_custom_policy_without_categories_fails_rendering(helm_template):
    proc = helm_template(
        "--set", "policy.custom.bad.id=bad", "--set", "policy.custom.bad.version=1"
    )
    assert proc.returncode != 0 and "categories" in proc.stderr
