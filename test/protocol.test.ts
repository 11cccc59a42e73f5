// Packet-level behaviour of the relay, seen by a raw SSH client (ssh2's
// Protocol through lib/ssh2internals.ts) talking to the real daemon, which
// logs in to a real sshd for a user of a real JupyterHub.
import { expect } from 'chai';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { clientOffer } from '../lib/algorithms.js';
import {
  createProtocol,
  interceptPayloads,
  nextOutboundSeqno,
  parseKey,
  sendPayload,
  type Protocol,
} from '../lib/ssh2internals.js';
import { useEnv } from './helpers/fixture.js';
import { waitFor } from './helpers/wait.js';

const MSG = {
  DISCONNECT: 1,
  IGNORE: 2,
  UNIMPLEMENTED: 3,
  GLOBAL_REQUEST: 80,
  REQUEST_SUCCESS: 81,
  REQUEST_FAILURE: 82,
  CHANNEL_OPEN: 90,
  CHANNEL_OPEN_CONFIRMATION: 91,
  CHANNEL_OPEN_FAILURE: 92,
  CHANNEL_DATA: 94,
  CHANNEL_EOF: 96,
  CHANNEL_CLOSE: 97,
  CHANNEL_REQUEST: 98,
  CHANNEL_SUCCESS: 99,
  PING: 192,
  PONG: 193,
} as const;

const WAIT_MS = 15_000;

// ---------------------------------------------------------------------------
// Payload helpers (RFC 4251 §5 encodings).

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

function sshString(s: string | Buffer): Buffer {
  const b = typeof s === 'string' ? Buffer.from(s) : s;
  return Buffer.concat([u32(b.length), b]);
}

function ignore(text: string): Buffer {
  return Buffer.concat([Buffer.of(MSG.IGNORE), sshString(text)]);
}

function globalRequest(name: string, wantReply: boolean, data: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([Buffer.of(MSG.GLOBAL_REQUEST), sshString(name), Buffer.of(wantReply ? 1 : 0), data]);
}

/** A cursor over a payload, after its message type byte. */
class Reader {
  private p = 1;
  constructor(private readonly payload: Buffer) {}
  u32(): number {
    const v = this.payload.readUInt32BE(this.p);
    this.p += 4;
    return v;
  }
  bool(): boolean {
    return this.payload[this.p++] !== 0;
  }
  string(): string {
    const len = this.u32();
    if (this.p + len > this.payload.length) throw new Error('string runs past the payload');
    const s = this.payload.toString('utf8', this.p, this.p + len);
    this.p += len;
    return s;
  }
}

function globalRequestName(payload: Buffer): string {
  return new Reader(payload).string();
}

// ---------------------------------------------------------------------------
// A raw SSH client: key exchange and password auth by ssh2, then every
// payload is the test's.

interface Received {
  type: number;
  seqno: number;
  payload: Buffer;
}

class RawClient {
  readonly socket: net.Socket;
  readonly proto: Protocol;
  /** Every payload received after USERAUTH_SUCCESS, in order. */
  readonly received: Received[] = [];
  /** The server's EXT_INFO, as received. */
  extInfo: Buffer | undefined;
  authenticated = false;
  authenticatedAt = 0;
  /** The first key exchange completed. */
  handshaken = false;
  closed = false;
  readonly errors: string[] = [];
  private barriers = 0;

  /** `attempts` > 1 pipelines that many password requests without waiting for answers; 0 never logs in. */
  constructor(port: number, user: string, token: string, hostKey: Buffer, attempts = 1) {
    this.socket = net.connect(port, '127.0.0.1');
    this.socket.setNoDelay(true);
    this.proto = createProtocol({
      server: false,
      ident: 'jsp-protocol-test',
      offer: clientOffer(),
      hostVerifier: (key: Buffer) => key.equals(hostKey),
      messageHandlers: {
        SERVICE_ACCEPT: () => {
          for (let i = 0; i < attempts; i++) {
            (this.proto as unknown as { authPassword(user: string, password: string): void }).authPassword(user, token);
          }
        },
        USERAUTH_SUCCESS: () => {
          this.authenticated = true;
          this.authenticatedAt = Date.now();
        },
        USERAUTH_FAILURE: () => this.errors.push('USERAUTH_FAILURE'),
        DISCONNECT: (_p: unknown, reason: number, text: string) => this.errors.push(`DISCONNECT ${reason} ${text}`),
      },
      onWrite: (data) => {
        if (!this.socket.destroyed) this.socket.write(data);
      },
      onError: (err) => this.errors.push(`protocol error: ${err.message}`),
      onHandshakeComplete: () => {
        this.handshaken = true;
        if (!this.authenticated) this.proto.service('ssh-userauth');
      },
    });
    interceptPayloads(this.proto, (payload, seqno) => {
      if (payload[0] === 7) this.extInfo = Buffer.from(payload);
      // Before auth and for key exchange, ssh2 does the work.
      if (!this.authenticated || (payload[0]! >= 20 && payload[0]! <= 49)) return false;
      this.received.push({ type: payload[0]!, seqno, payload: Buffer.from(payload) });
      return true;
    });
    this.socket.on('data', (chunk: Buffer) => {
      if (this.closed) return;
      try {
        this.proto.parse(chunk, 0, chunk.length);
      } catch (err) {
        this.errors.push(`parse: ${(err as Error).message}`);
      }
    });
    this.socket.on('error', (err) => this.errors.push(`socket: ${err.message}`));
    this.socket.on('close', () => {
      this.closed = true;
      this.proto.cleanup();
    });
    this.socket.once('connect', () => this.proto.start?.());
  }

  async login(): Promise<void> {
    await waitFor(
      () => {
        if (this.authenticated) return true;
        if (this.closed) throw new Error(`connection closed before auth: ${this.errors.join('; ')}`);
        return undefined;
      },
      { timeoutMs: 60_000, intervalMs: 20, what: 'USERAUTH_SUCCESS' },
    );
  }

  /** Sends a raw payload; returns the sequence number it carries on this leg. */
  send(payload: Buffer): number {
    const seqno = nextOutboundSeqno(this.proto);
    sendPayload(this.proto, payload);
    return seqno;
  }

  /** Waits until `pick` finds something in what was received. */
  async waitFor<T>(pick: (received: Received[]) => T | undefined, what: string, timeoutMs = WAIT_MS): Promise<T> {
    return waitFor(
      () => {
        const v = pick(this.received);
        if (v !== undefined) return v;
        if (this.closed) throw new Error(`connection closed; errors: ${this.errors.join('; ') || 'none'}`);
        return undefined;
      },
      { timeoutMs, intervalMs: 10, what },
    );
  }

  ofType(type: number): Received[] {
    return this.received.filter((r) => r.type === type);
  }

  /**
   * A round trip through the daemon to sshd and back: a packet type sshd
   * answers with UNIMPLEMENTED. Everything sshd sent before answering it has
   * reached this client when this resolves. Returns the UNIMPLEMENTED.
   */
  async barrier(): Promise<Received> {
    const seqno = this.send(Buffer.of(160 + (this.barriers++ % 30)));
    return this.waitFor(
      (r) => r.find((x) => x.type === MSG.UNIMPLEMENTED && x.payload.readUInt32BE(1) === seqno),
      `UNIMPLEMENTED for barrier packet ${seqno}`,
    );
  }

  close(): void {
    this.closed = true;
    this.socket.destroy();
    this.proto.cleanup();
  }
}

// ---------------------------------------------------------------------------

describe('relay at the packet level (raw client, real daemon, hub and sshd)', function () {
  this.timeout(90_000);
  // sshd's debug log (through the daemon's debug log) shows what reached it.
  // The flag after it ends --sshd-option's list of values.
  const env = useEnv({ proxyArgs: ['--sshd-option', 'LogLevel=DEBUG', '--max-auth-tries', '6'] });
  const clients: RawClient[] = [];

  async function connect(): Promise<RawClient> {
    const pub = fs.readFileSync(path.join(env.proxy.keyDir, 'ssh_host_ed25519_key.pub'), 'utf8');
    const key = parseKey(pub);
    if (key instanceof Error) throw key;
    const client = new RawClient(env.proxy.port, env.user.name, env.token, key.getPublicSSH());
    clients.push(client);
    await client.login();
    return client;
  }

  afterEach(() => {
    for (const c of clients.splice(0)) c.close();
  });

  it('maps the sequence number in an UNIMPLEMENTED from sshd back to the client packet', async () => {
    const client = await connect();
    // Packets the proxy consumes (IGNORE) or answers itself (hostkeys-prove)
    // advance the client leg's counter but not the upstream leg's, so without
    // the remap the numbers sshd reports would be off by a growing amount.
    const expected: number[] = [];
    for (let round = 1; round <= 4; round++) {
      for (let i = 0; i < round; i++) {
        client.send(ignore(`padding ${round}.${i}`));
      }
      if (round === 2) client.send(globalRequest('hostkeys-prove-00@openssh.com', true, sshString('not a key')));
      expected.push(client.send(Buffer.of(150, round)));
      if (round === 3) client.send(globalRequest('keepalive@openssh.com', true));
    }
    const got = await client.waitFor(
      (r) => {
        const u = r.filter((x) => x.type === MSG.UNIMPLEMENTED);
        return u.length >= expected.length ? u.map((x) => x.payload.readUInt32BE(1)) : undefined;
      },
      `${expected.length} UNIMPLEMENTED replies`,
    );
    expect(got, 'sequence numbers named by the UNIMPLEMENTED replies').to.deep.equal(expected);
    // And nothing else named some other packet.
    const last = await client.barrier();
    const all = client.ofType(MSG.UNIMPLEMENTED).filter((x) => x !== last);
    expect(all.map((x) => x.payload.readUInt32BE(1))).to.deep.equal(expected);
    expect(client.errors).to.deep.equal([]);
  });

  it('disconnects a client that pipelines authentication requests instead of waiting for answers', async () => {
    const pub = fs.readFileSync(path.join(env.proxy.keyDir, 'ssh_host_ed25519_key.pub'), 'utf8');
    const key = parseKey(pub);
    if (key instanceof Error) throw key;
    const client = new RawClient(env.proxy.port, env.user.name, 'not-a-token', key.getPublicSSH(), 200);
    clients.push(client);
    await waitFor(() => client.closed, { timeoutMs: WAIT_MS, what: 'the daemon to close the connection' });
    expect(client.errors).to.include('DISCONNECT 2 Too many authentication requests in flight');
    expect(client.errors.filter((e) => e === 'USERAUTH_FAILURE').length).to.be.at.most(9);
  });

  it('passes sshd\'s DISCONNECT (with its text) to the client and closes the connection', async () => {
    const client = await connect();
    // OpenSSH drops the connection on message types 192-255.
    client.send(Buffer.of(200));
    const disconnect = await client.waitFor((r) => r.find((x) => x.type === MSG.DISCONNECT), 'DISCONNECT');
    const reader = new Reader(disconnect.payload);
    const reason = reader.u32();
    const text = reader.string();
    expect(text).to.equal('Invalid ssh2 packet type: 200');
    expect(reason, 'SSH_DISCONNECT_PROTOCOL_ERROR').to.equal(2);
    await waitFor(() => client.closed, { timeoutMs: WAIT_MS, what: 'the daemon to close the connection' });
    expect(client.ofType(MSG.DISCONNECT), 'exactly one DISCONNECT').to.have.length(1);
    expect(env.proxy.logs()).to.include('upstream disconnect 2: Invalid ssh2 packet type: 200');
  });

  it('announces ping@openssh.com and answers every PING itself with a PONG of the same data, in order', async () => {
    const client = await connect();
    expect(client.extInfo?.toString('latin1'), 'EXT_INFO').to.match(/ping@openssh\.com\0\0\0\x010/);
    const before = client.received.length;
    const data = ['PING!', '', 'x'.repeat(2000)];
    for (const d of data) client.send(Buffer.concat([Buffer.of(MSG.PING), sshString(d)]));
    const pongs = await client.waitFor((r) => {
      const got = r.slice(before).filter((x) => x.type === MSG.PONG);
      return got.length >= data.length ? got : undefined;
    }, 'the PONGs');
    expect(pongs.map((x) => new Reader(x.payload).string())).to.deep.equal(data);
    await client.barrier();
    // Nothing else came back, and sshd (9.2, which has no PING) never saw one.
    expect(client.received.slice(before).filter((x) => x.type !== MSG.UNIMPLEMENTED).map((x) => x.type)).to.deep.equal(data.map(() => MSG.PONG));
    expect(env.proxy.logs()).to.not.match(/type 192/);
    expect(client.errors).to.deep.equal([]);
  });

  it('disconnects a client that sends a malformed PING, with the reason', async () => {
    const client = await connect();
    client.send(Buffer.concat([Buffer.of(MSG.PING), u32(100), Buffer.from('short')]));
    const disconnect = await client.waitFor((r) => r.find((x) => x.type === MSG.DISCONNECT), 'DISCONNECT');
    const reader = new Reader(disconnect.payload);
    expect(reader.u32(), 'SSH_DISCONNECT_PROTOCOL_ERROR').to.equal(2);
    expect(reader.string()).to.equal('Protocol error: malformed PING');
    await waitFor(() => client.closed, { timeoutMs: WAIT_MS, what: 'the daemon to close the connection' });
  });

  it('stops reading a client that reads none of its answers before login, holding little for it', async () => {
    // Before login ssh2 refuses every GLOBAL_REQUEST, and nothing paused a
    // client that sends them and never reads: 800,000 of them grew the
    // daemon by 300 MiB. (After login: the next test.)
    const pub = fs.readFileSync(path.join(env.proxy.keyDir, 'ssh_host_ed25519_key.pub'), 'utf8');
    const key = parseKey(pub);
    if (key instanceof Error) throw key;
    const client = new RawClient(env.proxy.port, env.user.name, env.token, key.getPublicSSH(), 0);
    clients.push(client);
    await waitFor(() => client.handshaken || undefined, { timeoutMs: WAIT_MS, what: 'the key exchange' });
    const daemonRss = () => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${env.proxy.child.pid}/status`, 'utf8'))![1]) * 1024;
    const rssBefore = daemonRss();
    client.socket.pause();
    const request = globalRequest('x'.repeat(20), true);
    // Past the kernel's socket buffers on both sides (some MB), the client's
    // own buffer grows only once the daemon has stopped reading.
    let sent = 0;
    await waitFor(
      async () => {
        if (client.socket.writableLength > 8 * 1024 * 1024) return true;
        if (sent > 1_000_000) throw new Error(`the daemon still reads after ${sent} requests`);
        for (let i = 0; i < 2048; i++) client.send(request);
        sent += 2048;
        await new Promise((resolve) => setImmediate(resolve));
        return undefined;
      },
      { timeoutMs: 60_000, intervalMs: 1, what: 'the daemon to stop reading' },
    );
    expect(daemonRss() - rssBefore, 'the daemon RSS grew by (bytes)').to.be.below(64 * 1024 * 1024);
  });

  it('closes a client that sends PINGs and reads none of the PONGs, and serves the next', async () => {
    const client = await connect();
    client.socket.pause();
    const ping = Buffer.concat([Buffer.of(MSG.PING), sshString('PING!')]);
    const logged = env.proxy.logs().length;
    const closedLine = /client protocol error: the client reads nothing: 65536 packets wait unsent/;
    let sent = 0;
    await waitFor(
      async () => {
        if (closedLine.test(env.proxy.logs().slice(logged))) return true;
        if (sent > 1_000_000) throw new Error(`the connection is still open after ${sent} PINGs`);
        for (let i = 0; i < 2048; i++) client.send(ping);
        sent += 2048;
        await new Promise((resolve) => setImmediate(resolve));
        return undefined;
      },
      { timeoutMs: 60_000, intervalMs: 1, what: 'the daemon to close the connection' },
    );
    const next = await connect();
    expect(next.authenticated, 'the next client').to.equal(true);
  });

  it('gives a global request with want_reply exactly one reply', async () => {
    const client = await connect();
    const before = client.received.length;
    client.send(globalRequest('keepalive@openssh.com', true));
    await client.waitFor(
      (r) => r.slice(before).find((x) => x.type === MSG.REQUEST_FAILURE || x.type === MSG.REQUEST_SUCCESS),
      'the keepalive reply',
    );
    await client.barrier();
    const replies = client.received.slice(before).filter((x) => x.type === MSG.REQUEST_FAILURE || x.type === MSG.REQUEST_SUCCESS);
    expect(replies.map((x) => x.type), 'replies to one keepalive (sshd refuses it)').to.deep.equal([MSG.REQUEST_FAILURE]);
  });

  it('keeps global request replies in request order when the proxy answers hostkeys-prove itself', async () => {
    const client = await connect();
    const before = client.received.length;
    // sshd answers tcpip-forward to port 0 with SUCCESS + the port, keepalive
    // with FAILURE; the proxy refuses hostkeys-prove. Replies carry no id, so
    // only their order tells them apart (RFC 4254 §4).
    const forward = globalRequest('tcpip-forward', true, Buffer.concat([sshString('127.0.0.1'), u32(0)]));
    client.send(globalRequest('keepalive@openssh.com', true));
    client.send(forward);
    client.send(globalRequest('hostkeys-prove-00@openssh.com', true, sshString('not a key')));
    client.send(globalRequest('keepalive@openssh.com', true));
    client.send(forward);
    const isReply = (x: Received) => x.type === MSG.REQUEST_FAILURE || x.type === MSG.REQUEST_SUCCESS;
    await client.waitFor((r) => (r.slice(before).filter(isReply).length >= 5 ? true : undefined), 'five replies');
    await client.barrier();
    const replies = client.received.slice(before).filter(isReply);
    expect(replies.map((x) => (x.type === MSG.REQUEST_SUCCESS ? 'SUCCESS' : 'FAILURE'))).to.deep.equal([
      'FAILURE', // keepalive
      'SUCCESS', // tcpip-forward
      'FAILURE', // hostkeys-prove, from the proxy
      'FAILURE', // keepalive
      'SUCCESS', // tcpip-forward
    ]);
    const ports = [replies[1]!, replies[4]!].map((x) => x.payload.readUInt32BE(1));
    for (const port of ports) expect(port).to.be.within(1024, 65535);
    expect(ports[0], 'two different allocated ports').to.not.equal(ports[1]);

    // The same with only keepalives around the prove request: three replies.
    const mark = client.received.length;
    client.send(globalRequest('keepalive@openssh.com', true));
    client.send(globalRequest('hostkeys-prove-00@openssh.com', true, sshString('not a key')));
    client.send(globalRequest('keepalive@openssh.com', true));
    await client.barrier();
    expect(client.received.slice(mark).filter(isReply).map((x) => x.type)).to.deep.equal([
      MSG.REQUEST_FAILURE,
      MSG.REQUEST_FAILURE,
      MSG.REQUEST_FAILURE,
    ]);
  });

  it('never passes sshd\'s hostkeys-00@openssh.com announcement to the client', async () => {
    const client = await connect();
    // sshd sends hostkeys-00 right after auth, before it reads our packets:
    // one round trip covers it; a second one after a second makes sure.
    client.send(globalRequest('keepalive@openssh.com', true));
    await client.waitFor((r) => r.find((x) => x.type === MSG.REQUEST_FAILURE), 'the first keepalive reply');
    await waitFor(() => Date.now() - client.authenticatedAt >= 1_000, { timeoutMs: 5_000, what: 'one second after auth' });
    await client.barrier();
    const requests = client.ofType(MSG.GLOBAL_REQUEST).map((x) => globalRequestName(x.payload));
    expect(requests, 'global requests that reached the client').to.not.include('hostkeys-00@openssh.com');
    expect(client.closed).to.equal(false);
    expect(client.errors).to.deep.equal([]);
  });

  it('clamps a 1 MiB maximum packet size in CHANNEL_OPEN and the session still works', async () => {
    const client = await connect();
    // A distinctive channel id and window find this channel in sshd's debug log.
    const ourChannel = 7;
    const window = 7_654_321;
    client.send(
      Buffer.concat([Buffer.of(MSG.CHANNEL_OPEN), sshString('session'), u32(ourChannel), u32(window), u32(1_048_576)]),
    );
    const reply = await client.waitFor(
      (r) => r.find((x) => x.type === MSG.CHANNEL_OPEN_CONFIRMATION || x.type === MSG.CHANNEL_OPEN_FAILURE),
      'the channel open reply',
    );
    expect(reply.type, 'CHANNEL_OPEN_CONFIRMATION').to.equal(MSG.CHANNEL_OPEN_CONFIRMATION);
    const confirmation = new Reader(reply.payload);
    expect(confirmation.u32(), 'recipient channel').to.equal(ourChannel);
    const theirChannel = confirmation.u32();
    confirmation.u32(); // their window
    expect(confirmation.u32(), "sshd's maximum packet size").to.be.at.most(35_000);

    // What sshd was told.
    const line = await waitFor(
      () => new RegExp(`ctype session rchan ${ourChannel} win ${window} max (\\d+)`).exec(env.proxy.logs()) ?? undefined,
      { timeoutMs: WAIT_MS, what: "sshd's debug line for the channel open" },
    );
    expect(Number(line[1]), 'maximum packet size sshd got').to.equal(32_768);

    // Run a command with more output than one packet can hold.
    const size = 1_000_000;
    client.send(
      Buffer.concat([
        Buffer.of(MSG.CHANNEL_REQUEST),
        u32(theirChannel),
        sshString('exec'),
        Buffer.of(1),
        sshString(`yes 0123456789abcdef | head -c ${size}`),
      ]),
    );
    await client.waitFor((r) => r.find((x) => x.type === MSG.CHANNEL_CLOSE), 'the channel to close', 30_000);
    const onChannel = client.received.filter((x) => x.type >= MSG.CHANNEL_DATA && x.payload.readUInt32BE(1) === ourChannel);
    expect(onChannel.some((x) => x.type === MSG.CHANNEL_SUCCESS), 'exec accepted').to.equal(true);
    const data = onChannel.filter((x) => x.type === MSG.CHANNEL_DATA).map((x) => {
      const len = x.payload.readUInt32BE(5);
      return x.payload.subarray(9, 9 + len);
    });
    for (const chunk of data) expect(chunk.length, 'data per packet').to.be.at.most(32_768);
    const output = Buffer.concat(data);
    expect(output.length).to.equal(size);
    expect(output.equals(Buffer.from('0123456789abcdef\n'.repeat(Math.ceil(size / 17)).slice(0, size)))).to.equal(true);
    const exit = onChannel.find((x) => x.type === MSG.CHANNEL_REQUEST && new Reader(x.payload.subarray(4)).string() === 'exit-status');
    expect(exit, 'exit-status request').to.not.equal(undefined);
    expect(exit!.payload.readUInt32BE(exit!.payload.length - 4), 'exit status').to.equal(0);
    expect(client.closed).to.equal(false);
    expect(client.errors).to.deep.equal([]);
  });
});
