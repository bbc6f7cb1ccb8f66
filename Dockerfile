# One image for every role: `mmhub api`, `mmhub relay`, `mmhub worker`, `mmhub migrate`.
FROM python:3.11-slim AS build
COPY --from=ghcr.io/astral-sh/uv:0.9 /uv /bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
WORKDIR /srv/mmhub
# Dependencies first, so code changes do not reinstall them; no embedded servers, no dev tools.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-default-groups --no-install-project
COPY app app
COPY dispatch dispatch
COPY cli cli
COPY migrations migrations
RUN uv sync --locked --no-default-groups --no-editable

FROM python:3.11-slim
# `docker build --build-arg GIT_REVISION=$(git rev-parse HEAD) --build-arg BUILD_TIME=$(date -u +%FT%TZ)`:
# GET /health reports them (the image has no .git to read).
ARG GIT_REVISION=unknown
ARG BUILD_TIME=unknown
RUN useradd --system --uid 10001 --home-dir /srv/mmhub mmhub
WORKDIR /srv/mmhub
# Only the virtualenv: the code runs from its site-packages (migrations included), as in
# tests/deploy/test_image_layout.py, never from a copy of the sources.
COPY --from=build /srv/mmhub/.venv /srv/mmhub/.venv
ENV PATH=/srv/mmhub/.venv/bin:$PATH PYTHONUNBUFFERED=1 MMHUB_HOST=0.0.0.0 \
    MMHUB_GIT_REVISION=$GIT_REVISION MMHUB_BUILD_TIME=$BUILD_TIME
# The numeric id, so a host (or Kubernetes' runAsNonRoot) can tell it is not root.
USER 10001
EXPOSE 8000
# The API's probe; compose.yaml gives the relay and the workers their own (/metrics on
# MMHUB_METRICS_PORT) and none to `migrate`. An exception exits 1: unhealthy.
HEALTHCHECK --interval=10s --timeout=3s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["mmhub", "api"]
