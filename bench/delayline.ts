// A network link with latency, in front of a server: a TCP forwarder that
// holds every chunk it reads for a fixed time before writing it on, in each
// direction. The bench's "link" case puts one in front of the direct sshd and
// one in front of the daemon, so that both paths see the same round trip.
//
// Why not the kernel's netem: the machines the bench runs on have kernels
// built without it (no sch_netem), and a delay on loopback would also slow
// the daemon's own leg to sshd and its Hub calls. The link here has latency
// and no bandwidth limit of its own, which is what limits an SSH transfer
// over a long path: a channel's window (2 MiB in OpenSSH) is all that may be
// in flight, so a transfer moves at most one window per round trip. The
// forwarder's sockets see no delay, so TCP's own window never binds first.
//
// Run as a script (`node dist/bench/delayline.js TARGET_PORT ONE_WAY_MS`),
// this file is the forwarder: it listens on an ephemeral loopback port and
// sends that port to its parent over IPC. A process of its own, so that the
// bench's event loop never delays a chunk.
import { fork, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';

/** Past this many bytes held in one direction, the forwarder stops reading it until they are out. */
const MAX_HELD_BYTES = 64 * 1024 * 1024;

export interface DelayLine {
  /** Where clients connect instead of the server's own port. */
  port: number;
  stop(): void;
}

interface Held {
  due: number;
  chunk: Buffer;
}

/** One direction: `from`'s bytes reach `to` `delayMs` after they were read, in order; its end too. */
function delayDirection(from: net.Socket, to: net.Socket, delayMs: number): void {
  const held: Held[] = [];
  let heldBytes = 0;
  let timer: NodeJS.Timeout | undefined;
  let ended = false;
  const release = () => {
    timer = undefined;
    const now = performance.now();
    while (held.length > 0 && held[0]!.due <= now) {
      const { chunk } = held.shift()!;
      heldBytes -= chunk.length;
      to.write(chunk);
    }
    if (heldBytes < MAX_HELD_BYTES && from.isPaused()) from.resume();
    if (held.length > 0) timer = setTimeout(release, held[0]!.due - now);
    else if (ended) to.end();
  };
  from.on('data', (chunk: Buffer) => {
    held.push({ due: performance.now() + delayMs, chunk });
    heldBytes += chunk.length;
    if (heldBytes >= MAX_HELD_BYTES) from.pause();
    timer ??= setTimeout(release, delayMs);
  });
  from.on('end', () => {
    ended = true;
    if (held.length === 0) to.end();
  });
}

function forward(oneWayMs: number, targetPort: number): net.Server {
  return net.createServer({ allowHalfOpen: true, noDelay: true }, (client) => {
    const server = net.connect({ port: targetPort, host: '127.0.0.1', allowHalfOpen: true, noDelay: true });
    delayDirection(client, server, oneWayMs);
    delayDirection(server, client, oneWayMs);
    // Either side failing ends the link, as a reset would. A side that
    // closes cleanly has ended both its directions, and each end reaches
    // the other side after the bytes still held before it.
    client.on('error', () => server.destroy());
    server.on('error', () => client.destroy());
  });
}

const SELF = fileURLToPath(import.meta.url);

/** A delay line in its own process, in front of 127.0.0.1:`targetPort`. */
export function startDelayLine(targetPort: number, oneWayMs: number): Promise<DelayLine> {
  const child: ChildProcess = fork(SELF, [String(targetPort), String(oneWayMs)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  return new Promise((resolve, reject) => {
    const onExit = (code: number | null) => reject(new Error(`the delay line exited (${code}) before listening`));
    child.once('exit', onExit);
    child.once('message', (m) => {
      child.off('exit', onExit);
      resolve({ port: (m as { port: number }).port, stop: () => child.kill() });
    });
  });
}

if (process.argv[1] === SELF) {
  const [targetPort, oneWayMs] = process.argv.slice(2).map(Number);
  if (!Number.isInteger(targetPort) || !(oneWayMs! >= 0)) {
    console.error('usage: delayline.js TARGET_PORT ONE_WAY_MS');
    process.exit(2);
  }
  const server = forward(oneWayMs!, targetPort!);
  server.listen(0, '127.0.0.1', () => process.send!({ port: (server.address() as net.AddressInfo).port }));
  // The parent's end: no forwarder outlives the bench.
  process.on('disconnect', () => process.exit(0));
}
