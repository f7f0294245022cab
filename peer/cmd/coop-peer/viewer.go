package main

import (
	"context"
	"log/slog"
	"net/http"
	"os/exec"
	"strings"

	"github.com/coopstreaming/coop/peer/feed"
	"github.com/coopstreaming/coop/peer/localhls"
	"github.com/coopstreaming/coop/peer/localrtsp"
	"github.com/coopstreaming/coop/peer/webpage"
)

// viewer is coop-peer's viewer side beside /stream.ts: local RTSP, local
// HLS and the web page, all fed from the played segments.
type viewer struct {
	stream string
	log    *slog.Logger
	feed   *feed.Feed
	rtsp   *localrtsp.Server // nil when --rtsp is empty
	hls    *localhls.Muxer
}

// newViewer starts the feed and the local RTSP server (rtspAddr "": off).
func newViewer(ctx context.Context, stream, rtspAddr string, log *slog.Logger) *viewer {
	v := &viewer{stream: stream, log: log, feed: feed.New(log), hls: &localhls.Muxer{Log: log.With("component", "hls")}}
	v.feed.Add(v.hls)
	if rtspAddr != "" {
		v.rtsp = &localrtsp.Server{Address: rtspAddr, Path: stream, Log: log.With("component", "rtsp")}
		if err := v.rtsp.Start(); err != nil {
			// Several peers on one host (tests, benches) share the
			// default port: the first one serves RTSP, the others go on
			// with HTTP-TS and HLS.
			log.Warn("local RTSP disabled", "err", err)
			v.rtsp = nil
		} else {
			v.feed.Add(v.rtsp)
		}
	}
	go v.feed.Run(ctx)
	return v
}

// play and header are the engine's OnPlay and OnHeader for the viewer.
func (v *viewer) play(seq uint64, layers [][]byte) { v.feed.Play(seq, layers) }
func (v *viewer) header(h []byte)                  { v.feed.SetHeader(h) }

// hlsPath is the local playlist path.
func (v *viewer) hlsPath() string { return "/" + v.stream + "/index.m3u8" }

// register adds the HLS files and the page to mux, served at httpAddr.
func (v *viewer) register(mux *http.ServeMux, httpAddr string) {
	if !strings.ContainsAny(v.stream, "{} ") {
		mux.Handle("GET /"+v.stream+"/{file}", v.hls)
	}
	mux.Handle("GET /hls/{file}", v.hls)
	p := webpage.Page{
		Stream: v.stream, HLSPath: v.hlsPath(),
		HLS: "http://" + httpAddr + v.hlsPath(), TS: "http://" + httpAddr + "/stream.ts",
	}
	if v.rtsp != nil {
		p.RTSP = v.rtsp.URL()
	}
	webpage.Register(mux, p)
	attrs := []any{"page", "http://" + httpAddr + "/", "hls", p.HLS}
	if v.rtsp != nil {
		attrs = append(attrs, "rtsp", p.RTSP)
	}
	v.log.Info("watch", attrs...)
}

// open launches the system browser on url when one exists.
func (v *viewer) open(url string) {
	path, err := exec.LookPath("xdg-open")
	if err != nil {
		v.log.Info("--open: no xdg-open on this system; open the page yourself", "page", url)
		return
	}
	cmd := exec.Command(path, url)
	if err := cmd.Start(); err != nil {
		v.log.Warn("--open", "err", err)
		return
	}
	go func() { _ = cmd.Wait() }()
}

func (v *viewer) close() {
	if v.rtsp != nil {
		v.rtsp.Close()
	}
	v.hls.Close()
}
