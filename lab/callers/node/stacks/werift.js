'use strict';
// werift: WebRTC in TypeScript.  It sends RTP it is given (no encoder), so the
// caller's voice is pre-encoded Opus from an Ogg file; received RTP packets are
// handed over one by one.

const { RTCPeerConnection } = require('werift');
const { OpusRtpSource } = require('../lib/audio');
const { packageVersion } = require('../lib/version');

exports.needs = 'opus';

exports.version = () => packageVersion('werift');

exports.open = async ({ rec, link, audioFile, bindHost }) => {
  const pc = new RTCPeerConnection({
    // werift's default adds a public STUN server.
    iceServers: [],
    bundlePolicy: 'max-bundle',
    // werift skips loopback interfaces when it gathers: name the address, and bind there.
    iceAdditionalHostAddresses: [bindHost],
    iceInterfaceAddresses: { udp4: bindHost },
    iceUseIpv6: false,
    // Its other host candidates share the bound socket but carry another address:
    // check only from the real one, so the selected pair says where packets come from.
    iceFilterCandidatePair: (pair) => pair.localCandidate.host === bindHost,
  });
  const transceiver = pc.addTransceiver('audio', { direction: 'sendrecv' });
  transceiver.onTrack.subscribe((track) => {
    track.onReceiveRtp.subscribe((rtp) => rec.rtp(rtp.header));
  });
  let voice = null;

  const channel = pc.createDataChannel('oai-events');
  channel.stateChanged.subscribe((state) => {
    if (state === 'open') rec.mark('datachannel_open');
  });
  channel.onMessage.subscribe((message) => rec.event(message.toString()));
  pc.iceConnectionStateChange.subscribe((state) => {
    rec.state('ice', state);
    if (state === 'connected' || state === 'completed') rec.mark('ice_connected');
  });
  pc.connectionStateChange.subscribe((state) => {
    rec.state('connection', state);
    if (state === 'connected') {
      rec.mark('dtls_connected');
      link.up();
    } else if (state === 'failed' || state === 'closed') {
      link.down(state);
    }
  });

  return {
    async offer() {
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc);
      return pc.localDescription.sdp;
    },
    async answer(sdp) {
      await pc.setRemoteDescription({ type: 'answer', sdp });
      voice = new OpusRtpSource(audioFile, {
        // werift rewrites SSRC and payload type to what it negotiated.
        payloadType: 111,
        ssrc: 0,
        sendRtp: (packet) => {
          transceiver.sender.sendRtp(packet).catch(() => {});
        },
      });
    },
    startAudio: () => voice && voice.start(),
    stopAudio: () => voice && voice.stop(),
    async finish() {
      const pair = selectedPair(pc);
      return { packetsSent: voice ? voice.packetsSent : null, ...pair };
    },
    async close() {
      if (voice) voice.stop();
      await pc.close();
    },
  };
};

function selectedPair(pc) {
  // Not in werift's getStats at this version: read the ICE agent's nominated pair.
  try {
    const connection = pc.iceTransports[0].connection;
    const pair = connection.nominated;
    if (!pair) return { local: null, localType: null, remote: null };
    const local = pair.localCandidate;
    const [host, port] = pair.remoteAddr;
    return { local: `${local.host}:${local.port}`, localType: local.type, remote: `${host}:${port}` };
  } catch {
    return { local: null, localType: null, remote: null };
  }
}

function gathered(pc) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve();
    pc.iceGatheringStateChange.subscribe((state) => {
      if (state === 'complete') resolve();
    });
  });
}
