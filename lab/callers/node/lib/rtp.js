'use strict';
// Just enough RTP (RFC 3550) to send pre-encoded Opus and to count what arrives.

/** A 12-byte-header RTP packet: version 2, no padding, extensions or CSRCs. */
function rtpPacket({ payloadType, sequenceNumber, timestamp, ssrc, marker = false, payload }) {
  const header = Buffer.alloc(12);
  header[0] = 0x80;
  header[1] = (marker ? 0x80 : 0) | (payloadType & 0x7f);
  header.writeUInt16BE(sequenceNumber & 0xffff, 2);
  header.writeUInt32BE(timestamp >>> 0, 4);
  header.writeUInt32BE(ssrc >>> 0, 8);
  return Buffer.concat([header, payload]);
}

/** RTCP shares the port (rtcp-mux): packet types 192..223 sit where RTP keeps M+PT (RFC 5761). */
function isRtcp(packet) {
  return packet.length >= 2 && packet[1] >= 192 && packet[1] <= 223;
}

/** The header fields the receiver's counters need, or null for anything but RTP. */
function rtpHeader(packet) {
  if (packet.length < 12 || packet[0] >> 6 !== 2 || isRtcp(packet)) return null;
  return {
    payloadType: packet[1] & 0x7f,
    sequenceNumber: packet.readUInt16BE(2),
    timestamp: packet.readUInt32BE(4),
    ssrc: packet.readUInt32BE(8),
  };
}

module.exports = { rtpPacket, rtpHeader, isRtcp };
