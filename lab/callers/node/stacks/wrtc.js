'use strict';
// @roamhq/wrtc: Google's libwebrtc behind the W3C API.  It encodes Opus itself
// from PCM pushed into its nonstandard RTCAudioSource; it exposes no received
// packets, only getStats counters, which are polled.

const wrtc = require('@roamhq/wrtc');
const { PcmSource } = require('../lib/audio');
const { packageVersion } = require('../lib/version');

const STATS_POLL_MS = 20; // one Opus frame: arrivals are timed to within a frame

exports.needs = 'pcm';

exports.version = () => packageVersion('@roamhq/wrtc');

exports.open = async ({ rec, link, audioFile }) => {
  // libwebrtc has no bind-address option: it gathers on every interface, loopback included.
  const pc = new wrtc.RTCPeerConnection({ iceServers: [], bundlePolicy: 'max-bundle' });
  const source = new wrtc.nonstandard.RTCAudioSource();
  const track = source.createTrack();
  pc.addTransceiver(track, { direction: 'sendrecv' });
  const pcm = new PcmSource(audioFile, (samples) =>
    source.onData({ samples, sampleRate: 48000, bitsPerSample: 16, channelCount: 1, numberOfFrames: samples.length }),
  );

  const channel = pc.createDataChannel('oai-events');
  channel.onopen = () => rec.mark('datachannel_open');
  channel.onmessage = (message) => rec.event(message.data);
  pc.oniceconnectionstatechange = () => {
    rec.state('ice', pc.iceConnectionState);
    if (['connected', 'completed'].includes(pc.iceConnectionState)) rec.mark('ice_connected');
  };
  pc.onconnectionstatechange = () => {
    const state = pc.connectionState;
    rec.state('connection', state);
    if (state === 'connected') {
      rec.mark('dtls_connected');
      link.up();
    } else if (state === 'failed' || state === 'closed') {
      link.down(state);
    }
  };

  let polling = null;
  const poll = async () => {
    const report = await pc.getStats();
    report.forEach((stats) => {
      if (stats.type === 'inbound-rtp' && stats.kind === 'audio') {
        rec.counted(stats.packetsReceived, stats.packetsLost);
      }
    });
  };

  return {
    async offer() {
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc);
      return pc.localDescription.sdp;
    },
    async answer(sdp) {
      await pc.setRemoteDescription({ type: 'answer', sdp });
      polling = setInterval(() => poll().catch(() => {}), STATS_POLL_MS);
    },
    startAudio: () => pcm.start(),
    stopAudio: () => pcm.stop(),
    async finish() {
      if (polling !== null) clearInterval(polling);
      await poll();
      const report = await pc.getStats();
      let sent = null;
      let pair = null;
      report.forEach((stats) => {
        if (stats.type === 'outbound-rtp' && stats.kind === 'audio') sent = stats.packetsSent;
        if (stats.type === 'transport' && stats.selectedCandidatePairId) {
          pair = report.get(stats.selectedCandidatePairId);
        }
      });
      if (pair === null) {
        report.forEach((stats) => {
          if (stats.type === 'candidate-pair' && stats.nominated && stats.state === 'succeeded') pair = stats;
        });
      }
      const candidate = (id) => (id ? report.get(id) : undefined);
      const hostport = (c) => (c ? `${c.address ?? c.ip}:${c.port}` : null);
      const local = candidate(pair?.localCandidateId);
      return {
        packetsSent: sent,
        local: hostport(local),
        localType: local?.candidateType ?? null,
        remote: hostport(candidate(pair?.remoteCandidateId)),
      };
    },
    async close() {
      if (polling !== null) clearInterval(polling);
      pcm.stop();
      track.stop();
      pc.close();
    },
  };
};

function gathered(pc) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve();
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') resolve();
    });
  });
}
