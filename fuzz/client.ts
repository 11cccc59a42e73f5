/**
 * One fuzz connection to the daemon: a TCP socket, and optionally a real SSH
 * client side (ssh2's Protocol through lib/ssh2internals.ts) whose outgoing
 * bytes pass through a filter that may mutate, drop, duplicate or reorder
 * them. After key exchange the case sends payloads of its own (mutated
 * before encryption, so they reach the daemon's parsers intact).
 */
import net from 'node:net';
import { createProtocol, interceptPayloads, sendPayload, type KexInitOffer, type Protocol } from '../lib/ssh2internals.js';
import { MSG } from './wire.js';

export type WritePhase = 'ident' | 'plain' | 'encrypted';

/** What to put on the wire instead of `data` (an array: several writes; empty: nothing). */
export type WriteFilter = (data: Buffer, info: { index: number; phase: WritePhase; type?: number }) => Buffer[];

export interface ClientOptions {
  port: number;
  host?: string;
  localAddress?: string;
  /** Run an SSH client (key exchange by ssh2); without it the case writes raw bytes only. */
  ssh?: {
    offer: KexInitOffer;
    /** The software version part of the identification line. */
    ident?: string | Buffer;
    filter?: WriteFilter;
  };
}

export type WaitResult = 'ok' | 'closed' | 'quiet' | 'timeout';

interface Waiter {
  cond: () => boolean;
  resolve: (r: WaitResult) => void;
  quietMs: number;
  quietTimer?: NodeJS.Timeout;
  timer: NodeJS.Timeout;
}

export class FuzzClient {
  readonly socket: net.Socket;
  proto?: Protocol;
  connected = false;
  closed = false;
  /** The daemon ended or reset the connection (rather than us). */
  closedByPeer = false;
  connectError?: string;
  bytesIn = 0;
  /** The daemon's identification line, once received. */
  serverIdent?: string;
  handshakes = 0;
  /** Count of each message type received (after decryption). */
  readonly received = new Map<number, number>();
  disconnectText?: string;
  protoError?: string;
  private identBuf = '';
  private writeIndex = 0;
  private plain = true;
  private capture?: Buffer[];
  private readonly waiters = new Set<Waiter>();
  private destroyedByUs = false;

  constructor(private readonly options: ClientOptions) {
    this.socket = net.connect({ port: options.port, host: options.host ?? '127.0.0.1', localAddress: options.localAddress });
    this.socket.setNoDelay(true);
    this.socket.on('connect', () => {
      this.connected = true;
      this.proto?.start?.();
      this.poke();
    });
    this.socket.on('data', (chunk: Buffer) => this.onData(chunk));
    this.socket.on('error', (err: NodeJS.ErrnoException) => {
      if (!this.connected) this.connectError = err.code ?? err.message;
    });
    this.socket.on('end', () => {
      if (!this.destroyedByUs) this.closedByPeer = true;
      this.socket.end();
    });
    this.socket.on('close', () => {
      if (!this.destroyedByUs) this.closedByPeer = true;
      this.closed = true;
      try {
        this.proto?.cleanup();
      } catch {
        // already torn down
      }
      this.poke();
    });
    if (options.ssh) this.proto = this.makeProtocol(options.ssh);
  }

  private makeProtocol(ssh: NonNullable<ClientOptions['ssh']>): Protocol {
    const proto = createProtocol({
      server: false,
      ident: ssh.ident === undefined ? 'jsp-fuzz_1.0' : (ssh.ident as string),
      offer: ssh.offer,
      hostVerifier: () => true,
      messageHandlers: {},
      onWrite: (data: Buffer) => this.onWrite(data),
      onError: (err: Error) => {
        this.protoError ??= err.message;
        this.poke();
      },
      onHandshakeComplete: () => {
        this.handshakes++;
        this.poke();
      },
    });
    interceptPayloads(proto, (payload) => {
      const type = payload[0]!;
      this.received.set(type, (this.received.get(type) ?? 0) + 1);
      if (type === MSG.DISCONNECT && payload.length >= 9) {
        const len = payload.readUInt32BE(5);
        this.disconnectText = payload.toString('utf8', 9, Math.min(payload.length, 9 + len));
      }
      this.poke();
      // Key exchange goes to ssh2; everything else is the case's.
      return !(type >= MSG.KEXINIT && type <= 49);
    });
    return proto;
  }

  private onWrite(data: Buffer): void {
    if (this.capture) {
      this.capture.push(Buffer.from(data));
      return;
    }
    const index = this.writeIndex++;
    const phase: WritePhase = index === 0 ? 'ident' : this.plain ? 'plain' : 'encrypted';
    const type = phase === 'plain' && data.length > 5 ? data[5] : undefined;
    if (type === MSG.NEWKEYS) this.plain = false;
    const filter = this.options.ssh?.filter;
    const out = filter ? filter(Buffer.from(data), { index, phase, type }) : [data];
    for (const b of out) this.write(b);
  }

  private onData(chunk: Buffer): void {
    this.bytesIn += chunk.length;
    if (this.serverIdent === undefined) {
      this.identBuf += chunk.toString('latin1', 0, Math.min(chunk.length, 512));
      const nl = this.identBuf.indexOf('\n');
      if (nl >= 0) this.serverIdent = this.identBuf.slice(0, nl).trim();
    }
    if (this.proto && this.protoError === undefined) {
      try {
        this.proto.parse(chunk, 0, chunk.length);
      } catch (err) {
        this.protoError = (err as Error).message;
      }
    }
    for (const w of this.waiters) this.rearmQuiet(w);
    this.poke();
  }

  write(data: Buffer): void {
    if (!this.socket.destroyed && this.socket.writable && data.length > 0) this.socket.write(data);
  }

  /** True once key exchange finished and the connection is still usable. */
  get ready(): boolean {
    return this.handshakes > 0 && !this.closed && this.protoError === undefined;
  }

  count(type: number): number {
    return this.received.get(type) ?? 0;
  }

  /** Sends a payload through the encrypted transport (it must be ready). */
  sendPayload(payload: Buffer): void {
    if (!this.ready) return;
    try {
      sendPayload(this.proto!, payload);
    } catch (err) {
      this.protoError ??= (err as Error).message;
    }
  }

  /** The encrypted packet `payload` becomes, without sending it (the sequence number is used up). */
  encrypt(payload: Buffer): Buffer | undefined {
    if (!this.ready) return undefined;
    this.capture = [];
    try {
      sendPayload(this.proto!, payload);
      return Buffer.concat(this.capture);
    } catch (err) {
      this.protoError ??= (err as Error).message;
      return undefined;
    } finally {
      this.capture = undefined;
    }
  }

  /**
   * Waits until `cond` holds ('ok'), the connection closes ('closed'),
   * nothing arrived for `quietMs` ('quiet'), or `timeoutMs` passed.
   */
  wait(cond: () => boolean, timeoutMs: number, quietMs = Infinity): Promise<WaitResult> {
    if (cond()) return Promise.resolve('ok');
    if (this.closed) return Promise.resolve('closed');
    return new Promise((resolve) => {
      const w: Waiter = {
        cond,
        quietMs,
        resolve: (r) => {
          clearTimeout(w.timer);
          clearTimeout(w.quietTimer);
          this.waiters.delete(w);
          resolve(r);
        },
        timer: setTimeout(() => w.resolve('timeout'), timeoutMs),
      };
      this.waiters.add(w);
      this.rearmQuiet(w);
    });
  }

  /** Waits until the connection is established (or failed). */
  async connect(timeoutMs: number): Promise<boolean> {
    await this.wait(() => this.connected || this.connectError !== undefined, timeoutMs);
    return this.connected;
  }

  private rearmQuiet(w: Waiter): void {
    if (!Number.isFinite(w.quietMs)) return;
    clearTimeout(w.quietTimer);
    w.quietTimer = setTimeout(() => w.resolve('quiet'), w.quietMs);
  }

  private poke(): void {
    for (const w of [...this.waiters]) {
      if (w.cond()) w.resolve('ok');
      else if (this.closed) w.resolve('closed');
    }
  }

  destroy(): void {
    if (!this.closed) this.destroyedByUs = true;
    this.socket.destroy();
    for (const w of [...this.waiters]) w.resolve('closed');
  }
}
