# Build: the query macros check against the committed .sqlx/ data, so no database is needed.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin quickdonate

FROM debian:bookworm-slim
# DATA_DIR is the service's own to write (receipts as .eml files without SMTP_URL, in
# development): made here, owned by its user, so a volume mounted on it starts out theirs too.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app quickdonate \
 && mkdir -p /var/lib/quickdonate \
 && chown quickdonate:quickdonate /var/lib/quickdonate
WORKDIR /app
COPY --from=build /src/target/release/quickdonate /usr/local/bin/quickdonate
COPY config ./config
USER quickdonate
# Production unless told otherwise: it needs the Stripe keys and DATABASE_URL, and never
# simulates payments or starts a Postgres of its own.
ENV APP_ENV=production LISTEN_ADDR=0.0.0.0:8080 LOG_FORMAT=json DATA_DIR=/var/lib/quickdonate
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD curl -fsS http://127.0.0.1:8080/readyz || exit 1
ENTRYPOINT ["quickdonate"]
CMD ["serve"]
