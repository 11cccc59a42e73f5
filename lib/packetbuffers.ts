/**
 * Buffers for outgoing packets and the random bytes that pad them.
 *
 * Forwarding bulk data sends one ~32 KiB packet per source packet. A fresh
 * ArrayBuffer for each was the largest source of garbage in the daemon
 * (a GiB of external memory per GiB forwarded, and the collections it
 * triggers). Large packet buffers are therefore recycled: a leg gives a
 * buffer back once its socket has written it (see Leg.write), and the next
 * packet, on any connection, reuses it. A buffer that is never given back
 * (a leg that closed with writes pending) is simply collected.
 *
 * Padding (RFC 4253 §6: "arbitrary-length padding ... should consist of
 * random bytes") came from one randomFillSync call per packet for 4-19 bytes;
 * it now comes from a larger block filled by the same CSPRNG in one call.
 * Every random byte is handed out once, never reused.
 */
import { randomFillSync } from 'node:crypto';

/**
 * Size of a recycled buffer: the largest packet either leg sends. ssh2 takes
 * inbound packets up to 35000 bytes; with length, padding and tag, a packet
 * forwarded as-is is never larger than this. Larger ones get their own buffer.
 */
const BLOCK_BYTES = 35_000 + 64;

/**
 * Smaller packets get their own buffer (Node pools those below 4 KiB): a
 * recycled block then holds at most twice the bytes it carries, also while
 * it waits in the write queue of a slow client.
 */
const MIN_RECYCLED_BYTES = BLOCK_BYTES >>> 1;

/** Free blocks kept for reuse (~1 MiB): enough for the packets of a few busy sockets' chunks. */
const MAX_FREE_BLOCKS = 32;

const free: ArrayBuffer[] = [];
/** Blocks this module made: only they are taken back. */
const blocks = new WeakSet<ArrayBuffer>();

/** A buffer of `length` bytes with unspecified contents for one outgoing packet. */
export function takePacketBuffer(length: number): Buffer {
  if (length < MIN_RECYCLED_BYTES || length > BLOCK_BYTES) return Buffer.allocUnsafe(length);
  let block = free.pop();
  if (block === undefined) {
    block = new ArrayBuffer(BLOCK_BYTES);
    blocks.add(block);
  }
  return Buffer.from(block, 0, length);
}

/** True if `buffer` came from takePacketBuffer and should be given back once written. */
export function isRecycled(buffer: Buffer): boolean {
  return buffer.byteLength >= MIN_RECYCLED_BYTES && blocks.has(buffer.buffer as ArrayBuffer);
}

/**
 * Gives a packet buffer back. Only once nothing reads it any more: for a
 * socket, when its write callback has run (the kernel has the bytes, or the
 * write was abandoned). Each buffer must be given back at most once.
 */
export function releasePacketBuffer(buffer: Buffer): void {
  if (free.length < MAX_FREE_BLOCKS && isRecycled(buffer)) free.push(buffer.buffer as ArrayBuffer);
}

/** Random bytes filled in one call; 64 KiB lasts ~5000 packets. */
const RANDOM_BLOCK_BYTES = 64 * 1024;
const random = Buffer.allocUnsafeSlow(RANDOM_BLOCK_BYTES);
/** The first byte of `random` not handed out yet. */
let randomUsed = RANDOM_BLOCK_BYTES;

/** Fills `target[start, start + length)` with bytes from the CSPRNG that no other call gets. */
export function fillRandom(target: Buffer, start: number, length: number): void {
  if (length > RANDOM_BLOCK_BYTES) {
    randomFillSync(target, start, length);
    return;
  }
  if (randomUsed + length > RANDOM_BLOCK_BYTES) {
    randomFillSync(random);
    randomUsed = 0;
  }
  random.copy(target, start, randomUsed, randomUsed + length);
  randomUsed += length;
}
