/**
 * One leg of a proxied connection: an ssh2 Protocol bound to a byte stream,
 * whose payloads the relay can take over after authentication.
 *
 * A leg keeps its own send queue while it is in a key exchange instead of
 * ssh2's, so that it knows the sequence number every forwarded packet gets.
 * It remembers which source packet each sent packet came from, so that an
 * SSH_MSG_UNIMPLEMENTED from its peer can be mapped back (RFC 4253 §11.4).
 */
import { EventEmitter } from 'node:events';
import { Socket } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import { isRecycled, releasePacketBuffer } from './packetbuffers.js';
import { MSG } from './messages.js';
import { turnBudget, type Backlogged, type TurnBudget } from './turnbudget.js';
import {
  createProtocol,
  inKeyExchange,
  interceptPayloads,
  nextOutboundSeqno,
  releaseMessageHandlers,
  sendPayload,
  sendPayloadBypassingKex,
  strictKex,
  type Protocol,
  type ProtocolConfig,
} from './ssh2internals.js';

/** How many sent packets a leg remembers for UNIMPLEMENTED remapping. */
export const SENT_PACKETS_REMEMBERED = 4096;

/** The ring's first size; it doubles as the leg sends more (an idle session stays small). */
const SENT_PACKETS_INITIAL = 16;

/** The ring of a leg that has sent nothing yet: shared, it is never written. */
const NO_ENTRIES = new Float64Array(0);

/** Messages only a server sends: from a client they are a protocol error. */
const SERVER_ONLY = new Set<number>([
  MSG.SERVICE_ACCEPT,
  MSG.USERAUTH_FAILURE,
  MSG.USERAUTH_SUCCESS,
  MSG.USERAUTH_BANNER,
  MSG.USERAUTH_INFO_REQUEST,
]);

/**
 * Bytes a leg may hold in its backlog (chunks waiting for a turn's budget)
 * before it stops reading its stream: only a daemon that cannot keep up
 * gets there, and the kernel's socket buffers hold the rest.
 */
const MAX_BACKLOG_BYTES = 256 * 1024;

/** The leg a stream belongs to, for the listeners all legs share. */
const LEG = Symbol('leg');
type LegStream = (Readable | Writable) & { [LEG]?: Leg };

/** Marks a packet the proxy itself originated: an UNIMPLEMENTED for it is consumed. */
export const OWN_PACKET = -1;

/**
 * A bounded map from outbound sequence number to the source tag of that
 * packet, as a ring indexed by the low bits of the sequence number. It covers
 * the last SENT_PACKETS_REMEMBERED sequence numbers, but grows to that size
 * only as the sequence numbers it has seen span more than it holds: at full
 * size it is 64 KiB per leg, most of an idle session's memory.
 */
export class SentPackets {
  /** Slot i is entries[2i] (the sequence number, -1 if none) and entries[2i + 1] (its tag): one buffer, not two, per leg. */
  private entries = NO_ENTRIES;
  /** The first sequence number recorded since the last clear. */
  private first = -1;

  private get capacity(): number {
    return this.entries.length >> 1;
  }

  record(seqno: number, tag: number): void {
    if (this.first < 0) this.first = seqno;
    if (this.capacity < SENT_PACKETS_REMEMBERED) {
      const span = ((seqno - this.first) >>> 0) + 1;
      if (span > this.capacity) this.grow(Math.min(SENT_PACKETS_REMEMBERED, Math.max(SENT_PACKETS_INITIAL, 2 ** Math.ceil(Math.log2(span)))));
    }
    const i = (seqno & (this.capacity - 1)) << 1;
    this.entries[i] = seqno;
    this.entries[i + 1] = tag;
  }

  /** The tag of packet `seqno`, or undefined if unknown or the proxy's own. */
  lookup(seqno: number): number | undefined {
    if (this.capacity === 0) return undefined;
    const i = (seqno & (this.capacity - 1)) << 1;
    if (this.entries[i] !== seqno || this.entries[i + 1] === OWN_PACKET) return undefined;
    return this.entries[i + 1];
  }

  clear(): void {
    for (let i = 0; i < this.entries.length; i += 2) this.entries[i] = -1;
    this.first = -1;
  }

  /**
   * Moves the entries to a larger ring. Two entries cannot collide there: the
   * same low bits in the larger ring would have meant the same slot before.
   */
  private grow(capacity: number): void {
    const entries = new Float64Array(2 * capacity);
    for (let i = 0; i < entries.length; i += 2) entries[i] = -1;
    for (let i = 0; i < this.entries.length; i += 2) {
      const seqno = this.entries[i]!;
      if (seqno < 0) continue;
      const j = (seqno & (capacity - 1)) << 1;
      entries[j] = seqno;
      entries[j + 1] = this.entries[i + 1]!;
    }
    this.entries = entries;
  }
}

export interface LegOptions {
  name: 'client' | 'upstream';
  input: Readable;
  output: Writable;
  protocol: Omit<ProtocolConfig, 'onWrite' | 'onError' | 'onHandshakeComplete'>;
  /** Hard cap on bytes queued while this leg is in a key exchange. */
  maxQueuedBytes: number;
  /** The per-turn read budget this leg shares (default: the daemon's one). */
  budget?: TurnBudget;
}

/** Receives every payload that is not key exchange once the relay runs; returns false to leave it to ssh2. */
export type PayloadHandler = (payload: Buffer, seqno: number) => boolean;

/**
 * Events: 'handshake' (first key exchange done), 'congested' / 'drained' (the
 * output buffer filled / emptied), 'error' (protocol or stream failure, with
 * an Error), 'end' (the input stream ended).
 */
export class Leg extends EventEmitter implements Backlogged {
  readonly name: 'client' | 'upstream';
  readonly proto: Protocol;
  readonly input: Readable;
  readonly output: Writable;
  /** Increments each time strict KEX restarts the sequence numbers. */
  epoch = 0;
  /** Bytes received and sent on this leg's stream. */
  bytesIn = 0;
  bytesOut = 0;
  /** Set by the relay: the other leg's output, corked while a chunk is parsed. */
  peerOutput?: Writable;

  private handler?: PayloadHandler;
  private readonly sent = new SentPackets();
  private queue: { payload: Buffer; tag: number }[] = [];
  private queuedBytes = 0;
  private readonly maxQueuedBytes: number;
  private readonly budget: TurnBudget;
  private handshakes = 0;
  private done = false;
  /** Input paused because the other leg's output is congested (relay backpressure). */
  private congested = false;
  /** Chunks received after the turn's budget was spent, in order (see turnbudget.ts). */
  private backlog: Buffer[] = [];
  private backlogBytes = 0;
  /** The input ended with chunks still in the backlog: end once they are processed. */
  private endAfterBacklog = false;
  /** True while ssh2 parses a chunk: freeing its native ciphers then would be a use-after-free. */
  private parsing = false;
  private cleanupPending = false;
  /**
   * Whether written packet buffers can be recycled: a socket is done with a
   * buffer when its write callback runs. Other streams (in-memory pairs in
   * tests) may pass the same buffer on to a reader.
   */
  private readonly recycles: boolean;

  constructor(options: LegOptions) {
    super();
    this.name = options.name;
    this.input = options.input;
    this.output = options.output;
    this.maxQueuedBytes = options.maxQueuedBytes;
    this.budget = options.budget ?? turnBudget;
    this.recycles = options.output instanceof Socket;
    this.proto = createProtocol({
      ...options.protocol,
      onWrite: (data) => this.write(data),
      onError: (err) => this.fail(err),
      onHandshakeComplete: () => this.handshakeComplete(),
    });
    // Not `options` in the closure below: it would keep the message handlers
    // alive after takeOver.
    const server = options.protocol.server;
    // Once shut down, the rest of a chunk being parsed is swallowed.
    interceptPayloads(this.proto, (payload, seqno) => {
      if (this.done) return true;
      if (this.handler) return this.handler(payload, seqno);
      if (server) {
        // ssh2 runs its client-side handlers for these even as a server: a
        // USERAUTH_SUCCESS/FAILURE from the client shifts its queue of pending
        // auth requests (the daemon's own reply then throws). They are the
        // server's to send.
        if (SERVER_ONLY.has(payload[0]!)) {
          this.fail(new Error(`message type ${payload[0]} from the client`));
          return true;
        }
        // ssh2 runs new Array(num-responses) before reading them: up to 2^25
        // slots (256 MiB, ~0.3 s of CPU) for a 5-byte payload. Each response
        // takes at least 4 bytes: refuse a count the payload cannot hold.
        if (payload[0] === MSG.USERAUTH_INFO_RESPONSE && payload.length >= 5 && payload.readUInt32BE(1) > (payload.length - 5) / 4) {
          this.fail(new Error('malformed USERAUTH_INFO_RESPONSE'));
          return true;
        }
      }
      return false;
    });

    // One listener function per event for all legs, finding its leg on the
    // stream: six closures per leg were ~340 bytes of every idle session.
    (this.input as LegStream)[LEG] = this;
    (this.output as LegStream)[LEG] = this;
    this.input.on('data', Leg.onInputData);
    this.input.on('end', Leg.onInputEnd);
    this.input.on('close', Leg.onInputEnd);
    this.input.on('error', Leg.onStreamError);
    this.output.on('drain', Leg.onOutputDrain);
    if ((this.output as LegStream) !== this.input) this.output.on('error', Leg.onStreamError);
  }

  private static onInputData(this: LegStream, chunk: Buffer): void {
    this[LEG]!.receive(chunk);
  }

  private static onInputEnd(this: LegStream): void {
    this[LEG]!.inputEnded();
  }

  private static onStreamError(this: LegStream, err: Error): void {
    this[LEG]!.fail(err);
  }

  private static onOutputDrain(this: LegStream): void {
    this[LEG]!.emit('drained');
  }

  start(): void {
    this.proto.start?.();
  }

  /**
   * Hands every later non-kex payload to `handler` (the relay), which takes
   * all of them: the handlers the protocol was created with (authentication)
   * can never run again, and are released with what they hold (~2 KiB per
   * session).
   */
  takeOver(handler: PayloadHandler): void {
    this.handler = handler;
    releaseMessageHandlers(this.proto);
  }

  /**
   * Sends a payload, or queues it while this leg is in a key exchange.
   * `tag` identifies the source packet for UNIMPLEMENTED remapping
   * (OWN_PACKET for the proxy's own messages).
   */
  send(payload: Buffer, tag: number): void {
    if (this.done) return;
    if (inKeyExchange(this.proto)) {
      // The payload may point into a socket chunk; keep a copy of our own.
      this.queue.push({ payload: Buffer.from(payload), tag });
      this.queuedBytes += payload.length;
      if (this.queuedBytes > this.maxQueuedBytes) {
        this.fail(new Error(`more than ${this.maxQueuedBytes} bytes queued during key exchange`));
      }
      return;
    }
    this.sent.record(nextOutboundSeqno(this.proto), tag);
    sendPayload(this.proto, payload);
  }

  /** Sends a payload at once, even during a key exchange (DISCONNECT only). */
  sendUrgent(payload: Buffer): void {
    if (this.done) return;
    sendPayloadBypassingKex(this.proto, payload);
  }

  /** The source tag of the packet this leg sent with `seqno`, if it was forwarded. */
  sourceOf(seqno: number): number | undefined {
    return this.sent.lookup(seqno);
  }

  /** Stops reading while the other leg cannot write (relay backpressure). */
  pause(): void {
    this.congested = true;
    this.input.pause();
  }

  resume(): void {
    this.congested = false;
    // Over its bound, the backlog pauses the input again at the next chunk (receive).
    this.input.resume();
  }

  /** Processes backlogged chunks while this turn's budget lasts; true if some are left. */
  drainBacklog(): boolean {
    while (this.backlog.length > 0 && !this.budget.exhausted && !this.done) {
      const chunk = this.backlog.shift()!;
      this.backlogBytes -= chunk.length;
      this.process(chunk);
    }
    if (this.done) return false;
    if (this.backlog.length > 0) return true;
    if (this.endAfterBacklog) this.finish('end');
    else if (!this.congested) this.input.resume();
    return false;
  }

  /** Stops processing; the owner closes the streams. */
  shutdown(): void {
    if (this.done) return;
    this.done = true;
    this.handler = undefined;
    this.queue = [];
    this.backlog = [];
    this.backlogBytes = 0;
    this.input.removeAllListeners('data');
    // Shutting down from inside a message handler: ssh2's decipher goes on
    // with the rest of the chunk, so its native state is freed afterwards.
    if (this.parsing) this.cleanupPending = true;
    else this.proto.cleanup();
  }

  get closed(): boolean {
    return this.done;
  }

  /** Key exchanges completed on this leg: the first one plus every rekey. */
  get keyExchanges(): number {
    return this.handshakes;
  }

  private receive(chunk: Buffer): void {
    if (this.done) return;
    if (this.backlog.length > 0 || this.budget.exhausted) {
      if (this.backlog.length === 0) this.budget.enqueue(this);
      this.backlog.push(chunk);
      this.backlogBytes += chunk.length;
      if (this.backlogBytes > MAX_BACKLOG_BYTES) this.input.pause();
      return;
    }
    this.process(chunk);
  }

  private process(chunk: Buffer): void {
    this.budget.charge(chunk.length);
    this.bytesIn += chunk.length;
    // Batch what one chunk produces on the other leg into few writes.
    const peer = this.peerOutput;
    peer?.cork();
    this.parsing = true;
    try {
      this.proto.parse(chunk, 0, chunk.length);
    } catch (err) {
      // After a shutdown in mid-chunk, ssh2 may throw on what follows: moot.
      if (!this.done) this.fail(err as Error);
    } finally {
      this.parsing = false;
      peer?.uncork();
      if (this.cleanupPending) {
        this.cleanupPending = false;
        this.proto.cleanup();
      }
    }
  }

  private write(data: Buffer): void {
    if (this.done) return;
    this.bytesOut += data.length;
    const release = this.recycles && isRecycled(data) ? () => releasePacketBuffer(data) : undefined;
    if (!this.output.write(data, release)) this.emit('congested');
  }

  private handshakeComplete(): void {
    if (this.handshakes++ > 0 && strictKex(this.proto)) {
      // Sequence numbers restarted at NEWKEYS: old entries would alias new packets.
      this.sent.clear();
      this.epoch++;
    }
    const queued = this.queue;
    this.queue = [];
    this.queuedBytes = 0;
    for (const { payload, tag } of queued) this.send(payload, tag);
    if (this.handshakes === 1) this.emit('handshake');
  }

  private fail(err: Error): void {
    if (this.done) return;
    this.emit('error', err);
  }

  private inputEnded(): void {
    if (this.backlog.length > 0) this.endAfterBacklog = true;
    else this.finish('end');
  }

  private finish(reason: string): void {
    if (this.done) return;
    this.emit('end', reason);
  }
}
