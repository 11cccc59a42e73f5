/**
 * Immediate TCP acknowledgements while a connection logs in.
 *
 * Linux delays the ACK for data it has received by up to 40 ms unless it has
 * something to send back. An OpenSSH client leaves Nagle's algorithm on until
 * it is logged in, so after its KEXINIT it holds its KEX_ECDH_INIT until the
 * daemon's kernel has acknowledged the KEXINIT. The daemon has nothing to send
 * in between: its own KEXINIT went out with its identification line. About
 * half of all `ssh host true` logins waited those 40 ms (bench/README.md,
 * "Logins: the 40 ms mode"). TCP_QUICKACK after each read makes the kernel
 * acknowledge at once. It is not sticky (the kernel goes back to delayed ACKs
 * by itself), hence once per read; lib/leg.ts does it until the relay takes
 * over, when ACKs piggyback on the data going both ways.
 */
import type { Readable } from 'node:stream';
import { packetRelay } from './packetrelay.js';
import { socketFd } from './sharedreads.js';

/**
 * Has the kernel acknowledge what `stream` has read now rather than up to
 * 40 ms later. False if `stream` is not an open TCP socket.
 */
export function acknowledgeNow(stream: Readable): boolean {
  // socketFd: a Node internal, which test/quickack.test.ts checks.
  const fd = socketFd(stream);
  return fd !== undefined && packetRelay.quickAck(fd);
}
