# syntax=docker/dockerfile:1
#
# msev15-e2e-service: two stages on Alpine.
#   build   - turns the project and every runtime dependency into wheels.
#   runtime - installs those wheels only, and runs the service as an unprivileged user.
#
# Build and run:  docker compose up --build     (or: docker build -t msev15-e2e-service .)
# Same image, other servers:  docker run ... msev15-e2e-service msev15 escalation-mcp

# --- build ---------------------------------------------------------------------------------------
FROM python:3.12-alpine AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# Every runtime dependency publishes musllinux wheels for x86_64 and aarch64 (the test suite
# resolves them for this platform), so no compiler is installed: --only-binary makes a
# dependency that ever loses its wheel fail here with a clear "no matching distribution"
# instead of an obscure compiler error. The project itself is pure Python and always builds.
# The escalation extra is included: the image runs the EscalationComms server too; the azure
# extra too, since a container in Azure is where keyless (managed identity) sign-in is used.
COPY pyproject.toml setup.cfg README.md LICENSE ./
COPY msev15 ./msev15
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --wheel-dir /wheels --only-binary=:all: '.[escalation,azure]'

# --- runtime -------------------------------------------------------------------------------------
FROM python:3.12-alpine AS runtime

ARG APP_UID=10001
ARG APP_GID=10001

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# tini is PID 1: it forwards SIGTERM/SIGINT to the service (which drains in-flight turns on
# them) and reaps zombies. A fixed UID/GID lets host folders mounted on /app/data and /app/logs
# be given to that user (override with --build-arg APP_UID=$(id -u) to match yours).
RUN apk add --no-cache tini=~0.19 \
    && addgroup -S -g "${APP_GID}" app \
    && adduser -S -D -H -u "${APP_UID}" -G app -h /app -s /sbin/nologin app

# The wheels are bind-mounted from the build stage, so they never become a layer of this image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels /wheels/*.whl

WORKDIR /app
RUN mkdir -p /app/data /app/logs \
    && chown "${APP_UID}:${APP_GID}" /app/data /app/logs

USER ${APP_UID}:${APP_GID}

EXPOSE 9080

# No HEALTHCHECK: the product spec turns it off (probe /health from the orchestrator instead).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/sbin/tini", "--"]
CMD ["msev15", "serve"]
