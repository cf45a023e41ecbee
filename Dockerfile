# Depot: multi-stage build. The build stage uses the Swift 6.3 toolchain image; the runtime is
# a slim Debian with only the shared libraries the binary needs (the Swift runtime is linked
# statically). Not built in CI here (no Docker engine on the build machines); keep it in step
# with scripts/install-deps.sh and the README.
FROM swift:6.3-bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      pkg-config libzstd-dev libsqlite3-dev libssl-dev libpq-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
RUN swift build -c release --product depot --static-swift-stdlib \
 && install -D .build/release/depot /out/depot

FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libzstd1 libsqlite3-0 libpq5 libssl3 libstdc++6 zlib1g ca-certificates curl python3 python3-venv tini bubblewrap \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/depot-hooks \
 && /opt/depot-hooks/bin/pip install --no-cache-dir "numpy<2" onnx onnxruntime skl2onnx scikit-learn \
 && useradd --system --uid 10001 --home /var/lib/depot depot \
 && mkdir -p /var/lib/depot /etc/depot && chown depot /var/lib/depot
COPY --from=build /out/depot /usr/local/bin/depot
COPY config/depot.yaml /etc/depot/depot.yaml
# Pipelines and the built-in hooks. The embedded runner is OFF in the image: stages run in a
# bubblewrap sandbox, which needs user namespaces that a container's default seccomp profile
# refuses, and stages are never run unconfined by default. Run `depot runner` on a host (or a
# container allowed to make namespaces) instead; TensorRT needs a GPU runner of its own:
# `depot runner --labels gpu,tensorrt --limit-memory-gib 0` where trtexec exists.
COPY config/pipelines /etc/depot/pipelines
COPY hooks/builtin /usr/share/depot/hooks/builtin
RUN sed -i -e 's#^  directory: config/pipelines#  directory: /etc/depot/pipelines#' \
           -e 's#^    python: python3#    python: /opt/depot-hooks/bin/python#' \
           -e 's#^    work_dir: ""#    work_dir: /var/lib/depot/runner#' \
           -e 's#^  enabled: false#  enabled: true#' \
           -e 's#^    enabled: true#    enabled: false#' /etc/depot/depot.yaml \
 && grep -q '/etc/depot/pipelines' /etc/depot/depot.yaml && grep -q '/opt/depot-hooks/bin/python' /etc/depot/depot.yaml \
 && grep -q '^  enabled: true' /etc/depot/depot.yaml && grep -q '^    enabled: false' /etc/depot/depot.yaml
USER depot
VOLUME /var/lib/depot
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=3s CMD curl -fsS http://127.0.0.1:5000/healthz || exit 1
# The image listens on 0.0.0.0, so authentication is on: the first start needs DEPOT_ADMIN_TOKEN
# (or auth.bootstrap_token_file), e.g. `docker run -e DEPOT_ADMIN_TOKEN=$(openssl rand -hex 32) …`.
# tini is PID 1: it reaps the grandchildren of stage processes the runner kills by process group.
ENTRYPOINT ["tini", "--", "depot"]
CMD ["serve", "--config", "/etc/depot/depot.yaml", "--listen", "0.0.0.0:5000", "--storage", "/var/lib/depot"]
