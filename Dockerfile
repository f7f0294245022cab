# Builds the CoopStreaming binaries. Used by docker-compose.yml.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The plugin embeds the browser peer (GOOS=js GOARCH=wasm build of peer/wasm).
RUN ./webassets/watch/build-wasm.sh
RUN go build -o /out/ ./origin/cmd/coop-origin ./plugin/cmd/coop-plugin ./peer/cmd/coop-peer

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ffmpeg ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /usr/local/bin/
COPY coop.yml /etc/coop/coop.yml
ENV COOP_PLUGIN_KEYFILE=/var/lib/coop/stream.key
VOLUME /var/lib/coop
# RTMP, RTSP, RTP/RTCP over UDP, plugin peer port, plugin web port (WebRTC
# signalling, browser peer page), API/status page, LL-HLS + player pages.
EXPOSE 1935 8554 8000/udp 8001/udp 7070 7071 9997 8888
ENTRYPOINT ["coop-origin", "--config", "/etc/coop/coop.yml"]
