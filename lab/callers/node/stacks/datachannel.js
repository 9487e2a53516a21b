'use strict';
// node-datachannel: libdatachannel (C++) with its own ICE agent (libjuice).
// A media track carries raw RTP both ways when no media handler is set, so the
// caller's voice is pre-encoded Opus from an Ogg file, packetised here.

const ndc = require('node-datachannel');
const { OpusRtpSource } = require('../lib/audio');
const { rtpHeader } = require('../lib/rtp');
const { packageVersion } = require('../lib/version');

const OPUS_PAYLOAD_TYPE = 111;

exports.needs = 'opus';

exports.version = () => packageVersion('node-datachannel');

exports.open = async ({ rec, link, audioFile, bindHost }) => {
  // libjuice binds to every address unless told: keep ICE on the lab's address.
  const pc = new ndc.PeerConnection('rtclab', { iceServers: [], bindAddress: bindHost });
  const ssrc = (Math.random() * 0xffffffff) >>> 0;
  const audio = new ndc.Audio('0', 'SendRecv');
  audio.addOpusCodec(OPUS_PAYLOAD_TYPE);
  audio.addSSRC(ssrc, 'rtclab', 'rtclab', 'audio');
  const track = pc.addTrack(audio);
  track.onMessage((packet) => {
    const header = rtpHeader(packet);
    if (header !== null) rec.rtp(header);
  });
  const voice = new OpusRtpSource(audioFile, {
    payloadType: OPUS_PAYLOAD_TYPE,
    ssrc,
    sendRtp: (packet) => track.isOpen() && track.sendMessageBinary(packet),
  });

  const channel = pc.createDataChannel('oai-events');
  channel.onOpen(() => rec.mark('datachannel_open'));
  channel.onMessage((message) => rec.event(message));
  pc.onIceStateChange((state) => {
    rec.state('ice', state);
    if (state === 'connected' || state === 'completed') rec.mark('ice_connected');
  });
  pc.onStateChange((state) => {
    rec.state('connection', state);
    if (state === 'connected') {
      rec.mark('dtls_connected');
      link.up();
    } else if (state === 'failed' || state === 'closed') {
      link.down(state);
    }
  });
  const gathered = new Promise((resolve) => {
    pc.onGatheringStateChange((state) => {
      if (state === 'complete') resolve();
    });
  });

  return {
    async offer() {
      pc.setLocalDescription();
      if (pc.gatheringState() !== 'complete') await gathered;
      return pc.localDescription().sdp;
    },
    async answer(sdp) {
      pc.setRemoteDescription(sdp, 'answer');
    },
    startAudio: () => voice.start(),
    stopAudio: () => voice.stop(),
    async finish() {
      const pair = pc.getSelectedCandidatePair();
      const hostport = (candidate) => (candidate ? `${candidate.address}:${candidate.port}` : null);
      return {
        packetsSent: voice.packetsSent,
        local: pair ? hostport(pair.local) : null,
        localType: pair ? pair.local.type : null,
        remote: pair ? hostport(pair.remote) : null,
      };
    },
    async close() {
      voice.stop();
      track.close();
      channel.close();
      pc.close();
      ndc.cleanup();
    },
  };
};
