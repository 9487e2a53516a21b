// One WebRTC call to signaling, measured from the page's side.
//
// Non-trickle, as signaling wants it (PATCH is 405): gather every candidate,
// POST the whole offer to /v1/calls, apply the answer, DELETE the Location on
// hang-up. Every time is in ms since the offer was POSTed, so a person and the
// lab's browser driver read the same numbers (snapshot()).

import { LevelMeter, OnsetDetector } from "./audio.js";

export const EVENTS_LABEL = "oai-events";
const BACKEND_HEADER = "X-Rtclab-Backend";
// Every candidate is gathered within milliseconds on a host; a browser that never
// says "complete" (no usable network) must not hang the call.
const GATHERING_LIMIT_MS = 3000;
// getStats is cached for ~50 ms by libwebrtc; sampling faster costs CPU, slower
// would hide a 100 ms stall.
const STATS_INTERVAL_MS = 25;
const LEVEL_INTERVAL_MS = 20; // one audio frame
const FRAME_MS = 20;

export class Call {
  constructor({ offerUrl, input, context, onChange = () => {} }) {
    this.offerUrl = new URL(offerUrl, location.href).href;
    this.input = input; // { stream, node, utteranceEnds? }: what the caller says
    this.context = context;
    this.onChange = onChange;
    this.t0 = null; // performance.now() of the POST
    this.startedUnixS = null;
    this.phases = {}; // answer, ice_connected, dtls_connected, datachannel_open, first_audio_in
    this.states = []; // [ms, "connection" | "ice", state]
    this.events = []; // [type, server ts, ms]
    this.arrivals = []; // [ms, packetsReceived] when the downlink count grew
    this.agentOnsets = []; // ms when the agent's audio became loud
    this.stats = { inbound: null, outbound: null, rttMs: null, local: null, mapped: null, remote: null, checks: null };
    this.levels = { inDbfs: -120, outDbfs: -120, outPeakDbfs: -120 };
    this.callId = null;
    this.location = null;
    this.backend = null;
    this.error = null;
    this.ended = false;
    this.remoteStream = new MediaStream();
    this.pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: "max-bundle" });
    this.inMeter = new LevelMeter(context, input.node);
    this.outMeter = null;
    this.listener = new OnsetDetector();
    this.timers = [];
  }

  ms(at = performance.now()) {
    return this.t0 === null ? null : Math.round((at - this.t0) * 10) / 10;
  }

  mark(phase, at = performance.now()) {
    if (this.t0 !== null && !(phase in this.phases)) this.phases[phase] = this.ms(at);
  }

  async start() {
    try {
      await this.#connect();
    } catch (error) {
      this.fail(error.code ?? "internal", error.message);
    }
  }

  fail(code, message) {
    if (this.error === null) this.error = `${code}: ${message}`;
    this.onChange(this);
  }

  async #connect() {
    const pc = this.pc;
    for (const track of this.input.stream.getAudioTracks()) pc.addTrack(track, this.input.stream);
    pc.ontrack = (event) => this.#onTrack(event.track);
    pc.onconnectionstatechange = () => this.#onState("connection", pc.connectionState);
    pc.oniceconnectionstatechange = () => this.#onState("ice", pc.iceConnectionState);
    const channel = pc.createDataChannel(EVENTS_LABEL);
    channel.onopen = () => this.mark("datachannel_open");
    channel.onmessage = (event) => this.#onEvent(event.data);

    await pc.setLocalDescription(await pc.createOffer());
    await gatheringComplete(pc, GATHERING_LIMIT_MS);

    this.t0 = performance.now();
    this.startedUnixS = (performance.timeOrigin + this.t0) / 1000;
    const answer = await this.#postOffer(pc.localDescription.sdp);
    this.mark("answer");
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
    this.timers.push(setInterval(() => this.#sampleLevels(), LEVEL_INTERVAL_MS));
    this.#sampleStatsForever();
    this.onChange(this);
  }

  async #postOffer(sdp) {
    let response;
    try {
      response = await fetch(this.offerUrl, {
        method: "POST",
        headers: { "Content-Type": "application/sdp" },
        body: sdp,
      });
    } catch (error) {
      throw codedError("unreachable", `POST ${this.offerUrl}: ${error.message}`);
    }
    const body = await response.text();
    if (response.status !== 201) {
      throw codedError("offer_rejected", `HTTP ${response.status}: ${errorText(body)}`);
    }
    const where = response.headers.get("Location");
    if (!where) throw codedError("bad_answer", "201 without a Location header");
    this.location = new URL(where, response.url).href;
    this.callId = where.replace(/\/$/, "").split("/").pop();
    this.backend = response.headers.get(BACKEND_HEADER);
    return body;
  }

  #onState(kind, state) {
    this.states.push([this.ms(), kind, state]);
    if (kind === "ice" && (state === "connected" || state === "completed")) this.mark("ice_connected");
    if (kind === "connection" && state === "connected") this.mark("dtls_connected");
    if (kind === "connection" && state === "failed") this.fail("connection_failed", "connection failed");
    this.onChange(this);
  }

  #onTrack(track) {
    if (track.kind !== "audio") return;
    this.remoteStream.addTrack(track);
    // The first RTP packet unmutes a remote track.
    track.onunmute = () => this.mark("first_audio_in");
    // Chromium feeds a remote WebRTC stream into WebAudio only while a media
    // element plays it too; the page's <audio> element does (see app.js).
    const source = this.context.createMediaStreamSource(this.remoteStream);
    this.outMeter = new LevelMeter(this.context, source);
  }

  #onEvent(data) {
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      return;
    }
    if (event === null || typeof event !== "object") return;
    this.events.push([String(event.type), event.ts ?? null, this.ms()]);
    this.onChange(this);
  }

  #sampleLevels() {
    const now = performance.now();
    this.levels.inDbfs = this.inMeter.dbfs();
    if (this.outMeter === null) return;
    const level = this.outMeter.dbfs();
    this.levels.outDbfs = level;
    this.levels.outPeakDbfs = Math.max(this.levels.outPeakDbfs, level);
    const change = this.listener.feed(level, now);
    if (change !== null && change[0] === "start") this.agentOnsets.push(this.ms(change[1]));
  }

  async #sampleStatsForever() {
    while (!this.ended) {
      await this.sampleStats();
      await sleep(STATS_INTERVAL_MS);
    }
  }

  async sampleStats() {
    let report;
    try {
      report = await this.pc.getStats();
    } catch {
      return; // closed
    }
    const byId = new Map([...report.values()].map((s) => [s.id, s]));
    let pair = null;
    for (const s of report.values()) {
      if (s.type === "transport" && s.selectedCandidatePairId) pair = byId.get(s.selectedCandidatePairId);
      if (s.type === "inbound-rtp" && s.kind === "audio") this.#onInbound(s);
      if (s.type === "outbound-rtp" && s.kind === "audio") this.stats.outbound = { packetsSent: s.packetsSent };
    }
    if (pair) {
      if (pair.currentRoundTripTime !== undefined) this.stats.rttMs = pair.currentRoundTripTime * 1000;
      const local = byId.get(pair.localCandidateId);
      // A peer-reflexive local candidate is the address the far end saw (here: the
      // relay's upstream socket, reflected by the media server); the browser's own
      // socket is its related address.
      const reflexive = local?.candidateType === "prflx" || local?.candidateType === "srflx";
      this.stats.local = reflexive ? hostPort({ address: local.relatedAddress, port: local.relatedPort }) : hostPort(local);
      this.stats.mapped = reflexive ? hostPort(local) : null;
      this.stats.remote = hostPort(byId.get(pair.remoteCandidateId));
      // STUN checks on the selected pair: how often the browser asks "still there?".
      this.stats.checks = { requestsSent: pair.requestsSent, responsesReceived: pair.responsesReceived };
    }
  }

  #onInbound(s) {
    const before = this.stats.inbound?.packetsReceived ?? 0;
    this.stats.inbound = { packetsReceived: s.packetsReceived, packetsLost: s.packetsLost, jitter: s.jitter };
    const grown = s.packetsReceived - before;
    if (grown <= 0) return;
    this.mark("first_audio_in");
    // Stats are cached, so the sample may come well after the packet: take the
    // packet's own receive time (Unix ms) when the browser gives a sane one.
    const now = this.ms();
    let at = now;
    if (typeof s.lastPacketReceivedTimestamp === "number") {
      const stamped = this.ms(s.lastPacketReceivedTimestamp - performance.timeOrigin);
      if (stamped !== null && stamped <= now + 1 && stamped >= now - 1000) at = stamped;
    }
    const previous = this.arrivals.at(-1);
    // Packets come every 20 ms: the first of this batch arrived (grown - 1) frames
    // before the last (after a stall this is when audio came back).
    if (previous && grown > 1) {
      const first = Math.max(previous[0] + FRAME_MS, at - (grown - 1) * FRAME_MS);
      if (first < at) this.arrivals.push([Math.round(first * 10) / 10, before + 1]);
    }
    if (!previous || at > previous[0]) this.arrivals.push([at, s.packetsReceived]);
  }

  // What the lab's browser driver reads (window.rtclab.snapshot()).
  snapshot() {
    return {
      started: this.startedUnixS,
      call_id: this.callId,
      location: this.location,
      backend: this.backend,
      error: this.error,
      ended: this.ended,
      now_ms: this.ms(),
      phases: { ...this.phases },
      states: this.states.slice(),
      events: this.events.slice(),
      arrivals: this.arrivals.slice(),
      utterance_ends: (this.input.utteranceEnds ?? []).map((t) => this.ms(t)),
      agent_onsets: this.agentOnsets.slice(),
      stats: structuredClone(this.stats),
      levels: { ...this.levels },
      connection: this.pc.connectionState,
      ice: this.pc.iceConnectionState,
    };
  }

  async hangUp() {
    if (this.ended) return;
    await this.sampleStats();
    this.ended = true;
    for (const timer of this.timers) clearInterval(timer);
    if (this.location !== null) {
      try {
        const response = await fetch(this.location, { method: "DELETE" });
        if (![200, 204, 404].includes(response.status)) {
          console.warn(`hang-up refused: HTTP ${response.status}`);
        }
      } catch (error) {
        console.warn(`hang-up failed: ${error.message}`);
      }
    }
    this.pc.close();
    this.onChange(this);
  }
}

function gatheringComplete(pc, limitMs) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    const timer = setTimeout(resolve, limitMs);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

function hostPort(candidate) {
  if (!candidate || candidate.address == null) return null;
  const host = candidate.address.includes(":") ? `[${candidate.address}]` : candidate.address;
  return `${host}:${candidate.port}`;
}

function errorText(body) {
  try {
    const { code, message } = JSON.parse(body).error;
    return `${code}: ${message}`;
  } catch {
    return body.slice(0, 200);
  }
}

function codedError(code, message) {
  return Object.assign(new Error(message), { code });
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
