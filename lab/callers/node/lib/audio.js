'use strict';
// The caller's voice: a tone the lab rendered once (speech-like bursts, so the
// agent's VAD hears utterances end), looped and paced in real time.

const fs = require('node:fs');
const { opusPackets, opusPacketSamples } = require('./ogg');
const { rtpPacket } = require('./rtp');

const SAMPLE_RATE = 48000;

/** Calls ``send(n)`` for frame n every ``frameMs``, catching up after a stall (a little). */
class Pacer {
  constructor(frameMs, send, now = () => performance.now()) {
    this.frameMs = frameMs;
    this.send = send;
    this.now = now;
    this.sent = 0;
    this.timer = null;
    // After a longer stall (GC, a busy core) the rest is skipped, as a live source would.
    this.maxBurst = 5;
  }

  start() {
    this.startedAt = this.now();
    // Ticks at a quarter frame: Node's timers are late, never early.
    this.timer = setInterval(() => this._tick(), Math.max(1, this.frameMs / 4));
    this._tick();
  }

  _tick() {
    const due = Math.floor((this.now() - this.startedAt) / this.frameMs) + 1;
    if (due - this.sent > this.maxBurst) this.sent = due - this.maxBurst;
    while (this.sent < due) this.send(this.sent++);
  }

  stop() {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }
}

/** Pre-encoded Opus from an Ogg file, looped, as RTP packets handed to ``sendRtp``. */
class OpusRtpSource {
  constructor(path, { payloadType, ssrc, sendRtp }) {
    this.packets = opusPackets(fs.readFileSync(path));
    if (this.packets.length === 0) throw new Error(`${path}: no Opus packets`);
    const samples = new Set(this.packets.map(opusPacketSamples));
    if (samples.size !== 1) throw new Error(`${path}: mixed Opus frame sizes ${[...samples]}`);
    this.frameSamples = [...samples][0];
    this.payloadType = payloadType;
    this.ssrc = ssrc;
    this.sendRtp = sendRtp;
    this.sequenceNumber = Math.floor(Math.random() * 0x10000);
    this.timestamp = Math.floor(Math.random() * 0x100000000);
    this.packetsSent = 0;
    this.pacer = new Pacer((this.frameSamples / SAMPLE_RATE) * 1000, (n) => this._send(n));
  }

  _send(n) {
    const payload = this.packets[n % this.packets.length];
    const packet = rtpPacket({
      payloadType: this.payloadType,
      sequenceNumber: this.sequenceNumber,
      timestamp: this.timestamp,
      ssrc: this.ssrc,
      marker: n === 0,
      payload,
    });
    this.sequenceNumber = (this.sequenceNumber + 1) & 0xffff;
    this.timestamp = (this.timestamp + this.frameSamples) >>> 0;
    if (this.sendRtp(packet) !== false) this.packetsSent += 1;
  }

  start() {
    this.pacer.start();
  }

  stop() {
    this.pacer.stop();
  }
}

/** 16-bit mono PCM at 48 kHz from a raw file, looped, in 10 ms chunks to ``onChunk``. */
class PcmSource {
  constructor(path, onChunk) {
    const bytes = fs.readFileSync(path);
    this.pcm = new Int16Array(bytes.buffer, bytes.byteOffset, Math.floor(bytes.length / 2));
    this.chunkSamples = SAMPLE_RATE / 100;
    this.chunks = Math.floor(this.pcm.length / this.chunkSamples);
    if (this.chunks === 0) throw new Error(`${path}: shorter than 10 ms`);
    this.onChunk = onChunk;
    this.pacer = new Pacer(10, (n) => {
      const start = (n % this.chunks) * this.chunkSamples;
      // A copy: the consumer may keep the buffer.
      this.onChunk(this.pcm.slice(start, start + this.chunkSamples));
    });
  }

  start() {
    this.pacer.start();
  }

  stop() {
    this.pacer.stop();
  }
}

module.exports = { Pacer, OpusRtpSource, PcmSource, SAMPLE_RATE };
