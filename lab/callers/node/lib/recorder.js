'use strict';
// What one call observed, measured in ms since the offer was POSTed.  Pure: the
// stacks feed it states, data-channel messages and received packets, and the
// clock is injected, so it reads the same whichever stack fed it.

const SETUP_PHASES = ['answer', 'ice_connected', 'dtls_connected', 'datachannel_open', 'first_audio_in'];

class Recorder {
  constructor(now = () => performance.now(), wallClock = () => Date.now()) {
    this.now = now;
    this.wallClock = wallClock;
    this.t0 = null; // when the offer was POSTed (monotonic ms)
    this.started = null; // the same instant, Unix seconds
    this.phases = {};
    this.states = [];
    this.events = [];
    this.agentTurns = []; // the agent's own timings, from each response.done
    this.arrivals = []; // [ms since POST, packets received so far], whenever audio arrived
    this.received = 0;
    this.reportedLost = null; // from a stack's own counters, where it keeps them
    this.lastArrival = null;
    this.maxGapMs = 0;
    this._baseSeq = null;
    this._highestSeq = null; // extended (wrap-counted) sequence number
  }

  startClock() {
    this.t0 = this.now();
    this.started = this.wallClock() / 1000;
  }

  ms(at = this.now()) {
    return this.t0 === null ? null : Math.round((at - this.t0) * 10) / 10;
  }

  /** A setup phase reached: the first time counts, nothing before the offer. */
  mark(phase) {
    if (this.t0 !== null && !(phase in this.phases)) this.phases[phase] = this.ms();
  }

  /** A state change; those before the offer (gathering) are not part of the call. */
  state(kind, state) {
    if (this.t0 !== null) this.states.push([this.ms(), kind, state]);
  }

  /** One oai-events message; anything but a JSON object is ignored. */
  event(message) {
    let event;
    try {
      event = JSON.parse(String(message));
    } catch {
      return;
    }
    if (event === null || typeof event !== 'object' || Array.isArray(event)) return;
    this.events.push([String(event.type), event.ts ?? null, this.ms()]);
    const timings = event.type === 'response.done' ? event.response?.timings : undefined;
    if (timings !== null && typeof timings === 'object') this.agentTurns.push(timings);
  }

  /** One downlink RTP packet (its header fields), as it arrived. */
  rtp({ sequenceNumber }) {
    if (this._highestSeq === null) {
      this._baseSeq = sequenceNumber;
      this._highestSeq = sequenceNumber;
    } else {
      // Extend the 16-bit number into whichever wrap is closest to the highest seen.
      const last = this._highestSeq;
      let extended = (last & ~0xffff) + sequenceNumber;
      if (extended - last > 0x8000) extended -= 0x10000;
      else if (last - extended > 0x8000) extended += 0x10000;
      this._highestSeq = Math.max(last, extended);
    }
    this._arrived(this.received + 1);
  }

  /** A stack that only counts (no per-packet hook): its cumulative counters, polled. */
  counted(packetsReceived, packetsLost) {
    if (packetsLost !== undefined && packetsLost !== null) this.reportedLost = packetsLost;
    if (packetsReceived > this.received) this._arrived(packetsReceived);
  }

  _arrived(total) {
    const at = this.ms();
    this.mark('first_audio_in');
    if (this.lastArrival !== null) this.maxGapMs = Math.max(this.maxGapMs, at - this.lastArrival);
    this.lastArrival = at;
    this.received = total;
    this.arrivals.push([at, total]);
  }

  get lost() {
    if (this.reportedLost !== null) return this.reportedLost;
    if (this._highestSeq === null) return 0;
    return Math.max(0, this._highestSeq - this._baseSeq + 1 - this.received);
  }

  /** The downlink as the receiver saw it, observation ending at ``endMs``. */
  downlink(endMs) {
    const lost = this.lost;
    const expected = this.received + lost;
    let maxGap = this.maxGapMs;
    if (endMs !== null && this.lastArrival !== null) maxGap = Math.max(maxGap, endMs - this.lastArrival);
    return {
      packets_received: this.received,
      packets_lost: lost,
      loss_ratio: expected ? Math.round((lost / expected) * 1e6) / 1e6 : 0,
      max_gap_ms: Math.round(maxGap * 10) / 10,
    };
  }

  setupMs() {
    const setup = {};
    for (const phase of SETUP_PHASES) setup[phase] = this.phases[phase] ?? null;
    return setup;
  }
}

module.exports = { Recorder, SETUP_PHASES };
