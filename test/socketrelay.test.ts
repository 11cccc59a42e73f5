// The socket relay (native/socketrelay.c, lib/socketrelay.ts, Leg's
// relayOnSockets): bulk data moves a direction onto the sockets, and
// whatever is not bulk data (a key exchange on either side, UNIMPLEMENTED,
// the end of the input, a broken packet) takes it back to Node intact. With
// the daemon's two legs between a user and an sshd, over loopback TCP
// (test/helpers/legs.ts); the real ssh and sshd run through it in
// test/packetrelay.test.ts and test/core.test.ts.
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { OWN_PACKET, type Leg } from '../lib/leg.js';
import { MSG } from '../lib/messages.js';
import { packetRelay, type NativeSocketRelay } from '../lib/packetrelay.js';
import { socketRelayTotals } from '../lib/socketrelay.js';
import { nextOutboundSeqno } from '../lib/ssh2internals.js';
import { numbered, relayedLegs, type Received } from './helpers/legs.js';
import { waitFor } from './helpers/wait.js';

const MiB = 1024 * 1024;

/** Sends CHANNEL_DATA payloads numbered [from, to) of 32 KiB each. */
function sendNumbered(leg: Leg, from: number, to: number): void {
  for (let n = from; n < to; n++) leg.send(numbered(n), OWN_PACKET);
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from }, (_, i) => from + i);
}

async function allArrived(received: Received, count: number, what: string): Promise<void> {
  await waitFor(() => received.data.length >= count || undefined, { timeoutMs: 30_000, what });
}

/** Resolves when `leg` has completed `count` key exchanges. */
async function keyExchanges(leg: Leg, count: number, what: string): Promise<void> {
  await waitFor(() => leg.keyExchanges >= count || undefined, { timeoutMs: 10_000, what });
}

type RelayedLegs = Awaited<ReturnType<typeof relayedLegs>>;

/** Numbered packets [from, to) from the user to the sshd, and the same numbers back. */
function sendBothWays(legs: RelayedLegs, from: number, to: number): void {
  sendNumbered(legs.user, from, to);
  sendNumbered(legs.sshd, from, to);
}

async function arrivedBothWays(legs: RelayedLegs, count: number): Promise<void> {
  await allArrived(legs.atSshd, count, `${count} packets at the sshd`);
  await allArrived(legs.atUser, count, `${count} packets at the user`);
}

function expectInOrderBothWays(legs: RelayedLegs, count: number): void {
  expect(legs.atSshd.data, 'at the sshd').to.deep.equal(range(0, count));
  expect(legs.atUser.data, 'at the user').to.deep.equal(range(0, count));
}

/** Relayed legs whose user-to-sshd direction has moved onto the sockets. */
async function relayingOnSockets(): Promise<RelayedLegs> {
  const legs = await relayedLegs();
  const before = socketRelayTotals().relayed;
  sendNumbered(legs.user, 0, 300);
  await allArrived(legs.atSshd, 300, 'the data at the sshd');
  expect(socketRelayTotals().relayed - before, 'packets relayed on the sockets').to.be.greaterThan(100);
  return legs;
}

function openDescriptors(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

describe('socket relay (lib/socketrelay.ts, native/socketrelay.c)', function () {
  this.timeout(60_000);
  const closers: (() => void)[] = [];
  afterEach(() => {
    for (const close of closers.splice(0)) close();
  });

  for (const cipher of ['aes128-gcm@openssh.com', 'chacha20-poly1305@openssh.com']) {
    it(`moves bulk data onto the sockets both ways, in order and complete (user cipher ${cipher})`, async function () {
      const legs = await relayedLegs([cipher]);
      closers.push(legs.close);
      const before = socketRelayTotals().relayed;
      sendBothWays(legs, 0, 1000);
      await arrivedBothWays(legs, 1000);
      expectInOrderBothWays(legs, 1000);
      const relayed = socketRelayTotals().relayed - before;
      expect(relayed, 'packets relayed on the sockets, of 2,000').to.be.greaterThan(1000);
      // The socket relays' bytes count as the legs' own.
      expect(legs.front.bytesIn).to.be.greaterThan(1000 * 32 * 1024);
      expect(legs.back.bytesOut).to.be.greaterThan(1000 * 32 * 1024);
      expect(legs.errors).to.deep.equal([]);
    });
  }

  it('moves the small packets coming back (window adjustments) onto the sockets too, once bulk data runs there', async function () {
    const legs = await relayingOnSockets();
    closers.push(legs.close);
    const before = socketRelayTotals().relayed;
    // One at a time, as a transfer's window adjustments come: each is a read of its own.
    for (let n = 0; n < 200; n++) {
      legs.sshd.send(numbered(n, 16), OWN_PACKET);
      await waitFor(() => legs.atUser.data.length > n || undefined, { timeoutMs: 10_000, intervalMs: 1, what: `small packet ${n} at the user` });
    }
    expect(legs.atUser.data).to.deep.equal(range(0, 200));
    // The first goes through Node and moves its direction onto the sockets.
    expect(socketRelayTotals().relayed - before, 'small packets relayed on the sockets, of 200').to.be.at.least(195);
    expect(legs.errors).to.deep.equal([]);
  });

  it('batches the small packets that answer bulk data while it streams, and every one arrives, also once the bulk data stops', async function () {
    const legs = await relayingOnSockets();
    closers.push(legs.close);
    // Bulk data keeps streaming from the user (at most 8 MiB ahead of the sshd) while the sshd answers.
    let next = 300;
    const pump = setInterval(() => {
      if (next - legs.atSshd.data.length < 256) {
        sendNumbered(legs.user, next, next + 16);
        next += 16;
      }
    }, 1);
    try {
      const before = socketRelayTotals();
      await waitFor(() => socketRelayTotals().batches > before.batches || undefined, { timeoutMs: 10_000, intervalMs: 1, what: 'the bulk data batching' });
      for (let n = 0; n < 100; n++) {
        legs.sshd.send(numbered(n, 16), OWN_PACKET);
        await waitFor(() => legs.atUser.data.length > n || undefined, { timeoutMs: 5_000, intervalMs: 1, what: `reply ${n} at the user` });
      }
      expect(socketRelayTotals().replyBatches - before.replyBatches, 'reply batches begun').to.be.at.least(1);
    } finally {
      clearInterval(pump);
    }
    await allArrived(legs.atSshd, next, 'the bulk data at the sshd');
    expect(legs.atSshd.data).to.deep.equal(range(0, next));
    // The bulk data has stopped: replies come as they are sent, the last one too.
    for (let n = 100; n < 110; n++) {
      legs.sshd.send(numbered(n, 16), OWN_PACKET);
      await waitFor(() => legs.atUser.data.length > n || undefined, { timeoutMs: 5_000, intervalMs: 1, what: `reply ${n} after the bulk data` });
    }
    expect(legs.atUser.data).to.deep.equal(range(0, 110));
    expect(legs.errors).to.deep.equal([]);
  });

  it('pairs a relay only with another SocketRelay', function () {
    const stats = () => new Float64Array(16);
    const relay = new packetRelay.SocketRelay(() => {}, stats());
    const cipher = new packetRelay.AESGCMCipher('aes-128-gcm', Buffer.alloc(16), Buffer.alloc(12));
    expect(() => relay.pair(cipher as unknown as NativeSocketRelay)).to.throw('not a SocketRelay');
    expect(() => relay.pair(relay)).to.throw('another SocketRelay');
    expect(() => relay.pair(new packetRelay.SocketRelay(() => {}, stats()))).not.to.throw();
  });

  it('batches the reads of bulk data, and lets nothing wait below the batch size: not after a pause, not once it stops', async function () {
    const legs = await relayedLegs();
    closers.push(legs.close);
    const before = socketRelayTotals();
    sendNumbered(legs.user, 0, 300);
    await allArrived(legs.atSshd, 300, 'the bulk data at the sshd');
    const after = socketRelayTotals();
    expect(after.batches - before.batches, 'batching began').to.be.at.least(1);
    // The kernel wakes a batching relay only once a full read (512 KiB) waits: what comes after a pause is read by its timer.
    for (let n = 300; n < 310; n++) {
      legs.user.send(numbered(n, 16), OWN_PACKET);
      await waitFor(() => legs.atSshd.data.length > n || undefined, { timeoutMs: 5_000, intervalMs: 1, what: `small packet ${n} after the bulk data` });
    }
    // A key exchange right behind bulk data stops the relay as it batches; Node reads the socket after it.
    sendNumbered(legs.user, 310, 610);
    rekey(legs.user);
    await keyExchanges(legs.front, 2, 'the rekey of the user leg');
    for (let n = 610; n < 620; n++) {
      legs.user.send(numbered(n, 16), OWN_PACKET);
      await waitFor(() => legs.atSshd.data.length > n || undefined, { timeoutMs: 5_000, intervalMs: 1, what: `small packet ${n} after the rekey` });
    }
    expect(legs.atSshd.data).to.deep.equal(range(0, 620));
    expect(legs.errors).to.deep.equal([]);
  });

  it('stops for a key exchange started on either side, and goes back onto the sockets after it', async function () {
    // chacha20-poly1305 on the user's side: a sequence number the relay had not counted into ssh2 would break its tag at once.
    const legs = await relayedLegs(['chacha20-poly1305@openssh.com']);
    closers.push(legs.close);
    sendBothWays(legs, 0, 300);
    await arrivedBothWays(legs, 100);
    // The user rekeys while data flows both ways, then the sshd.
    rekey(legs.user);
    sendBothWays(legs, 300, 600);
    await keyExchanges(legs.front, 2, 'the rekey of the user leg');
    rekey(legs.sshd);
    sendBothWays(legs, 600, 900);
    await keyExchanges(legs.back, 2, 'the rekey of the sshd leg');
    await arrivedBothWays(legs, 900);
    const after = socketRelayTotals().relayed;
    sendBothWays(legs, 900, 1200);
    await arrivedBothWays(legs, 1200);
    expectInOrderBothWays(legs, 1200);
    expect(socketRelayTotals().relayed - after, 'packets on the sockets after both rekeys').to.be.greaterThan(150);
    expect([legs.user, legs.front, legs.back, legs.sshd].map((leg) => leg.keyExchanges)).to.deep.equal([2, 2, 2, 2]);
    expect(legs.errors).to.deep.equal([]);
  });

  it('maps an UNIMPLEMENTED for a packet it relayed on the sockets back to the sender’s sequence number', async function () {
    const legs = await relayedLegs();
    closers.push(legs.close);
    const before = socketRelayTotals().relayed;
    sendNumbered(legs.user, 0, 500);
    const lastSent = (nextOutboundSeqno(legs.user.proto) - 1) >>> 0;
    await allArrived(legs.atSshd, 500, 'all data at the sshd');
    expect(socketRelayTotals().relayed - before, 'packets relayed on the sockets').to.be.greaterThan(250);
    // The sshd says it did not implement the last packet it received, by its own sequence number.
    const lastReceived = (receivedPackets(legs.sshd) - 1) >>> 0;
    const unimplemented = Buffer.alloc(5);
    unimplemented[0] = MSG.UNIMPLEMENTED;
    unimplemented.writeUInt32BE(lastReceived, 1);
    legs.sshd.send(unimplemented, OWN_PACKET);
    await waitFor(() => legs.atUser.unimplemented.length > 0 || undefined, { timeoutMs: 10_000, what: 'UNIMPLEMENTED at the user' });
    expect(legs.atUser.unimplemented).to.deep.equal([lastSent]);
    expect(legs.errors).to.deep.equal([]);
  });

  it('hands a peer that stops reading the backpressure: the sender is held, and everything arrives once it reads again', async function () {
    const legs = await relayedLegs();
    closers.push(legs.close);
    sendNumbered(legs.user, 0, 100);
    await allArrived(legs.atSshd, 100, 'the first data at the sshd');
    legs.sshdSocket.pause();
    sendNumbered(legs.user, 100, 2100); // 64 MiB
    // Loopback socket buffers hold a few MiB each; the rest waits at the
    // sender: the daemon's intake stops growing (over 5 polls in a row).
    let last = -1;
    let steady = 0;
    await waitFor(
      () => {
        const now = legs.front.bytesIn;
        steady = now === last ? steady + 1 : 0;
        last = now;
        return steady >= 5 || undefined;
      },
      { timeoutMs: 20_000, intervalMs: 50, what: 'the daemon to stop taking data' },
    );
    expect(legs.front.bytesIn, 'bytes the daemon took while the sshd read nothing').to.be.lessThan(48 * MiB);
    expect(legs.userSocket.writableLength, 'bytes held at the sender').to.be.greaterThan(16 * MiB);
    legs.sshdSocket.resume();
    await allArrived(legs.atSshd, 2100, 'all data at the sshd');
    expect(legs.atSshd.data).to.deep.equal(range(0, 2100));
    expect(legs.errors).to.deep.equal([]);
  });

  it('stops at the end of its input, and the leg ends as it would through Node', async function () {
    const legs = await relayingOnSockets();
    closers.push(legs.close);
    legs.userSocket.end();
    await waitFor(() => legs.ended.includes('front') || undefined, { timeoutMs: 10_000, what: 'the end of the front leg' });
    expect(legs.errors).to.deep.equal([]);
  });

  it('fails the leg on a broken packet read on the sockets, with the reason ssh2 would give', async function () {
    const legs = await relayingOnSockets();
    closers.push(legs.close);
    // Not a packet: 64 bytes the front leg's decipher cannot take.
    legs.userSocket.write(Buffer.alloc(64, 0xa5));
    await waitFor(() => legs.errors.length > 0 || undefined, { timeoutMs: 10_000, what: 'the front leg failing' });
    expect(legs.errors[0]).to.match(/^front: (Bad packet length|Invalid MAC)$/);
  });

  it('lets a connection that relayed on the sockets be collected once it is closed', function () {
    // A fresh node with --expose-gc (V8 flags are process-wide). A strong
    // reference from the addon to anything that reaches the leg would keep
    // every such connection for the daemon's lifetime.
    const script = `
      const { relayedLegs, numbered } = await import(${JSON.stringify(new URL('./helpers/legs.js', import.meta.url).href)});
      const { OWN_PACKET } = await import(${JSON.stringify(new URL('../lib/leg.js', import.meta.url).href)});
      const { socketRelayTotals } = await import(${JSON.stringify(new URL('../lib/socketrelay.js', import.meta.url).href)});
      const watched = async () => {
        const legs = await relayedLegs();
        for (let n = 0; n < 300; n++) legs.user.send(numbered(n), OWN_PACKET);
        while (legs.atSshd.data.length < 300) await new Promise((resolve) => setTimeout(resolve, 10));
        legs.close();
        return { front: new WeakRef(legs.front), back: new WeakRef(legs.back) };
      };
      const refs = await watched();
      const relayed = socketRelayTotals().relayed;
      // Closed sockets and WeakRef targets let go over a few turns.
      for (let i = 0; i < 20 && (refs.front.deref() || refs.back.deref()); i++) {
        await new Promise((resolve) => setTimeout(resolve, 10));
        gc();
      }
      console.log(JSON.stringify({ relayed: relayed > 100, front: refs.front.deref() !== undefined, back: refs.back.deref() !== undefined }));
    `;
    const out = execFileSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
    expect(JSON.parse(out), 'legs still reachable').to.deep.equal({ relayed: true, front: false, back: false });
  });

  it('gives back the descriptors it polls when the legs shut down while it runs', async function () {
    const legs = await relayedLegs();
    const open = openDescriptors();
    const before = socketRelayTotals().relayed;
    sendBothWays(legs, 0, 1000);
    await waitFor(() => socketRelayTotals().relayed - before > 200 || undefined, { timeoutMs: 10_000, what: 'relaying on the sockets' });
    expect(openDescriptors(), 'two duplicates per running direction').to.be.greaterThan(open);
    legs.front.shutdown();
    legs.back.shutdown();
    expect(openDescriptors(), 'after the legs shut down').to.equal(open);
    legs.close();
  });
});

/** The sequence number of the next packet `leg` receives (ssh2's decipher counts them). */
function receivedPackets(leg: Leg): number {
  return (leg.proto as unknown as { _decipher: { inSeqno: number } })._decipher.inSeqno;
}

/** Starts a key exchange on `leg` (ssh2's Protocol.rekey, which lib/ssh2internals.ts's Protocol type leaves out). */
function rekey(leg: Leg): void {
  (leg.proto as unknown as { rekey(): void }).rekey();
}
