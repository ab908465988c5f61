/*
 * Switchboard call client: one browser call to an agent, shared by the page (app.js) and the
 * widget (widget.js). Plain script, no build step: it defines window.Switchboard.
 *
 *   const call = new Switchboard.Call({ baseUrl, token, agent, iceServers });
 *   call.addEventListener("state", (e) => ...);      // e.detail: {state, reason}
 *   call.addEventListener("transcript", ...);        // {speaker, text, final, turn}
 *   call.addEventListener("latency", ...);           // {turn, total_ms, stages}
 *   call.addEventListener("ended", ...);             // {reason}
 *   await call.start();                              // throws Switchboard.CallError
 *   await call.hangup();
 *
 * Signalling is one HTTP request (the offer carries all ICE candidates: no trickle, since the
 * server answers with all of its own). Live events come over a data channel named "events".
 * A lost network path is recovered by offering again on a fresh RTCPeerConnection (the server
 * cannot restart ICE in place), posted to /api/calls/<id>/ice-restart with the call's secret.
 */
(function () {
  "use strict";

  class CallError extends Error {
    // kind: "microphone" | "insecure" | "refused" | "network" | "server"
    constructor(kind, message, { code = "", retryAfter = null, status = 0 } = {}) {
      super(message);
      this.kind = kind;
      this.code = code;
      this.retryAfter = retryAfter;
      this.status = status;
    }
  }

  async function api(baseUrl, path, { method = "GET", token = "", body = null } = {}) {
    const headers = {};
    if (token) headers["Authorization"] = "Bearer " + token;
    if (body !== null) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(baseUrl + path, {
        method, headers, body: body === null ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      throw new CallError("network", "The Switchboard server could not be reached. Check " +
                          "your network connection and try again.");
    }
    if (response.status === 204) return null;
    let data = null;
    try { data = await response.json(); } catch (err) { data = null; }
    if (!response.ok) {
      const error = (data && data.error) || {};
      const kind = response.status >= 500 && response.status !== 503 ? "server" : "refused";
      throw new CallError(kind, error.message || ("The server answered " + response.status),
                          { code: error.code || "", retryAfter: error.retry_after ?? null,
                            status: response.status });
    }
    return data;
  }

  function waitForIceGathering(pc, timeoutMs) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        if (pc.iceGatheringState === "complete") {
          pc.removeEventListener("icegatheringstatechange", done);
          resolve();
        }
      };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, timeoutMs); // send what we have: host candidates come first
    });
  }

  async function getMicrophone() {
    if (!window.isSecureContext || !navigator.mediaDevices ||
        !navigator.mediaDevices.getUserMedia) {
      throw new CallError("insecure", "This page is not secure, so the browser will not give " +
                          "it the microphone. Open it over HTTPS (or on localhost).");
    }
    try {
      return await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
        video: false,
      });
    } catch (err) {
      if (err && (err.name === "NotAllowedError" || err.name === "SecurityError")) {
        throw new CallError("microphone", "Microphone access was denied. Allow the " +
                            "microphone for this site (the icon in the address bar), then " +
                            "press Call again.", { code: "microphone_denied" });
      }
      if (err && (err.name === "NotFoundError" || err.name === "OverconstrainedError")) {
        throw new CallError("microphone", "No microphone was found. Plug one in, then press " +
                            "Call again.", { code: "microphone_missing" });
      }
      throw new CallError("microphone", "The microphone could not be opened (" +
                          (err && err.name) + "). Close other apps using it and try again.",
                          { code: "microphone_error" });
    }
  }

  class Call extends EventTarget {
    constructor({ baseUrl = "", token = "", agent = "", iceServers = [] } = {}) {
      super();
      this.baseUrl = baseUrl.replace(/\/$/, "");
      this.token = token;
      this.agent = agent;
      this.iceServers = iceServers;
      this.state = "idle";
      this.callId = null;
      this.codec = "";
      this._secret = null;
      this._pc = null;
      this._stream = null;
      this._audio = null;
      this._ended = false;
      this._restarting = false;
      this._lostTimer = null;
      this._onPageHide = () => this._beaconHangup();
    }

    _emit(type, detail) {
      this.dispatchEvent(new CustomEvent(type, { detail }));
    }

    _setState(state, reason = "") {
      if (this.state === state) return;
      this.state = state;
      this._emit("state", { state, reason });
    }

    async start() {
      this._setState("connecting");
      try {
        this._stream = await getMicrophone();
        const pc = this._newPeerConnection();
        const offer = await this._offer(pc);
        const answer = await api(this.baseUrl, "/api/calls", {
          method: "POST", token: this.token,
          body: { sdp: offer, type: "offer", agent: this.agent },
        });
        this.callId = answer.call_id;
        this._secret = answer.call_secret;
        this.codec = answer.codec || "";
        this._pc = pc;
        await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
        window.addEventListener("pagehide", this._onPageHide);
      } catch (err) {
        this._cleanup();
        this._setState("idle");
        throw err;
      }
    }

    _newPeerConnection() {
      const pc = new RTCPeerConnection({ iceServers: this.iceServers });
      for (const track of this._stream.getAudioTracks()) pc.addTrack(track, this._stream);
      const channel = pc.createDataChannel("events");
      channel.onmessage = (e) => this._onMessage(pc, e.data);
      pc._events = channel;
      pc.ontrack = (e) => {
        if (!this._audio) {
          this._audio = new Audio();
          this._audio.autoplay = true;
        }
        this._audio.srcObject = e.streams[0] || new MediaStream([e.track]);
        this._audio.play().catch(() => { /* autoplay may wait for a gesture; Call was one */ });
      };
      pc.onconnectionstatechange = () => this._onConnectionState(pc);
      return pc;
    }

    async _offer(pc) {
      await pc.setLocalDescription(await pc.createOffer());
      await waitForIceGathering(pc, 2000);
      return pc.localDescription.sdp;
    }

    _onMessage(pc, data) {
      if (pc !== this._pc) return;
      let event;
      try { event = JSON.parse(data); } catch (err) { return; }
      if (event.type === "state") {
        this._setState(event.state, event.reason || "");
        if (event.state === "ended") this._finish(event.reason || "ended");
      } else if (event.type === "transcript" || event.type === "latency") {
        this._emit(event.type, event);
      }
    }

    _onConnectionState(pc) {
      if (pc !== this._pc || this._ended) return;
      const state = pc.connectionState;
      if (state === "connected") {
        clearTimeout(this._lostTimer);
        this._lostTimer = null;
        if (this.state === "reconnecting") this._setState("listening");
      } else if (state === "disconnected") {
        // Often transient (a Wi-Fi hiccup): give the path 2 s before rebuilding it.
        clearTimeout(this._lostTimer);
        this._lostTimer = setTimeout(() => this._reconnect(), 2000);
      } else if (state === "failed") {
        this._reconnect();
      }
    }

    async _reconnect() {
      if (this._ended || this._restarting) return;
      this._restarting = true;
      this._setState("reconnecting");
      this._emit("connection", { lost: true });
      try {
        for (let attempt = 0; attempt < 4 && !this._ended; attempt++) {
          const pc = this._newPeerConnection();
          try {
            const offer = await this._offer(pc);
            const answer = await api(this.baseUrl, "/api/calls/" + this.callId + "/ice-restart",
                                     { method: "POST", body: { sdp: offer,
                                                               call_secret: this._secret } });
            const old = this._pc;
            this._pc = pc;
            await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
            if (old) old.close();
            this._emit("connection", { lost: false });
            return;
          } catch (err) {
            pc.close();
            if (err instanceof CallError && err.status === 404) {
              this._finish("transport_failed");
              return;
            }
            await new Promise((r) => setTimeout(r, 1000 * 2 ** attempt));
          }
        }
        this._finish("transport_failed");
      } finally {
        this._restarting = false;
      }
    }

    async hangup() {
      if (this._ended || !this.callId) {
        this._cleanup();
        return;
      }
      const pc = this._pc;
      try {
        if (pc && pc._events && pc._events.readyState === "open") {
          pc._events.send(JSON.stringify({ type: "hangup" }));
        }
      } catch (err) { /* the channel may be closing */ }
      try {
        await api(this.baseUrl, "/api/calls/" + this.callId + "/hangup",
                  { method: "POST", body: { call_secret: this._secret } });
      } catch (err) { /* already ended on the server */ }
      this._finish("caller_hangup");
    }

    sendDigit(digit) {
      const pc = this._pc;
      if (pc && pc._events && pc._events.readyState === "open") {
        pc._events.send(JSON.stringify({ type: "dtmf", digit: String(digit) }));
      }
    }

    async stats() {
      const out = { bytesReceived: 0, packetsReceived: 0, audioLevel: 0, totalAudioEnergy: 0,
                    bytesSent: 0, packetsSent: 0, codec: this.codec };
      if (!this._pc) return out;
      const report = await this._pc.getStats();
      report.forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "audio") {
          out.bytesReceived += s.bytesReceived || 0;
          out.packetsReceived += s.packetsReceived || 0;
          out.audioLevel = Math.max(out.audioLevel, s.audioLevel || 0);
          out.totalAudioEnergy += s.totalAudioEnergy || 0;
        } else if (s.type === "outbound-rtp" && s.kind === "audio") {
          out.bytesSent += s.bytesSent || 0;
          out.packetsSent += s.packetsSent || 0;
        }
      });
      return out;
    }

    _beaconHangup() {
      if (this._ended || !this.callId || !navigator.sendBeacon) return;
      navigator.sendBeacon(this.baseUrl + "/api/calls/" + this.callId + "/hangup",
                           JSON.stringify({ call_secret: this._secret }));
    }

    _finish(reason) {
      if (this._ended) return;
      this._ended = true;
      this._setState("ended", reason);
      this._cleanup();
      this._emit("ended", { reason });
    }

    _cleanup() {
      clearTimeout(this._lostTimer);
      window.removeEventListener("pagehide", this._onPageHide);
      if (this._pc) this._pc.close();
      this._pc = null;
      if (this._stream) this._stream.getTracks().forEach((t) => t.stop());
      if (this._audio) this._audio.srcObject = null;
    }
  }

  window.Switchboard = Object.assign(window.Switchboard || {}, { Call, CallError, api });
})();
