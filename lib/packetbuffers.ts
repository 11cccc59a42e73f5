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
 * inbound packets up to 35000 bytes; with length, padding and a MAC of up to
 * 64 bytes, a packet forwarded as-is is never larger than this. Larger ones
 * get their own buffer.
 */
const BLOCK_BYTES = 35_000 + 128;

/**
 * Smaller packets get their own buffer (Node pools those below 4 KiB): a
 * recycled block then holds at most twice the bytes it carries, also while
 * it waits in the write queue of a slow client.
 */
const MIN_RECYCLED_BYTES = BLOCK_BYTES >>> 1;

/** Free blocks kept for reuse (~1 MiB): enough for the packets of a few busy sockets' chunks. */
const MAX_FREE_BLOCKS = 32;

/**
 * Output of one relay() call (lib/leg.ts): re-encrypted packets, written with
 * one write. A read of up to 512 KiB (lib/sharedreads.ts) fills several
 * blocks, which the corked socket sends in one writev; 68 KiB holds two
 * 32 KiB channel packets with their framing.
 */
export const RELAY_BLOCK_BYTES = 68 * 1024;
/**
 * Free relay blocks kept for reuse, up to 34 MiB. With 100 busy sessions
 * several hundred are in use at once (writes queued towards sshd, reads
 * held for a later turn); kept only 8, the daemon made a new 68 KiB block
 * for most of them, and the external memory set off a full collection every
 * ~64 MB (bench/README.md, twentieth session). The quiet collection after a
 * burst drops them (dropFreeBlocks).
 */
const MAX_FREE_RELAY_BLOCKS = 512;

const free: ArrayBuffer[] = [];
const freeRelay: ArrayBuffer[] = [];
/** Blocks this module made: only they are taken back. */
const blocks = new WeakSet<ArrayBuffer>();

/** Relay blocks made since start (see relayBlockStats). */
let relayBlocksMade = 0;

function newBlock(bytes: number): ArrayBuffer {
  const block = new ArrayBuffer(bytes);
  blocks.add(block);
  if (bytes === RELAY_BLOCK_BYTES) relayBlocksMade++;
  return block;
}

/** Relay blocks made since start, and free now: a block taken and given back is made once. */
export function relayBlockStats(): { made: number; free: number } {
  return { made: relayBlocksMade, free: freeRelay.length };
}

/** A buffer of `length` bytes with unspecified contents for one outgoing packet. */
export function takePacketBuffer(length: number): Buffer {
  if (length < MIN_RECYCLED_BYTES || length > BLOCK_BYTES) return Buffer.allocUnsafe(length);
  return Buffer.from(free.pop() ?? newBlock(BLOCK_BYTES), 0, length);
}

/** A whole relay block (RELAY_BLOCK_BYTES, unspecified contents); give it back, or a view of it once written. */
export function takeRelayBuffer(): Buffer {
  return Buffer.from(freeRelay.pop() ?? newBlock(RELAY_BLOCK_BYTES));
}

/** True if `buffer` is (a view of) a block from this module and should be given back once written. */
export function isRecycled(buffer: Buffer): boolean {
  return blocks.has(buffer.buffer as ArrayBuffer);
}

/**
 * Lets go of the free blocks, for the collection that follows a burst
 * (lib/quietgc.ts): up to ~36 MiB an idle daemon has no use for. The next burst
 * makes new ones.
 */
export function dropFreeBlocks(): void {
  free.length = 0;
  freeRelay.length = 0;
}

/**
 * Gives a packet or relay buffer back. Only once nothing reads it any more:
 * for a socket, when its write callback has run (the kernel has the bytes,
 * or the write was abandoned). Each block must be given back at most once.
 */
export function releasePacketBuffer(buffer: Buffer): void {
  const block = buffer.buffer as ArrayBuffer;
  if (!blocks.has(block)) return;
  const list = block.byteLength === RELAY_BLOCK_BYTES ? freeRelay : free;
  if (list.length < (list === free ? MAX_FREE_BLOCKS : MAX_FREE_RELAY_BLOCKS)) list.push(block);
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
