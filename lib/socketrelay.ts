/**
 * One direction of a relayed connection run by the addon on the sockets
 * themselves (native/socketrelay.c): it reads one leg's socket, relays every
 * packet forwarded unchanged, and writes the other leg's socket, with no
 * JavaScript call per read or write. What it meets that is not such a
 * packet (a key exchange, a global request, the end of the stream, an
 * error) stops it and goes back to the leg (lib/leg.ts), which then reads
 * its socket through Node again.
 *
 * A leg moves a direction onto the sockets after it has relayed a large read
 * whole (bulk data, not keystrokes), when nothing of that direction waits
 * in Node (see Leg.relayOnSockets). The native loop alone left a Node
 * callback per read and a stream write per output block: what the
 * daemon's CPU per GiB stayed above a relay written in C
 * (bench/README.md, "Native socket I/O").
 */
import { packetRelay, type NativeCipher, type NativeDecipher, type NativeSocketRelay } from './packetrelay.js';
import { sharedReadBuffer } from './sharedreads.js';

/** Why a SocketRelay stopped by itself (native/socketrelay.c SR_*). */
export const enum SocketRelayStop {
  /** A packet of another type: [a, b) of the shared read buffer starts with it, decrypted in place (its length field in the clear, c bytes on the wire). */
  OtherType = 1,
  End = 2,
  /** a = -errno */
  ReadError = 3,
  /** a = -errno */
  WriteError = 4,
  /** a = the message ("Invalid MAC", "Bad packet length", ...) */
  ProtocolError = 5,
}

/** Slots of SocketRelay.stats (native/socketrelay.c ST_*). */
export const enum SocketRelayStat {
  /** Bytes read, over every run (those handed back too). */
  BytesIn = 0,
  /** Bytes written or queued for the output socket, over every run. */
  BytesOut = 1,
  /** After stop: the sequence numbers of the next packet in and out. */
  InSeqno = 2,
  OutSeqno = 3,
  /** After stop: the bytes of a split packet copied to stop()'s buffer. */
  Pending = 4,
}

const STATS_LENGTH = 16;

/** A read relayed whole from this size on moves its direction onto the sockets: bulk data, not keystrokes. */
export const SOCKET_RELAY_MIN_READ = 32 * 1024;

export type SocketRelayStopped = (code: SocketRelayStop, a: number | string, b: number, c: number) => void;

let readBufferGiven = false;

export class SocketRelay {
  /** Live counters, written by the addon (SocketRelayStat). */
  readonly stats = new Float64Array(STATS_LENGTH);
  private readonly native: NativeSocketRelay;

  constructor(onStop: SocketRelayStopped) {
    if (!readBufferGiven) {
      // The addon reads into the buffer Node's shared reads use: one of them reads at a time.
      packetRelay.setReadBuffer(sharedReadBuffer());
      readBufferGiven = true;
    }
    this.native = new packetRelay.SocketRelay(onStop, this.stats);
  }

  /** Relays packets from socket `inFd` to socket `outFd`; `pending[0, pendingLength)` is the start of a split packet. */
  start(inFd: number, outFd: number, decipher: NativeDecipher, inSeqno: number, cipher: NativeCipher, outSeqno: number, forwardedTypes: Buffer, pending: Buffer, pendingLength: number): void {
    this.native.start(inFd, outFd, decipher, inSeqno, cipher, outSeqno, forwardedTypes, pending, pendingLength);
  }

  /**
   * `other` relays the connection's other direction. While either batches
   * bulk data, the other batches the small packets that answer it (window
   * adjustments, requests) instead of waking for each (native/socketrelay.c).
   */
  pairWith(other: SocketRelay): void {
    this.native.pair(other.native);
  }

  /**
   * Stops (if it has not stopped by itself). Copies the start of a split
   * packet into `pendingOut` (stats[Pending] bytes) and returns the output
   * the socket has not taken yet: it must be written before anything else.
   */
  stop(pendingOut: Buffer): Buffer | null {
    return this.native.stop(pendingOut);
  }
}

/** Bytes read, packets relayed, and the times batching of bulk data and of replies to it began (native/socketrelay.c), by all socket relays since start. */
export function socketRelayTotals(): { bytesRead: number; relayed: number; batches: number; replyBatches: number } {
  const totals = packetRelay.socketRelayTotals;
  return { bytesRead: totals[0]!, relayed: totals[1]!, batches: totals[2]!, replyBatches: totals[3]! };
}

/** The range the addon hands back with SocketRelayStop.OtherType. */
export function handedBack(start: number, end: number): Buffer {
  return sharedReadBuffer().subarray(start, end);
}
