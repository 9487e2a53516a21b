// The page's audio: a speech-like test tone, level meters, and an onset detector.
//
// Levels are RMS in dBFS over one analyser window (~21 ms at 48 kHz), the same
// scale as the agent's VAD, so "the agent hears you" and "you hear the agent"
// use one threshold.

// The agent's VAD (webrtc_server AgentConfig): -45 dBFS, 60 ms onset, 400 ms hangover.
export const VAD = { thresholdDbfs: -45, onsetMs: 60, hangoverMs: 400 };

const SILENCE_DBFS = -120;

export class LevelMeter {
  constructor(context, node) {
    this.analyser = context.createAnalyser();
    this.analyser.fftSize = 1024;
    this.samples = new Float32Array(this.analyser.fftSize);
    node.connect(this.analyser);
  }

  dbfs() {
    this.analyser.getFloatTimeDomainData(this.samples);
    let sum = 0;
    for (const x of this.samples) sum += x * x;
    const rms = Math.sqrt(sum / this.samples.length);
    return rms > 0 ? Math.max(SILENCE_DBFS, 20 * Math.log10(rms)) : SILENCE_DBFS;
  }
}

// Speech starts after onsetMs above the threshold and stops after hangoverMs below
// it; feed() returns ["start" | "stop", whenMs] on a change (wire/speech.py's Vad).
export class OnsetDetector {
  constructor({ thresholdDbfs, onsetMs, hangoverMs } = VAD) {
    Object.assign(this, { thresholdDbfs, onsetMs, hangoverMs });
    this.speaking = false;
    this.loudSince = null;
    this.quietSince = null;
  }

  feed(levelDbfs, nowMs) {
    const loud = levelDbfs >= this.thresholdDbfs;
    if (!this.speaking) {
      if (!loud) {
        this.loudSince = null;
        return null;
      }
      this.loudSince ??= nowMs;
      if (nowMs - this.loudSince < this.onsetMs) return null;
      this.speaking = true;
      this.quietSince = null;
      return ["start", this.loudSince];
    }
    if (loud) {
      this.quietSince = null;
      return null;
    }
    this.quietSince ??= nowMs;
    if (nowMs - this.quietSince < this.hangoverMs) return null;
    this.speaking = false;
    this.loudSince = null;
    return ["stop", this.quietSince];
  }
}

// Bursts of a 140 Hz buzz under a 4 Hz syllable envelope: 1.5 s of "speech", 2.5 s
// of pause (the lab caller's SpeakingPlan), so the agent's VAD hears an utterance
// end and answers in the pause. It is made in WebAudio and never passes through
// getUserMedia, so no echo cancellation, noise suppression or gain control touches it.
export class TestTone {
  constructor(context, { pitchHz = 140, speechMs = 1500, pauseMs = 2500, leadInMs = 500, gain = 0.3 } = {}) {
    Object.assign(this, { context, speechMs, pauseMs, leadInMs, gain });
    this.utteranceEnds = []; // performance.now() of each burst's end
    this.timer = null;

    this.voice = new OscillatorNode(context, { type: "sawtooth", frequency: pitchHz });
    const muffle = new BiquadFilterNode(context, { type: "lowpass", frequency: 1200 });
    const syllables = new GainNode(context, { gain: 0.65 });
    this.syllableRate = new OscillatorNode(context, { frequency: 4 });
    const depth = new GainNode(context, { gain: 0.35 });
    this.burst = new GainNode(context, { gain: 0 });
    this.output = new MediaStreamAudioDestinationNode(context, { channelCount: 1 });

    this.syllableRate.connect(depth).connect(syllables.gain);
    this.voice.connect(muffle).connect(syllables).connect(this.burst).connect(this.output);
  }

  get node() {
    return this.burst;
  }

  get stream() {
    return this.output.stream;
  }

  start() {
    this.voice.start();
    this.syllableRate.start();
    this.timer = setTimeout(() => this.#speak(), this.leadInMs);
  }

  #speak() {
    this.#set(this.gain);
    this.timer = setTimeout(() => this.#pause(), this.speechMs);
  }

  #pause() {
    this.#set(0);
    this.utteranceEnds.push(performance.now());
    this.timer = setTimeout(() => this.#speak(), this.pauseMs);
  }

  #set(value) {
    // A 5 ms ramp: a hard step would click.
    this.burst.gain.setTargetAtTime(value, this.context.currentTime, 0.005);
  }

  stop() {
    clearTimeout(this.timer);
    for (const node of [this.voice, this.syllableRate]) {
      try {
        node.stop();
      } catch {
        // never started
      }
    }
    for (const track of this.stream.getTracks()) track.stop();
  }
}
