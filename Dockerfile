# Depot: multi-stage build. The build stage uses the Swift 6.3 toolchain image; the runtime is
# a slim Debian with only the shared libraries the binary needs (the Swift runtime is linked
# statically). Not built in CI here (no Docker engine on the build machines); keep it in step
# with scripts/install-deps.sh and the README.
FROM swift:6.3-bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      pkg-config libzstd-dev libsqlite3-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
RUN swift build -c release --product depot --static-swift-stdlib \
 && install -D .build/release/depot /out/depot

FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libzstd1 libsqlite3-0 libssl3 libstdc++6 zlib1g ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /var/lib/depot depot \
 && mkdir -p /var/lib/depot /etc/depot && chown depot /var/lib/depot
COPY --from=build /out/depot /usr/local/bin/depot
COPY config/depot.yaml /etc/depot/depot.yaml
USER depot
VOLUME /var/lib/depot
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=3s CMD curl -fsS http://127.0.0.1:5000/healthz || exit 1
ENTRYPOINT ["depot"]
CMD ["serve", "--config", "/etc/depot/depot.yaml", "--listen", "0.0.0.0:5000", "--storage", "/var/lib/depot"]
