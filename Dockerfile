# loopchat in a container: built in one stage, run from a slim image as a user with no
# privileges, the history database on a volume.
#
#   docker build -t loopchat .
#   docker run -d --name loopchat -p 8080:8080 -v loopchat-data:/var/lib/loopchat loopchat
#
# The image carries a configuration file written by `--print-config` (every key, with
# its help) that listens on 0.0.0.0:8080 and keeps the database on the volume. To use
# your own, mount it over that file:
#   docker run ... -v "$PWD/loopchat.toml:/etc/loopchat/loopchat.toml:ro" loopchat
# `docker kill -s HUP loopchat` reloads it; `docker stop` shuts down gracefully.

FROM rust:1-slim-bookworm AS build
WORKDIR /src
# The manifest names the benches, so cargo wants them present to build anything.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin loopchat \
    && strip target/release/loopchat \
    && target/release/loopchat server 0.0.0.0:8080 \
        --db /var/lib/loopchat/loopchat.db --print-config > loopchat.toml

FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 loopchat \
    && useradd --system --uid 10001 --gid loopchat --home-dir /var/lib/loopchat \
        --shell /usr/sbin/nologin loopchat \
    && install -d -o loopchat -g loopchat -m 0750 /var/lib/loopchat
COPY --from=build /src/target/release/loopchat /usr/local/bin/loopchat
COPY --from=build /src/loopchat.toml /etc/loopchat/loopchat.toml
# By number, so that a runtime (and Kubernetes' runAsNonRoot) can tell it is not root.
USER 10001:10001
WORKDIR /var/lib/loopchat
VOLUME ["/var/lib/loopchat"]
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/loopchat"]
CMD ["server", "--config", "/etc/loopchat/loopchat.toml"]
