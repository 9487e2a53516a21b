'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { oggPackets, opusPackets, opusPacketSamples } = require('../lib/ogg');

/** One Ogg page holding ``segments`` (lacing values as given); the CRC is not checked. */
function page(lacing, body) {
  const header = Buffer.alloc(27);
  header.write('OggS', 0);
  header[26] = lacing.length;
  return Buffer.concat([header, Buffer.from(lacing), body]);
}

test('a packet of 255 bytes or more continues in the next lacing value, even across pages', () => {
  const long = Buffer.alloc(300, 7);
  const short = Buffer.from([1, 2, 3]);
  // 300 = 255 + 45: the first page ends mid-packet on a 255, the next finishes it.
  const data = Buffer.concat([
    page([255], long.subarray(0, 255)),
    page([45, 3], Buffer.concat([long.subarray(255), short])),
  ]);
  assert.deepEqual(oggPackets(data), [long, short]);
});

test('a packet of exactly 255 bytes ends with a zero lacing value', () => {
  const exact = Buffer.alloc(255, 9);
  assert.deepEqual(oggPackets(page([255, 0], exact)), [exact]);
});

test('garbage and truncation are errors, not silent short reads', () => {
  assert.throws(() => oggPackets(Buffer.from('NotOgg at all, not even close....')), /no Ogg page/);
  assert.throws(() => oggPackets(page([10], Buffer.alloc(4))), /truncated/);
});

test('opusPackets drops OpusHead and OpusTags and refuses other codecs', () => {
  const head = Buffer.concat([Buffer.from('OpusHead'), Buffer.alloc(11)]);
  const tags = Buffer.from('OpusTags');
  const audio = Buffer.from([0x78, 1, 2]);
  const data = Buffer.concat([page([head.length], head), page([tags.length], tags), page([3], audio)]);
  assert.deepEqual(opusPackets(data), [audio]);
  assert.throws(() => opusPackets(Buffer.concat([page([tags.length], tags), page([3], audio)])), /OpusHead/);
});

test('Opus TOC: frame size and count (RFC 6716, 3.1)', () => {
  assert.equal(opusPacketSamples(Buffer.from([(11 << 3) | 0])), 2880); // SILK 60 ms
  assert.equal(opusPacketSamples(Buffer.from([(9 << 3) | 0])), 960); // SILK 20 ms
  assert.equal(opusPacketSamples(Buffer.from([(15 << 3) | 0])), 960); // hybrid 20 ms
  assert.equal(opusPacketSamples(Buffer.from([(31 << 3) | 1])), 1920); // CELT 20 ms, two frames
  assert.equal(opusPacketSamples(Buffer.from([(28 << 3) | 3, 3])), 360); // CELT 2.5 ms x 3
});
