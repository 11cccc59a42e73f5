// What relaying SSH packets costs a Node process at the least, to set the
// daemon's CPU per GiB against. The daemon decrypts every packet from one leg
// and encrypts it for the other; this measures the same work with nothing
// else around it: no ssh2 Protocol, no relay table, no turn budget, no
// events. A producer process sends 32 KiB channel-data packets in AES-128-GCM
// (as sshd does for a download), the relay process under test forwards them
// to a consumer process that decrypts and checks them (as the client does),
// all over loopback TCP, so the three share the host's cores as in a
// proxied transfer. The relay's CPU time per GiB of payload is the figure.
//
// Variants of the relay:
// - pipe: the bytes as they come, no cryptography: Node's socket cost alone.
// - in-place: each packet decrypted and encrypted again with the other
//   leg's key where it lies in the read chunk, one write per chunk.
// - reframed: each packet decrypted, its payload copied into a new packet in
//   a recycled buffer with fresh padding and encrypted, one write per
//   packet: what the daemon did for every packet before its relay loop, and
//   still does where the loop cannot run (lib/packetbuffers.ts).
// - loop: the daemon's relay loop (native/packetrelay.c): one call per read
//   chunk decrypts, re-frames and encrypts its whole packets into a recycled
//   buffer, one write per chunk; a packet split across reads is joined to
//   the next chunk.
// The ciphers are ssh2's native binding (the loop: the daemon's addon, whose
// ciphers stand in for ssh2's in the daemon): the bench reaches
// into ssh2's build directly, outside lib/ssh2internals.ts, and
// test/relayfloor.test.ts fails if that stops working.
//
// Run as a script, this file is one of the three processes (see `main`).
import { fork, type ChildProcess } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { once } from 'node:events';
import { createRequire } from 'node:module';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { packetRelay, ResultSlot, Stop } from '../lib/packetrelay.js';
import { GiB, median } from './stats.js';

const require = createRequire(import.meta.url);

interface GcmCipher {
  /** Encrypts `uint32 length, body, 16 bytes for the tag` in place. */
  encrypt(packet: Buffer): void;
  free(): void;
}
interface GcmDecipher {
  /** Decrypts `body` (everything between length and tag) in place; throws on a bad tag. */
  decrypt(body: Buffer, length: number, tag: Buffer): void;
  free(): void;
}
const binding = require('ssh2/lib/protocol/crypto/build/Release/sshcrypto.node') as {
  AESGCMCipher: new (name: string, key: Buffer, iv: Buffer) => GcmCipher;
  AESGCMDecipher: new (name: string, key: Buffer, iv: Buffer) => GcmDecipher;
};

export const VARIANTS = ['pipe', 'in-place', 'reframed', 'loop'] as const;
export type Variant = (typeof VARIANTS)[number];

/** Keys of the leg into the relay (A) and out of it (B); fixed, this is no secret. */
const KEY_A = Buffer.alloc(16, 1);
const IV_A = Buffer.alloc(12, 2);
const KEY_B = Buffer.alloc(16, 3);
const IV_B = Buffer.alloc(12, 4);

const TAG_BYTES = 16;
/** SSH_MSG_CHANNEL_DATA with 32 KiB of data, as OpenSSH sends a bulk stream. */
const MSG_CHANNEL_DATA = 94;
const DATA_BYTES = 32768;
const PAYLOAD_BYTES = 1 + 4 + 4 + DATA_BYTES;
/** Room for the largest packet ssh2 takes (35000 bytes) and its length and tag. */
const FRAME_BUFFER_BYTES = 35_064;
const AES_GCM_BLOCK = 16;

/** RFC 4253 §6 for AES-GCM: the padded body a multiple of 16, at least 4 bytes of padding. */
function layout(payloadBytes: number): { bodyBytes: number; padding: number } {
  const unpadded = 1 + payloadBytes;
  let padding = AES_GCM_BLOCK - (unpadded % AES_GCM_BLOCK);
  if (padding < 4) padding += AES_GCM_BLOCK;
  return { bodyBytes: unpadded + padding, padding };
}

/**
 * Splits a TCP stream into whole packets. A packet that lies whole in a
 * chunk is handed over as a view of it (`uint32 length, body, tag`); one that
 * straddles chunks is assembled in a buffer of its own first.
 */
class Framer {
  private partial?: Buffer;
  private filled = 0;

  constructor(private readonly onFrame: (frame: Buffer, inChunk: boolean) => void) {}

  /** Hands over the packets `chunk` completes; returns the run of `chunk` that held whole packets (for in-place writes). */
  push(chunk: Buffer): { runStart: number; runEnd: number } {
    let p = 0;
    if (this.partial !== undefined) {
      p = this.fill(chunk);
      if (this.partial === undefined) return { runStart: p, runEnd: this.scan(chunk, p) };
      return { runStart: p, runEnd: p };
    }
    return { runStart: 0, runEnd: this.scan(chunk, 0) };
  }

  private scan(chunk: Buffer, start: number): number {
    let p = start;
    while (chunk.length - p >= 4) {
      const total = 4 + chunk.readUInt32BE(p) + TAG_BYTES;
      if (chunk.length - p < total) break;
      this.onFrame(chunk.subarray(p, p + total), true);
      p += total;
    }
    const end = p;
    if (p < chunk.length) {
      this.partial = Buffer.allocUnsafe(FRAME_BUFFER_BYTES);
      this.filled = chunk.copy(this.partial, 0, p);
    }
    return end;
  }

  /** Copies the rest of the straddling packet from `chunk`; returns the bytes used. */
  private fill(chunk: Buffer): number {
    const partial = this.partial!;
    let used = 0;
    if (this.filled < 4) {
      used = chunk.copy(partial, this.filled, 0, Math.min(4 - this.filled, chunk.length));
      this.filled += used;
      if (this.filled < 4) return used;
    }
    const total = 4 + partial.readUInt32BE(0) + TAG_BYTES;
    if (total > FRAME_BUFFER_BYTES) throw new Error(`packet of ${total} bytes`);
    const n = chunk.copy(partial, this.filled, used, used + Math.min(total - this.filled, chunk.length - used));
    this.filled += n;
    if (this.filled === total) {
      this.partial = undefined;
      this.onFrame(partial.subarray(0, total), false);
    }
    return used + n;
  }
}

/** Decrypts a frame's body in place; returns the body (padding length, payload, padding). */
function openFrame(decipher: GcmDecipher, frame: Buffer, tag: Buffer): Buffer {
  const bodyBytes = frame.length - 4 - TAG_BYTES;
  const body = frame.subarray(4, 4 + bodyBytes);
  tag.set(frame.subarray(4 + bodyBytes));
  decipher.decrypt(body, bodyBytes, tag);
  return body;
}

async function producer(port: number, bytes: number): Promise<void> {
  const socket = net.connect(port, '127.0.0.1');
  socket.setNoDelay(true);
  await once(socket, 'connect');
  const cipher = new binding.AESGCMCipher('aes-128-gcm', KEY_A, IV_A);
  const { bodyBytes, padding } = layout(PAYLOAD_BYTES);
  for (let sent = 0; sent < bytes; sent += DATA_BYTES) {
    const packet = Buffer.allocUnsafe(4 + bodyBytes + TAG_BYTES);
    packet.writeUInt32BE(bodyBytes, 0);
    packet[4] = padding;
    packet[5] = MSG_CHANNEL_DATA;
    packet.writeUInt32BE(0, 6);
    packet.writeUInt32BE(DATA_BYTES, 10);
    packet.fill(0x61, 14, 14 + DATA_BYTES);
    randomFillSync(packet, 5 + PAYLOAD_BYTES, padding);
    cipher.encrypt(packet);
    if (!socket.write(packet)) await once(socket, 'drain');
  }
  socket.end();
  await once(socket, 'close');
}

/** Listens; reports its port, then the data bytes it received and checked. */
function consumer(variant: Variant): void {
  const server = net.createServer((socket) => {
    const decipher = variant === 'pipe' ? new binding.AESGCMDecipher('aes-128-gcm', KEY_A, IV_A) : new binding.AESGCMDecipher('aes-128-gcm', KEY_B, IV_B);
    const tag = Buffer.alloc(TAG_BYTES);
    let received = 0;
    const framer = new Framer((frame) => {
      const body = openFrame(decipher, frame, tag);
      if (body[1] !== MSG_CHANNEL_DATA) throw new Error(`message type ${body[1]}, not CHANNEL_DATA`);
      received += body.readUInt32BE(6);
    });
    socket.on('data', (chunk: Buffer) => framer.push(chunk));
    socket.on('end', () => {
      process.send!({ received });
      server.close();
    });
  });
  server.listen(0, '127.0.0.1', () => process.send!({ port: (server.address() as net.AddressInfo).port }));
}

/** Listens; forwards one connection to `outPort` and reports its CPU seconds from first connection to the end. */
async function relay(variant: Variant, outPort: number): Promise<void> {
  const out = net.connect(outPort, '127.0.0.1');
  out.setNoDelay(true);
  await once(out, 'connect');
  const server = net.createServer((input) => {
    input.setNoDelay(true);
    const start = process.cpuUsage();
    out.on('drain', () => input.resume());
    const write = (data: Buffer, done?: () => void): void => {
      if (!out.write(data, done)) input.pause();
    };
    input.on('data', forwarder(variant, write, out));
    input.on('end', () =>
      out.end(() => {
        const used = process.cpuUsage(start);
        process.send!({ cpuSeconds: (used.user + used.system) / 1e6 });
        server.close();
      }),
    );
  });
  server.listen(0, '127.0.0.1', () => process.send!({ port: (server.address() as net.AddressInfo).port }));
}

function forwarder(variant: Variant, write: (data: Buffer, done?: () => void) => void, out: net.Socket): (chunk: Buffer) => void {
  if (variant === 'pipe') return (chunk) => write(chunk);
  const decipher = new binding.AESGCMDecipher('aes-128-gcm', KEY_A, IV_A);
  const cipher = new binding.AESGCMCipher('aes-128-gcm', KEY_B, IV_B);
  const tag = Buffer.alloc(TAG_BYTES);
  if (variant === 'in-place') {
    const framer = new Framer((frame, inChunk) => {
      openFrame(decipher, frame, tag);
      cipher.encrypt(frame);
      // Whole packets in a chunk go out as one slice of it (below).
      if (!inChunk) write(frame);
    });
    return (chunk) => {
      out.cork();
      const { runStart, runEnd } = framer.push(chunk);
      if (runEnd > runStart) write(chunk.subarray(runStart, runEnd));
      out.uncork();
    };
  }
  if (variant === 'loop') return relayLoop(write);
  const free: ArrayBuffer[] = [];
  const framer = new Framer((frame) => {
    const body = openFrame(decipher, frame, tag);
    const payloadBytes = body.length - body[0]! - 1;
    const { bodyBytes, padding } = layout(payloadBytes);
    const block = free.pop() ?? new ArrayBuffer(FRAME_BUFFER_BYTES);
    const packet = Buffer.from(block, 0, 4 + bodyBytes + TAG_BYTES);
    packet.writeUInt32BE(bodyBytes, 0);
    packet[4] = padding;
    body.copy(packet, 5, 1, 1 + payloadBytes);
    randomFillSync(packet, 5 + payloadBytes, padding);
    cipher.encrypt(packet);
    write(packet, () => void free.push(block));
  });
  return (chunk) => {
    out.cork();
    framer.push(chunk);
    out.uncork();
  };
}

/** Room for a read chunk (64 KiB) and a packet held from the one before, re-framed. */
const LOOP_BLOCK_BYTES = 104 * 1024;

function relayLoop(write: (data: Buffer, done?: () => void) => void): (chunk: Buffer) => void {
  const decipher = new packetRelay.AESGCMDecipher('aes-128-gcm', KEY_A, IV_A);
  const cipher = new packetRelay.AESGCMCipher('aes-128-gcm', KEY_B, IV_B);
  const forwarded = Buffer.alloc(256);
  forwarded[MSG_CHANNEL_DATA] = 1;
  const result = new Float64Array(5);
  const free: ArrayBuffer[] = [];
  let seqno = 0;
  let tail: Buffer | undefined;
  return (chunk) => {
    const buf = tail === undefined ? chunk : Buffer.concat([tail, chunk]);
    tail = undefined;
    let p = 0;
    for (;;) {
      const block = free.pop() ?? new ArrayBuffer(LOOP_BLOCK_BYTES);
      const out = Buffer.from(block);
      packetRelay.relay(buf, p, buf.length, decipher, seqno, cipher, seqno, forwarded, out, 0, result);
      seqno = (seqno + result[ResultSlot.Relayed]!) >>> 0;
      const outEnd = result[ResultSlot.OutputEnd]!;
      if (outEnd > 0) write(out.subarray(0, outEnd), () => void free.push(block));
      else free.push(block);
      p = result[ResultSlot.Next]!;
      if (result[ResultSlot.Stopped] === Stop.OutputFull) continue;
      if (result[ResultSlot.Stopped] === Stop.OtherType) throw new Error('a packet that is not CHANNEL_DATA');
      if (p < buf.length) tail = Buffer.from(buf.subarray(p));
      return;
    }
  };
}

/** CPU seconds per GiB for one AES-GCM pass over 32 KiB packets in this process (the cipher alone). */
export function aesGcmPassSecondsPerGiB(bytes: number): number {
  const cipher = new binding.AESGCMCipher('aes-128-gcm', KEY_A, IV_A);
  const { bodyBytes } = layout(PAYLOAD_BYTES);
  const packet = Buffer.alloc(4 + bodyBytes + TAG_BYTES);
  packet.writeUInt32BE(bodyBytes, 0);
  for (let i = 0; i < 256; i++) cipher.encrypt(packet); // warm up
  const start = process.cpuUsage();
  for (let done = 0; done < bytes; done += DATA_BYTES) cipher.encrypt(packet);
  const used = process.cpuUsage(start);
  cipher.free();
  return (used.user + used.system) / 1e6 / (bytes / GiB);
}

/** CPU seconds per GiB for one of the addon's AES-GCM codes: a decrypt and an encrypt pass over each 32 KiB packet, as the daemon makes (the ciphers alone). */
export interface AddonAesGcmCost {
  /** aesGcmImplementation()'s name. */
  implementation: string;
  secondsPerGiB: number;
}

/** AddonAesGcmCost of each AES-GCM code of the addon this CPU runs (useAesGcm()), `bytes` each; the addon is left on its best. */
export function addonAesGcmCosts(bytes: number): AddonAesGcmCost[] {
  const costs: AddonAesGcmCost[] = [];
  for (const which of ['openssl', 'vaes-avx2', 'best'] as const) {
    let implementation: string;
    try {
      implementation = packetRelay.useAesGcm(which);
    } catch {
      continue; // no VAES-AVX2 on this CPU
    }
    if (costs.some((c) => c.implementation === implementation)) continue;
    const cipher = new packetRelay.AESGCMCipher('aes-128-gcm', KEY_A, IV_A) as unknown as GcmCipher;
    const decipher = new packetRelay.AESGCMDecipher('aes-128-gcm', KEY_A, IV_A) as unknown as GcmDecipher;
    const { bodyBytes } = layout(PAYLOAD_BYTES);
    const packet = Buffer.alloc(4 + bodyBytes + TAG_BYTES);
    packet.writeUInt32BE(bodyBytes, 0);
    const body = packet.subarray(4, 4 + bodyBytes);
    const tag = packet.subarray(4 + bodyBytes);
    const pass = () => {
      cipher.encrypt(packet);
      decipher.decrypt(body, bodyBytes, tag);
    };
    for (let i = 0; i < 256; i++) pass(); // warm up
    const start = process.cpuUsage();
    for (let done = 0; done < bytes; done += DATA_BYTES) pass();
    const used = process.cpuUsage(start);
    cipher.free();
    decipher.free();
    costs.push({ implementation, secondsPerGiB: (used.user + used.system) / 1e6 / (bytes / GiB) });
  }
  packetRelay.useAesGcm('best');
  return costs;
}

export interface RelayFloorResult {
  variant: Variant;
  /** The relaying process's CPU seconds per GiB of payload, one per round. */
  cpuSecondsPerGiB: number[];
  medianCpuSecondsPerGiB: number;
}

function message<T>(child: ChildProcess): Promise<T> {
  return new Promise((resolve, reject) => {
    const onExit = (code: number | null) => reject(new Error(`child exited (${code}) before reporting`));
    child.once('exit', onExit);
    child.once('message', (m) => {
      child.off('exit', onExit);
      resolve(m as T);
    });
  });
}

const SELF = fileURLToPath(import.meta.url);

/** One transfer of `bytes` through a relay of `variant`; the relay's CPU seconds. */
async function transfer(variant: Variant, bytes: number): Promise<number> {
  const children: ChildProcess[] = [];
  const start = (args: string[], execArgv: string[] = []) => {
    const child = fork(SELF, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv });
    children.push(child);
    return child;
  };
  try {
    const sink = start(['consumer', variant]);
    const { port: sinkPort } = await message<{ port: number }>(sink);
    // The daemon's young-generation setting (scripts/start.sh).
    const relayProcess = start(['relay', variant, String(sinkPort)], ['--max-semi-space-size=2']);
    const { port: relayPort } = await message<{ port: number }>(relayProcess);
    const received = message<{ received: number }>(sink);
    const cpu = message<{ cpuSeconds: number }>(relayProcess);
    start(['producer', String(relayPort), String(bytes)]);
    const [{ received: got }, { cpuSeconds }] = await Promise.all([received, cpu]);
    if (got !== bytes) throw new Error(`${variant}: the consumer got ${got} of ${bytes} bytes`);
    return cpuSeconds;
  } finally {
    for (const child of children) if (child.exitCode === null) child.kill();
  }
}

/** Every variant `rounds` times, alternating, `bytes` of payload each. */
export async function measureRelayFloor(bytes: number, rounds: number, log: (line: string) => void): Promise<RelayFloorResult[]> {
  const perGiB = new Map<Variant, number[]>(VARIANTS.map((v) => [v, []]));
  for (let round = 0; round < rounds; round++) {
    for (const variant of VARIANTS) {
      const seconds = await transfer(variant, bytes);
      perGiB.get(variant)!.push(seconds / (bytes / GiB));
      log(`  round ${round + 1}/${rounds} ${variant}: ${(seconds / (bytes / GiB)).toFixed(2)} CPU s/GiB`);
    }
  }
  return VARIANTS.map((variant) => ({ variant, cpuSecondsPerGiB: perGiB.get(variant)!, medianCpuSecondsPerGiB: median(perGiB.get(variant)!) }));
}

function isVariant(v: string | undefined): v is Variant {
  return (VARIANTS as readonly string[]).includes(v ?? '');
}

async function main(role: string | undefined, args: string[]): Promise<void> {
  if (role === 'producer') return producer(Number(args[0]), Number(args[1]));
  if (role === 'consumer' && isVariant(args[0])) return consumer(args[0]);
  if (role === 'relay' && isVariant(args[0])) return relay(args[0], Number(args[1]));
  throw new Error(`usage: relayfloor.js producer PORT BYTES | consumer VARIANT | relay VARIANT OUT_PORT`);
}

if (process.argv[1] === SELF) {
  main(process.argv[2], process.argv.slice(3)).catch((err: Error) => {
    console.error(err.stack ?? err.message);
    process.exit(1);
  });
}
