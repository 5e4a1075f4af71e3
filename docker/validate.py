#!/usr/bin/python3
"""Offline checks of docker/'s manifests, run by docker/check (Debian's python3 with
python3-yaml, python3-kubernetes and python3-jsonschema).

- Kubernetes objects against their schema, strictly (an unknown field is an error): core
  kinds against the models python3-kubernetes generates from Kubernetes' OpenAPI schema,
  KEDA's kinds against the fields KEDA documents (KEDA_SCHEMAS below).
- The links between the files: names, ports, probe paths, the Secret, and stop timeouts
  that outlast worker.shutdown_grace_ms (compose, Kubernetes, systemd).
- The Grafana dashboard: JSON, panel layout, only the metric names dialout exports.

Writes, into the folder given as its argument, the KEDA query (keda-query.sql) and the
dashboard's expressions as a Prometheus rules file (dashboard-rules.yml) for docker/check
to run against PostgreSQL and promtool.
"""

import json
import re
import sys
import tomllib
from pathlib import Path

import jsonschema
import yaml
from kubernetes import client

DOCKER = Path(__file__).resolve().parent
REPO = DOCKER.parent

# The metrics dialout's /metrics exports (README "Health and metrics"); the dashboard may
# use no other. Histograms also have their _bucket, _sum and _count series.
METRICS = {
    "dialout_jobs_leased_total",
    "dialout_jobs_finished_total",
    "dialout_queue_depth",
    "dialout_queue_oldest_ready_age_seconds",
    "dialout_rescued_total",
    "dialout_ami_link_up",
    "dialout_ami_reconnects_total",
    "dialout_dial_live_calls",
    "dialout_dial_calls_total",
    "dialout_legacy_sockets_open",
}
HISTOGRAMS = {"dialout_job_duration_seconds"}
# What stopping takes beyond the grace: up to 10 s for the handlers asked to stop to
# return (src/worker/mod.rs, twice executor.rs STOP_GRACE), the kinds' log-off (at
# least 1 s) and the last writes, with a margin.
STOP_BEYOND_GRACE_S = 20

errors = []


def fail(where, message):
    errors.append(f"{where}: {message}")


def load_yaml(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


# --- Kubernetes core kinds, against python3-kubernetes' generated models -------------

def check_type(value, type_name, where):
    if type_name == "object":  # IntOrString, RawExtension: anything
        return
    if type_name.startswith("list["):
        if not isinstance(value, list):
            return fail(where, f"expected a list, got {value!r}")
        for i, item in enumerate(value):
            check_type(item, type_name[5:-1], f"{where}[{i}]")
        return
    if type_name.startswith("dict("):
        if not isinstance(value, dict):
            return fail(where, f"expected a map, got {value!r}")
        inner = type_name[5:-1].split(", ", 1)[1]
        for key, item in value.items():
            check_type(item, inner, f"{where}.{key}")
        return
    scalars = {
        "str": lambda v: isinstance(v, str),
        "datetime": lambda v: isinstance(v, str),
        "date": lambda v: isinstance(v, str),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "bool": lambda v: isinstance(v, bool),
    }
    if type_name in scalars:
        if not scalars[type_name](value):
            fail(where, f"expected {type_name}, got {value!r}")
        return
    check_model(value, type_name, where)


def check_model(obj, model_name, where):
    model = getattr(client.models, model_name, None)
    if model is None:
        return fail(where, f"no model {model_name} in python3-kubernetes")
    if not isinstance(obj, dict):
        return fail(where, f"expected an object ({model_name}), got {obj!r}")
    by_json = {json_key: py for py, json_key in model.attribute_map.items()}
    for key, value in obj.items():
        if key not in by_json:
            fail(where, f"unknown field {key!r} in {model_name}")
        else:
            check_type(value, model.openapi_types[by_json[key]], f"{where}.{key}")
    try:  # the models' own checks: required fields, enums
        model(**{by_json[k]: v for k, v in obj.items() if k in by_json})
    except (ValueError, TypeError) as e:
        fail(where, f"{model_name}: {e}")


CORE_KINDS = {
    ("apps/v1", "Deployment"): "V1Deployment",
    ("v1", "Secret"): "V1Secret",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("policy/v1", "PodDisruptionBudget"): "V1PodDisruptionBudget",
}


# --- KEDA's kinds, against the fields KEDA 2.x documents -----------------------------
# Written from KEDA's documentation (ScaledObject and TriggerAuthentication specs), for
# the fields these files use and their neighbours; an unknown field is an error, as
# `kubeconform -strict` would have it. To use a field not listed here, add it.

def obj(properties, required=(), extra=False):
    return {"type": "object", "properties": properties, "required": list(required),
            "additionalProperties": extra}


STRING = {"type": "string"}
INT = {"type": "integer", "minimum": 0}
METADATA = obj({"name": STRING, "namespace": STRING, "labels": {"type": "object"},
                "annotations": {"type": "object"}}, ["name"])
KEDA_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): obj({
        "apiVersion": STRING, "kind": STRING, "metadata": METADATA,
        "spec": obj({
            "scaleTargetRef": obj({"name": STRING, "kind": STRING, "apiVersion": STRING,
                                   "envSourceContainerName": STRING}, ["name"]),
            "pollingInterval": INT, "cooldownPeriod": INT, "initialCooldownPeriod": INT,
            "idleReplicaCount": INT, "minReplicaCount": INT, "maxReplicaCount": INT,
            "advanced": obj({
                "restoreToOriginalReplicaCount": {"type": "boolean"},
                "horizontalPodAutoscalerConfig": obj({
                    "name": STRING,
                    # autoscaling/v2 HorizontalPodAutoscalerBehavior: checked by Kubernetes.
                    "behavior": {"type": "object"},
                }),
            }),
            "fallback": obj({"failureThreshold": INT, "replicas": INT}, ["failureThreshold", "replicas"]),
            "triggers": {"type": "array", "minItems": 1, "items": obj({
                "type": STRING, "name": STRING, "useCachedMetrics": {"type": "boolean"},
                "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                "metadata": {"type": "object", "additionalProperties": STRING},
                "authenticationRef": obj({"name": STRING, "kind": STRING}, ["name"]),
            }, ["type", "metadata"])},
        }, ["scaleTargetRef", "triggers"]),
    }, ["apiVersion", "kind", "metadata", "spec"]),
    ("keda.sh/v1alpha1", "TriggerAuthentication"): obj({
        "apiVersion": STRING, "kind": STRING, "metadata": METADATA,
        "spec": obj({
            "secretTargetRef": {"type": "array", "items": obj(
                {"parameter": STRING, "name": STRING, "key": STRING},
                ["parameter", "name", "key"])},
            "env": {"type": "array"},
        }),
    }, ["apiVersion", "kind", "metadata", "spec"]),
}


def check_k8s():
    schemas = KEDA_SCHEMAS
    objects = {}
    for path in sorted((DOCKER / "k8s").glob("*.yaml")):
        for i, doc in enumerate(load_yaml(path)):
            where = f"{path.relative_to(REPO)}#{i}"
            key = (doc.get("apiVersion"), doc.get("kind"))
            if key in CORE_KINDS:
                check_model(doc, CORE_KINDS[key], where)
            elif key in schemas:
                validator = jsonschema.Draft7Validator(schemas[key])
                for e in validator.iter_errors(doc):
                    fail(f"{where}.{'.'.join(map(str, e.absolute_path))}", e.message)
            else:
                fail(where, f"no schema for {key}")
            objects[(doc.get("kind"), doc.get("metadata", {}).get("name"))] = doc
    return objects


# --- the links between the files ---------------------------------------------------

def grace_ms(env=None):
    defaults = tomllib.loads((REPO / "config" / "default.toml").read_text())
    grace = defaults["worker"]["shutdown_grace_ms"]
    for var in env or []:
        if var.get("name") == "DIALOUT__WORKER__SHUTDOWN_GRACE_MS":
            grace = int(var["value"])
    return grace


def needs_at_least(where, what, seconds, grace):
    if seconds < grace / 1000 + STOP_BEYOND_GRACE_S:
        fail(where, f"{what} is {seconds} s; the worker may take shutdown_grace_ms "
                    f"({grace} ms) + {STOP_BEYOND_GRACE_S} s to stop")


def duration_s(text):
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", str(text))
    if not m or not any(m.groups()):
        raise ValueError(f"not a duration: {text!r}")
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0)


def check_links(objects, out):
    where = "docker/k8s"
    deployment = objects.get(("Deployment", "dialout-worker"))
    scaled = objects.get(("ScaledObject", "dialout-worker"))
    if not deployment or not scaled:
        return fail(where, "expected a Deployment and a ScaledObject named dialout-worker")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = container.get("env", [])
    grace = grace_ms(env)
    needs_at_least(where, "terminationGracePeriodSeconds",
                   pod.get("terminationGracePeriodSeconds", 30), grace)
    if container.get("args") != ["worker"]:
        fail(where, f"the container runs {container.get('args')}, not the worker")
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    listen = next((v.get("value") for v in env if v["name"] == "DIALOUT__HTTP__LISTEN"), None)
    if listen != f"0.0.0.0:{ports.get('http')}":
        fail(where, f"DIALOUT__HTTP__LISTEN {listen!r} is not 0.0.0.0:<the http port>")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = container.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or get.get("port") not in ports:
            fail(where, f"{probe} should GET {path} on a declared port, not {get}")
    secrets = {s["secretRef"]["name"] for s in container.get("envFrom", []) if "secretRef" in s}
    if scaled["spec"]["scaleTargetRef"]["name"] != deployment["metadata"]["name"]:
        fail(where, "the ScaledObject scales another Deployment")
    [trigger] = scaled["spec"]["triggers"]
    if trigger["type"] != "postgresql":
        fail(where, f"trigger type {trigger['type']!r}")
    meta = trigger["metadata"]
    for key in ("targetQueryValue", "activationTargetQueryValue"):
        try:
            float(meta[key])
        except (KeyError, ValueError):
            fail(where, f"trigger metadata {key} must be a number in a string")
    auth = objects.get(("TriggerAuthentication", trigger["authenticationRef"]["name"]))
    if not auth:
        fail(where, "authenticationRef names no TriggerAuthentication here")
    else:
        refs = {r["parameter"]: r for r in auth["spec"]["secretTargetRef"]}
        conn = refs.get("connection", {})
        if conn.get("name") not in secrets or conn.get("key") != "DATABASE_URL":
            fail(where, "KEDA's connection should be the workers' Secret's DATABASE_URL")
    (out / "keda-query.sql").write_text(meta["query"] + "\n")

    compose = load_yaml(DOCKER / "compose.yaml")[0]
    worker = compose["services"]["worker"]
    needs_at_least("docker/compose.yaml", "worker stop_grace_period",
                   duration_s(worker.get("stop_grace_period", "10s")), grace_ms())
    if worker.get("deploy", {}).get("replicas") != 3:
        fail("docker/compose.yaml", "the worker should run 3 replicas")
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            if not str(port).startswith("127.0.0.1:"):
                fail("docker/compose.yaml", f"{name} publishes {port} beyond loopback")

    unit = (DOCKER / "systemd" / "dialout-worker@.service").read_text()
    stop = re.search(r"^TimeoutStopSec=(\d+)$", unit, re.M)
    if not stop or not re.search(r"^KillSignal=SIGTERM$", unit, re.M):
        fail("docker/systemd", "the unit should set KillSignal=SIGTERM and TimeoutStopSec")
    else:
        needs_at_least("docker/systemd", "TimeoutStopSec", int(stop.group(1)), grace_ms())


# --- Grafana ---------------------------------------------------------------------

GRAFANA_VARS = {  # stand-ins for promtool, which parses PromQL, not Grafana's macros
    "$__rate_interval": "1m",
    "$__range": "6h",
    "$instance": ".*",
    "$kind": ".*",
}


def check_dashboard(out):
    path = DOCKER / "grafana" / "dialout.json"
    where = str(path.relative_to(REPO))
    dash = json.loads(path.read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    if variables.get("datasource", {}).get("query") != "prometheus":
        fail(where, "no Prometheus datasource variable")
    ids, cells, exprs = set(), {}, []
    for panel in dash["panels"]:
        pid, title = panel["id"], panel.get("title")
        if pid in ids:
            fail(where, f"panel id {pid} twice")
        ids.add(pid)
        g = panel["gridPos"]
        if g["x"] < 0 or g["x"] + g["w"] > 24:
            fail(where, f"panel {title!r} is outside the 24 columns")
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    fail(where, f"panels {cells[(x, y)]!r} and {title!r} overlap")
                cells[(x, y)] = title
        if panel["type"] == "row":
            continue
        if panel.get("datasource", {}).get("uid") != "${datasource}" or not panel.get("targets"):
            fail(where, f"panel {title!r} should query ${{datasource}}")
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name in set(re.findall(r"\bdialout_[a-z_]+", expr)):
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                if name not in METRICS and not (base in HISTOGRAMS and base != name):
                    fail(where, f"panel {title!r} uses {name}, which dialout does not export")
            for var, value in GRAFANA_VARS.items():
                expr = expr.replace(var, value)
            if "$" in expr:
                fail(where, f"panel {title!r}: a Grafana variable promtool cannot stand in for: {expr}")
            exprs.append(expr)
    used = " ".join(t["expr"] for p in dash["panels"] for t in p.get("targets", []))
    for name in METRICS | HISTOGRAMS:
        if name not in used:
            fail(where, f"no panel shows {name}")
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:panel_{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    (out / "dashboard-rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(DOCKER.rglob("*.y*ml")):  # every YAML file parses
        load_yaml(path)
    objects = check_k8s()
    check_links(objects, out)
    check_dashboard(out)
    for e in errors:
        print(f"docker/validate.py: {e}", file=sys.stderr)
    if errors:
        sys.exit(1)
    print(f"docker/validate.py: Kubernetes objects ({len(objects)}), links, dashboard: ok")


if __name__ == "__main__":
    main()
