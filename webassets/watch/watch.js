// CoopStreaming browser peer: the JavaScript shell around peer.wasm (the
// Go engine, peer/wasm). It does what Go cannot reach: the signalling
// WebSocket and RTCPeerConnections (docs/webrtc.md), MediaSource playback
// of the fMP4 the wasm hands over. The page is /watch/APP/KEY on the
// plugin's web port, whose /rtc/signal is the signalling socket; query:
// token (join token), key (pin the stream key, 64 hex digits), layers (at
// most this many layers played), delay (playout delay in seconds, as
// coop-peer -playout-delay), upload (bytes/s served to partners).
// Test hook: ?bridge=ws://... carries the server partner's byte stream
// over a WebSocket instead of WebRTC (no peer partners then). Honoured
// only on a loopback page: elsewhere a crafted link could make the page
// play another server's stream under this origin's name.
(function () {
  "use strict";
  const params = new URLSearchParams(location.search);
  const at = location.pathname.indexOf("/watch/");
  const stream = decodeURIComponent(location.pathname.slice(at + "/watch/".length));
  const video = document.getElementById("video");
  const statsEl = document.getElementById("stats");
  document.getElementById("title").textContent = "CoopStreaming — " + stream;
  const PIECE_MAX = 64 * 1024; // a larger received message closes the channel (Go checks too)
  const DIAL_TIMEOUT = 15000;
  const MAX_SETUP = 16; // RTCPeerConnections in setup at once
  const LIVE_LAG = 1.0; // seconds of media kept buffered ahead of the playhead

  let errors = 0;
  // The last events, for whoever debugs the page (tests print them).
  const events = [];
  window.coopEvents = events;
  function note(text) {
    events.push(Math.round(performance.now()) + " " + text);
    if (events.length > 100) events.shift();
  }
  function state(s, text) {
    statsEl.dataset.state = s;
    if (text !== undefined) statsEl.textContent = text;
  }
  function fail(msg) {
    note("error: " + msg);
    errors++;
    statsEl.dataset.errors = String(errors);
    console.warn("coop:", msg);
  }

  function randomHex(bytes) {
    const a = new Uint8Array(bytes);
    crypto.getRandomValues(a);
    let s = Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
    return /^0+$/.test(s) ? randomHex(bytes) : s;
  }
  const myID = randomHex(8);

  // ---------------------------------------------------------------- playback
  // The wasm calls init(mime, bytes) for every stream (re)start and
  // fragment(seq, bytes, layers) for every played segment.
  const play = {
    ms: null, sb: null, mime: "", queue: [], started: false, inits: 0,
    fragments: 0, bytes: 0, layers: 0, missed: 0,
    lastTime: 0, lastMoveAt: 0, inStall: false, maxStallMs: 0, stalls: 0, jumps: 0,
    stallLog: [], // the newest 32 stalls as [start, ms] (performance.now()), so a reader can take its own window's longest
  };

  function onInit(mime, bytes) {
    if (!window.MediaSource || !MediaSource.isTypeSupported(mime)) {
      fail("MediaSource cannot play " + mime);
      state("error", "this browser cannot play " + mime);
      return;
    }
    if (play.sb && play.mime !== mime && play.sb.changeType) {
      play.queue.push({ change: mime });
    }
    if (play.inits++ > 0) {
      // A new stream instance (restart, new header): its timestamps start
      // from zero again; place them after what is buffered.
      play.queue.push({ offsetToEnd: true });
    }
    play.mime = mime;
    play.queue.push(bytes);
    if (!play.ms) {
      play.ms = new MediaSource();
      play.ms.addEventListener("sourceopen", () => {
        play.sb = play.ms.addSourceBuffer(play.mime);
        play.sb.mode = "segments";
        play.sb.addEventListener("updateend", pump);
        play.sb.addEventListener("error", () => fail("SourceBuffer error"));
        pump();
      });
      video.src = URL.createObjectURL(play.ms);
    }
    pump();
  }

  function onFragment(seq, bytes, layers) {
    play.fragments++;
    play.bytes += bytes.length;
    if (layers > 0) play.layers = layers;
    play.queue.push(bytes);
    pump();
  }

  function pump() {
    const sb = play.sb;
    if (!sb || sb.updating || play.queue.length === 0 || play.ms.readyState !== "open") return;
    const next = play.queue[0];
    try {
      if (next.change || next.offsetToEnd) {
        if (next.change) sb.changeType(next.change);
        if (next.offsetToEnd) {
          const b = sb.buffered;
          sb.timestampOffset = b.length ? b.end(b.length - 1) : 0;
        }
        play.queue.shift();
        pump();
        return;
      }
      sb.appendBuffer(next);
      play.queue.shift();
    } catch (e) {
      if (e.name === "QuotaExceededError") {
        trim(5);
      } else {
        play.queue.shift();
        fail("appendBuffer: " + e);
      }
    }
  }

  // trim drops media more than keep seconds behind the playhead.
  function trim(keep) {
    const sb = play.sb;
    if (!sb || sb.updating || sb.buffered.length === 0) return;
    const cut = video.currentTime - keep;
    if (cut > sb.buffered.start(0) + 1) sb.remove(sb.buffered.start(0), cut);
  }

  // Every 250 ms: start once a second is buffered, jump over gaps (a
  // missed segment), keep close to the live edge, count stalls.
  setInterval(() => {
    const b = video.buffered;
    if (b.length === 0) return;
    const end = b.end(b.length - 1);
    if (!play.started) {
      if (end - b.start(b.length - 1) >= LIVE_LAG) {
        video.currentTime = Math.max(b.start(b.length - 1), end - LIVE_LAG);
        play.started = true;
        play.firstPlayMs = performance.now(); // since navigation
        video.play().catch((e) => fail("play: " + e));
      }
      return;
    }
    const t = video.currentTime;
    let inRange = false;
    for (let i = 0; i < b.length; i++) {
      if (t >= b.start(i) - 0.01 && t < b.end(i) - 0.05) inRange = true;
    }
    if (!inRange) { // at a gap (a missed segment): skip to the next range
      for (let i = 0; i < b.length; i++) {
        if (b.start(i) > t) {
          video.currentTime = b.start(i) + 0.01;
          play.jumps++;
          break;
        }
      }
    }
    // Hold the playhead LIVE_LAG behind the newest media: the engine
    // hands a segment over at its playback deadline, so that is the
    // margin for one late segment. Behind it, play 5% faster until back;
    // far behind (a long pause), seek.
    const lag = end - t;
    play.lag = lag;
    if (lag > LIVE_LAG + 3) {
      video.currentTime = end - LIVE_LAG;
      play.jumps++;
    } else {
      const rate = lag > LIVE_LAG + 0.25 ? 1.05 : 1.0;
      if (video.playbackRate !== rate) video.playbackRate = rate;
    }
    if (video.paused && play.started) video.play().catch(() => {});
    // A stall: the playhead did not move between two samples while
    // playing; it lasts from the last sample at which it moved.
    const now = performance.now();
    if (t !== play.lastTime || video.paused || !play.lastMoveAt) {
      play.lastMoveAt = now;
      play.inStall = false;
    } else {
      if (!play.inStall) {
        play.inStall = true;
        play.stalls++;
        play.stallLog.push([play.lastMoveAt, 0]);
        if (play.stallLog.length > 32) play.stallLog.shift();
      }
      play.stallLog[play.stallLog.length - 1][1] = now - play.lastMoveAt;
      play.maxStallMs = Math.max(play.maxStallMs, now - play.lastMoveAt);
    }
    play.lastTime = t;
    trim(20);
  }, 250);

  // ------------------------------------------------------------ transports
  // A channel handed to the wasm: send(Uint8Array), close(), bufferedAmount.
  function attach(ch, name, outbound, rawClose) {
    let handle = -1;
    let open = true;
    const conn = {
      send(a) {
        if (!open) return false;
        try { ch.send(a); return true; } catch (e) { fail("send: " + e); return false; }
      },
      close() {
        if (!open) return;
        open = false;
        rawClose();
        coopPeer.closed(handle);
      },
      get bufferedAmount() { return ch.bufferedAmount; },
    };
    handle = coopPeer.open(conn, name, outbound);
    ch.onmessage = (ev) => {
      if (!(ev.data instanceof ArrayBuffer) || ev.data.byteLength > PIECE_MAX) {
        fail("bad message on a channel");
        conn.close();
        return;
      }
      coopPeer.message(handle, new Uint8Array(ev.data));
    };
    ch.onclose = () => {
      if (!open) return;
      open = false;
      rawClose(); // a data channel's RTCPeerConnection goes with it
      coopPeer.closed(handle);
    };
    if ("bufferedAmountLowThreshold" in ch) {
      ch.bufferedAmountLowThreshold = 256 * 1024;
      ch.onbufferedamountlow = () => coopPeer.drained(handle);
    }
    return conn;
  }

  // Test hook: the server partner over a WebSocket byte stream.
  function dialBridge(name) {
    if (name !== "server") {
      setTimeout(() => coopPeer.dialFailed(name), 0);
      return;
    }
    const ws = new WebSocket(params.get("bridge"));
    ws.binaryType = "arraybuffer";
    let opened = false;
    ws.onopen = () => { opened = true; attach(ws, "server", true, () => ws.close()); };
    ws.onerror = () => { if (!opened) coopPeer.dialFailed("server"); };
    ws.onclose = () => { if (!opened) coopPeer.dialFailed("server"); };
  }

  // WebRTC through the plugin's signalling socket (docs/webrtc.md).
  const sig = { ws: null, joined: false, iceServers: [], sessions: new Map(), waiting: [] };

  function signal(obj) {
    if (sig.ws && sig.ws.readyState === WebSocket.OPEN) sig.ws.send(JSON.stringify(obj));
  }

  function connectSignal() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(proto + "//" + location.host + "/rtc/signal");
    sig.ws = ws;
    ws.onopen = () => ws.send(JSON.stringify({ type: "join", stream: stream, peer: myID, token: params.get("token") || "" }));
    ws.onmessage = (ev) => {
      let m;
      try { m = JSON.parse(ev.data); } catch (e) { fail("signalling: bad JSON"); return; }
      note("signal in: " + m.type + (m.from ? " from " + m.from : "") + (m.code ? " " + m.code : ""));
      onSignal(m);
    };
    ws.onclose = (ev) => {
      note("signalling closed: " + ev.code + " " + ev.reason);
      sig.joined = false;
      for (const name of sig.waiting.splice(0)) coopPeer.dialFailed(name);
      setTimeout(connectSignal, 2000); // open channels keep working meanwhile
    };
  }

  function onSignal(m) {
    switch (m.type) {
      case "joined":
        sig.joined = true;
        sig.iceServers = m.iceServers || [];
        for (const name of sig.waiting.splice(0)) dialRTC(name);
        break;
      case "offer": answerRTC(m); break;
      case "answer": {
        const s = sig.sessions.get(m.session);
        if (s) s.pc.setRemoteDescription({ type: "answer", sdp: m.sdp }).then(() => s.flush()).catch((e) => s.fail("answer: " + e));
        break;
      }
      case "candidate": {
        const s = sig.sessions.get(m.session);
        if (s) s.candidate(m.candidate);
        break;
      }
      case "bye": {
        const s = sig.sessions.get(m.session);
        if (s) s.fail("bye: " + (m.reason || ""));
        break;
      }
      case "error": {
        const s = m.session && sig.sessions.get(m.session);
        if (s) s.fail(m.code);
        else fail("signalling: " + m.code + " " + (m.message || ""));
        break;
      }
    }
  }

  // session is one RTCPeerConnection in setup; name is "server" or the
  // peer's id, remote what the plugin calls it in "to".
  function session(id, remote, name, outbound) {
    const pc = new RTCPeerConnection({ iceServers: sig.iceServers });
    const s = { id, pc, remote, remoteSet: false, pending: [], open: false };
    sig.sessions.set(id, s);
    const timer = setTimeout(() => s.fail("timeout"), DIAL_TIMEOUT);
    pc.onicecandidate = (ev) => signal({ type: "candidate", to: remote, session: id, candidate: ev.candidate ? ev.candidate.toJSON() : null });
    s.flush = () => {
      s.remoteSet = true;
      for (const c of s.pending.splice(0)) pc.addIceCandidate(c).catch(() => {});
    };
    s.candidate = (c) => {
      if (!c) return;
      if (!s.remoteSet) { if (s.pending.length < 64) s.pending.push(c); return; }
      pc.addIceCandidate(c).catch(() => {});
    };
    s.fail = (why) => {
      if (!sig.sessions.has(id)) return;
      note("session " + id + " with " + remote + " failed: " + why);
      sig.sessions.delete(id);
      clearTimeout(timer);
      if (!s.open) {
        signal({ type: "bye", to: remote, session: id, reason: String(why) });
        pc.close();
        if (outbound) coopPeer.dialFailed(name);
      }
    };
    s.channel = (dc) => {
      dc.binaryType = "arraybuffer";
      dc.onopen = () => {
        note("channel open with " + remote);
        s.open = true;
        clearTimeout(timer);
        sig.sessions.delete(id);
        attach(dc, outbound ? name : "", outbound, () => { dc.close(); pc.close(); });
      };
    };
    return s;
  }

  function dialRTC(name) {
    note("dial " + name);
    if (!sig.joined) { sig.waiting.push(name); return; }
    const remote = name; // "server" or 16 hex digits
    const s = session(randomHex(8), remote, name, true);
    s.channel(s.pc.createDataChannel("coop", { ordered: true, protocol: "/coop/2" }));
    s.pc.createOffer()
      .then((o) => s.pc.setLocalDescription(o))
      .then(() => signal({ type: "offer", to: remote, session: s.id, sdp: s.pc.localDescription.sdp }))
      .catch((e) => s.fail("offer: " + e));
  }

  function answerRTC(m) {
    if (!m.from || !m.session || sig.sessions.has(m.session)) return;
    if (sig.sessions.size >= MAX_SETUP) { // offers flooding in: refuse, do not pile up connections
      signal({ type: "bye", to: m.from, session: m.session, reason: "busy" });
      return;
    }
    const s = session(m.session, m.from, m.from, false);
    s.pc.ondatachannel = (ev) => s.channel(ev.channel);
    s.pc.setRemoteDescription({ type: "offer", sdp: m.sdp })
      .then(() => { s.flush(); return s.pc.createAnswer(); })
      .then((a) => s.pc.setLocalDescription(a))
      .then(() => signal({ type: "answer", to: m.from, session: s.id, sdp: s.pc.localDescription.sdp }))
      .catch((e) => s.fail("answer: " + e));
  }

  // ------------------------------------------------------------------ start
  function showStats() {
    let s;
    try { s = JSON.parse(coopPeer.stats()); } catch (e) { return; }
    const q = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : { totalVideoFrames: 0, droppedVideoFrames: 0 };
    const playing = play.started && !video.paused && !play.inStall;
    statsEl.dataset.state = errors > 0 && !playing ? "error" : playing ? "playing" : s.serverConnected ? "waiting for stream" : "connecting";
    statsEl.dataset.errors = String(errors);
    window.coopStats = Object.assign(s, {
      currentTime: video.currentTime, frames: q.totalVideoFrames, dropped: q.droppedVideoFrames,
      stalls: play.stalls, maxStallMs: Math.round(play.maxStallMs), jumps: play.jumps, lagS: play.lag || 0,
      stallLog: play.stallLog.map((s) => [Math.round(s[0]), Math.round(s[1])]), nowMs: Math.round(performance.now()),
      wasmReadyMs: Math.round(play.wasmReadyMs || 0), firstPlayMs: Math.round(play.firstPlayMs || 0),
      appended: play.fragments, appendedBytes: play.bytes,
    });
    statsEl.textContent =
      statsEl.dataset.state + " | peer " + s.peer + " | partners " + s.partners +
      " | layers " + s.layers + "/" + s.maxLayers + " | continuity " + (s.continuity || 0).toFixed(3) +
      " | from server " + Math.round(s.usefulFromServer / 1024) + " KiB, from peers " + Math.round(s.usefulFromPeers / 1024) + " KiB" +
      " | frames " + q.totalVideoFrames + " | stalls " + play.stalls;
  }

  function start(api) {
    play.wasmReadyMs = performance.now(); // since navigation: fetch, compile, Go runtime up
    const loopback = /^(127\.\d+\.\d+\.\d+|localhost|\[::1\])$/.test(location.hostname);
    const bridge = loopback ? params.get("bridge") : null;
    const host = {
      dial: bridge ? dialBridge : dialRTC,
      init: onInit,
      fragment: onFragment,
      missed: () => { play.missed++; },
      log: (level, text) => {
        note(level + ": " + text);
        if (level !== "debug") console.log("coop " + level + ": " + text);
      },
    };
    const err = api.start({
      stream: stream, token: params.get("token") || "", peer: myID, streamKey: params.get("key") || "",
      playLayers: Number(params.get("layers") || 0), uploadCap: Number(params.get("upload") || 0),
      playoutDelayMs: Number(params.get("delay") || 0) * 1000, host: host,
    });
    if (err !== myID) {
      fail("start: " + err);
      state("error", "cannot start the peer: " + err);
      return;
    }
    if (!bridge) connectSignal();
    state("connecting", "connecting…");
    setInterval(showStats, 500);
  }

  window.coopPeerReady = start;
  const go = new Go();
  const wasm = "../_/peer.wasm";
  const run = (r) => go.run(r.instance);
  (WebAssembly.instantiateStreaming
    ? WebAssembly.instantiateStreaming(fetch(wasm), go.importObject)
    : fetch(wasm).then((r) => r.arrayBuffer()).then((b) => WebAssembly.instantiate(b, go.importObject))
  ).then(run).catch((e) => {
    fail("wasm: " + e);
    state("error", "cannot load the peer: " + e);
  });
})();
