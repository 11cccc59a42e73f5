// Contract tests for lib/ssh2internals.ts: every private field and behaviour of
// ssh2's protocol layer that the proxy relies on is exercised here on two
// in-memory Protocols (a server and a client wired to each other), so that a
// new ssh2 release that changes one of them fails this file loudly.
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  SSH2_VERSION,
  advanceSeqnos,
  createProtocol,
  dispatchPayload,
  parseOnePacket,
  relayLoopAvailable,
  relayRoute,
  cryptoReady,
  fastPacketCiphers,
  generateKeyPair,
  hybridKeyExchangesInstalled,
  inKeyExchange,
  installedSsh2Version,
  interceptPayloads,
  nativeCryptoAvailable,
  nextOutboundSeqno,
  parseKey,
  publicKeyAlgorithm,
  releaseMessageHandlers,
  replaceServerExtInfo,
  sendPayload,
  sendPayloadBypassingKex,
  strictKex,
  negotiatedCipher,
  negotiatedKex,
  rekeyWithOffer,
  unmatchedAlgorithmList,
  type KexInitOffer,
  type ParsedKey,
  type Protocol,
  type PublicKeyAuthRequest,
} from '../lib/ssh2internals.js';
import { parseKexInitCiphers } from '../lib/messages.js';
import { ctrHmacClasses } from '../lib/packetrelay.js';
import { CIPHERS, DEFAULT_CLIENT_LEG, SERVER_SIG_ALGS, clientOffer, hostKeyAlgorithms, serverOffer, type ClientLegAlgorithms } from '../lib/algorithms.js';
import { mlkemClient } from './helpers/mlkemclient.js';
import { waitFor } from './helpers/wait.js';

const require = createRequire(import.meta.url);
const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

const MSG_DISCONNECT = 1;
const MSG_IGNORE = 2;
const MSG_EXT_INFO = 7;
const MSG_KEXINIT = 20;
const MSG_GLOBAL_REQUEST = 80;

interface Ssh2Cipher {
  allocPacket(payloadLength: number): Buffer;
  encrypt(packet: Buffer): void;
  free(): void;
}
interface Ssh2Decipher {
  decrypt(data: Buffer, start: number, end: number): unknown;
  free(): void;
}
const ssh2Crypto = require('ssh2/lib/protocol/crypto.js') as {
  CIPHER_INFO: Record<string, { keyLen: number; ivLen: number; blockLen: number }>;
  createCipher(config: object): Ssh2Cipher;
  createDecipher(config: object): Ssh2Decipher;
};

// ---------------------------------------------------------------------------
// Tiny helpers: payload builders and an in-memory pair of Protocols.

function sshString(s: string | Buffer): Buffer {
  const b = typeof s === 'string' ? Buffer.from(s) : s;
  const len = Buffer.alloc(4);
  len.writeUInt32BE(b.length);
  return Buffer.concat([len, b]);
}

function ignorePayload(data: string): Buffer {
  return Buffer.concat([Buffer.of(MSG_IGNORE), sshString(data)]);
}

function globalRequestPayload(name: string, wantReply: boolean): Buffer {
  return Buffer.concat([Buffer.of(MSG_GLOBAL_REQUEST), sshString(name), Buffer.of(wantReply ? 1 : 0)]);
}

function disconnectPayload(reason: number, text: string): Buffer {
  const r = Buffer.alloc(4);
  r.writeUInt32BE(reason);
  return Buffer.concat([Buffer.of(MSG_DISCONNECT), r, sshString(text), sshString('')]);
}

function extInfoPayload(serverSigAlgs: readonly string[]): Buffer {
  const n = Buffer.alloc(4);
  n.writeUInt32BE(1);
  return Buffer.concat([Buffer.of(MSG_EXT_INFO), n, sshString('server-sig-algs'), sshString(serverSigAlgs.join(','))]);
}

/** Parses an EXT_INFO payload into its name/value pairs (RFC 8308 §2.3). */
function parseExtInfo(payload: Buffer): Map<string, string> {
  const out = new Map<string, string>();
  let p = 1;
  const count = payload.readUInt32BE(p);
  p += 4;
  const readString = (): string => {
    const len = payload.readUInt32BE(p);
    p += 4;
    if (p + len > payload.length) throw new Error('EXT_INFO string runs past the payload');
    const s = payload.toString('latin1', p, p + len);
    p += len;
    return s;
  };
  for (let i = 0; i < count; i++) {
    const name = readString();
    out.set(name, readString());
  }
  expect(p, 'EXT_INFO has trailing bytes').to.equal(payload.length);
  return out;
}

interface Intercepted {
  type: number;
  seqno: number;
  payload: Buffer;
}

interface Side {
  name: 'server' | 'client';
  proto: Protocol;
  /** Completed key exchanges. */
  handshakes: number;
  /** inKeyExchange() as seen from inside each onHandshakeComplete. */
  kexAtHandshakeComplete: boolean[];
  /** Every onWrite call since the last handshake completed = packets sent in this key epoch. */
  writesSinceHandshake: number;
  /** All onWrite calls ever. */
  writes: number;
  /** Ordinals (since the last handshake) of packets this side sent after a handshake. */
  sentOrdinals: number[];
  intercepted: Intercepted[];
  /** What the intercept handler returns for a payload (true = consume). */
  consume: (payload: Buffer) => boolean;
  /** Calls of ssh2 messageHandlers, by name. */
  calls: { name: string; args: unknown[]; inKex: boolean }[];
  errors: Error[];
  peer?: Side;
}

interface Pair {
  server: Side;
  client: Side;
  hostKey: ParsedKey;
  /** Stops delivery and frees both Protocols. */
  close(): void;
}

interface PairOptions {
  /** Replace the server's EXT_INFO (as the daemon does); default true. */
  replaceExtInfo?: boolean;
  /** Passed to the server's createProtocol. */
  onFirstKexInit?: (payload: Buffer) => void;
  /** The server's offer; default the daemon's, for the pair's ed25519 host key. */
  serverOffer?: KexInitOffer;
}

function makePair(options: PairOptions = {}): Pair {
  const hostKey = parseKey(generateKeyPair('ed25519').private);
  if (hostKey instanceof Error) throw hostKey;
  let closed = false;
  const pending: { to: Side; data: Buffer }[] = [];
  let scheduled = false;

  // Delivery is asynchronous and in order, like a socket: a Protocol is never
  // re-entered from inside its own parse().
  const flush = () => {
    scheduled = false;
    while (!closed && pending.length > 0) {
      const { to, data } = pending.shift()!;
      try {
        to.proto.parse(data, 0, data.length);
      } catch (err) {
        to.errors.push(err as Error);
      }
    }
  };
  const deliver = (from: Side, data: Buffer) => {
    from.writes++;
    if (from.handshakes > 0) from.sentOrdinals.push(from.writesSinceHandshake);
    from.writesSinceHandshake++;
    if (closed) return;
    pending.push({ to: from.peer!, data: Buffer.from(data) });
    if (!scheduled) {
      scheduled = true;
      setImmediate(flush);
    }
  };

  const side = (name: 'server' | 'client'): Side => ({
    name,
    proto: undefined as unknown as Protocol,
    handshakes: 0,
    kexAtHandshakeComplete: [],
    writesSinceHandshake: 0,
    writes: 0,
    sentOrdinals: [],
    intercepted: [],
    // Like the relay: key exchange messages always go on to ssh2.
    consume: (payload) => payload[0]! < MSG_KEXINIT || payload[0]! > 49,
    calls: [],
    errors: [],
  });
  const server = side('server');
  const client = side('client');
  server.peer = client;
  client.peer = server;

  const handlers = (s: Side) => {
    const record = (name: string) => (_proto: unknown, ...args: unknown[]) =>
      s.calls.push({ name, args, inKex: inKeyExchange(s.proto) });
    return {
      DISCONNECT: record('DISCONNECT'),
      GLOBAL_REQUEST: record('GLOBAL_REQUEST'),
      EXT_INFO: record('EXT_INFO'),
      USERAUTH_REQUEST: record('USERAUTH_REQUEST'),
      USERAUTH_PK_OK: record('USERAUTH_PK_OK'),
    };
  };
  const common = (s: Side) => ({
    ident: `jsp-contract-${s.name}`,
    messageHandlers: handlers(s),
    onWrite: (data: Buffer) => deliver(s, data),
    onError: (err: Error) => s.errors.push(err),
    onHandshakeComplete: () => {
      s.handshakes++;
      s.writesSinceHandshake = 0;
      s.kexAtHandshakeComplete.push(inKeyExchange(s.proto));
    },
  });

  server.proto = createProtocol({
    ...common(server),
    server: true,
    offer: options.serverOffer ?? serverOffer(hostKeyAlgorithms(hostKey.type)),
    onFirstKexInit: options.onFirstKexInit,
    hostKeys: { [hostKey.type]: hostKey },
  });
  client.proto = createProtocol({
    ...common(client),
    server: false,
    offer: clientOffer(),
    hostVerifier: (key: Buffer) => key.equals(hostKey.getPublicSSH()),
  });
  for (const s of [server, client]) {
    interceptPayloads(s.proto, (payload, seqno) => {
      s.intercepted.push({ type: payload[0]!, seqno, payload: Buffer.from(payload) });
      return s.consume(payload);
    });
  }
  if (options.replaceExtInfo !== false) replaceServerExtInfo(server.proto, extInfoPayload(SERVER_SIG_ALGS));

  return {
    server,
    client,
    hostKey,
    close: () => {
      if (closed) return;
      closed = true;
      server.proto.cleanup();
      client.proto.cleanup();
    },
  };
}

/** Polls `cond` every few ms until true; fails with `what` after the deadline. */
function until(cond: () => boolean, what: string, timeoutMs = 5_000): Promise<true> {
  return waitFor(() => cond() || undefined, { timeoutMs, intervalMs: 2, what });
}

function noErrors(pair: Pair): void {
  expect(pair.server.errors.map(String), 'server protocol errors').to.deep.equal([]);
  expect(pair.client.errors.map(String), 'client protocol errors').to.deep.equal([]);
}

/** Starts both sides and waits for the first key exchange to complete on both. */
async function handshake(pair: Pair): Promise<void> {
  pair.server.proto.start?.();
  pair.client.proto.start?.();
  await until(() => pair.server.handshakes === 1 && pair.client.handshakes === 1, 'the first handshake');
  // ssh2's automatic packets (the server's EXT_INFO) arrive before this IGNORE.
  await roundTrip(pair);
  noErrors(pair);
}

let barrierId = 0;
/** Sends an IGNORE each way and waits until both arrived: everything sent before has been delivered. */
async function roundTrip(pair: Pair): Promise<void> {
  const tag = `barrier-${++barrierId}`;
  const arrived = (s: Side) => s.intercepted.some((e) => e.type === MSG_IGNORE && e.payload.includes(tag));
  sendPayload(pair.client.proto, ignorePayload(tag));
  sendPayload(pair.server.proto, ignorePayload(tag));
  await until(() => arrived(pair.server) && arrived(pair.client), `barrier ${tag}`);
}

function rekey(proto: Protocol): void {
  (proto as unknown as { rekey(): void }).rekey();
}

// ---------------------------------------------------------------------------

describe('ssh2 internals contract (lib/ssh2internals.ts)', function () {
  this.timeout(20_000);
  let pair: Pair | undefined;

  afterEach(() => {
    pair?.close();
    pair = undefined;
  });

  it('runs against the ssh2 version the internals were checked for', () => {
    const installed = (require('ssh2/package.json') as { version: string }).version;
    expect(installed, `ssh2 ${installed} is installed; re-check lib/ssh2internals.ts against it, then bump SSH2_VERSION`).to.equal(SSH2_VERSION);
    expect(installedSsh2Version()).to.equal(installed);
    const pkg = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as {
      dependencies: Record<string, string>;
    };
    expect(pkg.dependencies.ssh2, 'package.json must pin ssh2 exactly').to.equal(SSH2_VERSION);
  });

  // The daemon logs which flag's list a client shares nothing with, and does
  // not count it as malformed input: it reads that from ssh2's error message.
  // The server offers here what the daemon's client offer lacks.
  const unmatched: [keyof ClientLegAlgorithms, string[], Partial<ClientLegAlgorithms>][] = [
    ['kex', ['ssh-ed25519'], { kex: ['diffie-hellman-group14-sha1'] }],
    ['hostKey', ['ecdsa-sha2-nistp256'], {}],
    ['ciphers', ['ssh-ed25519'], { ciphers: ['aes128-cbc'] }],
    ['macs', ['ssh-ed25519'], { ciphers: ['aes128-ctr'], macs: ['hmac-sha1'] }],
  ];
  for (const [list, hostKeyAlgos, choice] of unmatched) {
    it(`names the ${list} list when a key exchange finds nothing in common there (unmatchedAlgorithmList)`, async () => {
      pair = makePair({ serverOffer: serverOffer(hostKeyAlgos, { ...DEFAULT_CLIENT_LEG, ...choice }) });
      pair.server.proto.start?.();
      pair.client.proto.start?.();
      await until(() => pair!.server.errors.length > 0, 'the failed key exchange');
      // (Later parses only report the instance unusable.)
      expect(unmatchedAlgorithmList(pair.server.errors[0]!), pair.server.errors.join('; ')).to.equal(list);
    });
  }

  it('names no list for other errors', () => {
    expect(unmatchedAlgorithmList(new Error('Handshake failed: signature verification failed'))).to.equal(undefined);
    expect(unmatchedAlgorithmList(new Error('Bad packet length'))).to.equal(undefined);
  });

  it("takes parseKey and generateKeyPairSync from the files ssh2's utils export, without loading ssh2's index", () => {
    const utils = (require('ssh2') as { utils: Record<string, unknown> }).utils;
    expect((require('ssh2/lib/protocol/keyParser.js') as Record<string, unknown>).parseKey).to.equal(utils.parseKey);
    expect((require('ssh2/lib/keygen.js') as Record<string, unknown>).generateKeyPairSync).to.equal(utils.generateKeyPairSync);
    // A fresh node: this process has loaded the index just now.
    const script = `
      await import(${JSON.stringify(new URL('../lib/ssh2internals.js', import.meta.url).href)});
      const { createRequire } = await import('node:module');
      const loaded = Object.keys(createRequire(import.meta.url).cache).filter((f) => f.includes('/node_modules/ssh2/'));
      console.log(JSON.stringify(loaded.map((f) => f.slice(f.indexOf('/node_modules/ssh2/') + 19)).sort()));
    `;
    const loaded = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' })) as string[];
    expect(loaded, 'ssh2 files the daemon loads').to.include('lib/protocol/Protocol.js');
    expect(loaded).not.to.include('lib/index.js');
    expect(loaded).not.to.include('lib/client.js');
    expect(loaded).not.to.include('lib/protocol/SFTP.js');
  });

  it('signs with a KeyObject made once, as ssh2 signs with the PEM, for every host key type', () => {
    const ssh2Utils = (require('ssh2') as { utils: { parseKey(data: string): ParsedKey | ParsedKey[] | Error } }).utils;
    const data = crypto.randomBytes(64);
    const cases: { type: 'ed25519' | 'ecdsa' | 'rsa'; bits?: number; algos: (string | undefined)[]; deterministic: boolean }[] = [
      { type: 'ed25519', algos: [undefined], deterministic: true },
      { type: 'ecdsa', bits: 256, algos: [undefined], deterministic: false },
      { type: 'rsa', bits: 2048, algos: [undefined, 'sha256', 'sha512'], deterministic: true },
    ];
    for (const { type, bits, algos, deterministic } of cases) {
      const pem = generateKeyPair(type, bits).private;
      const ours = parseKey(pem) as ParsedKey;
      const theirs = ssh2Utils.parseKey(pem) as ParsedKey;
      expect(Object.prototype.hasOwnProperty.call(ours, 'sign'), `${type}: our sign in place`).to.equal(true);
      for (const algo of algos) {
        const signature = ours.sign(data, algo);
        expect(signature, `${type} ${algo}`).to.be.instanceOf(Buffer);
        // ssh2's own (PEM) verify accepts it: the same algorithm and encoding.
        expect(theirs.verify(data, signature as Buffer, algo), `${type} ${algo} verifies`).to.equal(true);
        if (deterministic) expect((signature as Buffer).equals(theirs.sign(data, algo) as Buffer), `${type} ${algo} same bytes`).to.equal(true);
      }
    }
    // Errors come back as values, as ssh2's callers (kex.js, authPK) expect.
    const rsa = parseKey(generateKeyPair('rsa', 2048).private) as ParsedKey;
    expect(rsa.sign(data, 'no-such-hash')).to.be.instanceOf(Error);
  });

  it('generates ed25519 keys that parse back (works around ssh2 dropping leading zero bytes)', () => {
    // About 1 in 200 raw ssh2 ed25519 keys is unreadable; 2000 would all but surely include some.
    for (let i = 0; i < 2000; i++) {
      const pair = generateKeyPair('ed25519');
      const key = parseKey(pair.private);
      expect(key, `key ${i}`).to.not.be.instanceOf(Error);
      expect((key as ParsedKey).getPublicSSH().length).to.equal(51);
    }
  });

  it('has crypto ready, with the native binding built', async () => {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('cryptoReady did not resolve within 5 s')), 5_000);
    });
    try {
      await Promise.race([cryptoReady, timeout]);
    } finally {
      clearTimeout(timer);
    }
    expect(nativeCryptoAvailable).to.be.a('boolean');
    expect(nativeCryptoAvailable, 'ssh2 native crypto binding (npm install builds it here)').to.equal(true);
  });

  it('hands every post-handshake payload to the interceptor with its sequence number', async () => {
    pair = makePair();
    const { server, client } = pair;
    await handshake(pair);

    // Whatever ssh2 sent on its own after NEWKEYS (the server's EXT_INFO) is
    // part of the comparison too, so start from a clean slate on both sides
    // only for the payloads the test sends below.
    const sends: { from: Side; payload: Buffer; seqno: number }[] = [];
    const send = (from: Side, payload: Buffer) => {
      const seqno = nextOutboundSeqno(from.proto);
      sendPayload(from.proto, payload);
      expect(nextOutboundSeqno(from.proto), 'nextOutboundSeqno after sendPayload').to.equal((seqno + 1) >>> 0);
      sends.push({ from, payload, seqno });
    };
    for (let i = 0; i < 5; i++) {
      send(client, ignorePayload(`c${i}`));
      send(server, ignorePayload(`s${i}`));
      send(client, Buffer.of(150 + i, i));
    }
    await roundTrip(pair);
    noErrors(pair);

    // Each receiver saw exactly the packets its peer sent after the handshake,
    // in order, each with the ordinal of that packet within the key epoch.
    for (const receiver of [server, client]) {
      const sender = receiver.peer!;
      expect(receiver.intercepted.map((e) => e.seqno), `${receiver.name} saw these sequence numbers`).to.deep.equal(
        sender.sentOrdinals,
      );
      for (const s of sends.filter((x) => x.from === sender)) {
        const hit = receiver.intercepted.filter((e) => e.payload.equals(s.payload));
        expect(hit, `${receiver.name} got ${s.payload.toString('hex')} once`).to.have.length(1);
        expect(hit[0]!.seqno, 'the sequence number nextOutboundSeqno predicted').to.equal(s.seqno);
      }
    }
    // Strict KEX: the client's first packet after NEWKEYS was number 0; the
    // server's was its EXT_INFO, number 0.
    expect(server.intercepted[0]!.seqno).to.equal(0);
    expect(client.intercepted[0]).to.include({ type: MSG_EXT_INFO, seqno: 0 });
  });

  it('leaves a payload to ssh2 when the handler returns false', async () => {
    pair = makePair();
    const { server, client } = pair;
    const consumeOthers = server.consume;
    server.consume = (payload) =>
      payload[0] === MSG_GLOBAL_REQUEST ? payload.includes('consumed@') : consumeOthers(payload);
    await handshake(pair);
    const seqno = nextOutboundSeqno(client.proto);
    sendPayload(client.proto, globalRequestPayload('contract-test@example.org', false));
    sendPayload(client.proto, globalRequestPayload('consumed@example.org', false));
    await roundTrip(pair);
    noErrors(pair);
    const requests = server.calls.filter((c) => c.name === 'GLOBAL_REQUEST');
    expect(requests.map((c) => c.args[0]), 'global requests that reached ssh2').to.deep.equal(['contract-test@example.org']);
    const seen = server.intercepted.filter((e) => e.type === MSG_GLOBAL_REQUEST).map((e) => e.seqno);
    expect(seen, 'the interceptor still saw both').to.deep.equal([seqno, seqno + 1]);
  });

  // The daemon's first choice, the other AEAD, and AES-CTR with HMAC both ways (the length decrypted apart or in the clear).
  const relayCiphers: [string, string][] = [
    ['aes128-gcm@openssh.com', 'hmac-sha2-256-etm@openssh.com'],
    ['chacha20-poly1305@openssh.com', 'hmac-sha2-256-etm@openssh.com'],
    ['aes128-ctr', 'hmac-sha2-256'],
    ['aes256-ctr', 'hmac-sha2-512-etm@openssh.com'],
  ];
  for (const [cipher, mac] of relayCiphers) {
  it(`runs the relay loop's ssh2 side with ${cipher}${cipher.includes('ctr') ? ` and ${mac}` : ''}: the addon's ciphers after a key exchange, one packet at a time, split packets, dispatch, sequence numbers`, async () => {
    pair = makePair({ serverOffer: serverOffer(['ssh-ed25519'], { ...DEFAULT_CLIENT_LEG, ciphers: [cipher], macs: [mac] }) });
    const { server, client } = pair;
    await handshake(pair);
    await roundTrip(pair);
    noErrors(pair);
    // The client's next packets as they go on the wire, kept from the server.
    const raw = (client.proto as unknown as { _cipher: { _onWrite: (data: Buffer) => void } })._cipher;
    const deliver = raw._onWrite;
    const wire: Buffer[] = [];
    raw._onWrite = (data) => wire.push(Buffer.from(data));
    sendPayload(client.proto, Buffer.of(150, 1));
    sendPayload(client.proto, Buffer.of(151, 2));
    raw._onWrite = deliver;
    const chunk = Buffer.concat(wire);
    const first = wire[0]!.length;

    // Between packets, both ciphers the addon's: a route, with the numbers ssh2 has.
    const route = relayRoute(server.proto, client.proto);
    expect(route, 'a route once ssh2 made the addon\'s ciphers').to.not.equal(undefined);
    const inSeqno = route!.inSeqno;
    expect(route!.outSeqno).to.equal(nextOutboundSeqno(client.proto));
    const seen = () => server.intercepted.slice(-1)[0]!;

    expect(parseOnePacket(server.proto, chunk, 0, chunk.length), 'stops after the first packet').to.equal(first);
    expect([seen().type, seen().seqno]).to.deep.equal([150, inSeqno]);
    // Part of a packet: ssh2 holds it, and there is no route until it is whole.
    expect(parseOnePacket(server.proto, chunk, first, first + 2)).to.equal(undefined);
    expect(relayRoute(server.proto, client.proto), 'no route while ssh2 holds part of a packet\'s length').to.equal(undefined);
    expect(parseOnePacket(server.proto, chunk, first + 2, first + 10)).to.equal(undefined);
    expect(relayRoute(server.proto, client.proto), 'no route while ssh2 holds part of a packet').to.equal(undefined);
    expect(parseOnePacket(server.proto, chunk, first + 10, chunk.length)).to.equal(undefined);
    expect([seen().type, seen().seqno]).to.deep.equal([151, (inSeqno + 1) >>> 0]);
    expect(relayRoute(server.proto, client.proto)!.inSeqno).to.equal((inSeqno + 2) >>> 0);

    // A payload the loop decrypted goes through the interceptor with the next number.
    dispatchPayload(server.proto, Buffer.of(152, 3));
    expect([seen().type, seen().seqno]).to.deep.equal([152, (inSeqno + 2) >>> 0]);
    // Packets the loop relayed count in both protocols.
    const out = nextOutboundSeqno(client.proto);
    advanceSeqnos(server.proto, client.proto, 5);
    expect(relayRoute(server.proto, client.proto)!.inSeqno).to.equal((inSeqno + 8) >>> 0);
    expect(nextOutboundSeqno(client.proto)).to.equal((out + 5) >>> 0);
    // The addon's ciphers went in before ssh2's crypto module loaded.
    expect(relayLoopAvailable).to.equal(true);
    noErrors(pair);
  });
  }

  it("keeps ssh2's own generic classes for what the addon's AES-CTR classes do not take (CBC, truncated MACs)", () => {
    const binding = require('ssh2/lib/protocol/crypto/build/Release/sshcrypto.node') as Record<string, new (...args: unknown[]) => object>;
    const key = crypto.randomBytes(16);
    const iv = crypto.randomBytes(16);
    const macKey = crypto.randomBytes(32);
    const ours = (o: object) => o instanceof ctrHmacClasses.GenericCipher || o instanceof ctrHmacClasses.GenericDecipher;
    expect(ours(new binding.GenericCipher!('aes-128-ctr', key, iv, 'sha256', macKey, true))).to.equal(true);
    expect(ours(new binding.GenericDecipher!('aes-128-ctr', key, iv, 'sha256', macKey, false, 32))).to.equal(true);
    expect(ours(new binding.GenericCipher!('aes-128-cbc', key, iv, 'sha256', macKey, true)), 'CBC').to.equal(false);
    expect(ours(new binding.GenericDecipher!('aes-128-ctr', key, iv, 'sha256', macKey, false, 12)), 'hmac-sha2-256-96').to.equal(false);
    expect(ours(new binding.GenericCipher!('aes-128-ctr', key, iv, 'md5', macKey.subarray(0, 16), false)), 'hmac-md5').to.equal(false);
  });

  it("shows the server the client's first KEXINIT, and that one only (createProtocol onFirstKexInit)", async () => {
    const seen: Buffer[] = [];
    pair = makePair({ onFirstKexInit: (payload) => seen.push(Buffer.from(payload)) });
    await handshake(pair);
    rekey(pair.client.proto);
    await until(() => pair!.server.handshakes === 2 && pair!.client.handshakes === 2, 'the rekey');
    expect(seen).to.have.length(1);
    expect(seen[0]![0]).to.equal(MSG_KEXINIT);
    expect(parseKexInitCiphers(seen[0]!), 'the client offer').to.deep.equal({ cs: CIPHERS, sc: CIPHERS });
  });

  it("switches the cipher with a key exchange of the server's own and another offer, kept for the next one (rekeyWithOffer, negotiatedCipher, negotiatedKex)", async () => {
    pair = makePair();
    const { server, client } = pair;
    expect(negotiatedKex(server.proto), 'before the first key exchange').to.equal(undefined);
    await handshake(pair);
    expect(negotiatedCipher(server.proto)).to.equal('aes128-gcm@openssh.com');
    expect(negotiatedKex(server.proto)).to.equal('curve25519-sha256');
    rekeyWithOffer(server.proto, serverOffer(['ssh-ed25519'], { ...DEFAULT_CLIENT_LEG, ciphers: ['chacha20-poly1305@openssh.com'] }));
    await until(() => server.handshakes === 2 && client.handshakes === 2, 'the server-started key exchange');
    expect(negotiatedCipher(server.proto)).to.equal('chacha20-poly1305@openssh.com');
    expect(negotiatedCipher(client.proto)).to.equal('chacha20-poly1305@openssh.com');
    rekey(client.proto);
    await until(() => server.handshakes === 3 && client.handshakes === 3, 'the client-started key exchange');
    expect(negotiatedCipher(server.proto), 'the new offer stays').to.equal('chacha20-poly1305@openssh.com');
    await roundTrip(pair);
    noErrors(pair);
  });

  it('skips the handlers of a protocol whose handlers were released, and still rekeys (releaseMessageHandlers)', async () => {
    pair = makePair();
    const { server, client } = pair;
    server.consume = (payload) => payload[0] !== MSG_GLOBAL_REQUEST && (payload[0]! < MSG_KEXINIT || payload[0]! > 49);
    await handshake(pair);
    sendPayload(client.proto, globalRequestPayload('before-release@example.org', false));
    await roundTrip(pair);
    expect(server.calls.map((c) => c.name), 'the handler ran before the release').to.deep.equal(['GLOBAL_REQUEST']);

    releaseMessageHandlers(server.proto);
    releaseMessageHandlers(client.proto);
    sendPayload(client.proto, globalRequestPayload('after-release@example.org', false));
    await roundTrip(pair);
    noErrors(pair);
    expect(server.calls, 'no handler runs after the release').to.have.length(1);

    rekey(client.proto);
    await until(() => server.handshakes === 2 && client.handshakes === 2, 'the rekey to complete');
    rekey(server.proto);
    await until(() => server.handshakes === 3 && client.handshakes === 3, 'the server-started rekey to complete');
    noErrors(pair);
    sendPayload(client.proto, ignorePayload('after-rekeys'));
    await roundTrip(pair);
    expect(server.intercepted.some((e) => e.payload.subarray(5).toString() === 'after-rekeys')).to.equal(true);
    expect(server.calls, 'still no handler').to.have.length(1);
  });

  it('turns strict KEX on for the project offers and restarts sequence numbers at each NEWKEYS', async () => {
    pair = makePair();
    const { server, client } = pair;
    expect(strictKex(server.proto), 'before any key exchange').to.equal(false);
    expect(strictKex(client.proto), 'before any key exchange').to.equal(false);
    await handshake(pair);
    expect(strictKex(server.proto)).to.equal(true);
    expect(strictKex(client.proto)).to.equal(true);

    // Run the counters up so that a restart is visible.
    for (let i = 0; i < 7; i++) sendPayload(client.proto, ignorePayload(`pre-${i}`));
    await roundTrip(pair);
    expect(nextOutboundSeqno(client.proto)).to.be.greaterThan(7);

    rekey(client.proto);
    await until(() => server.handshakes === 2 && client.handshakes === 2, 'the rekey to complete');
    noErrors(pair);
    expect(nextOutboundSeqno(client.proto), 'client outbound counter after NEWKEYS').to.equal(0);
    expect(nextOutboundSeqno(server.proto), 'server outbound counter after NEWKEYS').to.equal(0);

    const before = { server: server.intercepted.length, client: client.intercepted.length };
    sendPayload(client.proto, ignorePayload('post-0'));
    sendPayload(client.proto, ignorePayload('post-1'));
    sendPayload(server.proto, ignorePayload('post-s'));
    await roundTrip(pair);
    noErrors(pair);
    // The new deciphers still call the wrapped _onPayload, and count from 0.
    const after = (s: Side, n: number) => s.intercepted.slice(n).map((e) => [e.payload.subarray(5).toString(), e.seqno]);
    expect(after(server, before.server)).to.deep.equal([
      ['post-0', 0],
      ['post-1', 1],
      [`barrier-${barrierId}`, 2],
    ]);
    expect(after(client, before.client)).to.deep.equal([
      ['post-s', 0],
      [`barrier-${barrierId}`, 1],
    ]);
    expect(strictKex(client.proto)).to.equal(true);
  });

  it('keeps only the session id and negotiated algorithms between key exchanges (createProtocol), and rekeys from them', async () => {
    pair = makePair();
    const { server, client } = pair;
    const kexOf = (s: Side) => (s.proto as unknown as { _kex: Record<string, unknown> })._kex;
    await handshake(pair);
    // No ephemeral key pair, no shared secret: only what ssh2 reads until the next KEXINIT.
    const kept = ['negotiated', 'remoteExtInfoEnabled', 'sessionID'];
    const sessionIds: Buffer[] = [];
    for (const s of [server, client]) {
      expect(Object.keys(kexOf(s)).sort(), `${s.name} _kex after the handshake`).to.deep.equal(kept);
      const id = kexOf(s).sessionID;
      expect(Buffer.isBuffer(id) && id.length, `${s.name} session id`).to.equal(32); // curve25519-sha256
      sessionIds.push(id as Buffer);
    }
    expect(sessionIds[0]!.equals(sessionIds[1]!), 'both sides agree on the session id').to.equal(true);

    rekey(client.proto);
    await until(() => server.handshakes === 2 && client.handshakes === 2, 'the rekey to complete');
    noErrors(pair);
    for (const s of [server, client]) {
      expect(Object.keys(kexOf(s)).sort(), `${s.name} _kex after the rekey`).to.deep.equal(kept);
      // RFC 4253 §7.2: the session id stays the first exchange's hash.
      expect((kexOf(s).sessionID as Buffer).equals(sessionIds[0]!), `${s.name} session id after the rekey`).to.equal(true);
    }
    const before = server.intercepted.length;
    sendPayload(client.proto, ignorePayload('after-rekey'));
    await roundTrip(pair);
    noErrors(pair);
    expect(server.intercepted.slice(before).some((e) => e.payload.subarray(5).toString() === 'after-rekey')).to.equal(true);
  });

  it('shares one Buffer per identification string between sessions (createProtocol), and rekeys with them', async () => {
    const identsOf = (s: Side) => s.proto as unknown as { _identRaw: Buffer; _remoteIdentRaw: Buffer };
    pair = makePair();
    await handshake(pair);
    const first = pair;
    const second = makePair();
    try {
      await handshake(second);
      for (const [a, b] of [
        [first.server, second.server],
        [first.client, second.client],
      ] as const) {
        expect(identsOf(a)._identRaw.toString(), `${a.name} ident`).to.match(/^SSH-2\.0-/);
        expect(identsOf(b)._identRaw, `${a.name} own ident shared`).to.equal(identsOf(a)._identRaw);
        expect(identsOf(b)._remoteIdentRaw, `${a.name} peer ident shared`).to.equal(identsOf(a)._remoteIdentRaw);
      }
      expect(identsOf(first.server)._remoteIdentRaw).to.equal(identsOf(first.client)._identRaw);
      // The exchange hash covers both idents: a rekey with the shared ones still agrees.
      rekey(second.client.proto);
      await until(() => second.server.handshakes === 2 && second.client.handshakes === 2, 'the rekey to complete');
      noErrors(second);
      await roundTrip(second);
    } finally {
      second.close();
    }
  });

  it('reports a key exchange from a rekey KEXINIT until it completes, and intercepts after it', async () => {
    pair = makePair();
    const { server, client } = pair;
    await handshake(pair);
    expect(inKeyExchange(client.proto)).to.equal(false);
    expect(inKeyExchange(server.proto)).to.equal(false);

    // Watch both sides' state after every packet they receive: the whole
    // exchange may run within one turn of the event loop.
    const states: Record<'server' | 'client', boolean[]> = { server: [], client: [] };
    for (const s of [server, client]) {
      const parse = s.proto.parse.bind(s.proto);
      s.proto.parse = (chunk, start, end) => {
        parse(chunk, start, end);
        states[s.name].push(inKeyExchange(s.proto));
      };
    }

    rekey(client.proto);
    expect(inKeyExchange(client.proto), 'client right after rekey()').to.equal(true);
    expect(client.handshakes, 'the rekey is not complete yet').to.equal(1);
    await until(() => server.handshakes === 2 && client.handshakes === 2, 'the rekey to complete');
    noErrors(pair);
    expect(inKeyExchange(client.proto)).to.equal(false);
    expect(inKeyExchange(server.proto)).to.equal(false);
    // Server: KEXINIT, KEX_ECDH_INIT put it (and keep it) in the exchange, NEWKEYS ends it.
    // Client: the server's KEXINIT and KEX_ECDH_REPLY arrive during it, NEWKEYS ends it.
    expect(states.server, 'server state after each packet of the rekey').to.deep.equal([true, true, false]);
    expect(states.client, 'client state after each packet of the rekey').to.deep.equal([true, true, false]);
    expect(server.kexAtHandshakeComplete, 'inside onHandshakeComplete').to.deep.equal([false, false]);
    expect(client.kexAtHandshakeComplete, 'inside onHandshakeComplete').to.deep.equal([false, false]);
    // The client's KEXINIT went through the interceptor, which left it to ssh2
    // (consume() is false for key exchange messages) as the relay does.
    const kexinits = server.intercepted.filter((e) => e.type === MSG_KEXINIT);
    expect(kexinits, 'the rekey KEXINIT passes the interceptor once').to.have.length(1);

    sendPayload(client.proto, ignorePayload('after-rekey'));
    await roundTrip(pair);
    expect(server.intercepted.some((e) => e.payload.subarray(5).toString() === 'after-rekey')).to.equal(true);
  });

  it('sends with sendPayloadBypassingKex during a key exchange', async () => {
    pair = makePair();
    const { server, client } = pair;
    await handshake(pair);
    rekey(client.proto);
    expect(inKeyExchange(client.proto)).to.equal(true);

    // ssh2 holds a normal send back while its KEXINIT is outstanding...
    const writes = client.writes;
    sendPayload(client.proto, ignorePayload('queued-by-ssh2'));
    expect(client.writes, 'sendPayload during a key exchange writes nothing').to.equal(writes);
    // ...but the bypass goes out at once.
    sendPayloadBypassingKex(client.proto, disconnectPayload(11, 'bye during kex'));
    expect(client.writes, 'sendPayloadBypassingKex writes one packet at once').to.equal(writes + 1);

    await until(() => server.calls.some((c) => c.name === 'DISCONNECT'), 'the DISCONNECT at the server');
    const disconnect = server.calls.find((c) => c.name === 'DISCONNECT')!;
    expect(disconnect.args).to.deep.equal([11, 'bye during kex']);
    expect(disconnect.inKex, 'the server was in the key exchange when it arrived').to.equal(true);
    noErrors(pair);
  });

  for (const [type, bits, algorithm] of [
    ['ed25519', undefined, 'ssh-ed25519'],
    ['ecdsa', 384, 'ecdsa-sha2-nistp384'],
    ['rsa', 2048, 'rsa-sha2-512'],
    ['rsa', 2048, 'rsa-sha2-256'],
  ] as const) {
    it(`hands a publickey request to USERAUTH_REQUEST as a PublicKeyAuthRequest that verifies, and answers a query with authPKOK (${algorithm})`, async () => {
      pair = makePair();
      const { server, client } = pair;
      await handshake(pair);
      // From here on ssh2 handles the authentication messages itself.
      server.consume = client.consume = () => false;
      const userKey = parseKey(generateKeyPair(type, bits).private);
      if (userKey instanceof Error) throw userKey;
      const requests = () => server.calls.filter((c) => c.name === 'USERAUTH_REQUEST');

      // The query: no signature. The server's PK_OK reaches the client.
      client.proto.authPK('alice', userKey, algorithm, undefined as never);
      await until(() => requests().length === 1, 'the query');
      const [user, service, method, query] = requests()[0]!.args as [string, string, string, PublicKeyAuthRequest];
      expect([user, service, method]).to.deep.equal(['alice', 'ssh-connection', 'publickey']);
      expect(query.key.equals(userKey.getPublicSSH()), 'the key blob').to.equal(true);
      expect(query.signature).to.equal(undefined);
      expect(publicKeyAlgorithm(query)).to.equal(algorithm);
      server.proto.authPKOK(publicKeyAlgorithm(query), query.key);
      await until(() => client.calls.some((c) => c.name === 'USERAUTH_PK_OK'), 'USERAUTH_PK_OK at the client');

      // The signed request: what the client signed, and the signature, as node's verify takes them.
      client.proto.authPK('alice', userKey, algorithm, (data, cb) => {
        const signature = userKey.sign(data, algorithm.startsWith('rsa-') ? `sha${algorithm.slice(-3)}` : undefined);
        if (signature instanceof Error) throw signature;
        cb(signature);
      });
      await until(() => requests().length === 2, 'the signed request');
      const signed = requests()[1]!.args[3] as PublicKeyAuthRequest;
      expect(publicKeyAlgorithm(signed)).to.equal(algorithm);
      // RFC 4252 7: string session id, then the request from its message number on.
      const idLength = signed.blob!.readUInt32BE(0);
      expect(idLength, 'a session id of SHA-256 or SHA-512 size').to.be.oneOf([32, 64]);
      expect(signed.blob![4 + idLength], 'USERAUTH_REQUEST after the session id').to.equal(50);
      expect(userKey.verify(signed.blob!, signed.signature!, signed.hashAlgo), 'the signature verifies').to.equal(true);
      const other = Buffer.from(signed.blob!);
      other[other.length - 1]! ^= 1;
      expect(userKey.verify(other, signed.signature!, signed.hashAlgo), 'a changed request does not').to.not.equal(true);
      noErrors(pair);
    });
  }

  for (const [algorithm, signatureProper] of [
    ['sk-ssh-ed25519@openssh.com', crypto.randomBytes(64)],
    ['sk-ecdsa-sha2-nistp256@openssh.com', Buffer.concat([sshString(crypto.randomBytes(32)), sshString(crypto.randomBytes(33))])],
  ] as const) {
    it(`hands a security key's publickey request over with the signature proper, then its flags and counter (${algorithm}; lib/securitykeys.ts reads that form)`, async () => {
      pair = makePair();
      const { server, client } = pair;
      await handshake(pair);
      server.consume = client.consume = () => false;
      const keyBlob = Buffer.concat([sshString(algorithm), sshString(crypto.randomBytes(32)), sshString('ssh:')]);
      const flagsAndCounter = Buffer.of(0x05, 0, 0, 0, 7);
      // RFC 4252 7, with OpenSSH's security key signature (PROTOCOL.u2f): string algorithm, string signature, byte flags, uint32 counter.
      const request = Buffer.concat([Buffer.of(50), sshString('alice'), sshString('ssh-connection'), sshString('publickey'), Buffer.of(1), sshString(algorithm), sshString(keyBlob)]);
      const signature = Buffer.concat([sshString(algorithm), sshString(signatureProper), flagsAndCounter]);
      sendPayload(client.proto, Buffer.concat([request, sshString(signature)]));
      await until(() => server.calls.some((c) => c.name === 'USERAUTH_REQUEST'), 'the signed request');
      const signed = server.calls.find((c) => c.name === 'USERAUTH_REQUEST')!.args[3] as PublicKeyAuthRequest;
      expect(publicKeyAlgorithm(signed)).to.equal(algorithm);
      expect(signed.key.equals(keyBlob), 'the key blob').to.equal(true);
      expect(signed.signature!.equals(Buffer.concat([signatureProper, flagsAndCounter])), 'signature proper, flags, counter').to.equal(true);
      const idLength = signed.blob!.readUInt32BE(0);
      expect(signed.blob!.subarray(4 + idLength).equals(request), 'what the client signed: session id, then the request').to.equal(true);
      noErrors(pair);
    });
  }

  for (const [algorithm, inner] of [
    ['ssh-ed25519-cert-v01@openssh.com', 'ssh-ed25519'],
    ['rsa-sha2-512-cert-v01@openssh.com', 'rsa-sha2-512'],
    ['ecdsa-sha2-nistp256-cert-v01@openssh.com', 'ecdsa-sha2-nistp256'],
  ] as const) {
    it(`hands a certificate's publickey request over with the signature in SSH's form, unconverted (${algorithm}; lib/connection.ts verifies it so)`, async () => {
      pair = makePair();
      const { server, client } = pair;
      await handshake(pair);
      server.consume = client.consume = () => false;
      const certificate = Buffer.concat([sshString(algorithm.replace(/^rsa-sha2-512/, 'ssh-rsa')), crypto.randomBytes(200)]);
      const request = Buffer.concat([Buffer.of(50), sshString('alice'), sshString('ssh-connection'), sshString('publickey'), Buffer.of(1), sshString(algorithm), sshString(certificate)]);
      const signature = Buffer.concat([sshString(inner), sshString(crypto.randomBytes(64))]);
      sendPayload(client.proto, Buffer.concat([request, sshString(signature)]));
      await until(() => server.calls.some((c) => c.name === 'USERAUTH_REQUEST'), 'the signed request');
      const signed = server.calls.find((c) => c.name === 'USERAUTH_REQUEST')!.args[3] as PublicKeyAuthRequest;
      expect(publicKeyAlgorithm(signed)).to.equal(algorithm);
      expect(signed.key.equals(certificate), 'the certificate').to.equal(true);
      expect(signed.signature!.equals(signature), 'string algorithm, string signature').to.equal(true);
      const idLength = signed.blob!.readUInt32BE(0);
      expect(signed.blob!.subarray(4 + idLength).equals(request), 'what the client signed: session id, then the request').to.equal(true);
      noErrors(pair);
    });
  }

  it('makes the server send exactly one well-formed EXT_INFO with replaceServerExtInfo', async () => {
    pair = makePair({ replaceExtInfo: true });
    const { server, client } = pair;
    await handshake(pair);
    rekey(server.proto); // no second EXT_INFO after a rekey either
    await until(() => server.handshakes === 2 && client.handshakes === 2, 'the rekey to complete');
    await roundTrip(pair);
    noErrors(pair);

    const extInfos = client.intercepted.filter((e) => e.type === MSG_EXT_INFO);
    expect(extInfos, 'EXT_INFO messages the client received').to.have.length(1);
    expect(extInfos[0]!.seqno, 'EXT_INFO is the first packet after NEWKEYS').to.equal(0);
    const ext = parseExtInfo(extInfos[0]!.payload);
    const algs = ext.get('server-sig-algs');
    expect(algs).to.be.a('string');
    expect(algs).to.not.include('nistp521rsa');
    for (const alg of algs!.split(',')) expect(alg).to.match(/^[a-z0-9][a-z0-9.@-]*$/);
    expect(algs!.split(',')).to.deep.equal(SERVER_SIG_ALGS);
  });

  it('relies on ssh2 sending its own EXT_INFO only when the client offered ext-info-c', async () => {
    // Without the replacement ssh2 sends one itself, gated by the same
    // _kex.remoteExtInfoEnabled flag that replaceServerExtInfo clears.
    pair = makePair({ replaceExtInfo: false });
    await handshake(pair);
    noErrors(pair);
    const extInfos = pair.client.intercepted.filter((e) => e.type === MSG_EXT_INFO);
    expect(extInfos, 'ssh2 sends one EXT_INFO of its own').to.have.length(1);
    expect(parseExtInfo(extInfos[0]!.payload).has('server-sig-algs')).to.equal(true);
  });

  describe('outgoing packets built by the daemon (installFastPackets)', () => {
    for (const name of ['aes128-gcm@openssh.com', 'chacha20-poly1305@openssh.com']) {
      it(`replaces ssh2's allocPacket for ${name}: RFC 4253 layout, fresh random padding, decryptable`, () => {
        // Missing here means ssh2's method, layout or construction changed and
        // ssh2's own (slower) allocPacket is in use: re-check lib/ssh2internals.ts.
        expect(fastPacketCiphers, 'ciphers whose packets the daemon builds').to.include(name);
        const info = ssh2Crypto.CIPHER_INFO[name]!;
        const key = crypto.randomBytes(info.keyLen);
        const iv = crypto.randomBytes(info.ivLen);
        const written: Buffer[] = [];
        const cipher = ssh2Crypto.createCipher({
          outbound: { onWrite: (d: Buffer) => written.push(Buffer.from(d)), cipherInfo: info, cipherKey: key, cipherIV: Buffer.from(iv), seqno: 0 },
        });
        const payloads: Buffer[] = [];
        const decipher = ssh2Crypto.createDecipher({
          inbound: { onPayload: (p: Buffer) => void payloads.push(Buffer.from(p)), decipherInfo: info, decipherKey: key, decipherIV: Buffer.from(iv), seqno: 0 },
        });
        try {
          const paddings: string[] = [];
          const sent: Buffer[] = [];
          for (const length of [0, 1, 7, 8, 11, 12, 13, 16, 100, 16384, 20000, 32777, 34000]) {
            for (let repeat = 0; repeat < 20; repeat++) {
              const packet = cipher.allocPacket(length);
              const padding = packet[4]!;
              expect(packet.length, `packet length for a ${length}-byte payload`).to.equal(4 + 1 + length + padding + 16);
              expect(packet.readUInt32BE(0)).to.equal(1 + length + padding);
              expect(padding).to.be.within(4, 3 + info.blockLen);
              expect((1 + length + padding) % info.blockLen).to.equal(0);
              paddings.push(packet.toString('hex', 5 + length, 5 + length + padding));
              const payload = crypto.randomBytes(length);
              payload.copy(packet, 5);
              sent.push(payload);
              cipher.encrypt(packet);
            }
          }
          // 260 paddings of at least 4 random bytes: a repeat would mean reused bytes.
          expect(new Set(paddings).size, 'distinct paddings').to.equal(paddings.length);
          const stream = Buffer.concat(written);
          decipher.decrypt(stream, 0, stream.length);
          expect(payloads).to.deep.equal(sent);
        } finally {
          cipher.free();
          decipher.free();
        }
      });
    }
  });
});

// ---------------------------------------------------------------------------

/** An unencrypted SSH packet, as before the first NEWKEYS (RFC 4253 §6). */
function plainPacket(payload: Buffer): Buffer {
  let padding = 8 - ((4 + 1 + payload.length) % 8);
  if (padding < 4) padding += 8;
  const head = Buffer.alloc(5);
  head.writeUInt32BE(1 + payload.length + padding);
  head[4] = padding;
  return Buffer.concat([head, payload, Buffer.alloc(padding)]);
}

/** The payloads of the unencrypted packets in `data`, from `start`. */
function plainPayloads(data: Buffer, start: number): Buffer[] {
  const payloads: Buffer[] = [];
  for (let p = start; p + 5 <= data.length; ) {
    const length = data.readUInt32BE(p);
    payloads.push(data.subarray(p + 5, p + 4 + length - data[p + 4]!));
    p += 4 + length;
  }
  return payloads;
}

/** The SSH strings of `payload` after its message number. */
function sshStrings(payload: Buffer): Buffer[] {
  const strings: Buffer[] = [];
  for (let p = 1; p + 4 <= payload.length; ) {
    const length = payload.readUInt32BE(p);
    strings.push(payload.subarray(p + 4, p + 4 + length));
    p += 4 + length;
  }
  return strings;
}

describe('ssh2 internals contract: the hybrid key exchanges (patches/ssh2+1.17.0.patch)', function () {
  const MSG_KEX_ECDH_INIT = 30;
  const MSG_KEX_ECDH_REPLY = 31;
  const CLIENT_IDENT = 'SSH-2.0-jsp-contract-mlkem';

  /** A server Protocol that has read a client's ident line, a KEXINIT for `method` only, and KEX_ECDH_INIT with `clientPublic`. */
  function serverAnswering(clientPublic: Buffer, method = 'mlkem768x25519-sha256') {
    const hostKey = parseKey(generateKeyPair('ed25519').private);
    if (hostKey instanceof Error) throw hostKey;
    const written: Buffer[] = [];
    const errors: Error[] = [];
    const proto = createProtocol({
      server: true,
      ident: 'jsp-contract-server',
      offer: serverOffer(['ssh-ed25519']),
      hostKeys: { [hostKey.type]: hostKey },
      messageHandlers: {},
      onWrite: (data: Buffer) => written.push(Buffer.from(data)),
      onError: (err: Error) => errors.push(err),
      onHandshakeComplete: () => {},
    });
    proto.start?.();
    const nameList = (names: string) => sshString(names);
    const clientKexInit = Buffer.concat([
      Buffer.of(MSG_KEXINIT),
      crypto.randomBytes(16),
      ...[`${method},kex-strict-c-v00@openssh.com`, 'ssh-ed25519', 'aes128-gcm@openssh.com', 'aes128-gcm@openssh.com', 'hmac-sha2-256', 'hmac-sha2-256', 'none', 'none', '', ''].map(nameList),
      Buffer.alloc(5),
    ]);
    const input = Buffer.concat([
      Buffer.from(`${CLIENT_IDENT}\r\n`),
      plainPacket(clientKexInit),
      plainPacket(Buffer.concat([Buffer.of(MSG_KEX_ECDH_INIT), sshString(clientPublic)])),
    ]);
    try {
      proto.parse(input, 0, input.length);
    } catch (err) {
      errors.push(err as Error);
    }
    const output = Buffer.concat(written);
    const identEnd = output.indexOf('\r\n') + 2;
    return {
      hostKey,
      errors,
      clientKexInit,
      serverIdent: output.subarray(0, identEnd - 2),
      payloads: plainPayloads(output, identEnd),
      close: () => proto.cleanup(),
    };
  }

  const HYBRIDS = ['mlkem768x25519-sha256', 'sntrup761x25519-sha512', 'sntrup761x25519-sha512@openssh.com'];

  it('is installed: ssh2 makes the added key exchanges, and the client leg offers them first', () => {
    const added = (require('ssh2/lib/protocol/kex.js') as { ADDED_KEY_EXCHANGES?: unknown }).ADDED_KEY_EXCHANGES;
    expect(added, 'kex.js exports no ADDED_KEY_EXCHANGES: patch-package did not apply patches/ssh2+1.17.0.patch').to.be.an.instanceOf(Map);
    expect([...(added as Map<string, unknown>).keys()]).to.deep.equal(HYBRIDS);
    expect(hybridKeyExchangesInstalled).to.equal(true);
    expect(DEFAULT_CLIENT_LEG.kex.slice(0, 3)).to.deep.equal(HYBRIDS);
    expect(clientOffer(), 'the upstream leg').to.not.satisfy((o: unknown) => /mlkem|sntrup/.test(JSON.stringify(o)));
  });

  it("answers mlkem768x25519-sha256's KEX_ECDH_INIT with the ciphertext and its X25519 key, and signs the draft's exchange hash, K hashed as a string", () => {
    const client = mlkemClient();
    const { clientPublic } = client;
    const server = serverAnswering(clientPublic);
    try {
      expect(server.errors.map(String)).to.deep.equal([]);
      const [serverKexInit, reply] = server.payloads;
      expect(serverKexInit![0]).to.equal(MSG_KEXINIT);
      expect(reply![0]).to.equal(MSG_KEX_ECDH_REPLY);
      const [hostKeyBlob, serverPublic, signature] = sshStrings(reply!);
      expect(hostKeyBlob!.equals(server.hostKey.getPublicSSH())).to.equal(true);
      expect(serverPublic!.length).to.equal(1088 + 32);

      // The client's side of the draft (draft-ietf-sshm-mlkem-hybrid-kex):
      // K = SHA-256(ML-KEM secret || X25519 secret), and H over K as a string.
      const k = client.sharedSecret(serverPublic!);
      const h = crypto
        .createHash('sha256')
        .update(Buffer.concat([CLIENT_IDENT, server.serverIdent, server.clientKexInit, serverKexInit!, hostKeyBlob!, clientPublic, serverPublic!, k].map((b) => sshString(b))))
        .digest();
      const [sigType, sig] = sshStrings(Buffer.concat([Buffer.of(0), signature!]));
      expect(sigType!.toString()).to.equal('ssh-ed25519');
      expect(server.hostKey.verify(h, sig!), 'the signature over H').to.equal(true);
    } finally {
      server.close();
    }
  });

  for (const [method, reason] of [
    ['mlkem768x25519-sha256', "the client's key (ML-KEM-768 and X25519) has 100 bytes, not 1216"],
    ['sntrup761x25519-sha512', "the client's key (sntrup761 and X25519) has 100 bytes, not 1190"],
  ]) {
    it(`fails the key exchange, with the reason, on a client key of the wrong size (${method})`, () => {
      const server = serverAnswering(crypto.randomBytes(100), method);
      try {
        expect(server.errors.map(String).join('; ')).to.contain(`Error while computing DH secret (${method}): ${reason}`);
        const disconnect = server.payloads.find((p) => p[0] === MSG_DISCONNECT);
        expect(disconnect, 'a DISCONNECT').to.not.equal(undefined);
        expect(disconnect!.readUInt32BE(1), 'SSH_DISCONNECT_KEY_EXCHANGE_FAILED').to.equal(3);
        expect(server.payloads.some((p) => p[0] === MSG_KEX_ECDH_REPLY), 'no reply').to.equal(false);
      } finally {
        server.close();
      }
    });
  }

  it('answers sntrup761x25519-sha512 with the ciphertext, its X25519 key and a signature (K and the SHA-512 exchange hash: the real clients in core.test.ts)', () => {
    const clientPublic = Buffer.concat([crypto.randomBytes(1158), crypto.generateKeyPairSync('x25519').publicKey.export({ format: 'der', type: 'spki' }).subarray(12)]);
    const server = serverAnswering(clientPublic, 'sntrup761x25519-sha512');
    try {
      expect(server.errors.map(String)).to.deep.equal([]);
      const reply = server.payloads[1]!;
      expect(reply[0]).to.equal(MSG_KEX_ECDH_REPLY);
      const [, serverPublic, signature] = sshStrings(reply);
      expect(serverPublic!.length).to.equal(1039 + 32);
      expect(sshStrings(Buffer.concat([Buffer.of(0), signature!]))[0]!.toString()).to.equal('ssh-ed25519');
    } finally {
      server.close();
    }
  });
});
