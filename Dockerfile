# syntax=docker/dockerfile:1
# mail_exporter as a container image.
#
#   docker build -t mail-exporter .
#   docker run -d --name mail-exporter -p 9469:9469 \
#     -v "$PWD/mail_exporter.yml:/etc/mail-exporter/mail_exporter.yml:ro" mail-exporter
#
# The config (and any password_file it names) goes into /etc/mail-exporter; the image
# ships none, so a container without one exits at once, saying which file is missing.
# Flags after the image name are appended to the entrypoint's (e.g. --log.format json).
#
# tests/test_image.py builds it with podman (PYTHON_IMAGE set to a stand-in made from
# Debian's packages) and runs it; tests/test_deploy.py checks its instructions.
#
# Stage 1 builds the wheels of the project and its dependencies; stage 2 installs them
# with pip (docs/running.md's install step, without network or build tools) and runs as an
# unprivileged user. Every dependency ships manylinux wheels; the project's own wheel has
# its log parse compiled with mypyc (MAIL_EXPORTER_COMPILE=1, build_support/), for which
# stage 1 alone has a C compiler.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY build_support/ build_support/
COPY mail_exporter/ mail_exporter/
# The runbook served at /runbook and the example config at /config/example: the package's
# runbook.md and example_config.yml link here, the wheel copies them.
COPY docs/runbook.md docs/
COPY examples/mail_exporter.yml examples/
RUN MAIL_EXPORTER_COMPILE=1 pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="mail_exporter" \
      org.opencontainers.image.description="Prometheus exporter for mail servers" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# A fixed uid/gid, so that file permissions on mounted configs and secrets can name it.
RUN groupadd --system --gid 9469 mail-exporter \
 && useradd --system --uid 9469 --gid mail-exporter --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin mail-exporter
# The wheels are bind-mounted from the build stage, so they leave no layer behind.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels mail-exporter \
 && mail-exporter --version
VOLUME ["/etc/mail-exporter"]
# Numeric, so that Kubernetes' runAsNonRoot can check it: the mail-exporter user above.
USER 9469:9469
EXPOSE 9469
# No curl in slim images: Python asks /-/healthy; any error or non-2xx status is a failure.
# With --web.config.file (TLS or basic auth) this plain request fails: replace the check
# (docker run --health-cmd ..., or a HEALTHCHECK in a derived image) or disable it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9469/-/healthy', timeout=4)"]
ENTRYPOINT ["mail-exporter", "--config.file", "/etc/mail-exporter/mail_exporter.yml", "--web.listen-address", ":9469"]
