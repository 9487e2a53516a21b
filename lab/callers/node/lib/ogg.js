'use strict';
// Opus packets out of an Ogg Opus file (RFC 7845), so a stack that sends RTP
// but has no encoder can still speak: the lab renders a tone to Ogg Opus once
// with FFmpeg, and these bytes go out unchanged as RTP payloads.

const CAPTURE = Buffer.from('OggS');

/** Every packet of the file's first logical stream, in order. */
function oggPackets(data) {
  const packets = [];
  let pending = [];
  let offset = 0;
  while (offset + 27 <= data.length) {
    if (!data.subarray(offset, offset + 4).equals(CAPTURE)) {
      throw new Error(`no Ogg page at byte ${offset}`);
    }
    const segments = data[offset + 26];
    const tableEnd = offset + 27 + segments;
    if (tableEnd > data.length) throw new Error('truncated Ogg page header');
    let body = tableEnd;
    for (let i = 0; i < segments; i++) {
      const size = data[offset + 27 + i];
      if (body + size > data.length) throw new Error('truncated Ogg page body');
      pending.push(data.subarray(body, body + size));
      body += size;
      // A lacing value below 255 ends a packet; 255 means it goes on.
      if (size < 255) {
        packets.push(Buffer.concat(pending));
        pending = [];
      }
    }
    offset = body;
  }
  return packets;
}

/** Samples at 48 kHz in one Opus packet, from its TOC byte (RFC 6716, 3.1). */
function opusPacketSamples(packet) {
  const toc = packet[0];
  const config = toc >> 3;
  let frameSamples;
  if (config < 12) frameSamples = [480, 960, 1920, 2880][config & 3]; // SILK
  else if (config < 16) frameSamples = [480, 960][config & 1]; // hybrid
  else frameSamples = [120, 240, 480, 960][config & 3]; // CELT
  const code = toc & 3;
  let frames = 1;
  if (code === 1 || code === 2) frames = 2;
  else if (code === 3) frames = packet.length > 1 ? packet[1] & 0x3f : 0;
  return frameSamples * frames;
}

/** The audio packets of an Ogg Opus file (its OpusHead and OpusTags dropped). */
function opusPackets(data) {
  const packets = oggPackets(data);
  if (packets.length < 2 || !packets[0].subarray(0, 8).equals(Buffer.from('OpusHead'))) {
    throw new Error('not an Ogg Opus file (no OpusHead)');
  }
  return packets.slice(2).filter((packet) => packet.length > 0);
}

module.exports = { oggPackets, opusPackets, opusPacketSamples };
