// lib/quickack.ts: TCP_QUICKACK through the packet relay addon, on the Node
// internal it relies on (a socket's `_handle.fd`), and a Leg using it while
// it logs in and not once the relay has taken over.
import { expect } from 'chai';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import fs from 'node:fs';
import { PassThrough } from 'node:stream';
import { OWN_PACKET } from '../lib/leg.js';
import { packetRelay } from '../lib/packetrelay.js';
import { acknowledgeNow } from '../lib/quickack.js';
import { connectWithSharedReads } from '../lib/sharedreads.js';
import { legPair, numbered, socketPair } from './helpers/legs.js';
import { waitFor } from './helpers/wait.js';

describe('immediate TCP acknowledgements (lib/quickack.ts)', function () {
  const closers: (() => void)[] = [];
  afterEach(() => {
    for (const close of closers.splice(0)) close();
  });

  it('finds the file descriptor of a TCP socket where it looks for it (Node internal: _handle.fd)', async function () {
    const [connecting, accepted] = await socketPair(true);
    closers.push(() => connecting.destroy(), () => accepted.destroy());
    for (const socket of [connecting, accepted]) {
      const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
      expect(fd, 'a file descriptor').to.be.a('number').and.to.be.at.least(0);
    }
  });

  it('sets TCP_QUICKACK on either end of a TCP connection, including one with shared reads', async function () {
    const [connecting, accepted] = await socketPair(true);
    closers.push(() => connecting.destroy(), () => accepted.destroy());
    expect(acknowledgeNow(connecting)).to.equal(true);
    expect(acknowledgeNow(accepted)).to.equal(true);
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    closers.push(() => server.close());
    const shared = connectWithSharedReads((server.address() as net.AddressInfo).port, '127.0.0.1');
    closers.push(() => shared.destroy());
    await new Promise((resolve) => shared.once('connect', resolve));
    expect(acknowledgeNow(shared)).to.equal(true);
  });

  it('is false, and harmless, for what is not an open TCP socket', async function () {
    expect(acknowledgeNow(new PassThrough())).to.equal(false);
    const [connecting, accepted] = await socketPair(false);
    accepted.destroy();
    connecting.destroy();
    expect(acknowledgeNow(connecting), 'a destroyed socket').to.equal(false);
    // A unix-domain socket has a descriptor but no TCP to acknowledge.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jsp-quickack-'));
    closers.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(path.join(dir, 's'), resolve));
    closers.push(() => server.close());
    const unix = net.connect(path.join(dir, 's'));
    closers.push(() => unix.destroy());
    await new Promise((resolve) => unix.once('connect', resolve));
    expect(acknowledgeNow(unix)).to.equal(false);
    expect(() => packetRelay.quickAck(-1)).to.throw(TypeError);
  });

  it('is what a leg does after each read while it logs in, and not once the relay has taken over', async function () {
    const quickAck = packetRelay.quickAck;
    let calls = 0;
    packetRelay.quickAck = (fd: number) => {
      calls++;
      return quickAck(fd);
    };
    try {
      // legPair runs both legs' key exchange, then hands both to a handler (the relay's takeOver).
      const pair = await legPair(undefined, true);
      closers.push(() => pair.close());
      expect(calls, 'reads during the key exchange').to.be.at.least(2);
      const before = calls;
      for (const n of [0, 1, 2, 3]) pair.client.send(numbered(n), OWN_PACKET);
      await waitFor(() => pair.received.length === 4 || undefined, { timeoutMs: 10_000, what: 'the packets' });
      expect(calls - before, 'reads after takeOver').to.equal(0);
    } finally {
      packetRelay.quickAck = quickAck;
    }
  });
});
