/*
 * The Switchboard page: choose an agent, Call, talk, Hang up. Uses call.js.
 *
 * A call token may be given in the URL fragment (#token=...): the fragment never reaches a
 * server or its logs. Without one the page works only against a node in demo mode, from
 * the node's own machine. Tests read window.switchboardPage (state, stats, last error).
 */
(function () {
  "use strict";
  const { Call, CallError, api } = window.Switchboard;
  const $ = (id) => document.getElementById(id);
  const els = {
    agent: $("agent"), call: $("call"), hangup: $("hangup"), state: $("state"),
    codec: $("codec"), level: $("level"), message: $("message"), transcript: $("transcript"),
    latency: $("latency"), latencyLast: $("latency-last"), keypad: $("keypad"), mode: $("mode"),
  };
  const LABELS = {
    idle: "Ready", connecting: "Connecting…", greeting: "Agent greeting",
    listening: "Listening", speaking: "Agent speaking", reconnecting: "Reconnecting…",
    ended: "Call ended",
  };
  const ENDINGS = {  // call.ended reasons, as a caller would say them
    caller_hangup: "you hung up", agent_hangup: "the agent hung up",
    max_duration: "time limit reached", rtp_timeout: "no audio from your microphone",
    transport_failed: "connection lost", shutdown: "the server is restarting",
    error: "an error occurred", agent_unavailable: "the agent is not available",
  };
  const token = new URLSearchParams(location.hash.slice(1)).get("token") || "";
  const page = { state: "idle", states: [], error: null, stats: null, maxStats: null,
                 transcript: [], latencies: [], callId: null };
  window.switchboardPage = page;
  let call = null;
  let iceServers = [];
  let statsTimer = null;
  let retryTimer = null;

  function setState(state, reason) {
    if (page.states[page.states.length - 1] !== state) page.states.push(state);
    page.state = state;
    document.body.dataset.state = state;
    els.state.dataset.state = state;
    els.state.textContent = LABELS[state] || state;
    if (state === "ended" && reason) {
      els.state.textContent += " (" + (ENDINGS[reason] || reason.replace(/_/g, " ")) + ")";
    }
    const live = ["connecting", "greeting", "listening", "speaking", "reconnecting"].includes(state);
    els.call.disabled = live || retryTimer !== null || !els.agent.value;
    els.hangup.disabled = !live;
    els.agent.disabled = live;
  }

  function showMessage(text, kind) {
    els.message.textContent = text;
    els.message.className = "message" + (kind === "info" ? " info" : "");
    els.message.hidden = !text;
  }

  function sentence(text) {
    return /[.!?]$/.test(text) ? text : text + ".";
  }

  function showError(err) {
    page.error = { kind: err.kind || "error", code: err.code || "", message: err.message,
                   retryAfter: err.retryAfter ?? null };
    document.body.dataset.error = page.error.code || page.error.kind;
    if (err.retryAfter != null && err.kind === "refused") {
      let left = Math.ceil(err.retryAfter);
      const render = () => showMessage("The call was refused: " + sentence(err.message) +
                                       " You can try again in " + left + " s.");
      render();
      clearInterval(retryTimer);
      retryTimer = setInterval(() => {
        left -= 1;
        if (left <= 0) {
          clearInterval(retryTimer);
          retryTimer = null;
          showMessage("The call was refused: " + sentence(err.message) +
                      " You can try again now.");
          setState(page.state);
        } else {
          render();
        }
      }, 1000);
      setState(page.state);
    } else if (err.kind === "refused") {
      showMessage("The call was refused: " + sentence(err.message));
    } else {
      showMessage(err.message);
    }
  }

  function addTranscript(line) {
    const placeholder = els.transcript.querySelector(".placeholder");
    if (placeholder) placeholder.remove();
    const key = line.turn + ":" + line.speaker;
    let item = els.transcript.querySelector('[data-key="' + key + '"]');
    if (!item) {
      item = document.createElement("li");
      item.dataset.key = key;
      item.className = line.speaker;
      const who = document.createElement("span");
      who.className = "who";
      who.textContent = line.speaker === "caller" ? "You" : "Agent";
      item.append(who, document.createElement("span"));
      els.transcript.append(item);
    }
    const text = item.lastChild;
    text.textContent = line.text;
    text.className = line.final ? "" : "partial";
    els.transcript.scrollTop = els.transcript.scrollHeight;
    page.transcript.push(line);
  }

  function addLatency(event) {
    const stages = Object.entries(event.stages || {})
      .map(([name, ms]) => name.replace(/_ms$/, "") + " " + Math.round(ms)).join(" · ");
    const text = "Turn " + event.turn + ": " + Math.round(event.total_ms) + " ms" +
                 (stages ? " (" + stages + ")" : "");
    els.latencyLast.textContent = "Last turn: " + Math.round(event.total_ms) + " ms";
    els.latencyLast.classList.remove("muted");
    const item = document.createElement("li");
    item.textContent = text;
    els.latency.prepend(item);
    page.latencies.push(event);
  }

  async function pollStats() {
    if (!call) return;
    try {
      page.stats = await call.stats();
      page.callId = call.callId;
      if (!page.maxStats || page.stats.bytesReceived >= page.maxStats.bytesReceived) {
        page.maxStats = page.stats;  // the last stats of a live connection, kept after the end
      }
      els.level.style.width = Math.min(100, Math.round(page.stats.audioLevel * 300)) + "%";
      els.codec.textContent = call.codec ? "codec " + call.codec : "";
    } catch (err) { /* the call is closing */ }
  }

  async function startCall() {
    showMessage("");
    page.error = null;
    delete document.body.dataset.error;
    call = new Call({ baseUrl: "", token, agent: els.agent.value, iceServers });
    call.addEventListener("state", (e) => setState(e.detail.state, e.detail.reason));
    call.addEventListener("transcript", (e) => addTranscript(e.detail));
    call.addEventListener("latency", (e) => addLatency(e.detail));
    call.addEventListener("connection", (e) => {
      if (e.detail.lost) showMessage("Connection lost: reconnecting…", "info");
      else showMessage("");
    });
    call.addEventListener("ended", (e) => {
      clearInterval(statsTimer);
      if (e.detail.reason === "transport_failed") {
        showMessage("The connection was lost and could not be restored. Press Call to " +
                    "start a new call.");
      }
      setState("ended", e.detail.reason);
    });
    statsTimer = setInterval(pollStats, 500);
    try {
      await call.start();
    } catch (err) {
      clearInterval(statsTimer);
      setState("idle");
      showError(err instanceof CallError ? err : new CallError("server", String(err)));
    }
  }

  async function loadConfig() {
    try {
      const config = await api("", "/api/config", { token });
      iceServers = config.ice_servers || [];
      els.agent.replaceChildren(...config.agents.map((a) => {
        const option = document.createElement("option");
        option.value = a.id;
        option.textContent = a.name ? a.name + " (" + a.id + ")" : a.id;
        return option;
      }));
      const wanted = new URLSearchParams(location.search).get("agent");
      if (wanted && ![...els.agent.options].some((o) => o.value === wanted)) {
        els.agent.append(new Option(wanted, wanted));  // a deep link to an unlisted agent
      }
      if (wanted) els.agent.value = wanted;
      els.mode.textContent = config.demo ? "Demo mode: no token needed on this machine." : "";
      setState("idle");
    } catch (err) {
      els.agent.replaceChildren(new Option("No agent available", ""));
      showError(err);
      if (err.status === 401) {
        showMessage("This page needs a call token: open the link the site gave you, or " +
                    "start the node in demo mode to try it on this machine.");
      }
    }
  }

  for (const key of "123456789*0#") {
    const button = document.createElement("button");
    button.textContent = key;
    button.addEventListener("click", () => call && call.sendDigit(key));
    els.keypad.append(button);
  }
  els.call.addEventListener("click", startCall);
  els.hangup.addEventListener("click", () => call && call.hangup());
  els.agent.addEventListener("change", () => setState(page.state));
  loadConfig();
})();
