#!/usr/bin/env bash
# Runs every test: installs build dependencies and the real peers (skopeo, containerd, CNCF
# distribution, oras, a Python environment with a real Triton server, onnxruntime, skl2onnx),
# builds the depot executable (the crash and pipeline tests run it as a child process), runs the
# whole Swift test suite, then again with the catalog in a throwaway PostgreSQL
# (scripts/test-postgres.sh), then the end-to-end scenarios under scripts/e2e/ (scale-out: three
# replicas behind haproxy on PostgreSQL and an S3 emulator; pipeline; canary; the web UI in headless
# Chromium, screenshots under .build/ui-screenshots) and a smoke run of every
# libFuzzer harness (scripts/fuzz.sh --smoke: past crashes replayed, then a few seconds each), and
# the Python SDK (scripts/test-python-sdk.sh: pip install ./clients/python into a fresh venv, its
# tests, the examples, and the transformers/Lightning/MLflow integrations with the real libraries).
# `swift format lint` runs first, then scripts/test-hooks.sh (the Python hooks: mypy and unit tests).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --test
# Style first: it takes seconds and says exactly which line to change (configuration: .swift-format).
swift format lint --strict -r Sources Tests fuzz Package.swift
# Every Depot*/C* module a target imports is declared in Package.swift.
scripts/check-imports.sh
# The Python pipeline hooks next (mypy + unit tests, about 30 s): they need no Swift build.
scripts/test-hooks.sh
# The Kubernetes manifests (deploy/kubernetes/): schema and structure, about 20 s, no Swift build.
scripts/test-deploy.sh
swift build --product depot
swift test --disable-xctest "$@"
if [[ $# -eq 0 ]]; then
  scripts/test-python-sdk.sh
  scripts/test-postgres.sh
  scripts/e2e/scale.sh
  scripts/e2e/pipeline.sh
  scripts/e2e/canary.sh
  scripts/e2e/ui.sh
  scripts/fuzz.sh --smoke
fi
