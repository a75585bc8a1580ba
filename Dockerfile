# ENS container: a multi-stage build on Debian 12 slim.
#
# The build stage runs exactly the set-up script a developer runs (tools/ens setup and build), so
# "tools/ens build on a fresh Debian 12" is the proof that this file builds.
# Versions are pinned by the Debian 12 (bookworm) snapshot of the base image's date; pin the image by
# digest in production (docs/operations.md, "Container"): --build-arg BASE_IMAGE=debian:12-slim@sha256:...
# BASE_IMAGE also lets a machine without a registry build from a local Debian 12 image
# (tools/container_check --make-base). Build with Podman as `podman build --format docker`: its default
# OCI format drops HEALTHCHECK.
ARG BASE_IMAGE=debian:12-slim

FROM ${BASE_IMAGE} AS build
ENV DEBIAN_FRONTEND=noninteractive
WORKDIR /src
COPY . /src
RUN tools/ens setup && tools/ens build

FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
# Runtime libraries only: the same list as tools/ens's -dev packages, without headers.
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends \
      libuv1 android-libboringssl libnghttp2-14 libxml2 libhiredis0.14 libcjson1 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/ens --create-home ens
COPY --from=build /src/build/ensd /src/build/ensctl /usr/local/bin/
USER ens
WORKDIR /var/lib/ens
# Configuration comes from the environment (ENS_<SECTION>_<KEY>) or a mounted file passed with
# --config. The master key should come from ENS_SECRETS_MASTER_KEY or a mounted secret file.
ENV ENS_LISTEN_PUBLIC=0.0.0.0:8443 \
    ENS_LISTEN_ADMIN=127.0.0.1:9090 \
    ENS_SECRETS_MASTER_KEY_FILE=/var/lib/ens/ens-master.key \
    ENS_ADMIN_TOKEN_FILE=/var/lib/ens/ens-admin.token \
    ENS_LOG_FORMAT=json
EXPOSE 8443
# The public port opens only once the keys are loaded and Redis answers, so this check fails during
# start-up and while Redis is unreachable: intended (the container is not serving then). The port is
# the one of ENS_LISTEN_PUBLIC. Kept only in Docker-format images (see above); compose repeats it.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${ENS_LISTEN_PUBLIC##*:}${ENS_HTTP_BASE_PATH:-/api/ens}/alive" -o /dev/null \
   || curl -fsSk "https://127.0.0.1:${ENS_LISTEN_PUBLIC##*:}${ENS_HTTP_BASE_PATH:-/api/ens}/alive" -o /dev/null \
   || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/ensd"]
