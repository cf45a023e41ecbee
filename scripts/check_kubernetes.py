#!/usr/bin/env python3
"""Checks the Kubernetes manifests in deploy/kubernetes/ (run by scripts/test-deploy.sh).

Structural checks, always (PyYAML only):
  - every file parses; every object has apiVersion, kind and metadata.name; kustomization.yaml lists
    exactly the manifests of the folder;
  - the Deployment's selector matches its pod template's labels, and so do the Service's and the
    PodDisruptionBudget's; the Service's targetPort is a container port; server.listen's port is it;
  - the probes: liveness on /healthz, readiness on /readyz, each a GET route open to anonymous
    callers in Depot's route table (Sources/DepotAPI/Routes.swift), on a named container port;
  - non-root (the image's uid from the Dockerfile), read-only root filesystem, no privilege
    escalation, every capability dropped, requests and limits for CPU and memory;
  - the config: `--config` names the ConfigMap's file where it is mounted; storage.root is an
    emptyDir; every *_file key names a file of a mounted volume (a Secret volume lists it in
    `items`, and nothing is listed that no key uses); every *_env key names a variable the
    container sets; every Secret key referenced is one README.md tells the operator to create;
    every DEPOT_ variable the container sets is a config key's variable (DEPOT_<SECTION>_<KEY>).

Schema validation, where the kubernetes-validate package is importable: every object against the
Kubernetes OpenAPI schema (strict: unknown fields are errors) of KUBERNETES_VERSION below. The last
line says which validation ran.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFESTS = os.path.join(ROOT, "deploy", "kubernetes")  # `--dir DIR` checks another copy (the checker's own tests)
KUBERNETES_VERSION = "1.35.0"

failures: list[str] = []


def fail(message: str) -> None:
    failures.append(message)


def load_all(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    for d in docs:
        if not isinstance(d, dict):
            fail(f"{os.path.basename(path)}: a document is not a mapping")
    return [d for d in docs if isinstance(d, dict)]


def routes() -> dict[str, set[tuple[str, str]]]:
    """Depot's route table: path -> {(METHOD, action)}, from Routes.swift's `Route(.id, .get, "/p", .action)` lines."""
    text = open(os.path.join(ROOT, "Sources", "DepotAPI", "Routes.swift"), encoding="utf-8").read()
    table: dict[str, set[tuple[str, str]]] = {}
    for method, path, action in re.findall(r'Route\(\.\w+, \.(\w+), "([^"]+)", \.(\w+)\)', text):
        table.setdefault(path, set()).add((method.upper(), action))
    if not table:
        fail("Routes.swift: no route found (did the Route(...) syntax change?)")
    return table


def leaf_paths(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted path, value) of every scalar or list under mappings."""
    if isinstance(node, dict):
        out: list[tuple[str, Any]] = []
        for k, v in node.items():
            out += leaf_paths(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return [(prefix, node)]


def env_name(path: str) -> str:
    return "DEPOT_" + path.upper().replace(".", "_")


def labels_match(selector: dict[str, str], labels: dict[str, str], what: str) -> None:
    if not selector:
        fail(f"{what}: empty selector (it would select every pod)")
    for k, v in selector.items():
        if labels.get(k) != v:
            fail(f"{what}: selects {k}={v}, which the pod template does not carry")


def main() -> int:
    files = sorted(f for f in os.listdir(MANIFESTS) if f.endswith((".yaml", ".yml")))
    objects: dict[str, list[dict[str, Any]]] = {}
    for name in files:
        for d in load_all(os.path.join(MANIFESTS, name)):
            for key in ("apiVersion", "kind"):
                if not isinstance(d.get(key), str):
                    fail(f"{name}: an object without {key}")
            if d.get("kind") != "Kustomization" and not (d.get("metadata") or {}).get("name"):
                fail(f"{name}: {d.get('kind')} without metadata.name")
            objects.setdefault(str(d.get("kind")), []).append(d | {"__file": name})

    def one(kind: str) -> dict[str, Any]:
        found = objects.get(kind, [])
        if len(found) != 1:
            fail(f"expected exactly one {kind}, found {len(found)}")
            return {}
        return found[0]

    kustomization = one("Kustomization")
    listed = set(kustomization.get("resources") or [])
    manifests = {f for f in files if f != "kustomization.yaml"}
    if listed != manifests:
        fail(f"kustomization.yaml lists {sorted(listed)}, the folder holds {sorted(manifests)}")

    deployment, service, pdb, configmap = one("Deployment"), one("Service"), one("PodDisruptionBudget"), one("ConfigMap")
    if not (deployment and service and pdb and configmap):
        return report(schema=None)
    spec = deployment["spec"]
    if deployment["apiVersion"] != "apps/v1" or pdb["apiVersion"] != "policy/v1":
        fail("Deployment must be apps/v1 and PodDisruptionBudget policy/v1")
    if int(spec.get("replicas", 1)) < 2:
        fail("Deployment: fewer than 2 replicas")
    template = spec["template"]
    pod_labels = template["metadata"]["labels"]
    labels_match(spec["selector"]["matchLabels"], pod_labels, "Deployment selector")
    labels_match(service["spec"]["selector"], pod_labels, "Service selector")
    labels_match(pdb["spec"]["selector"]["matchLabels"], pod_labels, "PodDisruptionBudget selector")
    if pdb["spec"]["selector"]["matchLabels"] != spec["selector"]["matchLabels"]:
        fail("PodDisruptionBudget: selector differs from the Deployment's")
    budget = pdb["spec"].get("maxUnavailable", 0)
    if not isinstance(budget, int) or not 1 <= budget < int(spec.get("replicas", 1)):
        fail("PodDisruptionBudget: maxUnavailable must let at least one pod go and keep at least one")

    pod = template["spec"]
    containers = pod["containers"]
    if len(containers) != 1:
        fail("Deployment: expected one container")
    c = containers[0]
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    for p in service["spec"]["ports"]:
        target = p.get("targetPort")
        if target not in ports and target not in ports.values():
            fail(f"Service port {p.get('name')}: targetPort {target} is no container port")

    # Probes against the route table.
    table = routes()
    wanted = {"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": None}
    for probe, path in wanted.items():
        p = c.get(probe)
        if p is None:
            if path is not None:
                fail(f"container: no {probe}")
            continue
        get = p.get("httpGet") or {}
        if path is not None and get.get("path") != path:
            fail(f"{probe}: path {get.get('path')}, expected {path}")
        if ("GET", "anonymous") not in table.get(get.get("path", ""), set()):
            fail(f"{probe}: {get.get('path')} is not a GET route open to anonymous callers in Routes.swift")
        if get.get("port") not in ports:
            fail(f"{probe}: port {get.get('port')} is not a named container port")

    # Security and resources.
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    dockerfile = open(os.path.join(ROOT, "Dockerfile"), encoding="utf-8").read()
    uid = re.search(r"--uid (\d+)", dockerfile)
    if psc.get("runAsNonRoot") is not True:
        fail("pod securityContext: runAsNonRoot must be true")
    if uid is None or psc.get("runAsUser") != int(uid.group(1)):
        fail(f"pod securityContext: runAsUser {psc.get('runAsUser')} is not the image's user (Dockerfile --uid)")
    if csc.get("readOnlyRootFilesystem") is not True or csc.get("allowPrivilegeEscalation") is not False:
        fail("container securityContext: readOnlyRootFilesystem true and allowPrivilegeEscalation false are required")
    if "ALL" not in (csc.get("capabilities") or {}).get("drop", []):
        fail("container securityContext: capabilities.drop must contain ALL")
    for part in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if resource not in (c.get("resources") or {}).get(part, {}):
                fail(f"container resources: no {part}.{resource}")

    # Volumes and mounts.
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["mountPath"].rstrip("/"): m for m in c.get("volumeMounts", [])}
    for m in mounts.values():
        if m["name"] not in volumes:
            fail(f"volumeMount {m['mountPath']}: no volume {m['name']}")
    for name in volumes:
        if name not in {m["name"] for m in mounts.values()}:
            fail(f"volume {name} is mounted nowhere")

    def volume_at(path: str) -> tuple[str, dict[str, Any]] | None:
        for mount_path, m in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
            if path == mount_path or path.startswith(mount_path + "/"):
                return mount_path, volumes.get(m["name"], {})
        return None

    # The config file: --config points into the ConfigMap volume.
    args = [str(a) for a in c.get("args", [])]
    if "--config" not in args or args.index("--config") + 1 >= len(args):
        fail("container args: no --config FILE")
        return report(schema=None)
    config_path = args[args.index("--config") + 1]
    found = volume_at(config_path)
    if found is None or (found[1].get("configMap") or {}).get("name") != configmap["metadata"]["name"]:
        fail(f"--config {config_path} is not in the ConfigMap {configmap['metadata']['name']}'s volume")
        return report(schema=None)
    key = config_path[len(found[0]) + 1 :]
    if key not in configmap.get("data", {}):
        fail(f"--config {config_path}: the ConfigMap has no key {key}")
        return report(schema=None)
    config = yaml.safe_load(configmap["data"][key])
    if not isinstance(config, dict):
        fail(f"ConfigMap {key}: not a mapping")
        return report(schema=None)

    listen = str((config.get("server") or {}).get("listen", ""))
    listen_port = listen.rsplit(":", 1)[-1]
    if not listen.startswith("0.0.0.0:") or not listen_port.isdigit() or int(listen_port) not in ports.values():
        fail(f"server.listen {listen!r}: must be 0.0.0.0:<a container port> (probes and the Service connect from outside the pod)")
    root = str((config.get("storage") or {}).get("root", "storage"))
    at = volume_at(root)
    if at is None or "emptyDir" not in at[1]:
        fail(f"storage.root {root}: not an emptyDir mount (the root filesystem is read-only)")

    env = {e["name"]: e for e in c.get("env", [])}
    secret_names: set[str] = set()
    secret_keys: set[str] = set()
    used_items: set[tuple[str, str]] = set()
    for path, value in leaf_paths(config):
        leaf = path.rsplit(".", 1)[-1]
        if leaf.endswith("_file") and isinstance(value, str) and value:
            found = volume_at(value)
            if found is None:
                fail(f"{path}: {value} lies in no mounted volume")
                continue
            mount_path, volume = found
            name = value[len(mount_path) + 1 :]
            if "secret" in volume:
                items = {i["path"]: i["key"] for i in volume["secret"].get("items", [])}
                if name not in items:
                    fail(f"{path}: {name} is not an item of the Secret volume at {mount_path}")
                else:
                    used_items.add((volume["secret"]["secretName"], name))
                    secret_names.add(volume["secret"]["secretName"])
                    secret_keys.add(items[name])
            elif "configMap" in volume:
                if name not in configmap.get("data", {}):
                    fail(f"{path}: the ConfigMap has no key {name}")
            else:
                fail(f"{path}: {value} is in a {', '.join(k for k in volume if k != 'name')} volume, not a Secret or ConfigMap")
        if leaf.endswith("_env") and isinstance(value, str) and value and value not in env:
            fail(f"{path}: names ${value}, which the container does not set")
    for volume in volumes.values():
        if "secret" in volume:
            for item in volume["secret"].get("items", []):
                if (volume["secret"]["secretName"], item["path"]) not in used_items:
                    fail(f"Secret volume {volume['name']}: item {item['path']} is named by no *_file key")
    for e in env.values():
        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            secret_names.add(ref["name"])
            secret_keys.add(ref["key"])
    if len(secret_names) > 1:
        fail(f"the container reads several Secrets ({sorted(secret_names)}); the README documents one")

    # Every Secret key referenced is one the manifests' README tells the operator to create.
    readme = open(os.path.join(MANIFESTS, "README.md"), encoding="utf-8").read()
    created = set(re.findall(r"--from-(?:file|literal)=([\w.-]+)=", readme))
    if created != secret_keys:
        fail(f"README.md's `kubectl create secret` makes keys {sorted(created)}, the manifests use {sorted(secret_keys)}")

    # DEPOT_ variables set on the container are config keys' variables.
    shipped = yaml.safe_load(open(os.path.join(ROOT, "config", "depot.yaml"), encoding="utf-8"))
    known = {env_name(p) for p, _ in leaf_paths(shipped) + leaf_paths(config)}
    for name in env:
        if name.startswith("DEPOT_") and name not in known:
            fail(f"env {name}: not the variable of a key of config/depot.yaml or the ConfigMap")

    return report(schema=validate_schema(objects))


def validate_schema(objects: dict[str, list[dict[str, Any]]]) -> str | None:
    try:
        import kubernetes_validate  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        return None
    for kind, docs in objects.items():
        if kind == "Kustomization":  # not a Kubernetes API object: checked structurally above
            continue
        for d in docs:
            body = {k: v for k, v in d.items() if k != "__file"}
            try:
                kubernetes_validate.validate(body, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as e:
                fail(f"{d['__file']}: {kind} does not match the Kubernetes {KUBERNETES_VERSION} schema: {e.message} at {list(e.path)}")
            except Exception as e:  # noqa: BLE001 - any other failure of the validator is a failure too
                fail(f"{d['__file']}: schema validation of {kind} failed: {e}")
    return f"kubernetes-validate {getattr(kubernetes_validate, '__version__', '?')}, Kubernetes {KUBERNETES_VERSION} schemas, strict"


def report(schema: str | None) -> int:
    for f in failures:
        print(f"check-kubernetes: FAIL {f}", file=sys.stderr)
    ran = "structural checks" + (f" + schema validation ({schema})" if schema else " only (kubernetes-validate not installed)")
    if failures:
        print(f"check-kubernetes: {len(failures)} problem(s); {ran}", file=sys.stderr)
        return 1
    print(f"check-kubernetes: deploy/kubernetes OK: {ran}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--dir":
        MANIFESTS = sys.argv[2]
    elif len(sys.argv) != 1:
        print("usage: check_kubernetes.py [--dir DIR]", file=sys.stderr)
        sys.exit(2)
    sys.exit(main())
