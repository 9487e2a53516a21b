'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { Recorder } = require('../lib/recorder');

function clocked() {
  const clock = { now: 1000 };
  const rec = new Recorder(() => clock.now, () => 1_700_000_000_000);
  return { clock, rec };
}

test('times are ms since the POST, and only the first of each phase counts', () => {
  const { clock, rec } = clocked();
  rec.mark('answer'); // before the POST: not part of the call
  rec.state('ice', 'new');
  rec.startClock();
  assert.equal(rec.started, 1_700_000_000);
  clock.now = 1012.34;
  rec.mark('answer');
  clock.now = 1050;
  rec.mark('answer');
  rec.state('ice', 'connected');
  assert.equal(rec.setupMs().answer, 12.3);
  assert.equal(rec.setupMs().dtls_connected, null);
  assert.deepEqual(rec.states, [[50, 'ice', 'connected']]);
});

test('losses count across a sequence-number wrap; late packets fill their hole', () => {
  const { clock, rec } = clocked();
  rec.startClock();
  for (const [at, seq] of [[20, 65534], [40, 65535], [60, 0], [100, 3], [120, 2]]) {
    clock.now = 1000 + at;
    rec.rtp({ sequenceNumber: seq });
  }
  // 65534..3 is six packets; five came (1 is missing).
  assert.equal(rec.received, 5);
  assert.equal(rec.lost, 1);
  assert.deepEqual(rec.downlink(200), {
    packets_received: 5,
    packets_lost: 1,
    loss_ratio: 0.166667,
    max_gap_ms: 80, // from the last arrival (120) to the end of observation (200)
  });
  assert.equal(rec.setupMs().first_audio_in, 20);
  assert.deepEqual(rec.arrivals.at(-1), [120, 5]);
});

test('a stack that only counts reports its own losses; arrivals are kept when the count grows', () => {
  const { clock, rec } = clocked();
  rec.startClock();
  clock.now = 1020;
  rec.counted(0, 0);
  clock.now = 1040;
  rec.counted(3, 1);
  clock.now = 1060;
  rec.counted(3, 1);
  assert.deepEqual(rec.arrivals, [[40, 3]]);
  assert.equal(rec.lost, 1);
});

test('events: JSON objects only, with the agent\'s timings from response.done', () => {
  const { clock, rec } = clocked();
  rec.startClock();
  clock.now = 1100;
  rec.event('{"type": "session.created", "ts": 1.5}');
  rec.event('not json');
  rec.event('[1, 2]');
  rec.event(JSON.stringify({ type: 'response.done', ts: 2, response: { timings: { audio_ms: 2000 } } }));
  assert.deepEqual(rec.events, [['session.created', 1.5, 100], ['response.done', 2, 100]]);
  assert.deepEqual(rec.agentTurns, [{ audio_ms: 2000 }]);
});
