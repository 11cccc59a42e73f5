// What a Leg keeps once the relay has taken it over (lib/leg.ts).
import { expect } from 'chai';
import { PassThrough } from 'node:stream';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { clientOffer } from '../lib/algorithms.js';
import { Leg, OWN_PACKET, SENT_PACKETS_REMEMBERED, SentPackets } from '../lib/leg.js';

// A collector for this test process, which runs without --expose-gc: the
// flag applies to contexts made after it is set.
v8.setFlagsFromString('--expose-gc');
const collect = runInNewContext('gc') as () => void;

/** A client-side Leg over in-memory streams whose message handlers only a WeakRef points at. */
function legWithWatchedHandlers(): { leg: Leg; handlers: WeakRef<object> } {
  const messageHandlers = { USERAUTH_SUCCESS: () => undefined };
  const leg = new Leg({
    name: 'upstream',
    input: new PassThrough(),
    output: new PassThrough(),
    maxQueuedBytes: 1024 * 1024,
    protocol: { server: false, ident: 'jsp-test', offer: clientOffer(), hostVerifier: () => true, messageHandlers },
  });
  return { leg, handlers: new WeakRef(messageHandlers) };
}

describe('Leg (lib/leg.ts)', function () {
  it('holds its message handlers until the relay takes over, then lets them be collected', async function () {
    const kept = legWithWatchedHandlers();
    const released = legWithWatchedHandlers();
    released.leg.takeOver(() => true);
    // WeakRef targets stay alive until the end of the current job.
    await new Promise((resolve) => setImmediate(resolve));
    collect();
    expect(kept.handlers.deref(), 'handlers of a leg in authentication').not.to.equal(undefined);
    expect(released.handlers.deref(), 'handlers of a leg taken over').to.equal(undefined);
    for (const { leg } of [kept, released]) leg.shutdown();
  });
});

describe('SentPackets: outbound sequence number to source tag (lib/leg.ts)', function () {
  it('knows nothing before anything is sent', function () {
    const sent = new SentPackets();
    expect(sent.lookup(0)).to.equal(undefined);
    sent.clear();
    expect(sent.lookup(0)).to.equal(undefined);
  });

  it('remembers the last SENT_PACKETS_REMEMBERED packets as it grows, and forgets older ones', function () {
    const sent = new SentPackets();
    const total = SENT_PACKETS_REMEMBERED + 1000;
    for (let seqno = 0; seqno < total; seqno++) {
      sent.record(seqno, seqno % 7 === 0 ? OWN_PACKET : seqno * 3);
      // Right after each growth step too, every remembered packet is still there.
      if ((seqno & (seqno + 1)) === 0) {
        for (let s = Math.max(0, seqno - SENT_PACKETS_REMEMBERED + 1); s <= seqno; s++) {
          expect(sent.lookup(s), `packet ${s} after ${seqno}`).to.equal(s % 7 === 0 ? undefined : s * 3);
        }
      }
    }
    for (let s = total - SENT_PACKETS_REMEMBERED; s < total; s++) expect(sent.lookup(s)).to.equal(s % 7 === 0 ? undefined : s * 3);
    for (let s = 0; s < total - SENT_PACKETS_REMEMBERED; s++) expect(sent.lookup(s), `forgotten packet ${s}`).to.equal(undefined);
  });

  it('follows the 32-bit sequence number across its wrap, and forgets everything on clear', function () {
    const sent = new SentPackets();
    const start = 2 ** 32 - 20;
    for (let k = 0; k < 40; k++) sent.record((start + k) >>> 0, k + 1);
    for (let k = 0; k < 40; k++) expect(sent.lookup((start + k) >>> 0), `packet ${k} of the wrap`).to.equal(k + 1);
    sent.clear();
    for (let k = 0; k < 40; k++) expect(sent.lookup((start + k) >>> 0)).to.equal(undefined);
    // Strict KEX restarts at 0 after a clear.
    sent.record(0, 42);
    expect(sent.lookup(0)).to.equal(42);
  });
});
