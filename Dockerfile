# Images of the controller and the speaker:
#   docker build --target controller -t <registry>/maglb/controller:<tag> .
#   docker build --target speaker -t <registry>/maglb/speaker:<tag> .
# The backend agent is a role of the speaker (`/speaker --role=backend-agent`, what
# config/backend-agent runs); the backend-agent target is that image with the role preset:
#   docker build --target backend-agent -t <registry>/maglb/backend-agent:<tag> .
# Generated code (CRDs, deepcopy, the compiled BPF programs) is committed, so the build needs
# the Go toolchain only.

FROM golang:1.26 AS builder
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o /out/ ./controller ./speaker

# The controller needs no privilege.
FROM gcr.io/distroless/static:nonroot AS controller
COPY --from=builder /out/controller /controller
USER 65532:65532
ENTRYPOINT ["/controller"]

# The speaker runs as root: ARP/NDP, BGP passwords and the eBPF datapath need capabilities
# such as NET_RAW, NET_ADMIN and BPF, which the DaemonSet in config/speaker adds.
FROM gcr.io/distroless/static AS speaker
COPY --from=builder /out/speaker /speaker
USER 0:0
ENTRYPOINT ["/speaker"]

# The backend agent: the speaker image in its backend-agent role (decapsulation on backend
# nodes; BPF, NET_ADMIN and SYS_ADMIN from config/backend-agent).
FROM speaker AS backend-agent
ENTRYPOINT ["/speaker", "--role=backend-agent"]
