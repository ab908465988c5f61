/*
 * Switchboard widget: one script tag adds a "Call" button to any site.
 *
 *   <script src="https://voice.example.com/widget.js" data-token="<call token>"
 *           data-label="Talk to us" async></script>
 *
 * The token is a short-lived JWT the site mints server-side with its tenant's
 * web_token_secret (docs/web.md); it names the agent. The widget loads call.js from the same
 * server, and keeps its styles in a shadow root so the site's CSS and ours never mix.
 */
(function () {
  "use strict";
  const script = document.currentScript;
  if (!script) return;
  const base = new URL(script.src).origin;
  const token = script.dataset.token || "";
  const label = script.dataset.label || "Call us";
  const STATES = {
    connecting: "Connecting…", greeting: "Agent greeting", listening: "Listening",
    speaking: "Agent speaking", reconnecting: "Reconnecting…", ended: "Call ended",
  };

  function load(src) {
    if (window.Switchboard && window.Switchboard.Call) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const tag = document.createElement("script");
      tag.src = src;
      tag.onload = resolve;
      tag.onerror = () => reject(new Error("could not load " + src));
      document.head.append(tag);
    });
  }

  function mount() {
    const host = document.createElement("div");
    host.id = "switchboard-widget";
    const root = host.attachShadow({ mode: "open" });
    root.innerHTML = `
      <style>
        .box { position: fixed; right: 20px; bottom: 20px; z-index: 2147483000;
               font-family: system-ui, sans-serif; display: flex; flex-direction: column;
               align-items: flex-end; gap: 8px; }
        button { border: none; border-radius: 999px; padding: 12px 22px; font-size: 15px;
                 color: #fff; background: #2b6cb0; cursor: pointer;
                 box-shadow: 0 4px 14px rgba(0,0,0,.2); }
        button.live { background: #c53030; }
        .panel { background: #fff; color: #1d2330; border-radius: 8px; padding: 8px 12px;
                 max-width: 280px; font-size: 14px; box-shadow: 0 2px 10px rgba(0,0,0,.15); }
        .panel[hidden] { display: none; }
      </style>
      <div class="box">
        <div class="panel" role="status" hidden></div>
        <button type="button"></button>
      </div>`;
    const button = root.querySelector("button");
    const panel = root.querySelector(".panel");
    button.textContent = label;
    let call = null;

    function say(text) {
      panel.textContent = text;
      panel.hidden = !text;
    }

    button.addEventListener("click", async () => {
      if (call) {
        await call.hangup();
        return;
      }
      try {
        await load(base + "/static/call.js");
        const config = await window.Switchboard.api(base, "/api/config", { token });
        call = new window.Switchboard.Call({
          baseUrl: base, token, agent: (config.agents[0] || {}).id || "",
          iceServers: config.ice_servers || [],
        });
        call.addEventListener("state", (e) => say(STATES[e.detail.state] || ""));
        call.addEventListener("ended", () => {
          call = null;
          button.textContent = label;
          button.classList.remove("live");
        });
        button.textContent = "Hang up";
        button.classList.add("live");
        await call.start();
      } catch (err) {
        call = null;
        button.textContent = label;
        button.classList.remove("live");
        const wait = err.retryAfter != null ? " Try again in " + Math.ceil(err.retryAfter) +
                                              " s." : "";
        say((err.message || String(err)) + wait);
      }
    });
    document.body.append(host);
  }

  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);
})();
