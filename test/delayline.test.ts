// The bench's link case (bench/delayline.ts) must delay each direction by
// what it says, and lose, reorder or hold back nothing: its figures would
// otherwise show the link, not the proxy.
import { expect } from 'chai';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import { startDelayLine, type DelayLine } from '../bench/delayline.js';
import { waitFor } from './helpers/wait.js';

const ONE_WAY_MS = 40;

/** A server that sends back what it reads and ends when its client ends (after a last line). */
async function echoServer(): Promise<net.Server> {
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    socket.on('data', (chunk) => socket.write(chunk));
    socket.on('end', () => socket.end('bye\n'));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return server;
}

function connect(port: number): Promise<net.Socket> {
  const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  return once(socket, 'connect').then(() => socket);
}

describe('bench delay line', function () {
  this.timeout(30_000);
  let server: net.Server;
  let line: DelayLine;

  beforeEach(async function () {
    server = await echoServer();
    line = await startDelayLine((server.address() as net.AddressInfo).port, ONE_WAY_MS);
  });

  afterEach(function () {
    line.stop();
    server.close();
  });

  it('delays a round trip by both directions', async function () {
    const socket = await connect(line.port);
    // The connection itself is not delayed (the line accepts at once): time one exchange.
    const t0 = performance.now();
    socket.write('ping');
    const [reply] = (await once(socket, 'data')) as [Buffer];
    const elapsed = performance.now() - t0;
    expect(reply.toString()).to.equal('ping');
    expect(elapsed).to.be.at.least(2 * ONE_WAY_MS - 1);
    socket.destroy();
  });

  it('passes 16 MiB both ways intact and in order, and the end of each direction after it', async function () {
    const data = randomBytes(16 * 1024 * 1024);
    const socket = await connect(line.port);
    const received: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => received.push(chunk));
    const ended = once(socket, 'end');
    // Small writes and large ones, as SSH packets and bulk data come.
    for (let at = 0; at < data.length; ) {
      const n = Math.min(data.length - at, at % 3 === 0 ? 1000 : 300_000);
      socket.write(data.subarray(at, at + n));
      at += n;
    }
    socket.end();
    await ended;
    const all = Buffer.concat(received);
    expect(all.length).to.equal(data.length + 'bye\n'.length);
    const digest = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    expect(digest(all.subarray(0, data.length))).to.equal(digest(data));
    expect(all.subarray(data.length).toString()).to.equal('bye\n');
    socket.destroy();
  });

  it('stops: its port refuses connections afterwards', async function () {
    line.stop();
    await waitFor(
      () =>
        new Promise<boolean>((resolve) => {
          const s = net.connect(line.port, '127.0.0.1');
          s.once('connect', () => {
            s.destroy();
            resolve(false);
          });
          s.once('error', () => resolve(true));
        }),
      { timeoutMs: 10_000, what: 'the delay line to stop listening' },
    );
  });
});
