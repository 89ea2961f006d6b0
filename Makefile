# Huddle build, run and test entry points. `make test` is what CI runs.
GO        ?= go
BIN       := bin/huddle
PKGS      := ./...
# Debian packages the tests need; installed by `make deps` only when missing.
TEST_DEBS := chromium nodejs iproute2 redis-server nftables
SAMPLES   := signaling/bots/media

.PHONY: build run test unit jstest e2e netns bench lint deps samples clean

build:
	$(GO) build -o $(BIN) ./cmd/huddle

run: build
	./$(BIN) serve

# deps installs what the tests use, idempotently: packages already
# installed (dpkg says so) are skipped, so a second run costs nothing.
deps:
	@missing=""; for p in $(TEST_DEBS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

test: deps build lint unit jstest e2e netns

unit:
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

jstest:
	node --test web/

# e2e runs the browser test (headless Debian Chromium, chromedp) in a
# fresh network namespace that has only loopback, so it is hermetic.
e2e: build
	$(GO) test -c -o bin/e2e.test ./web/e2e
	unshare -n sh -c 'ip link set lo up && HUDDLE_BIN=$(CURDIR)/$(BIN) ./bin/e2e.test -test.v -test.timeout 5m'

# netns runs the impaired-network tests (root: network namespaces, tc tbf,
# nft loss), without -race: they measure adaptation in real time, which the
# race detector's slowdown would distort. They run the server built here
# (a build per test would take a core at each test's start).
NETNS_TESTS := 'TestSimulcastAdaptsToRateLimit|TestREMBCapsPublisherWithoutSimulcast|TestNACKRecoversRandomLoss|TestUplinkLossReported|TestLostConnectionScored'
netns: build
	HUDDLE_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 10m -v -run $(NETNS_TESTS) ./signaling/bots/

bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet $(PKGS)

# samples regenerates the bots' committed sample media with Debian's ffmpeg
# (installed here only when needed). The exact commands are these.
samples:
	@dpkg-query -W -f='$${Status}' ffmpeg 2>/dev/null | grep -q "install ok installed" || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ffmpeg; }
	mkdir -p $(SAMPLES)
	for spec in 1280x720:1500k:vp8_720p 640x360:500k:vp8_360p 320x180:150k:vp8_180p; do \
	  size=$${spec%%:*}; rest=$${spec#*:}; rate=$${rest%%:*}; name=$${rest#*:}; \
	  ffmpeg -hide_banner -loglevel error -y -f lavfi -i "testsrc2=size=$$size:rate=30:duration=10" \
	    -c:v libvpx -b:v $$rate -minrate $$rate -maxrate $$rate -bufsize $$rate -g 75 -keyint_min 75 \
	    -deadline realtime -cpu-used 8 -auto-alt-ref 0 -lag-in-frames 0 -error-resilient 1 -pix_fmt yuv420p \
	    $(SAMPLES)/$$name.ivf || exit 1; \
	done
	ffmpeg -hide_banner -loglevel error -y -f lavfi -i "sine=frequency=440:sample_rate=48000:duration=10" \
	  -ac 2 -c:a libopus -b:a 48k -frame_duration 20 -page_duration 20000 $(SAMPLES)/opus_48k.ogg

clean:
	rm -rf bin
