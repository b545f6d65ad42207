# Worker and CLI image (`quayside-worker`, and `quayside` from producer/cli), for users with a
# registry (not built by the offline scripts).
#   docker build -f deploy/docker/worker.Dockerfile -t quayside/worker:dev .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin quayside-worker --bin quayside

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10002 --no-create-home quayside
COPY --from=build /src/target/release/quayside-worker /src/target/release/quayside /usr/local/bin/
# The Docker runner needs the engine's socket (mounted by docker-compose.yml); the Kubernetes
# runner needs nothing here.
USER 10002
ENTRYPOINT ["quayside-worker", "--log-format", "json"]
