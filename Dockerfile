# syntax=docker/dockerfile:1
#
# The worker image: kds-consumer (the entrypoint) and kdsctl (the operator tool, used by
# the chart's init job and handy in `kubectl exec`), static binaries on distroless.
#
#   docker build -t kds-consumer-test .
#   minikube image load kds-consumer-test:latest     # or build after eval $(minikube docker-env)

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION} AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-mod=readonly
# Dependencies first, so that a source change does not download the modules again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
ARG TARGETOS=linux
ARG TARGETARCH
# The build the binaries report (`kds-consumer version`, kds_build_info): the image has no
# .git, so pass them, e.g. --build-arg VERSION=$(git describe --tags --always --dirty)
# --build-arg REVISION=$(git rev-parse HEAD) (make image does).
ARG VERSION=unknown
ARG REVISION=unknown
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags "-s -w -X github.com/kds-lease-manager/kds-lease-manager/internal/buildinfo.stampedVersion=${VERSION} -X github.com/kds-lease-manager/kds-lease-manager/internal/buildinfo.stampedRevision=${REVISION}" -o /out/ ./cmd/kds-consumer ./cmd/kdsctl

# Static binaries need no libc: distroless/static has CA certificates, tzdata and a
# nonroot user (65532), and no shell.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/kds-consumer /usr/local/bin/kds-consumer
COPY --from=build /out/kdsctl /usr/local/bin/kdsctl
USER 65532:65532
# /health, /ready, /metrics (HEALTH_ADDR).
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/kds-consumer"]
