# syntax=docker/dockerfile:1
# Builds both services; pick one with --target:
#   docker build --target extauthz   -t ghcr.io/authgate/extauthz:0.1.0 .
#   docker build --target deviceflow -t ghcr.io/authgate/deviceflow:0.1.0 .
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ ./cmd/extauthz ./cmd/deviceflow

# Static binaries on distroless: no shell, no package manager, runs as uid 65532 (the manifests' runAsUser).
FROM gcr.io/distroless/static-debian12:nonroot AS extauthz
COPY --from=build /out/extauthz /extauthz
USER 65532:65532
EXPOSE 9191 9090
ENTRYPOINT ["/extauthz"]

FROM gcr.io/distroless/static-debian12:nonroot AS deviceflow
COPY --from=build /out/deviceflow /deviceflow
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/deviceflow"]
