#!/usr/bin/env python3
"""Tests of scripts/check_kubernetes.py: the shipped manifests pass, and each kind of mistake the
checker is there to catch, made in a copy of them, fails it with a message naming the mistake."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from collections.abc import Callable
from typing import Any

import yaml

SCRIPTS = os.path.dirname(os.path.abspath(__file__))
SHIPPED = os.path.join(os.path.dirname(SCRIPTS), "deploy", "kubernetes")

try:
    import kubernetes_validate  # type: ignore[import-not-found, import-untyped, unused-ignore]  # noqa: F401

    HAVE_SCHEMAS = True
except ImportError:
    HAVE_SCHEMAS = False


def run(directory: str) -> tuple[int, str]:
    p = subprocess.run(
        [sys.executable, os.path.join(SCRIPTS, "check_kubernetes.py"), "--dir", directory],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return p.returncode, p.stdout + p.stderr


class CheckKubernetesTests(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="depot-k8s-")
        self.addCleanup(shutil.rmtree, self.dir)
        for name in os.listdir(SHIPPED):
            shutil.copy(os.path.join(SHIPPED, name), self.dir)

    def edit(self, name: str, change: Callable[[dict[str, Any]], None]) -> None:
        path = os.path.join(self.dir, name)
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
        change(doc)
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump(doc, f)

    def edit_config(self, change: Callable[[dict[str, Any]], None]) -> None:
        def on_map(cm: dict[str, Any]) -> None:
            config = yaml.safe_load(cm["data"]["depot.yaml"])
            change(config)
            cm["data"]["depot.yaml"] = yaml.safe_dump(config)

        self.edit("configmap.yaml", on_map)

    def assertFails(self, *fragments: str) -> None:
        code, out = run(self.dir)
        self.assertEqual(code, 1, out)
        for f in fragments:
            self.assertIn(f, out)

    def container(self, d: dict[str, Any]) -> dict[str, Any]:
        c: dict[str, Any] = d["spec"]["template"]["spec"]["containers"][0]
        return c

    def test_shipped_manifests_pass(self) -> None:
        code, out = run(SHIPPED)
        self.assertEqual(code, 0, out)
        self.assertIn("schema validation" if HAVE_SCHEMAS else "structural checks only", out)

    def test_selector_not_matching_the_pods(self) -> None:
        self.edit("service.yaml", lambda d: d["spec"]["selector"].update({"app.kubernetes.io/name": "other"}))
        self.assertFails("Service selector")

    def test_pdb_selecting_other_pods(self) -> None:
        self.edit("pdb.yaml", lambda d: d["spec"]["selector"]["matchLabels"].update({"tier": "x"}))
        self.assertFails("PodDisruptionBudget selector")

    def test_probe_on_a_path_depot_does_not_serve(self) -> None:
        self.edit("deployment.yaml", lambda d: self.container(d)["readinessProbe"]["httpGet"].update({"path": "/ready"}))
        self.assertFails("readinessProbe")

    def test_probe_on_a_route_that_needs_credentials(self) -> None:
        # /metrics exists but needs the admin action: a probe would get 401.
        self.edit("deployment.yaml", lambda d: self.container(d)["livenessProbe"]["httpGet"].update({"path": "/metrics"}))
        self.assertFails("livenessProbe")

    def test_writable_root_filesystem(self) -> None:
        self.edit("deployment.yaml", lambda d: self.container(d)["securityContext"].update({"readOnlyRootFilesystem": False}))
        self.assertFails("readOnlyRootFilesystem")

    def test_a_file_key_outside_every_volume(self) -> None:
        self.edit_config(lambda c: c["auth"].update({"bootstrap_token_file": "/etc/depot/admin-token"}))
        self.assertFails("auth.bootstrap_token_file", "no mounted volume")

    def test_a_file_key_naming_a_secret_item_that_is_not_mounted(self) -> None:
        self.edit_config(lambda c: c["signing"].update({"key_file": "/etc/depot/secrets/other.pem"}))
        self.assertFails("signing.key_file", "not an item")

    def test_an_env_key_naming_an_unset_variable(self) -> None:
        self.edit_config(lambda c: c["storage"]["s3"].update({"secret_key_env": "S3_SECRET"}))
        self.assertFails("storage.s3.secret_key_env", "S3_SECRET")

    def test_a_secret_key_the_readme_does_not_create(self) -> None:
        def change(d: dict[str, Any]) -> None:
            for v in d["spec"]["template"]["spec"]["volumes"]:
                for item in (v.get("secret") or {}).get("items", []):
                    if item["path"] == "admin-token":
                        item["key"] = "first-admin-token"

        self.edit("deployment.yaml", change)
        self.assertFails("kubectl create secret")

    def test_a_secret_item_no_key_uses(self) -> None:
        self.edit_config(lambda c: c["auth"].pop("bootstrap_token_file"))
        self.assertFails("item admin-token is named by no *_file key")

    def test_a_misspelt_depot_variable(self) -> None:
        self.edit("deployment.yaml", lambda d: self.container(d)["env"].append({"name": "DEPOT_SERVER_LOGLEVEL", "value": "debug"}))
        self.assertFails("DEPOT_SERVER_LOGLEVEL")

    def test_listen_port_not_the_container_port(self) -> None:
        self.edit_config(lambda c: c["server"].update({"listen": "0.0.0.0:6000"}))
        self.assertFails("server.listen")

    def test_a_manifest_kustomization_does_not_list(self) -> None:
        shutil.copy(os.path.join(self.dir, "service.yaml"), os.path.join(self.dir, "extra.yaml"))
        self.assertFails("kustomization.yaml")

    @unittest.skipUnless(HAVE_SCHEMAS, "kubernetes-validate is not installed")
    def test_schema_rejects_an_unknown_field_and_a_wrong_type(self) -> None:
        self.edit("deployment.yaml", lambda d: self.container(d)["livenessProbe"].update({"httpGett": {}}))
        self.edit("pdb.yaml", lambda d: d["spec"].update({"maxUnavailable": [1]}))
        self.assertFails("httpGett", "pdb.yaml")


if __name__ == "__main__":
    unittest.main()
