// What a Leg keeps once the relay has taken it over (lib/leg.ts).
import { expect } from 'chai';
import { PassThrough } from 'node:stream';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { clientOffer } from '../lib/algorithms.js';
import { Leg } from '../lib/leg.js';

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
