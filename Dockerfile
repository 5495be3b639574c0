# The indexer image: `python -m bytewax.run flows.index` as a non-root user, configured only by
# the environment (README "Configuration"). Build from the repository root:
#   docker build -t bsky-indexer .
#   docker run --rm -e REDIS_URL=... -e DATABASE_URL=... bsky-indexer -w 2
#   docker run --rm -e REDIS_URL=... --entrypoint bsky-indexer bsky-indexer status

# Build a wheel in a throwaway stage, so the final image holds the installed package and no source.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl && rm -rf /wheels \
    && useradd --system --uid 10001 --user-group --home-dir /home/indexer --create-home indexer
USER indexer
WORKDIR /home/indexer
# Prometheus /metrics (METRICS_PORT).
EXPOSE 9090
# SIGTERM finishes and acks the batches in flight, then exits 0: give it time (compose:
# stop_grace_period). python is PID 1 and installs its own handler.
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "bytewax.run", "flows.index"]
CMD []
