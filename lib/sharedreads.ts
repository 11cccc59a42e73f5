/**
 * Sockets that read into one buffer shared by all of them, in reads of up to
 * 512 KiB, instead of a new buffer of at most 64 KiB per read (Node's
 * default). The relay loop costs a fifth to a quarter less CPU per GiB with
 * the larger reads (bench/README.md, "Larger reads"), and no read allocates.
 *
 * The price is that a read is only valid until the receiver returns: the next
 * read, of any such socket, overwrites it. The receiver (a Leg) takes every
 * read at once and copies what must outlive it (lib/leg.ts).
 */
import net, { type Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import type { Readable, Writable } from 'node:stream';

/** Also the batch of native/socketrelay.c: a batching relay is woken once this much waits. */
const SHARED_READ_BYTES = 512 * 1024;

let sharedBuffer: Buffer | undefined;

/** Called with the socket as `this`: one function can serve many sockets (no closure per socket). */
export type SharedReadsReceiver = (this: Readable, chunk: Buffer) => void;

const RECEIVER = Symbol('sharedReadsReceiver');
type SharedReadsSocket = Readable & { [RECEIVER]?: SharedReadsReceiver | null };

/** The buffer every shared-reads socket reads into (native/socketrelay.c reads into it too). */
export function sharedReadBuffer(): Buffer {
  sharedBuffer ??= Buffer.allocUnsafeSlow(SHARED_READ_BYTES);
  return sharedBuffer;
}

/**
 * The file descriptor of a TCP socket (a Node internal: its libuv handle's
 * `fd`), or undefined. Not a TLS socket's: its handle's `fd` is the TCP
 * connection's, where bytes written would skip the encryption.
 */
export function socketFd(stream: Readable | Writable): number | undefined {
  if (stream instanceof TLSSocket) return undefined;
  const fd = (stream as { _handle?: { fd?: unknown } | null })._handle?.fd;
  return typeof fd === 'number' && Number.isInteger(fd) && fd >= 0 ? fd : undefined;
}

function onRead(this: SharedReadsSocket, bytes: number, buffer: Buffer): boolean {
  const receiver = this[RECEIVER];
  // Paused until a receiver takes the socket: a read without one would be lost.
  if (!receiver) return false;
  receiver.call(this, buffer.subarray(0, bytes));
  return true;
}

/** A TCP connection whose reads go to the receiver takeSharedReads gives it. Paused until then. */
export function connectWithSharedReads(port: number, host: string): Socket {
  const socket = net.connect({ port, host, onread: { buffer: sharedReadBuffer(), callback: onRead } });
  socket.pause();
  (socket as SharedReadsSocket)[RECEIVER] = null;
  return socket;
}

/**
 * The connection of `socket`, an accepted one, as a socket that reads into
 * the shared buffer like those of connectWithSharedReads. Node's server
 * makes accepted sockets itself, with no way to ask for that, so the
 * connection's libuv handle moves to a new Socket made with an onread
 * option. That uses three Node internals (`_handle`, the constructor's
 * `handle` option, `_server` for the server's connection count);
 * test/sharedreads.test.ts fails loudly if a Node release changes them.
 * `socket` must have nothing read that it still holds: from a server with
 * pauseOnConnect, or a client's after an HTTP upgrade with no bytes past
 * the answer. It is not to be used again.
 */
export function adoptWithSharedReads(socket: Socket): Socket {
  const internal = socket as unknown as NodeSocketInternals;
  const { _handle: handle, _server: server } = internal;
  if (handle === null || handle === undefined) throw new Error('adoptWithSharedReads: the socket has no handle');
  internal._handle = null;
  internal._server = null;
  const adopted = new net.Socket({
    handle,
    pauseOnCreate: true,
    readable: true,
    writable: true,
    onread: { buffer: sharedReadBuffer(), callback: onRead },
  } as net.SocketConstructorOpts);
  // The server counts its connections down as each one's socket closes.
  (adopted as unknown as NodeSocketInternals)._server = server;
  (adopted as SharedReadsSocket)[RECEIVER] = null;
  return adopted;
}

interface NodeSocketInternals {
  _handle: object | null | undefined;
  _server: net.Server | null | undefined;
}

/**
 * If `stream` came from connectWithSharedReads or adoptWithSharedReads, hands its reads to
 * `receiver` from now on (and resumes it); false for any other stream,
 * whose data comes as 'data' events.
 */
export function takeSharedReads(stream: Readable, receiver: SharedReadsReceiver): boolean {
  const socket = stream as SharedReadsSocket;
  if (socket[RECEIVER] !== null) return false;
  socket[RECEIVER] = receiver;
  socket.resume();
  return true;
}
