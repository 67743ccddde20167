# One Flux node: `docker build -t flux .`, then run it with KAFKA_BOOTSTRAP_SERVERS pointing at a Kafka cluster
# (see docker-compose.cluster.yml). It serves on 0.0.0.0:3000 and keeps its RocksDB stores in /data.
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY flux ./flux
COPY agents ./agents
COPY api ./api
RUN pip install --no-cache-dir ".[otel]" && useradd --create-home flux && mkdir /data && chown flux /data

USER flux
ENV FLUX_HOST=0.0.0.0 \
    FLUX_PORT=3000 \
    FLUX_DATA_DIR=/data \
    PYTHONUNBUFFERED=1
VOLUME /data
EXPOSE 3000
CMD ["flux", "serve"]
