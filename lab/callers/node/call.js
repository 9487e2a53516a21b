#!/usr/bin/env node
'use strict';
// One WebRTC call from a Node stack to a WHIP-style offer URL (POST SDP, 201 +
// Location, DELETE to hang up), measured from the caller's side.  Prints ONE
// JSON line on stdout; diagnostics go to stderr.  See --help.

const path = require('node:path');
const { parseArgs } = require('node:util');
const { Recorder } = require('./lib/recorder');

const STACKS = {
  wrtc: './stacks/wrtc',
  werift: './stacks/werift',
  'node-datachannel': './stacks/datachannel',
};

const HELP = `usage: node call.js --stack NAME --offer-url URL --audio FILE [options]

Makes one call: an audio transceiver (sendrecv) and the "oai-events" data
channel, no ICE servers; waits for ICE gathering to complete, POSTs the offer
(application/sdp), applies the answer, sends the tone in FILE in a loop while
counting the agent's audio and events, then reads GET <Location> (the server's
view), DELETEs <Location> and prints one JSON line.

  --stack NAME          ${Object.keys(STACKS).join(' | ')}
  --offer-url URL       where to POST the offer (signaling's /v1/calls)
  --audio FILE          the caller's voice, looped: raw 16-bit mono PCM at 48 kHz
                        for wrtc (it encodes itself); Ogg Opus in 20 ms packets
                        for werift and node-datachannel (they send RTP as given)
  --seconds S           talk time once connected (default 5)
  --setup-timeout S     give up if not connected S seconds after the answer, or
                        not gathered S seconds after the offer (default 10)
  --http-timeout S      per HTTP request (default 10)
  --bind HOST           the caller's ICE address (default 127.0.0.1; werift and
                        node-datachannel bind there, libwebrtc cannot be told)
  --help                this text

Exit status: 0 when a result was printed (its "ok" says how the call went),
2 for bad arguments.`;

class CallFailed extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.code = code;
  }
}

/** Connected, or down (failed/closed), as the stack reports it. */
class Link {
  constructor() {
    this.upPromise = new Promise((resolve) => (this.up = resolve));
    this.downPromise = new Promise((resolve) => (this.down = resolve));
  }
}

const sleep = (ms, value) => new Promise((resolve) => setTimeout(resolve, ms, value));

function errorText(body) {
  try {
    const { error } = JSON.parse(body);
    return `${error.code}: ${error.message}`;
  } catch {
    return body.slice(0, 200);
  }
}

async function call(options) {
  const rec = new Recorder();
  const link = new Link();
  const httpTimeout = () => AbortSignal.timeout(options.httpTimeoutS * 1000);
  const out = {
    ok: false,
    error: null,
    stack: options.stack,
    stack_version: null,
    call_id: null,
    backend: null,
    location: null,
    started: null,
    talk_ms: null,
    // The ICE pair in use, as the stack reports it.  Its local side may be
    // peer-reflexive: the address the server saw, not this process's socket.
    selected_pair: null,
    server: null,
  };
  let peer = null;
  let talkStart = null;
  let end = null;
  let packetsSent = null;
  try {
    const stack = require(STACKS[options.stack]);
    out.stack_version = stack.version();
    peer = await stack.open({ rec, link, audioFile: options.audio, bindHost: options.bind });
    const offer = await Promise.race([peer.offer(), sleep(options.setupTimeoutS * 1000, null)]);
    if (offer === null) throw new CallFailed('gather_timeout', `ICE gathering took over ${options.setupTimeoutS} s`);

    rec.startClock();
    out.started = rec.started;
    let response;
    let body;
    try {
      response = await fetch(options.offerUrl, {
        method: 'POST',
        headers: { 'Content-Type': 'application/sdp' },
        body: offer,
        signal: httpTimeout(),
      });
      body = await response.text();
    } catch (error) {
      throw new CallFailed('unreachable', `POST ${options.offerUrl}: ${error.cause?.message ?? error.message}`);
    }
    if (response.status !== 201) throw new CallFailed('offer_rejected', `HTTP ${response.status}: ${errorText(body)}`);
    const location = response.headers.get('location');
    if (!location) throw new CallFailed('bad_answer', '201 without a Location header');
    out.location = new URL(location, response.url).href;
    out.call_id = location.replace(/\/+$/, '').split('/').pop();
    const backend = response.headers.get('x-rtclab-backend');
    out.backend = backend === null ? null : /^\d+$/.test(backend) ? Number(backend) : backend;
    rec.mark('answer');
    try {
      await peer.answer(body);
    } catch (error) {
      throw new CallFailed('bad_answer', `${error.name}: ${error.message}`);
    }

    const setup = await Promise.race([
      link.upPromise.then(() => 'up'),
      link.downPromise,
      sleep(options.setupTimeoutS * 1000, 'timeout'),
    ]);
    if (setup === 'timeout') {
      throw new CallFailed('setup_timeout', `not connected ${options.setupTimeoutS} s after the answer`);
    }
    if (setup !== 'up') throw new CallFailed('connection_failed', `connection ${setup} during setup`);

    talkStart = rec.ms();
    peer.startAudio();
    const lost = await Promise.race([link.downPromise, sleep(options.seconds * 1000, null)]);
    peer.stopAudio();
    end = rec.ms();
    if (lost !== null) {
      throw new CallFailed('connection_lost', `connection ${lost} after ${((end - talkStart) / 1000).toFixed(1)} s of talk`);
    }
  } catch (error) {
    out.error = error instanceof CallFailed ? error.message : `internal: ${error.stack || error}`;
  } finally {
    if (end === null && rec.t0 !== null) end = rec.ms();
    if (peer !== null) {
      try {
        peer.stopAudio();
        const seen = await peer.finish();
        packetsSent = seen.packetsSent;
        out.selected_pair = { local: seen.local, local_type: seen.localType, remote: seen.remote };
      } catch (error) {
        process.stderr.write(`stats failed: ${error.stack || error}\n`);
      }
    }
    if (out.location !== null) {
      out.server = await fetchJson(out.location, httpTimeout());
      try {
        const hangUp = await fetch(out.location, { method: 'DELETE', signal: httpTimeout() });
        out.hang_up_status = hangUp.status;
      } catch (error) {
        process.stderr.write(`hang-up failed: ${error.message}\n`);
      }
    }
    if (peer !== null) {
      try {
        await peer.close();
      } catch (error) {
        process.stderr.write(`close failed: ${error.stack || error}\n`);
      }
    }
  }
  out.ok = out.error === null;
  out.talk_ms = talkStart !== null && end !== null ? Math.round((end - talkStart) * 10) / 10 : null;
  out.setup_ms = rec.setupMs();
  out.uplink = { packets_sent: packetsSent };
  out.downlink = rec.downlink(end);
  out.events = rec.events;
  out.agent_turns = rec.agentTurns;
  out.arrivals_ms = rec.arrivals;
  out.states = rec.states;
  return out;
}

async function fetchJson(url, signal) {
  try {
    const response = await fetch(url, { signal });
    return response.status === 200 ? await response.json() : null;
  } catch {
    return null;
  }
}

function parseOptions(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      stack: { type: 'string' },
      'offer-url': { type: 'string' },
      audio: { type: 'string' },
      seconds: { type: 'string', default: '5' },
      'setup-timeout': { type: 'string', default: '10' },
      'http-timeout': { type: 'string', default: '10' },
      bind: { type: 'string', default: '127.0.0.1' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) return null;
  const number = (name) => {
    const value = Number(values[name]);
    if (!Number.isFinite(value) || value <= 0) throw new Error(`--${name} must be a positive number`);
    return value;
  };
  if (!(values.stack in STACKS)) throw new Error(`--stack must be one of ${Object.keys(STACKS).join(', ')}`);
  if (!values['offer-url']) throw new Error('--offer-url is required');
  if (!values.audio) throw new Error('--audio is required');
  return {
    stack: values.stack,
    offerUrl: values['offer-url'],
    audio: path.resolve(values.audio),
    seconds: number('seconds'),
    setupTimeoutS: number('setup-timeout'),
    httpTimeoutS: number('http-timeout'),
    bind: values.bind,
  };
}

async function main() {
  let options;
  try {
    options = parseOptions(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`${error.message}\n\n${HELP}\n`);
    process.exit(2);
  }
  if (options === null) {
    process.stdout.write(`${HELP}\n`);
    return;
  }
  const result = await call(options);
  process.stdout.write(`${JSON.stringify(result)}\n`, () => {
    // Native stacks keep threads and handles alive after close(): leave now.
    process.exit(0);
  });
}

main();
