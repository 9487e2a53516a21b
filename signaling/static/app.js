// The page's controls: choose what to say, call, hang up, and watch the call.
//
// window.rtclab is the page's automation surface: the lab's browser driver
// presses the same buttons a person does and reads rtclab.snapshot() instead
// of scraping the DOM.

import { TestTone } from "./audio.js";
import { Call } from "./call.js";

const RENDER_INTERVAL_MS = 200;
const $ = (id) => document.getElementById(id);
// Same origin always; ?offer=/v1/realtime/calls picks the alias.
const OFFER_URL = sameOrigin(new URLSearchParams(location.search).get("offer") ?? "/v1/calls");

let call = null;
let input = null; // { stream, node, utteranceEnds?, stop() }
let context = null;
let renderTimer = null;

async function openInput(kind) {
  if (kind === "tone") {
    const tone = new TestTone(context);
    tone.start();
    return { stream: tone.stream, node: tone.node, utteranceEnds: tone.utteranceEnds, stop: () => tone.stop() };
  }
  // A person with speakers needs the browser's echo cancellation, or the agent hears itself.
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  return {
    stream,
    node: context.createMediaStreamSource(stream),
    stop: () => stream.getTracks().forEach((track) => track.stop()),
  };
}

async function startCall() {
  $("call").disabled = true;
  $("source").disabled = true;
  $("log").replaceChildren();
  // Created on the click: browsers start audio only after a user gesture.
  context = new AudioContext();
  try {
    input = await openInput($("source").value);
  } catch (error) {
    call = null;
    await teardown();
    showError(`no audio input: ${error.message}`);
    return;
  }
  call = new Call({ offerUrl: OFFER_URL, input, context, onChange: render });
  $("agent").srcObject = call.remoteStream;
  $("hangup").disabled = false;
  renderTimer = setInterval(render, RENDER_INTERVAL_MS);
  await call.start();
}

async function hangUp() {
  $("hangup").disabled = true;
  if (call !== null) await call.hangUp();
  await teardown();
}

async function teardown() {
  clearInterval(renderTimer);
  input?.stop();
  input = null;
  await context?.close();
  context = null;
  if (call !== null) render(call);
  $("call").disabled = false;
  $("source").disabled = false;
  $("hangup").disabled = true;
}

function sameOrigin(path) {
  const url = new URL(path, location.href);
  if (url.origin !== location.origin) throw new Error(`offer URL ${url} is not on this page's origin`);
  return url.href;
}

function showError(text) {
  $("error").textContent = text;
}

const shownEvents = new WeakMap(); // call -> how many log lines are on the page

function render(current = call) {
  if (current === null) return;
  const s = current.snapshot();
  $("connection").textContent = s.connection;
  $("ice").textContent = s.ice;
  $("rtt").textContent = s.stats.rttMs === null ? "-" : `${s.stats.rttMs.toFixed(1)} ms`;
  $("backend").textContent = s.backend ?? "-";
  $("call-id").textContent = s.call_id ?? "-";
  $("setup").textContent = s.phases.dtls_connected === undefined ? "-" : `${s.phases.dtls_connected} ms`;
  $("path").textContent = s.stats.local ? `${s.stats.local} -> ${s.stats.remote}` : "-";
  $("packets").textContent = s.stats.inbound
    ? `${s.stats.inbound.packetsReceived} in (${s.stats.inbound.packetsLost} lost), ${s.stats.outbound?.packetsSent ?? 0} out`
    : "-";
  showLevel("in", s.levels.inDbfs);
  showLevel("out", s.levels.outDbfs);
  showError(s.error ?? "");
  const shown = shownEvents.get(current) ?? 0;
  for (const [type, , ms] of s.events.slice(shown)) {
    const line = document.createElement("li");
    line.textContent = `+${(ms / 1000).toFixed(3)} s  ${type}`;
    $("log").append(line);
  }
  shownEvents.set(current, s.events.length);
}

function showLevel(which, dbfs) {
  $(`level-${which}`).value = dbfs;
  $(`level-${which}-db`).textContent = `${dbfs.toFixed(0)} dBFS`;
}

$("call").addEventListener("click", startCall);
$("hangup").addEventListener("click", hangUp);

window.rtclab = {
  snapshot: () => call?.snapshot() ?? null,
  hangUp,
};
