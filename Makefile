# CoopStreaming — build, run, test and benchmark targets.
# Every target works on a fresh Debian machine with Go installed; `make deps`
# installs the system tools (ffmpeg) that the tests and the publisher need.

SHELL     := /bin/bash
GO        ?= go
BIN       := bin
PKGS      := ./...
RTMP_URL  ?= rtmp://127.0.0.1:1935/live/demo
PROFILE   ?= quick
# The evaluation lab: discrete-event simulator, swarm scenarios, baselines and
# topologies run on one goroutine (no shared state to race on); the race
# detector only makes them 5-10x slower, so `make test` runs them without it.
# The engine they drive is raced in peerproto/engine and peerproto/tcpnode.
LAB_PKGS  := /lab/
# Parallel tests per package (t.Parallel): the end-to-end tests mostly wait
# on real-time media, so 4 at once; more would pile up ffmpeg encodes on 2
# cores (integration/helpers_test.go says which tests stay serial).
TEST_PARALLEL ?= 4
SUDO      := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# The browser peer's packages whose unit tests also run compiled to
# WebAssembly under Node (make test-wasm): the engine and everything it
# is made of, the segment format, the page's fMP4 conversion and the
# browser driver itself (peer/wasm, whose tests need syscall/js).
WASM_TEST_PKGS := ./peerproto/wire/ ./peerproto/manifest/ ./peerproto/scheduler/ ./peerproto/playback/ \
	./peerproto/buffermap/ ./peerproto/qos/ ./peerproto/push/ ./peerproto/partners/ ./peerproto/upload/ \
	./peerproto/monitor/ ./peerproto/engine/ ./segment/ ./peer/fmp4/ ./peer/wasm/frames/ ./peer/wasm/

.PHONY: help build run peer proto play-peer sim sim-speed test test-short test-wasm wasm lint fuzz bench chaos deps publish play

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

deps: ## install the system tools the tests need when missing (ffmpeg, chromium, redis-server, GStreamer), then the Go modules
	@missing=""; \
	for pair in ffmpeg:ffmpeg ffprobe:ffmpeg chromium:chromium redis-server:redis-server \
		gst-launch-1.0:"gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav" \
		prlimit:util-linux node:nodejs; do \
		command -v "$${pair%%:*}" >/dev/null || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	$(GO) mod download

wasm: ## build the browser peer (peer/wasm → webassets/watch/dist/peer.wasm.gz + wasm_exec.js), which go build embeds
	GO=$(GO) ./webassets/watch/build-wasm.sh

build: wasm ## build every binary into bin/ (coop-origin, coop-plugin, coop-peer; the plugin embeds the browser peer)
	$(GO) build -o $(BIN)/ ./origin/cmd/coop-origin ./plugin/cmd/coop-plugin ./peer/cmd/coop-peer

run: build ## run the origin, which launches the P2P plugin, with embedded defaults (coop.yml when present)
	./$(BIN)/coop-origin $(if $(wildcard coop.yml),--config coop.yml,)

peer: build ## join live/demo through the plugin and re-serve it on http://127.0.0.1:8090/stream.ts
	./$(BIN)/coop-peer --server 127.0.0.1:7070 --stream live/demo --http 127.0.0.1:$${PEER_HTTP_PORT:-8090}

proto: ## regenerate plugin/pluginapi/pluginv1 (needs protoc, protoc-gen-go v1.36.6, protoc-gen-go-grpc v1.5.1)
	protoc -I plugin/pluginapi --go_out=plugin/pluginapi --go_opt=paths=source_relative \
		--go-grpc_out=plugin/pluginapi --go-grpc_opt=paths=source_relative pluginv1/p2p.proto

test: deps wasm ## vet, then every test: concurrent code with the race detector, the single-goroutine simulator lab without
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -parallel $(TEST_PARALLEL) -timeout 15m $$($(GO) list $(PKGS) | grep -vE '$(LAB_PKGS)')
	$(GO) test -count=1 -timeout 10m $$($(GO) list $(PKGS) | grep -E '$(LAB_PKGS)')
	$(MAKE) test-wasm

test-wasm: ## the engine's unit tests compiled to WebAssembly, run under Node (go_js_wasm_exec)
	GOOS=js GOARCH=wasm $(GO) vet ./peer/wasm/
	GOOS=js GOARCH=wasm $(GO) test -count=1 -timeout 10m -exec="$$($(GO) env GOROOT)/lib/wasm/go_js_wasm_exec" $(WASM_TEST_PKGS)

test-short: ## unit tests only (no ffmpeg, no child processes)
	$(GO) test -short -count=1 $(PKGS)

lint: ## gofmt, go vet, import rules
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet $(PKGS)
	$(GO) test -short -count=1 -run TestImportRules ./integration/

fuzz: ## run every fuzz target for FUZZTIME each (default 10s)
	@for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list 'Fuzz.*' $$pkg 2>/dev/null | grep ^Fuzz); do \
			$(GO) test -run XXX -fuzz "^$$f$$" -fuzztime $${FUZZTIME:-10s} $$pkg || exit 1; \
		done; \
	done

bench: deps ## benchmarks → bench/results/: swarm (emulated), real processes vs client/server, origin fan-out, micro (PROFILE=full for larger N)
	mkdir -p bench/results
	set -o pipefail; COOP_BENCH=1 COOP_BENCH_PROFILE=$(PROFILE) $(GO) test -count=1 -timeout 60m -run 'TestBench' -v ./integration/ \
		| grep -E '^(---|ok|FAIL)|bench_|^\s+\|'
	$(GO) test -run XXX -bench . -benchmem -count=3 ./segment/... ./origin/... ./peerproto/... ./lab/... | tee bench/results/micro.txt

chaos: deps ## hostile-load harness: attacks on a live origin + plugin with canary peers and readers → bench/results/chaos.{md,json} (COOP_CHAOS_ONLY=substring to pick attacks)
	mkdir -p bench/results
	set -o pipefail; COOP_CHAOS=1 $(GO) test -count=1 -timeout 30m -run 'TestChaos$$' -v ./integration/ \
		| grep -E '^(---|ok|FAIL)|chaos'

sim: ## simulator evaluation, CoopStreaming vs tree and gossip → sim/results/ and docs/evaluation.md (PROFILE=full: N to 10 000, 300 s, 3 seeds)
	mkdir -p sim/results
	set -o pipefail; COOP_SIM=1 COOP_SIM_PROFILE=$(PROFILE) $(GO) test -count=1 -timeout 90m -run 'TestSimEvaluation' -v ./integration/ \
		| grep -E '^(---|ok|FAIL)|sim_test'

sim-speed: ## simulator speed: 5 000 peers x 300 simulated seconds, alone (~16 min) → sim/results/speed_5000x300s.json
	mkdir -p sim/results
	set -o pipefail; COOP_SIM_SPEED=1 $(GO) test -count=1 -timeout 60m -run 'TestSimSpeed' -v ./integration/ \
		| grep -E '^(---|ok|FAIL)|sim_test'

publish: ## push a test pattern to RTMP_URL with ffmpeg (the OBS stand-in)
	ffmpeg -hide_banner -re -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine \
		-pix_fmt yuv420p -c:v libx264 -bf 3 -g 60 -c:a aac -f flv $(RTMP_URL)

play: ## play the demo stream from the origin with ffplay
	ffplay rtsp://127.0.0.1:8554/live/demo

play-peer: ## play the demo stream through a coop-peer started with `make peer`
	ffplay http://127.0.0.1:$${PEER_HTTP_PORT:-8090}/stream.ts
