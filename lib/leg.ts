/**
 * One leg of a proxied connection: an ssh2 Protocol bound to a byte stream,
 * whose payloads the relay can take over after authentication.
 *
 * A leg keeps its own send queue while it is in a key exchange instead of
 * ssh2's, so that it knows the sequence number every forwarded packet gets.
 * It remembers which source packet each sent packet came from, so that an
 * SSH_MSG_UNIMPLEMENTED from its peer can be mapped back (RFC 4253 §11.4).
 *
 * Once the relay runs, channel packets take the relay loop in native code
 * (relayChunk), and bulk data moves each direction onto the sockets
 * (relayOnSockets, lib/socketrelay.ts) until something other than bulk
 * data comes.
 */
import { EventEmitter } from 'node:events';
import { Socket } from 'node:net';
import util from 'node:util';
import type { Readable, Writable } from 'node:stream';
import { isRecycled, releasePacketBuffer, takePacketBuffer, takeRelayBuffer } from './packetbuffers.js';
import { MSG } from './messages.js';
import { packetRelay, ResultSlot, Stop } from './packetrelay.js';
import { acknowledgeNow } from './quickack.js';
import { socketFd, takeSharedReads } from './sharedreads.js';
import { handedBack, SOCKET_RELAY_MIN_READ, SocketRelay, SocketRelayStat, SocketRelayStop } from './socketrelay.js';
import { turnBudget, type Backlogged, type TurnBudget } from './turnbudget.js';
import {
  advanceSeqnos,
  createProtocol,
  dispatchPayload,
  inKeyExchange,
  interceptPayloads,
  nextOutboundSeqno,
  parseOnePacket,
  relayLoopAvailable,
  rekeyWithOffer,
  relayRoute,
  releaseMessageHandlers,
  type RelayRoute,
  sendPayload,
  sendPayloadBypassingKex,
  strictKex,
  type KexInitOffer,
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

/*
 * Backpressure between the legs bounds what the relay forwards, but not the
 * answers to a leg's own packets (PONG, UNIMPLEMENTED, ssh2's refusal of
 * every GLOBAL_REQUEST before login): a peer that writes and never reads
 * would pile them up in the memory every user shares, ~400 bytes per small
 * write in Node's stream (800,000 global requests before login grew the
 * daemon by 300 MiB). Two bounds:
 *
 * Before the relay takes over, a leg carries only such answers, and it
 * stops reading its stream while more than MAX_UNREAD_OUTPUT_BYTES of its
 * output wait, as sshd stops reading a client with too much output waiting.
 * Not after: with bulk data both ways, two ends that each stop reading
 * while their output waits can wait for each other for ever.
 *
 * After, a peer that leaves MAX_WRITES_WHILE_FULL writes unread in a row
 * (the output never drained in between) is not reading: the leg fails. In
 * that time backpressure stops the other leg at the first full write, so
 * forwarded data adds at most what was read already, a read and the
 * backlog (~1.3 MiB; ~40,000 packets at the smallest).
 */
const MAX_UNREAD_OUTPUT_BYTES = 256 * 1024;
const MAX_WRITES_WHILE_FULL = 65536;

/** The leg a stream belongs to, for the listeners all legs share. */
const LEG = Symbol('leg');
type LegStream = (Readable | Writable) & { [LEG]?: Leg };

/** Marks a packet the proxy itself originated: an UNIMPLEMENTED for it is consumed. */
export const OWN_PACKET = -1;

/** Epochs are kept above the 32 bits of a sequence number in one float64 tag. */
const EPOCH_FACTOR = 2 ** 32;

/** A source tag: the sequence number of a packet received on `leg`, with the leg's strict-KEX epoch. */
export function sourceTag(leg: Leg, seqno: number): number {
  return leg.epoch * EPOCH_FACTOR + seqno;
}

/** The sequence number in a source tag, if it is still valid on `leg`. */
export function seqnoOfTag(leg: Leg, tag: number): number | undefined {
  const epoch = Math.floor(tag / EPOCH_FACTOR);
  return epoch === leg.epoch ? tag - epoch * EPOCH_FACTOR : undefined;
}

/** The largest packet on the wire, length and MAC included (ssh2 takes bodies up to 35000 bytes; HMAC-SHA-512 is 64). */
const MAX_WIRE_PACKET = 4 + 35_000 + 64;

/**
 * Relay output or a backlogged read below this gets a buffer of its own
 * (Node pools those below 4 KiB), not a relay block held for it.
 */
const SMALL_COPY_BYTES = 4096;

/**
 * Packets forwarded from one leg to the other since the daemon started: by
 * the relay loop, and one by one through ssh2 (other message types, ciphers
 * without the loop, packets split across reads while the loop could not
 * run). Exported as a metric: the share tells whether users get the loop.
 */
export const forwardedPackets = { relayLoop: 0, oneByOne: 0 };

/** No split packet held. */
const EMPTY = Buffer.alloc(0);

/** What relay() reports; one call at a time. */
const relayResult = new Float64Array(5);

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
 * Events: 'handshake' (first key exchange done), 'bulk' (a read of bulk
 * data, 32 KiB or more, came through Node), 'congested' / 'drained' (the
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
  /** Set by the relay: the other leg's output, corked while a chunk is parsed. */
  peerOutput?: Writable;

  /** Bytes received and sent on this leg's stream through Node (the socket relays count theirs). */
  private receivedBytes = 0;
  private sentBytes = 0;

  private handler?: PayloadHandler;
  /**
   * Set by the relay: the other leg, and the message types that go to it
   * unchanged. Packets of those types then take the relay loop of
   * native/packetrelay.c (decrypted, re-framed and encrypted for `peer`
   * without a JavaScript call each); all others still reach `handler`.
   */
  private direct?: { peer: Leg; forwardedTypes: Buffer };
  /** The start of a packet split across socket reads, held for the relay loop (ssh2 would hold it otherwise). */
  private pending?: Buffer;
  private pendingBytes = 0;
  private readonly sent = new SentPackets();
  private queue: { payload: Buffer; tag: number }[] = [];
  private queuedBytes = 0;
  private readonly maxQueuedBytes: number;
  private readonly budget: TurnBudget;
  private handshakes = 0;
  private done = false;
  /** Input paused because the other leg's output is congested (relay backpressure). */
  private congested = false;
  /** Input paused because this leg's own output holds more than MAX_UNREAD_OUTPUT_BYTES (before the relay). */
  private outputFull = false;
  /** Writes since the output last drained, made while it was over its high-water mark. */
  private writesWhileFull = 0;
  /** Chunks received after the turn's budget was spent, in order (see turnbudget.ts). */
  private backlog: Buffer[] = [];
  private backlogBytes = 0;
  /** The input ended with chunks still in the backlog: end once they are processed. */
  private endAfterBacklog = false;
  /** True while ssh2 parses a chunk: freeing its native ciphers then would be a use-after-free. */
  private parsing = false;
  private cleanupPending = false;
  /** Relays this leg's input to the peer's socket in the addon while `onSockets` (lib/socketrelay.ts). */
  private socketRelay?: SocketRelay;
  private onSockets = false;
  /** The peer leg while `onSockets`. */
  private socketPeer?: Leg;
  /** The sequence numbers in and out when the socket relay started. */
  private socketStartSeqnos = [0, 0];
  /**
   * The leg whose socket relay writes into this leg's socket, with this
   * leg's cipher: it stops before this leg's ssh2 sends or parses anything
   * (beforeSsh2), which is all that writes here besides it.
   */
  private feeder?: Leg;
  /** The stats of the leg that relays into this one on the sockets, once it has (its bytes out are ours). */
  private feederStats?: Float64Array;
  /**
   * Whether written packet buffers can be recycled: a socket is done with a
   * buffer when its write callback runs. Other streams (in-memory pairs in
   * tests) may pass the same buffer on to a reader.
   */
  private readonly recycles: boolean;
  /**
   * Whether the input reads into the shared buffer (lib/sharedreads.ts):
   * only such a socket stops reading at once when paused, which a socket
   * relay needs (another one reads ahead into its stream buffer).
   */
  private readonly sharedReads: boolean;

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
    this.sharedReads = takeSharedReads(this.input, Leg.onSharedRead);
    if (!this.sharedReads) this.input.on('data', Leg.onInputData);
    this.input.on('end', Leg.onInputEnd);
    this.input.on('close', Leg.onInputEnd);
    this.input.on('error', Leg.onStreamError);
    this.output.on('drain', Leg.onOutputDrain);
    if ((this.output as LegStream) !== this.input) this.output.on('error', Leg.onStreamError);
  }

  private static onInputData(this: LegStream, chunk: Buffer): void {
    this[LEG]!.receive(chunk);
  }

  /** A read in the shared read buffer (lib/sharedreads.ts): taken now, or copied. */
  private static onSharedRead(this: LegStream, chunk: Buffer): void {
    this[LEG]!.receive(chunk, true);
  }

  private static onInputEnd(this: LegStream): void {
    this[LEG]!.inputEnded();
  }

  private static onStreamError(this: LegStream, err: Error): void {
    this[LEG]!.fail(err);
  }

  private static onOutputDrain(this: LegStream): void {
    const leg = this[LEG]!;
    leg.writesWhileFull = 0;
    if (leg.outputFull) {
      leg.outputFull = false;
      if (leg.backlog.length === 0 && leg.mayRead()) leg.input.resume();
    }
    leg.emit('drained');
  }

  /** Whether nothing holds this leg's input back: the other leg's output, its own, or the socket relay reading it. */
  private mayRead(): boolean {
    return !this.done && !this.congested && !this.outputFull && !this.onSockets;
  }

  start(): void {
    this.proto.start?.();
  }

  /** Bytes received on this leg's stream, the socket relay's included. */
  get bytesIn(): number {
    return this.receivedBytes + (this.socketRelay?.stats[SocketRelayStat.BytesIn] ?? 0);
  }

  /** Bytes sent on this leg's stream, the peer's socket relay's included. */
  get bytesOut(): number {
    return this.sentBytes + (this.feederStats?.[SocketRelayStat.BytesOut] ?? 0);
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
   * Relays packets of `forwardedTypes` (a table by message type, non-zero for
   * the types the relay forwards unchanged) to `peer` through the relay
   * loop whenever both legs' ciphers allow (see relayRoute). Does nothing
   * where the loop is not available.
   */
  relayDirectly(peer: Leg, forwardedTypes: Buffer): void {
    if (relayLoopAvailable) this.direct = { peer, forwardedTypes };
  }

  /**
   * Moves the relay of this leg's input onto the sockets (lib/socketrelay.ts)
   * if it can go there now: the relay loop's route to the peer is open,
   * nothing of this leg waits (a backlog, the end of its input), the input
   * is a shared-reads socket, and Node holds nothing to write to the
   * peer's socket (what is queued there goes first). Called after a large
   * read was processed (bulk data), and after any read while the other
   * direction runs on the sockets.
   */
  private relayOnSockets(): void {
    const peer = this.direct?.peer;
    if (peer === undefined || this.onSockets || this.done || peer.done || this.backlog.length > 0 || this.endAfterBacklog) return;
    // Not `congested`: every write over the high-water mark reports it, even one the socket took whole.
    if (peer.feeder !== undefined || peer.output.writableLength > 0 || this.handler === undefined) return;
    if (!this.sharedReads) return;
    const inFd = socketFd(this.input);
    const outFd = socketFd(peer.output);
    const route = relayRoute(this.proto, peer.proto);
    if (inFd === undefined || outFd === undefined || route === undefined) return;
    if (this.socketRelay === undefined) {
      this.socketRelay = new SocketRelay((code, a, b, c) => this.socketRelayStopped(code, a, b, c));
      if (peer.socketRelay !== undefined) this.socketRelay.pairWith(peer.socketRelay);
    }
    try {
      this.socketRelay.start(inFd, outFd, route.decipher, route.inSeqno, route.cipher, route.outSeqno, this.direct!.forwardedTypes, this.pending ?? EMPTY, this.pendingBytes);
    } catch {
      // Out of descriptors, say: Node goes on reading as before.
      return;
    }
    this.releasePending();
    this.socketStartSeqnos = [route.inSeqno, route.outSeqno];
    this.onSockets = true;
    this.socketPeer = peer;
    peer.feeder = this;
    peer.feederStats = this.socketRelay.stats;
    this.input.pause();
  }

  /**
   * Takes the relay of this leg's input back from the socket relay (if it
   * runs): the output it could not write yet goes out first, the sequence
   * numbers and the packets it relayed are counted into both protocols,
   * the start of a split packet is held as the relay loop would, and Node
   * reads the input again.
   */
  private stopSocketRelay(): void {
    if (!this.onSockets) return;
    const relay = this.socketRelay!;
    const peer = this.socketPeer!;
    this.onSockets = false;
    this.socketPeer = undefined;
    peer.feeder = undefined;
    const pending = takePacketBuffer(MAX_WIRE_PACKET);
    const unsent = relay.stop(pending);
    if (unsent !== null && !peer.done && !peer.output.write(unsent)) peer.emit('congested');
    const [inStart, outStart] = this.socketStartSeqnos;
    const count = (relay.stats[SocketRelayStat.InSeqno]! - inStart!) >>> 0;
    if (count > 0) {
      for (let i = Math.max(0, count - SENT_PACKETS_REMEMBERED); i < count; i++) peer.sent.record((outStart! + i) >>> 0, sourceTag(this, (inStart! + i) >>> 0));
      advanceSeqnos(this.proto, peer.proto, count);
    }
    const held = relay.stats[SocketRelayStat.Pending]!;
    if (held > 0 && !this.done) {
      this.pending = pending;
      this.pendingBytes = held;
    } else {
      releasePacketBuffer(pending);
    }
    if (this.mayRead()) this.input.resume();
  }

  /** The socket relay stopped by itself (SocketRelayStop says why). */
  private socketRelayStopped(code: SocketRelayStop, a: number | string, b: number, c: number): void {
    const peer = this.socketPeer;
    try {
      this.stopSocketRelay();
      if (this.done) return;
      switch (code) {
        case SocketRelayStop.OtherType:
          // The rest of the read, from a packet only ssh2 or the relay's table can take.
          this.process(handedBack(a as number, b), true, c);
          break;
        case SocketRelayStop.End:
          // Node's next read sees the end too, and ends the leg as ever.
          break;
        case SocketRelayStop.ReadError:
          this.fail(new Error(`read ${util.getSystemErrorName(a as number)}`));
          break;
        case SocketRelayStop.WriteError:
          peer?.fail(new Error(`write ${util.getSystemErrorName(a as number)}`));
          break;
        case SocketRelayStop.ProtocolError:
          this.fail(new Error(a as string));
          break;
      }
    } catch (err) {
      if (!this.done) this.fail(err as Error);
    }
  }

  /** Stops the socket relay writing into this leg before ssh2 uses this leg's cipher or protocol state. */
  private beforeSsh2(): void {
    this.feeder?.stopSocketRelay();
  }

  /**
   * Sends a payload, or queues it while this leg is in a key exchange.
   * `tag` identifies the source packet for UNIMPLEMENTED remapping
   * (OWN_PACKET for the proxy's own messages).
   */
  send(payload: Buffer, tag: number): void {
    if (this.done) return;
    this.beforeSsh2();
    if (inKeyExchange(this.proto)) {
      // The payload may point into a socket chunk; keep a copy of our own.
      this.queue.push({ payload: Buffer.from(payload), tag });
      this.queuedBytes += payload.length;
      if (this.queuedBytes > this.maxQueuedBytes) {
        this.fail(new Error(`more than ${this.maxQueuedBytes} bytes queued during key exchange`));
      }
      return;
    }
    if (tag !== OWN_PACKET) forwardedPackets.oneByOne++;
    this.sent.record(nextOutboundSeqno(this.proto), tag);
    sendPayload(this.proto, payload);
  }

  /**
   * Starts a key exchange of this leg's own, offering `offer` from now on;
   * what is sent meanwhile is queued as in any key exchange. False, and
   * nothing done, while a key exchange runs.
   */
  rekeyWith(offer: KexInitOffer): boolean {
    if (this.done || inKeyExchange(this.proto)) return false;
    this.beforeSsh2();
    rekeyWithOffer(this.proto, offer);
    return true;
  }

  /** Sends a payload at once, even during a key exchange (DISCONNECT only). */
  sendUrgent(payload: Buffer): void {
    if (this.done) return;
    this.beforeSsh2();
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
    if (this.mayRead()) this.input.resume();
  }

  /** Processes backlogged chunks while this turn's budget lasts; true if some are left. */
  drainBacklog(): boolean {
    while (this.backlog.length > 0 && !this.budget.exhausted && !this.done) {
      const chunk = this.backlog.shift()!;
      this.backlogBytes -= chunk.length;
      if (isRecycled(chunk)) {
        // process() copies what must outlive the block, as for a shared read.
        this.process(chunk, true);
        releasePacketBuffer(chunk);
      } else {
        this.process(chunk);
      }
    }
    if (this.done) return false;
    if (this.backlog.length > 0) return true;
    if (this.endAfterBacklog) this.finish('end');
    else if (this.mayRead()) this.input.resume();
    return false;
  }

  /** Stops processing; the owner closes the streams. */
  shutdown(): void {
    if (this.done) return;
    this.stopSocketRelay();
    this.feeder?.stopSocketRelay();
    this.done = true;
    this.handler = undefined;
    this.direct = undefined;
    this.releasePending();
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

  /** `shared`: `chunk` lies in the shared read buffer (lib/sharedreads.ts), to be taken now or copied. */
  private receive(chunk: Buffer, shared = false): void {
    if (this.done) return;
    // Logging in: no delayed ACK for the peer's Nagle to wait on (lib/quickack.ts).
    if (this.handler === undefined) acknowledgeNow(this.input);
    if (this.backlog.length > 0 || this.budget.mustWait(chunk.length)) {
      if (this.backlog.length === 0) this.budget.enqueue(this);
      if (shared) this.holdInBacklog(chunk);
      else this.backlog.push(chunk);
      this.backlogBytes += chunk.length;
      if (this.backlogBytes > MAX_BACKLOG_BYTES) this.input.pause();
      return;
    }
    this.process(chunk, shared);
  }

  /**
   * Copies a chunk of the shared read buffer into the backlog. Large ones go
   * into recycled relay blocks: with 100 busy sessions most reads arrive
   * after the turn's budget is spent, and a fresh buffer for each was about
   * one byte of external memory per byte forwarded, which set off a full
   * collection every ~64 MB (bench/README.md, twentieth session).
   */
  private holdInBacklog(chunk: Buffer): void {
    if (chunk.length < SMALL_COPY_BYTES) {
      this.backlog.push(Buffer.from(chunk));
      return;
    }
    for (let p = 0; p < chunk.length; ) {
      const block = takeRelayBuffer();
      const copied = chunk.copy(block, 0, p);
      this.backlog.push(block.subarray(0, copied));
      p += copied;
    }
  }

  /**
   * `shared`: `chunk` lies in the shared read buffer and must not be kept.
   * `decryptedPacket`: the first packet, this many bytes on the wire, is
   * decrypted in place already (what a socket relay hands back).
   */
  private process(chunk: Buffer, shared = false, decryptedPacket = 0): void {
    this.budget.charge(chunk.length);
    // The socket relay counted what it hands back when it read it.
    if (decryptedPacket === 0) this.receivedBytes += chunk.length;
    // Batch what one chunk produces on the other leg into few writes.
    const peer = this.peerOutput;
    peer?.cork();
    this.parsing = true;
    try {
      if (this.direct !== undefined) {
        this.relayChunk(chunk, this.direct.peer, shared, decryptedPacket);
      } else {
        if (shared) this.proto.parse(Buffer.from(chunk), 0, chunk.length);
        else this.proto.parse(chunk, 0, chunk.length);
      }
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
    // The other direction on the sockets: this one carries what comes back
    // (window adjustments, acknowledgements), small reads that cost a
    // JavaScript turn each in Node and nothing to speak of in the addon.
    if (chunk.length >= SOCKET_RELAY_MIN_READ) {
      // Bulk data, also where a cipher the addon does not take keeps it off the sockets.
      this.emit('bulk');
      this.relayOnSockets();
    } else if (this.direct?.peer.onSockets) {
      this.relayOnSockets();
    }
  }

  /**
   * Takes a chunk through the relay loop where a route to the peer exists,
   * and through ssh2 one packet at a time where not (a cipher the addon does
   * not take, the peer in a key exchange, or ssh2 holding part of a packet).
   */
  private relayChunk(chunk: Buffer, peer: Leg, shared: boolean, decryptedPacket: number): void {
    let p = 0;
    let end = chunk.length;
    if (decryptedPacket > 0) {
      // Handed back by the socket relay: no split packet is held then.
      this.dispatchDecrypted(chunk, 0, true);
      p = decryptedPacket;
    } else if (this.pending !== undefined) {
      const route = peer.done ? undefined : relayRoute(this.proto, peer.proto);
      if (route === undefined) {
        // ssh2 takes over the split packet; it may keep views of what it parses.
        const held = Buffer.from(this.pending.subarray(0, this.pendingBytes));
        this.releasePending();
        this.beforeSsh2();
        this.proto.parse(held, 0, held.length);
      } else {
        p = this.completePending(chunk, route, peer);
        if (p < 0) return;
      }
    }
    while (p < end && !this.done) {
      const route = peer.done ? undefined : relayRoute(this.proto, peer.proto);
      if (route === undefined) {
        if (shared) {
          // ssh2 keeps views of what it parses (a split packet, a KEXINIT).
          chunk = Buffer.from(chunk.subarray(p, end));
          p = 0;
          end = chunk.length;
          shared = false;
        }
        this.beforeSsh2();
        const next = parseOnePacket(this.proto, chunk, p, end);
        if (next === undefined) return;
        p = next;
        continue;
      }
      const next = this.relayRun(chunk, p, end, route, peer, shared);
      if (next < 0) {
        this.holdPending(chunk, -next - 1, end);
        return;
      }
      p = next;
    }
  }

  /**
   * Adds the start of `chunk` to the held split packet and relays from there.
   * Returns where to go on in `chunk`, or -1 if all of it is held.
   */
  private completePending(chunk: Buffer, route: RelayRoute, peer: Leg): number {
    const pending = this.pending!;
    const held = this.pendingBytes;
    // At most one whole packet's worth: the held one then completes if the chunk has the rest.
    const filled = held + chunk.copy(pending, held, 0, Math.min(chunk.length, pending.length - held));
    const next = this.relayRun(pending, 0, filled, route, peer, true);
    const stoppedAt = next < 0 ? -next - 1 : next;
    if (stoppedAt === 0) {
      this.pendingBytes = filled;
      return -1;
    }
    this.releasePending();
    // The bytes past `stoppedAt` are still as received in `chunk`.
    return stoppedAt - held;
  }

  /**
   * Runs the relay loop over whole packets of `buf` from `start`. Returns
   * where the next packet starts after one of another type was dispatched,
   * or -(position + 1) if the rest from `position` is less than a packet.
   */
  private relayRun(buf: Buffer, start: number, end: number, route: RelayRoute, peer: Leg, reused: boolean): number {
    let p = start;
    for (;;) {
      const out = takeRelayBuffer();
      packetRelay.relay(buf, p, end, route.decipher, route.inSeqno, route.cipher, route.outSeqno, this.direct!.forwardedTypes, out, 0, relayResult);
      const relayed = relayResult[ResultSlot.Relayed]!;
      const next = relayResult[ResultSlot.Next]!;
      if (relayed > 0) {
        forwardedPackets.relayLoop += relayed;
        for (let i = 0; i < relayed; i++) peer.sent.record((route.outSeqno + i) >>> 0, sourceTag(this, (route.inSeqno + i) >>> 0));
        advanceSeqnos(this.proto, peer.proto, relayed);
        route.inSeqno = (route.inSeqno + relayed) >>> 0;
        route.outSeqno = (route.outSeqno + relayed) >>> 0;
      }
      peer.writeRelayed(out, relayResult[ResultSlot.OutputEnd]!);
      switch (relayResult[ResultSlot.Stopped]) {
        case Stop.OutputFull:
          p = next;
          continue;
        case Stop.OtherType:
          this.dispatchDecrypted(buf, next, reused);
          return relayResult[ResultSlot.After]!;
        default:
          return -next - 1;
      }
    }
  }

  /** Hands the payload of the packet the relay loop decrypted in place at `buf[start]` (its length in the clear) to ssh2. */
  private dispatchDecrypted(buf: Buffer, start: number, reused: boolean): void {
    const bodyLength = buf.readUInt32BE(start);
    this.dispatch(buf.subarray(start + 5, start + 4 + bodyLength - buf[start + 4]!), reused);
  }

  /** Hands a payload the relay loop decrypted to ssh2; `reused`: it lies in a buffer that is reused. */
  private dispatch(payload: Buffer, reused: boolean): void {
    this.beforeSsh2();
    // ssh2 may keep views of a payload (KEXINIT): not of a buffer that is reused.
    dispatchPayload(this.proto, reused ? Buffer.from(payload) : payload);
  }

  /** Holds `chunk[start, end)`, the start of a packet, until the next chunk. */
  private holdPending(chunk: Buffer, start: number, end: number): void {
    if (start === end || this.done) return;
    this.pending = takePacketBuffer(MAX_WIRE_PACKET);
    this.pendingBytes = chunk.copy(this.pending, 0, start, end);
  }

  private releasePending(): void {
    if (this.pending === undefined) return;
    releasePacketBuffer(this.pending);
    this.pending = undefined;
    this.pendingBytes = 0;
  }

  /** Writes the relay loop's output (`length` bytes of a relay block) and sees that the block goes back. */
  private writeRelayed(out: Buffer, length: number): void {
    if (length >= SMALL_COPY_BYTES) {
      this.write(out.subarray(0, length));
      return;
    }
    if (length > 0) this.write(Buffer.from(out.subarray(0, length)));
    releasePacketBuffer(out);
  }

  private write(data: Buffer): void {
    if (this.done) return;
    this.sentBytes += data.length;
    const release = this.recycles && isRecycled(data) ? () => releasePacketBuffer(data) : undefined;
    if (!this.output.write(data, release)) this.emit('congested');
    if (this.handler === undefined) {
      if (!this.outputFull && this.output.writableLength > MAX_UNREAD_OUTPUT_BYTES) {
        this.outputFull = true;
        this.input.pause();
      }
    } else if (this.output.writableNeedDrain && ++this.writesWhileFull > MAX_WRITES_WHILE_FULL) {
      this.fail(new Error(`the ${this.name} reads nothing: ${MAX_WRITES_WHILE_FULL} packets wait unsent`));
    }
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
