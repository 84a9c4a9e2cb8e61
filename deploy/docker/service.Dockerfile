# syntax=docker/dockerfile:1.7
# One image recipe for every ScrewOps service, built from the repository root:
#   docker build -f deploy/docker/service.Dockerfile --build-arg SERVICE=ingestion .
# The services share one skeleton and one lock file, so they share this file too (the service is
# the only difference). The dependency layer depends only on the lock and the package manifests,
# so editing code does not reinstall dependencies; the runtime image runs as a non-root user.
ARG PYTHON=3.11

FROM python:${PYTHON}-slim AS manifests
WORKDIR /src
COPY . .
# Only the workspace's manifests and the lock: the inputs of the dependency layer.
RUN mkdir /out && cp uv.lock pyproject.toml /out/ \
    && find libs services -name pyproject.toml -exec cp --parents {} /out \;

FROM python:${PYTHON}-slim AS build
ARG SERVICE
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
WORKDIR /app
COPY --from=manifests /out/ ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-default-groups --no-install-workspace --package "screwops-${SERVICE}"
COPY libs libs
COPY services services
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-default-groups --no-editable --package "screwops-${SERVICE}"

FROM python:${PYTHON}-slim
ARG SERVICE
ENV PATH=/app/.venv/bin:$PATH SERVICE_MODULE=screwops_${SERVICE}
RUN useradd --create-home --uid 10001 screwops
COPY --from=build /app/.venv /app/.venv
USER 10001
CMD ["sh", "-c", "exec python -m \"$SERVICE_MODULE\""]
