package p2pserver

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/coopstreaming/coop/peerproto/rtcnode"
	"github.com/coopstreaming/coop/plugin/jointoken"
	"github.com/coopstreaming/coop/plugin/pluginapi"
	"github.com/coopstreaming/coop/plugin/signal"
)

// web is the plugin's web port (docs/webrtc.md "Endpoints"): WebRTC
// signalling, whose server-partner connections join the peer listener's
// admission, and the watch page.
type web struct {
	ln  net.Listener
	srv *http.Server
	sig *signal.Server
}

// startWeb opens the web port once (a new address needs a plugin
// restart); under s.mu.
func (s *Service) startWeb(st pluginapi.Settings) error {
	if s.web != nil || st.WebAddress == "" {
		return nil
	}
	ln, err := net.Listen("tcp", st.WebAddress)
	if err != nil {
		return fmt.Errorf("web listen on %s: %w", st.WebAddress, err)
	}
	opts := rtcnode.Options{IncludeLoopback: true}
	if ta, ok := ln.Addr().(*net.TCPAddr); ok && ta.IP.IsLoopback() {
		opts.Loopback = true // a loopback web port: loopback candidates only
	}
	for _, is := range st.ICEServers {
		opts.ICEServers = append(opts.ICEServers, rtcnode.ICEServer{URLs: is.URLs, Username: is.Username, Credential: is.Credential})
	}
	sig := &signal.Server{
		ServerPeer: ServerID, Options: opts, Log: s.Log.With("component", "signal"),
		Join:       s.joinSignal,
		ServerConn: s.acceptRTC,
	}
	mux := http.NewServeMux()
	mux.Handle("GET /rtc/signal", sig)
	mux.HandleFunc("GET /rtc/health", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	watch := s.Watch
	if watch == nil {
		watch = http.NotFoundHandler() // the watch page is not built into this plugin
	}
	mux.Handle("/watch/", watch)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, MaxHeaderBytes: 16 << 10,
		IdleTimeout: time.Minute}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.Log.Warn("web port stopped", "err", err)
		}
	}()
	s.web = &web{ln: ln, srv: srv, sig: sig}
	s.Log.Info("web port listening (WebRTC signalling /rtc/signal, watch page /watch/)", "address", ln.Addr().String())
	return nil
}

// webAddress is the bound web port ("" off); under s.mu.
func (s *Service) webAddress() string {
	if s.web == nil {
		return ""
	}
	return s.web.ln.Addr().String()
}

// stopWeb closes the web port and its sockets.
func (s *Service) stopWeb(w *web) {
	if w != nil {
		_ = w.srv.Close()
	}
}

// joinSignal checks a signalling join: the stream is served here and the
// join token is valid for it.
func (s *Service) joinSignal(stream, token string) string {
	s.mu.Lock()
	_, ok := s.streams[stream]
	secret := []byte(s.settings.TokenSecret)
	s.mu.Unlock()
	if !ok {
		return rtcnode.CodeUnknownStream
	}
	if jointoken.Check(secret, stream, token, time.Now()) != nil {
		return rtcnode.CodeBadToken
	}
	return ""
}

// acceptRTC takes an open data channel to the server partner as one more
// inbound peer connection: the same pending-slot admission (by the
// signalling socket's IP), Hello deadline, stream dispatch and caps as
// the TCP listener's.
func (s *Service) acceptRTC(_ string, nc net.Conn, ip string) {
	if reason := s.adm.enter(ip); reason != "" {
		if s.adm.reject(reason) {
			s.Log.Warn("WebRTC peer connection refused: too many waiting for a Hello (logged once per 10 s)",
				"reason", reason, "remote", ip)
		}
		nc.Close()
		return
	}
	go func() {
		defer s.adm.leave(ip)
		s.dispatch(nc)
	}()
}

// SignalCounters are the signalling endpoint's figures (nil: no web port).
func (s *Service) SignalCounters() *signal.Counters {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.web == nil {
		return nil
	}
	return s.web.sig.Counters()
}
