# syntax=docker/dockerfile:1
# The Conduit service as a static binary on a distroless image.
# `cdk deploy` builds this file for linux/amd64 (see cdk/), and CI runs the
# same `go build` line on its own, since no Docker engine runs there.

# The builder runs on the host's platform and cross-compiles, so an ARM laptop
# builds an amd64 image quickly and without emulation.
FROM --platform=$BUILDPLATFORM golang:1.26-alpine AS build
WORKDIR /src
# Modules first: this layer stays cached until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG TARGETOS TARGETARCH
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -ldflags="-s -w" -o /out/conduit .

# distroless/static holds the system CA certificates and a nonroot user, nothing else.
FROM gcr.io/distroless/static-debian12:nonroot
# RDS for PostgreSQL 15+ forces TLS; the service verifies the server against
# this bundle (DB_SSLMODE=verify-full). A file ADDed from a URL is mode 600 and
# owned by root, hence --chmod so the nonroot user can read it.
ADD --chmod=644 https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem /etc/ssl/certs/rds-global-bundle.pem
COPY --from=build /out/conduit /conduit
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/conduit"]
