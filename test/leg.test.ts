// What a Leg keeps once the relay has taken it over, and its sent-packet ring (lib/leg.ts).
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { OWN_PACKET, SENT_PACKETS_REMEMBERED, SentPackets } from '../lib/leg.js';

describe('Leg (lib/leg.ts)', function () {
  it('holds its message handlers until the relay takes over, then lets them be collected', function () {
    // A fresh node with --expose-gc: V8 flags are process-wide, and setting
    // it here would change what other tests see (the spawner's worker).
    const script = `
      const { PassThrough } = await import('node:stream');
      const { clientOffer } = await import(${JSON.stringify(new URL('../lib/algorithms.js', import.meta.url).href)});
      const { Leg } = await import(${JSON.stringify(new URL('../lib/leg.js', import.meta.url).href)});
      // A client-side Leg over in-memory streams whose message handlers only a WeakRef points at.
      const watched = () => {
        const messageHandlers = { USERAUTH_SUCCESS: () => undefined };
        const leg = new Leg({
          name: 'upstream',
          input: new PassThrough(),
          output: new PassThrough(),
          maxQueuedBytes: 1024 * 1024,
          protocol: { server: false, ident: 'jsp-test', offer: clientOffer(), hostVerifier: () => true, messageHandlers },
        });
        return { leg, handlers: new WeakRef(messageHandlers) };
      };
      const kept = watched();
      const released = watched();
      released.leg.takeOver(() => true);
      // WeakRef targets stay alive until the end of the current job.
      await new Promise((resolve) => setImmediate(resolve));
      gc();
      console.log(JSON.stringify({ kept: kept.handlers.deref() !== undefined, released: released.handlers.deref() !== undefined }));
      for (const { leg } of [kept, released]) leg.shutdown();
    `;
    const out = execFileSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], { encoding: 'utf8' });
    expect(JSON.parse(out), 'handlers still reachable').to.deep.equal({ kept: true, released: false });
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
