// voiceagent browser client: mic -> PCM16 16 kHz binary frames; binary frames -> gapless playback;
// JSON control: hello/mark/state out, ready/mark/clear/transcript/agent_text in.
"use strict";
(() => {
  const RATE = 16000;          // PCM rate both ways: the AudioContext runs at it, so the browser
                               // resamples mic and speaker to the device with proper filtering
  const FRAME_SAMPLES = 320;   // 20 ms mic frames
  const START_LEAD = 0.05;     // seconds of slack before the first buffer of a burst plays

  const pageToken = document.querySelector('meta[name="voiceagent-token"]').content;
  let pageTokenUsed = false;   // tokens open one session: a second Start asks the server for a new one
  const button = document.getElementById("start");
  const statusEl = document.getElementById("status");
  const levelEl = document.getElementById("level");
  const transcriptEl = document.getElementById("transcript");

  let ws = null;
  let ctx = null;
  let mic = null;
  let micSource = null;
  let capture = null;
  let sink = null;
  let running = false;

  // Playback: sources scheduled back to back. Marks follow the server's MarkLedger (voiceagent/marks.py):
  // audio and marks in the order they arrived; a mark is echoed once every source before it has ended;
  // a clear drops everything pending and reports the pending marks as dropped.
  const sources = new Set();
  let playHead = 0;
  let ledger = [];             // [{source, ended} | {mark}], in arrival order
  let playing = false;

  function settleLedger() {
    while (ledger.length && (ledger[0].mark !== undefined || ledger[0].ended)) {
      const entry = ledger.shift();
      if (entry.mark !== undefined) send({ type: "mark", name: entry.mark });
    }
  }
  const pendingMarks = () => ledger.filter((e) => e.mark !== undefined).map((e) => e.mark);
  let userPartial = null;
  let agentLine = null;

  const setStatus = (text) => { statusEl.textContent = text; };
  const send = (obj) => { if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj)); };
  const queuedMs = () => (sources.size && ctx ? Math.max(0, playHead - ctx.currentTime) * 1000 : 0);
  const report = (event, dropped = []) =>
    send({ type: "state", event, playing, queued_ms: Math.round(queuedMs()), dropped_marks: dropped });

  function playPcm(buffer) {
    const pcm = new Int16Array(buffer);
    if (!pcm.length || !ctx) return;
    const audio = ctx.createBuffer(1, pcm.length, RATE);
    const samples = audio.getChannelData(0);
    for (let i = 0; i < pcm.length; i++) samples[i] = pcm[i] / 32768;
    const src = ctx.createBufferSource();
    src.buffer = audio;
    src.connect(ctx.destination);
    const now = ctx.currentTime;
    if (playHead < now) playHead = now + START_LEAD;
    src.start(playHead);
    playHead += audio.duration;
    const entry = { source: src, ended: false };
    ledger.push(entry);
    sources.add(src);
    src.onended = () => {
      sources.delete(src);
      entry.ended = true;
      settleLedger();
      if (!sources.size && playing) { playing = false; report("drained"); }
    };
    if (!playing) { playing = true; report("started"); }
  }

  function onMark(name) {
    ledger.push({ mark: name });
    settleLedger();  // nothing unplayed before it: echoed at once
  }

  function clearPlayback() {
    const dropped = pendingMarks();
    ledger = [];
    for (const src of sources) { src.onended = null; try { src.stop(); } catch (e) { /* not started */ } }
    sources.clear();
    playHead = 0;
    playing = false;
    report("cleared", dropped);
  }

  function addLine(who, cls) {
    const line = document.createElement("p");
    line.className = `line ${cls}`;
    const label = document.createElement("span");
    label.className = "who";
    label.textContent = who;
    const text = document.createElement("span");
    text.className = "text";
    line.append(label, text);
    transcriptEl.append(line);
    return line;
  }

  function showTranscript(text, isFinal) {
    if (!userPartial) userPartial = addLine("You", "user partial");
    userPartial.querySelector(".text").textContent = text;
    if (isFinal) { userPartial.classList.remove("partial"); userPartial = null; agentLine = null; }
    transcriptEl.scrollTop = transcriptEl.scrollHeight;
  }

  function showAgentText(text, isFinal) {
    if (!agentLine) agentLine = addLine("Agent", "agent");
    const span = agentLine.querySelector(".text");
    if (text) span.textContent = span.textContent ? `${span.textContent} ${text}` : text;
    if (isFinal) agentLine = null;
    transcriptEl.scrollTop = transcriptEl.scrollHeight;
  }

  function onControl(msg) {
    switch (msg.type) {
      case "ready": setStatus("Listening"); startMic(); break;
      case "mark": onMark(msg.name); break;
      case "clear": clearPlayback(); break;
      case "transcript": showTranscript(String(msg.text), Boolean(msg.is_final)); break;
      case "agent_text": showAgentText(String(msg.text), msg.final !== false); break;
      default: console.warn("voiceagent: unknown control message", msg.type);
    }
  }

  function startMic() {
    micSource = ctx.createMediaStreamSource(mic);
    capture = new AudioWorkletNode(ctx, "voiceagent-capture", {
      numberOfInputs: 1, numberOfOutputs: 1, channelCount: 1,
      processorOptions: { targetRate: RATE, frameSamples: FRAME_SAMPLES },
    });
    capture.port.onmessage = ({ data }) => {
      if (ws && ws.readyState === WebSocket.OPEN) ws.send(data.pcm);
      const db = 20 * Math.log10(data.rms + 1e-9);
      levelEl.style.width = `${Math.max(0, Math.min(100, ((db + 60) / 60) * 100))}%`;
    };
    // The worklet must be pulled by the graph; route it to a muted gain so the mic is not played back.
    sink = ctx.createGain();
    sink.gain.value = 0;
    micSource.connect(capture).connect(sink).connect(ctx.destination);
  }

  async function start() {
    button.disabled = true;
    setStatus("Starting…");
    try {
      try {
        ctx = new AudioContext({ sampleRate: RATE });
      } catch (err) {
        ctx = new AudioContext();  // a browser without that rate: the worklet converts (box filter)
      }
      await ctx.resume();
      await ctx.audioWorklet.addModule("/capture-worklet.js");
      mic = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
    } catch (err) {
      setStatus(`Microphone unavailable: ${err.message || err}`);
      await stop();
      return;
    }
    let token = pageToken;
    if (pageTokenUsed) {
      try {
        const response = await fetch("/token", { cache: "no-store" });
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        token = (await response.text()).trim();
      } catch (err) {
        setStatus(`Disconnected: no session token (${err.message || err}); reload the page`);
        await stop();
        return;
      }
    }
    pageTokenUsed = true;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(`${scheme}//${location.host}/ws?token=${encodeURIComponent(token)}`);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => { send({ type: "hello", sample_rate: RATE }); setStatus("Connecting…"); };
    ws.onmessage = (ev) => {
      if (typeof ev.data === "string") {
        let msg;
        try { msg = JSON.parse(ev.data); } catch (e) { console.warn("voiceagent: bad control frame"); return; }
        onControl(msg);
      } else {
        playPcm(ev.data);
      }
    };
    ws.onclose = (ev) => {
      const why = ev.code === 1006 ? "connection refused or lost"
        : `closed (${ev.code}${ev.reason ? `: ${ev.reason}` : ""})`;
      ws = null;
      stop().then(() => setStatus(`Disconnected: ${why}`));
    };
    running = true;
    button.textContent = "Stop";
    button.classList.add("stop");
    button.disabled = false;
  }

  async function stop() {
    running = false;
    if (ws) { const w = ws; ws = null; w.onclose = null; w.close(1000, "user stopped"); setStatus("Stopped"); }
    if (mic) mic.getTracks().forEach((t) => t.stop());
    if (ctx) await ctx.close().catch(() => {});
    for (const src of sources) src.onended = null;
    sources.clear();
    ledger = [];
    playing = false;
    playHead = 0;
    ctx = mic = micSource = capture = sink = null;
    levelEl.style.width = "0";
    button.textContent = "Start";
    button.classList.remove("stop");
    button.disabled = false;
  }

  button.addEventListener("click", () => (running ? stop() : start()));

  // Read-only view for diagnostics and the end-to-end test.
  window.voiceagent = {
    get connected() { return Boolean(ws && ws.readyState === WebSocket.OPEN); },
    get playing() { return playing; },
    get queuedSources() { return sources.size; },
    get pendingMarks() { return pendingMarks(); },
    get status() { return statusEl.textContent; },
    get contextRate() { return ctx ? ctx.sampleRate : null; },
  };
})();
