// Sockets that read into the shared read buffer (lib/sharedreads.ts), and the
// Node internals adoptWithSharedReads relies on: a Node release that changes
// them fails here, not as lost bytes in a session.
import { expect } from 'chai';
import crypto from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import { adoptWithSharedReads, connectWithSharedReads, socketFd, takeSharedReads } from '../lib/sharedreads.js';
import { waitFor } from './helpers/wait.js';

const MiB = 1024 * 1024;

/** Collects a shared-read socket's reads (copied, as a leg copies what it keeps). */
function collector() {
  const chunks: Buffer[] = [];
  const buffers = new Set<ArrayBufferLike>();
  const receivers = new Set<unknown>();
  let largest = 0;
  return {
    receive(this: unknown, chunk: Buffer) {
      receivers.add(this);
      buffers.add(chunk.buffer);
      largest = Math.max(largest, chunk.length);
      chunks.push(Buffer.from(chunk));
    },
    data: () => Buffer.concat(chunks),
    get buffers() {
      return buffers;
    },
    get largest() {
      return largest;
    },
    /** What `this` was in the calls: the socket, so that one function can serve many. */
    get receivers() {
      return receivers;
    },
  };
}

describe('shared reads (lib/sharedreads.ts)', function () {
  const closers: (() => void)[] = [];
  afterEach(function () {
    for (const close of closers.splice(0)) close();
  });

  async function listen(options: net.ServerOpts, onConnection: (socket: net.Socket) => void): Promise<net.Server> {
    const server = net.createServer(options, onConnection);
    closers.push(() => server.close());
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return server;
  }

  it('reads a connected socket into one buffer, in reads larger than 64 KiB, nothing lost while it waited for its receiver', async function () {
    const data = crypto.randomBytes(8 * MiB);
    const first = 64 * 1024;
    let peer: net.Socket | undefined;
    const server = await listen({}, (socket) => (peer = socket));
    const socket = connectWithSharedReads((server.address() as net.AddressInfo).port, '127.0.0.1');
    closers.push(() => socket.destroy());
    await once(socket, 'connect');
    await waitFor(() => peer, { timeoutMs: 5000, what: 'the accepted peer' });
    // The first bytes are in the kernel's buffers once the write callback runs;
    // the socket, paused until it has a receiver, must not have read them.
    await new Promise<void>((resolve, reject) => peer!.write(data.subarray(0, first), (err) => (err ? reject(err) : resolve())));
    expect(socket.bytesRead, 'nothing read before a receiver').to.equal(0);
    const got = collector();
    expect(takeSharedReads(socket, got.receive)).to.equal(true);
    peer!.end(data.subarray(first));
    await once(socket, 'end');
    expect(got.data().equals(data), 'the bytes, in order').to.equal(true);
    expect(got.buffers.size, 'every read in the one shared buffer').to.equal(1);
    expect(got.largest, 'reads larger than Node\'s 64 KiB').to.be.greaterThan(64 * 1024);
    expect([...got.receivers], 'called on the socket').to.deep.equal([socket]);
  });

  it('adopts an accepted socket: reads into the shared buffer, writes, pauses, and the server counts it until it closes', async function () {
    const data = crypto.randomBytes(4 * MiB);
    let adopted: net.Socket | undefined;
    const got = collector();
    const server = await listen({ pauseOnConnect: true }, (socket) => {
      adopted = adoptWithSharedReads(socket);
      takeSharedReads(adopted, got.receive);
    });
    const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    closers.push(() => client.destroy());
    await once(client, 'connect');
    await waitFor(() => adopted, { timeoutMs: 5000, what: 'the adopted socket' });
    expect(adopted!.remotePort).to.equal(client.localPort);

    // Paused, it reads nothing (watched for 200 ms after the bytes are in the
    // kernel's buffers: a read would come within microseconds); resumed,
    // everything arrives.
    adopted!.pause();
    await new Promise<void>((resolve, reject) => client.write(data.subarray(0, 64 * 1024), (err) => (err ? reject(err) : resolve())));
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(got.data().length, 'nothing read while paused').to.equal(0);
    adopted!.resume();
    const echoed = once(client, 'data');
    adopted!.write('pong');
    expect(String((await echoed)[0])).to.equal('pong');
    client.end(data.subarray(64 * 1024));
    await once(adopted!, 'end');
    expect(got.data().equals(data)).to.equal(true);
    expect(got.buffers.size).to.equal(1);

    const count = () => new Promise<number>((resolve, reject) => server.getConnections((err, n) => (err ? reject(err) : resolve(n))));
    expect(await count(), 'the adopted socket counted').to.equal(1);
    adopted!.destroy();
    await once(adopted!, 'close');
    expect(await count(), 'and uncounted as it closed').to.equal(0);
    // server.close() completes only once its count is 0.
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('leaves other streams to their data events', function () {
    const socket = new net.Socket();
    expect(takeSharedReads(socket, () => {})).to.equal(false);
    socket.destroy();
  });

  it("gives a TCP socket's descriptor to the native relay, never a TLS socket's (that would skip the encryption)", async function () {
    const server = await listen({}, (socket) => closers.push(() => socket.destroy()));
    const { port } = server.address() as net.AddressInfo;
    const plain = net.connect(port, '127.0.0.1');
    closers.push(() => plain.destroy());
    await once(plain, 'connect');
    expect(socketFd(plain)).to.be.a('number');
    const secure = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false });
    secure.on('error', () => undefined);
    closers.push(() => secure.destroy());
    await once(secure, 'connect');
    // The TLS socket's handle has the TCP connection's descriptor: the check is on the socket's kind.
    expect((secure as unknown as { _handle: { fd: unknown } })._handle.fd).to.be.a('number');
    expect(socketFd(secure)).to.equal(undefined);
  });
});
