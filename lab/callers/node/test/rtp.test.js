'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { rtpPacket, rtpHeader, isRtcp } = require('../lib/rtp');

test('an RTP packet reads back as written', () => {
  const payload = Buffer.from([0xfc, 0xff, 0xfe]);
  const packet = rtpPacket({
    payloadType: 111,
    sequenceNumber: 70000, // wraps to 16 bits
    timestamp: 2 ** 32 + 5, // wraps to 32 bits
    ssrc: 0xdeadbeef,
    marker: true,
    payload,
  });
  assert.equal(packet[0], 0x80);
  assert.equal(packet[1], 0x80 | 111);
  assert.deepEqual(rtpHeader(packet), {
    payloadType: 111,
    sequenceNumber: 70000 & 0xffff,
    timestamp: 5,
    ssrc: 0xdeadbeef,
  });
  assert.deepEqual(packet.subarray(12), payload);
});

test('RTCP on the same port is told apart by its packet type (RFC 5761)', () => {
  const receiverReport = Buffer.from([0x81, 201, 0, 7, 1, 2, 3, 4, 5, 6, 7, 8]);
  assert.equal(isRtcp(receiverReport), true);
  assert.equal(rtpHeader(receiverReport), null);
  assert.equal(rtpHeader(Buffer.alloc(4)), null);
  assert.equal(rtpHeader(Buffer.alloc(12)), null); // version 0
});
