# syntax=docker/dockerfile:1
# The manager in a container: a build stage makes the wheel, the runtime
# stage holds only Python and that wheel, runs as a non-root user and logs
# JSON lines for Cloud Logging. Its RUN steps are the scripts in docker/,
# which CI also runs without Docker (tests/container_steps.sh).
#
#   docker build -t sts-job-manager .
#   docker run --rm sts-job-manager --help
#   docker run --rm -v "$HOME/.config/gcloud:/home/sts/.config/gcloud:ro" \
#       sts-job-manager --project P --source-bucket A --destination-bucket B
#   docker run --rm --entrypoint sts-prepare-tables sts-job-manager --help

FROM rust:1-slim-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN sh docker/build-wheel.sh /wheels

FROM python:3.12-slim-bookworm
COPY docker/install-runtime.sh /tmp/install-runtime.sh
COPY --from=build /wheels /tmp/wheels
RUN sh /tmp/install-runtime.sh /tmp/wheels /opt/sts \
    && rm -rf /tmp/wheels /tmp/install-runtime.sh \
    && useradd --create-home --uid 10001 sts
ENV PATH=/opt/sts/bin:$PATH \
    LOG_FORMAT=json \
    PYTHONUNBUFFERED=1
USER sts
WORKDIR /home/sts
ENTRYPOINT ["sts-job-manager"]
