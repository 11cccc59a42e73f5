/**
 * The one place that touches ssh2's protocol layer and its private fields.
 *
 * The proxy uses ssh2's `Protocol` for key exchange and user authentication on
 * both legs, then takes over the raw payload stream. ssh2 has no public API for
 * that, so this module reaches into `lib/protocol`. Every private field used
 * here is checked by test/ssh2internals.test.ts, which fails loudly when a new
 * ssh2 release changes one of them. The ssh2 version is pinned in package.json.
 */
import { createPrivateKey, sign as cryptoSign, type KeyObject } from 'node:crypto';
import { createRequire } from 'node:module';
import type { ClientLegAlgorithms } from './algorithms.js';
import { HYBRID_KEY_EXCHANGES, hybridServerReply } from './hybridkex.js';
import { MSG } from './messages.js';
import { fillRandom, takePacketBuffer } from './packetbuffers.js';
import { cipherClasses, ctrHmacClasses, isNativeCipher, isNativeDecipher, packetRelay, type NativeCipher, type NativeDecipher } from './packetrelay.js';

const require = createRequire(import.meta.url);

/** The ssh2 version whose internals this module was written against. */
export const SSH2_VERSION = '1.17.0';

/* eslint-disable @typescript-eslint/no-explicit-any -- untyped CommonJS internals */
const ssh2Package = require('ssh2/package.json') as { version: string };

/** ssh2's crypto module, and its native binding, as require() names them. */
const SSH2_CRYPTO = require.resolve('ssh2/lib/protocol/crypto.js');
const SSH2_BINDING = 'ssh2/lib/protocol/crypto/build/Release/sshcrypto.node';

/**
 * Puts the packet relay addon's ciphers in place of ssh2's own, so that
 * ssh2 and the relay loop (lib/leg.ts) share one cipher state per direction.
 * ssh2's crypto.js copies the binding's classes once, as it loads; so this
 * must run before anything loads it, and does (this module loads ssh2's
 * protocol layer itself, below). Returns false where that was too late or
 * ssh2's binding is not built: ssh2 then keeps its ciphers and every packet
 * takes ssh2's way.
 */
function installRelayCiphers(binding: Record<string, unknown> | undefined): boolean {
  if (binding === undefined || require.cache[SSH2_CRYPTO] !== undefined) return false;
  Object.assign(binding, cipherClasses, {
    GenericCipher: ctrHmacOrSsh2(ctrHmacClasses.GenericCipher, binding.GenericCipher as Constructor),
    GenericDecipher: ctrHmacOrSsh2(ctrHmacClasses.GenericDecipher, binding.GenericDecipher as Constructor),
  });
  return true;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- ssh2 passes its own arguments through
type Constructor = new (...args: any[]) => object;

/**
 * ssh2's GenericCipher or GenericDecipher: the addon's class for what it
 * takes (AES-CTR with a whole HMAC), ssh2's own for the rest. ssh2 calls
 * it with `new` and the arguments (cipher name, key, IV, digest name, MAC
 * key, encrypt-then-MAC, and for a decipher the MAC length on the wire).
 */
function ctrHmacOrSsh2(ours: Constructor, ssh2s: Constructor): Constructor {
  return function GenericCipherOrDecipher(...args: unknown[]) {
    const [cipher, , , digest, , , macLength] = args;
    return packetRelay.ctrHmacTakes(String(cipher), String(digest), macLength as number | undefined) ? new ours(...args) : new ssh2s(...args);
  } as unknown as Constructor;
}

function loadSsh2Binding(): Record<string, unknown> | undefined {
  try {
    return require(SSH2_BINDING) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

const ssh2Binding = loadSsh2Binding();

/** ssh2's own cipher classes, as its binding had them (for the contract test that compares the two). */
export const ssh2BindingCiphers: Partial<typeof cipherClasses & typeof ctrHmacClasses> =
  ssh2Binding === undefined ? {} : Object.fromEntries([...Object.keys(cipherClasses), ...Object.keys(ctrHmacClasses)].map((name) => [name, ssh2Binding[name]]));

const relayCiphersInstalled = installRelayCiphers(ssh2Binding);

const ProtocolClass = require('ssh2/lib/protocol/Protocol.js') as new (config: object) => RawProtocol;
const kexModule = require('ssh2/lib/protocol/kex.js') as {
  KexInit: new (offer: AlgorithmOffer) => KexInitOffer;
  /** Added by patches/ssh2+1.17.0.patch: key exchange methods by name, which createKeyExchange makes when ssh2 lacks them. */
  ADDED_KEY_EXCHANGES?: Map<string, (base: KeyExchangeClass, ...args: unknown[]) => KeyExchange>;
};
const utilsModule = require('ssh2/lib/protocol/utils.js') as {
  sendPacket: (proto: RawProtocol, packet: Buffer, bypass?: boolean) => boolean;
};
const cryptoModule = require('ssh2/lib/protocol/crypto.js') as {
  bindingAvailable: boolean;
  init: Promise<void>;
  CIPHER_INFO: Record<string, { keyLen: number; ivLen: number }>;
  createCipher: (config: object) => RawCipher;
};
// ssh2's `utils.parseKey` and `utils.generateKeyPairSync`, from their own
// files: ssh2's index also loads its Client, Server, SFTP and agents, which
// the proxy never uses (~0.5 MB of heap).
const keyParserModule = require('ssh2/lib/protocol/keyParser.js') as {
  parseKey: (data: Buffer | string, passphrase?: string) => ParsedKey | ParsedKey[] | Error;
};
const keygenModule = require('ssh2/lib/keygen.js') as {
  generateKeyPairSync: (type: string, opts?: { bits?: number; comment?: string }) => { private: string; public: string };
};

/** A key as parsed by ssh2 (`utils.parseKey`). */
export interface ParsedKey {
  type: string;
  comment: string;
  sign(data: Buffer, algo?: string): Buffer | Error;
  verify(data: Buffer, signature: Buffer, algo?: string): boolean | Error;
  isPrivateKey(): boolean;
  getPrivatePEM(): string | null;
  getPublicSSH(): Buffer;
  equals(other: ParsedKey | Buffer | string): boolean;
}

/** Algorithm lists in the shape ssh2's `KexInit` takes. */
export interface AlgorithmOffer {
  kex: string[];
  serverHostKey: string[];
  cs: { cipher: string[]; mac: string[]; compress: string[]; lang: string[] };
  sc: { cipher: string[]; mac: string[]; compress: string[]; lang: string[] };
}

/** An immutable, prebuilt offer (ssh2 mutates plain objects on every use). */
export interface KexInitOffer { readonly __brand?: 'KexInit' }

/** The public methods of ssh2's Protocol that the proxy calls. */
export interface Protocol {
  start?: () => void;
  parse(chunk: Buffer, start: number, end: number): void;
  cleanup(): void;
  // server side
  serviceAccept(name: string): void;
  authFailure(methods: string[], partial?: boolean): void;
  authSuccess(): void;
  authInfoReq(name: string, instructions: string, prompts: { prompt: string; echo: boolean }[]): void;
  authPKOK(keyAlgo: string, key: Buffer): void;
  // client side
  service(name: string): void;
  authPK(user: string, key: ParsedKey, keyAlgo: string, sign: (data: Buffer, cb: (sig: Buffer) => void) => void): void;
}

/**
 * A publickey USERAUTH_REQUEST as ssh2's parser hands it to the handler
 * (handlers.misc.js); undefined there when a signature did not parse.
 * `keyAlgo` reads 'ssh-rsa' for rsa-sha2-256 and rsa-sha2-512, which
 * `hashAlgo` tells apart; `blob` is what the client signed (session ID and
 * request), and `signature` is already in the form node's verify takes.
 * For a security key (sk-...) it is the signature proper followed by the
 * flags byte and the counter, as lib/securitykeys.ts reads it; for a
 * certificate (...-cert-v01@openssh.com) it is left in SSH's form (string
 * algorithm, string signature), as lib/sshsignatures.ts reads it.
 */
export interface PublicKeyAuthRequest {
  keyAlgo: string;
  key: Buffer;
  hashAlgo?: string;
  signature?: Buffer;
  blob?: Buffer;
}

/** The signature algorithm the client named in a publickey request (rsa-sha2-512, not ssh2's ssh-rsa). */
export function publicKeyAlgorithm(request: PublicKeyAuthRequest): string {
  if (request.keyAlgo !== 'ssh-rsa' || request.hashAlgo === undefined) return request.keyAlgo;
  return `rsa-sha2-${request.hashAlgo.slice(3)}`;
}

/** An outbound cipher of ssh2 (crypto.js): builds, encrypts and writes packets. */
interface RawCipher {
  allocPacket(payloadLength: number): Buffer;
  encrypt(packet: Buffer): void;
  free(): void;
}

/**
 * An inbound cipher of ssh2 (crypto.js). Its classes keep a packet that
 * arrived in pieces in these fields (AES-GCM: `_lenBytes`, `_pktLen`,
 * `_packet`, `_tagPos`; ChaCha20-Poly1305: `_lenPos` instead of `_lenBytes`,
 * `_macPos` instead of `_tagPos`; the generic one: `_blockPos` instead of
 * `_lenBytes`, `_macPos`).
 */
interface RawDecipher {
  inSeqno: number;
  _onPayload: (payload: Buffer) => unknown;
  decrypt(data: Buffer, p: number, dataLen: number): number | undefined;
  _instance?: unknown;
  _packet?: unknown;
  _pktLen?: number;
  _lenBytes?: number;
  _lenPos?: number;
  _blockPos?: number;
}

/** The private fields this module relies on. */
interface RawProtocol extends Protocol {
  _onPayload: (payload: Buffer) => unknown;
  _onHandshakeComplete: (...args: unknown[]) => void;
  _decipher: RawDecipher | undefined;
  /** `_macLen`, `_macActualLen`: the generic cipher's MAC length, and what it sends of it. */
  _cipher: { outSeqno: number; _dead?: boolean; _instance?: unknown; _macLen?: number; _macActualLen?: number };
  _kexinit: Buffer | undefined;
  _handlers: Record<string, unknown>;
  _kex: { remoteExtInfoEnabled?: boolean; sessionID?: Buffer; negotiated?: { kex?: string; cs?: { cipher?: string } } } | undefined;
  _offer: KexInitOffer;
  rekey(): void;
  _strictMode: boolean | undefined;
  _identRaw: Buffer;
  _remoteIdentRaw: Buffer | undefined;
  _packetRW: {
    write: {
      allocStart: number;
      allocStartKEX: number;
      alloc(len: number, force?: boolean): Buffer;
      finalize(packet: Buffer, force?: boolean): Buffer;
    };
  };
}
/* eslint-enable @typescript-eslint/no-explicit-any */

export interface ProtocolConfig {
  server: boolean;
  ident: string;
  offer: KexInitOffer;
  /** Server only: host keys by host key algorithm name. */
  hostKeys?: Record<string, ParsedKey>;
  /** Client only: decides whether the server's host key is the pinned one. */
  hostVerifier?: (key: Buffer) => boolean;
  messageHandlers: Record<string, (...args: any[]) => void>;
  onWrite: (data: Buffer) => void;
  onError: (err: Error) => void;
  onHandshakeComplete: () => void;
  /** Shown the peer's first KEXINIT (its algorithm lists) before ssh2 handles it. */
  onFirstKexInit?: (payload: Buffer) => void;
}

export function createProtocol(config: ProtocolConfig): Protocol {
  const { onHandshakeComplete, onFirstKexInit } = config;
  const proto: RawProtocol = new ProtocolClass({
    ...config,
    // ssh2 calls onHeader once the peer's identification line is read, right
    // after it made the first (null) decipher, whose payloads go to the key
    // exchange and not through _onPayload (Protocol.js, kex.js onKEXPayload).
    onHeader:
      onFirstKexInit &&
      (() => {
        const decipher = proto._decipher!;
        const onKexPayload = decipher._onPayload;
        decipher._onPayload = (payload: Buffer) => {
          if (payload[0] === MSG.KEXINIT) {
            decipher._onPayload = onKexPayload;
            onFirstKexInit(payload);
          }
          return onKexPayload(payload);
        };
      }),
    onHandshakeComplete: () => {
      releaseKexState(proto);
      proto._remoteIdentRaw = internIdent(proto._remoteIdentRaw);
      onHandshakeComplete();
    },
  });
  proto._identRaw = internIdent(proto._identRaw);
  return proto;
}

/** Distinct identification strings shared at most: clients choose theirs. */
const MAX_INTERNED_IDENTS = 256;
const internedIdents = new Map<string, Buffer>();

/**
 * The one Buffer for this identification string. ssh2 keeps its own and the
 * peer's ident per Protocol (`_identRaw`, `_remoteIdentRaw`), only to hash
 * them into every key exchange (kex.js), never to change them; as Buffers of
 * their own they cost ~400 bytes each (an ArrayBuffer and its native backing
 * store), four per session, for the same few strings: the daemon's two, its
 * sshd's, and those of the few client versions in use.
 */
function internIdent(ident: Buffer): Buffer;
function internIdent(ident: Buffer | undefined): Buffer | undefined;
function internIdent(ident: Buffer | undefined): Buffer | undefined {
  if (ident === undefined) return undefined;
  const key = ident.toString('latin1');
  const shared = internedIdents.get(key);
  if (shared) return shared;
  if (internedIdents.size >= MAX_INTERNED_IDENTS) return ident;
  internedIdents.set(key, ident);
  return ident;
}

/**
 * Once a key exchange has completed, ssh2 keeps its KeyExchange object in
 * `_kex` until the next KEXINIT replaces it (kex.js handleKexInit): with the
 * ephemeral key pair (two KeyObjects with native keys for x25519) and, on a
 * server, the closure that holds the shared secret and the exchange hash,
 * ~1 KiB of heap per leg plus native memory. What ssh2 reads from `_kex`
 * between exchanges: `sessionID` (the next exchange's constructor, user auth
 * signatures), `negotiated` (compression at USERAUTH_SUCCESS),
 * `remoteExtInfoEnabled` (already read when this runs), and its truthiness
 * (handleKexInit: a rekey, not the first exchange). Every KEXINIT builds a
 * new KeyExchange from `sessionID` alone, and only a KEXINIT installs the
 * handler that parses key exchange messages, so nothing else is read again.
 */
function releaseKexState(proto: RawProtocol): void {
  const kex = proto._kex;
  if (kex === undefined) return;
  proto._kex = { sessionID: kex.sessionID, negotiated: kex.negotiated, remoteExtInfoEnabled: kex.remoteExtInfoEnabled };
}

/** ssh2's KeyExchange (kex.js), as far as the added key exchange uses it. */
interface KeyExchange {
  _protocol: { _server: boolean };
  type: string;
}
type KeyExchangeClass = new (...args: unknown[]) => KeyExchange;

/**
 * Makes ssh2 run the hybrid key exchanges of lib/hybridkex.ts as a server.
 * ssh2 has no way to add a key exchange method, so
 * patches/ssh2+1.17.0.patch, which patch-package applies after `npm ci`,
 * gives kex.js a map of methods that its createKeyExchange makes for names it
 * does not know. Each method here is a subclass of ssh2's
 * Curve25519Exchange: the same messages (KEX_ECDH_INIT and _REPLY) and the
 * same exchange hash with the method's hash function, with the hybrid's keys
 * and shared secret. ssh2 hashes K with `hashString`, as the length and the
 * bytes it is given: the mpint's bytes for curve25519, and here the digest
 * itself, which is K as an SSH string. Returns false if the patch is
 * missing: the proxy then offers none of them.
 */
function installHybridKeyExchanges(): boolean {
  const added = kexModule.ADDED_KEY_EXCHANGES;
  if (!(added instanceof Map)) return false;
  for (const [method, { hash }] of HYBRID_KEY_EXCHANGES) {
    let HybridExchange: KeyExchangeClass | undefined;
    added.set(method, (Curve25519Exchange, ...args) => {
      HybridExchange ??= class extends Curve25519Exchange {
        private serverPublic: Buffer | undefined;
        constructor(...rest: unknown[]) {
          super(hash, ...rest);
          this.type = method;
        }
        /** The client's key as it came: ssh2's curve25519 strips leading zero bytes, which would change the exchange hash. */
        convertPublicKey(key: Buffer): Buffer {
          return key;
        }
        computeSecret(clientPublic: Buffer): Buffer | Error {
          if (!this._protocol._server) return new Error(`${method} runs on the client leg only, where the proxy is the server`);
          try {
            const reply = hybridServerReply(method, clientPublic);
            this.serverPublic = reply.serverPublic;
            return reply.sharedSecret;
          } catch (err) {
            return err as Error;
          }
        }
        /** The server's reply; ssh2 asks for it after computeSecret, which makes it. */
        getPublicKey(): Buffer | undefined {
          return this.serverPublic;
        }
      };
      return new HybridExchange(...args);
    });
  }
  return true;
}

/** Whether the proxy can offer the hybrid key exchanges (the ssh2 patch is applied). */
export const hybridKeyExchangesInstalled: boolean = installHybridKeyExchanges();

/** Builds an offer once; see NOTES: ssh2 mutates plain offer objects. */
export function buildOffer(offer: AlgorithmOffer): KexInitOffer {
  return new kexModule.KexInit(offer);
}

/**
 * Starts a key exchange from this side with `offer` in place of the offer the
 * Protocol was made with, which it keeps for later key exchanges (kex.js
 * kexinit reads `_offer` each time). Nothing may be sent meanwhile but what
 * ssh2 sends itself: the caller queues the rest until the exchange completes.
 */
export function rekeyWithOffer(proto: Protocol, offer: KexInitOffer): void {
  const raw = proto as RawProtocol;
  raw._offer = offer;
  raw.rekey();
}

/** The key exchange method the last key exchange ran; undefined before the first one completes. */
export function negotiatedKex(proto: Protocol): string | undefined {
  return (proto as RawProtocol)._kex?.negotiated?.kex;
}

/** The client-to-server cipher the last key exchange chose; undefined before the first one completes. */
export function negotiatedCipher(proto: Protocol): string | undefined {
  return (proto as RawProtocol)._kex?.negotiated?.cs?.cipher;
}

/** The list each of ssh2's "Handshake failed: no matching ..." errors names (kex.js handleKexInit). */
const UNMATCHED_LISTS: Record<string, keyof ClientLegAlgorithms> = {
  'key exchange algorithm': 'kex',
  'host key format': 'hostKey',
  'C->S cipher': 'ciphers',
  'S->C cipher': 'ciphers',
  'C->S MAC': 'macs',
  'S->C MAC': 'macs',
};

/** Which of the offered lists the peer shares nothing with, when `err` is ssh2's key exchange finding no match. */
export function unmatchedAlgorithmList(err: Error): keyof ClientLegAlgorithms | undefined {
  const match = /^Handshake failed: no matching (.+)$/.exec(err.message);
  return match ? UNMATCHED_LISTS[match[1]!] : undefined;
}

/**
 * Routes every payload the peer sends through `handler` first, with its
 * sequence number. When the handler returns true the payload is consumed;
 * otherwise ssh2 handles it as usual.
 *
 * Must be called before the first handshake completes: each NEWKEYS builds the
 * new decipher from `proto._onPayload`, so replacing it here covers every later
 * key exchange as well.
 */
export function interceptPayloads(proto: Protocol, handler: (payload: Buffer, seqno: number) => boolean): void {
  const raw = proto as RawProtocol;
  const original = raw._onPayload;
  const wrapped = (payload: Buffer): unknown => {
    // The decipher increments inSeqno before calling us.
    const seqno = (raw._decipher!.inSeqno - 1) >>> 0;
    // false makes ssh2's decipher return after this packet (parseOnePacket).
    if (payload.length > 0 && handler(payload, seqno)) return stopAfterPayload ? false : undefined;
    const result = original(payload);
    return stopAfterPayload && result === undefined ? false : result;
  };
  raw._onPayload = wrapped;
  if (raw._decipher && raw._decipher._onPayload === original) raw._decipher._onPayload = wrapped;
}

/** ssh2's handlers once none of them can run: looked up by name, a missing one is skipped. */
const NO_MESSAGE_HANDLERS: Record<string, unknown> = Object.freeze({});

/**
 * Drops the message handlers the protocol was created with. ssh2 looks its
 * handlers up in `_handlers` (handlers.misc.js) only for the messages that
 * are not key exchange, and checks that one exists before calling it. Once
 * the interceptor takes every such payload, the handlers, and all that their
 * closures hold, are dead weight for the rest of a session.
 */
export function releaseMessageHandlers(proto: Protocol): void {
  (proto as RawProtocol)._handlers = NO_MESSAGE_HANDLERS;
}

/** True while a key exchange is in progress: ssh2 would queue what we send. */
export function inKeyExchange(proto: Protocol): boolean {
  return (proto as RawProtocol)._kexinit !== undefined;
}

/** Set while parseOnePacket runs: the interceptor then stops ssh2's decipher after one payload. */
let stopAfterPayload = false;

/**
 * Lets ssh2 decrypt and dispatch one packet of `chunk` from `start` (or keep
 * the rest of a packet that does not end in it). Returns where the next
 * packet starts, or undefined once the whole chunk is taken.
 */
export function parseOnePacket(proto: Protocol, chunk: Buffer, start: number, end: number): number | undefined {
  const raw = proto as RawProtocol;
  const outer = stopAfterPayload;
  stopAfterPayload = true;
  try {
    const next = raw._decipher!.decrypt(chunk, start, end);
    return typeof next === 'number' && next < end ? next : undefined;
  } finally {
    stopAfterPayload = outer;
  }
}

/** What the packet relay loop needs of two legs' protocols: one decipher, the other's cipher, and their sequence numbers. */
export interface RelayRoute {
  decipher: NativeDecipher;
  inSeqno: number;
  cipher: NativeCipher;
  outSeqno: number;
}

/** The one route object: a route is used at once, before the next lookup. */
const route: RelayRoute = { decipher: undefined as unknown as NativeDecipher, inSeqno: 0, cipher: undefined as unknown as NativeCipher, outSeqno: 0 };

/**
 * The route for packets from `from` to `to`, if the relay loop can take them
 * now: both ciphers are the addon's (a cipher it has negotiated and the
 * addon's classes installed), `to` sends whole MACs (the addon's cipher
 * object cannot tell a truncated one, which ssh2 cuts), `from` holds no part
 * of a packet, and `to` is not in a key exchange (ssh2 would queue what it
 * sends).
 */
export function relayRoute(from: Protocol, to: Protocol): RelayRoute | undefined {
  const decipher = (from as RawProtocol)._decipher;
  const peer = to as RawProtocol;
  const cipher = peer._cipher;
  if (peer._kexinit !== undefined || decipher === undefined || cipher._dead === true) return undefined;
  if (!isNativeDecipher(decipher._instance) || !isNativeCipher(cipher._instance) || cipher._macActualLen !== cipher._macLen) return undefined;
  if (decipher._pktLen !== 0 || decipher._packet !== null || (decipher._lenBytes ?? decipher._lenPos ?? decipher._blockPos) !== 0) return undefined;
  route.decipher = decipher._instance;
  route.inSeqno = decipher.inSeqno;
  route.cipher = cipher._instance;
  route.outSeqno = cipher.outSeqno;
  return route;
}

/** Counts `count` packets the relay loop took from `from` and sent on `to`. */
export function advanceSeqnos(from: Protocol, to: Protocol, count: number): void {
  const decipher = (from as RawProtocol)._decipher!;
  const cipher = (to as RawProtocol)._cipher;
  decipher.inSeqno = (decipher.inSeqno + count) >>> 0;
  cipher.outSeqno = (cipher.outSeqno + count) >>> 0;
}

/** Hands a payload the relay loop decrypted to ssh2's dispatch (the interceptor first), as ssh2's decipher would. */
export function dispatchPayload(proto: Protocol, payload: Buffer): void {
  const decipher = (proto as RawProtocol)._decipher!;
  decipher.inSeqno = (decipher.inSeqno + 1) >>> 0;
  decipher._onPayload(payload);
}

/** Whether the relay loop can run at all: the addon's ciphers are ssh2's. */
export const relayLoopAvailable: boolean = relayCiphersInstalled;

/** The sequence number the next packet sent on this leg will carry. */
export function nextOutboundSeqno(proto: Protocol): number {
  return (proto as RawProtocol)._cipher.outSeqno;
}

/** True when strict KEX is on: both sequence counters restart at every NEWKEYS. */
export function strictKex(proto: Protocol): boolean {
  return (proto as RawProtocol)._strictMode === true;
}

/**
 * Sends a raw payload now. The caller must not be in a key exchange (see
 * inKeyExchange): the proxy keeps its own queue so that it knows the sequence
 * number each forwarded packet gets.
 */
export function sendPayload(proto: Protocol, payload: Buffer): void {
  const raw = proto as RawProtocol;
  const writer = raw._packetRW.write;
  const start = writer.allocStart;
  const packet = writer.alloc(payload.length);
  packet.set(payload, start);
  utilsModule.sendPacket(raw, writer.finalize(packet));
}

/** Sends a payload even in the middle of a key exchange (for DISCONNECT). */
export function sendPayloadBypassingKex(proto: Protocol, payload: Buffer): void {
  const raw = proto as RawProtocol;
  const writer = raw._packetRW.write;
  const start = writer.allocStartKEX;
  const packet = writer.alloc(payload.length, true);
  packet.set(payload, start);
  utilsModule.sendPacket(raw, writer.finalize(packet, true), true);
}

/**
 * Replaces the EXT_INFO ssh2 sends after the first handshake of a server-side
 * Protocol: its `server-sig-algs` lacks a comma (ssh2 PR #1485). We send ours.
 */
export function replaceServerExtInfo(proto: Protocol, payload: Buffer): void {
  const raw = proto as RawProtocol;
  const original = raw._onHandshakeComplete;
  let first = true;
  raw._onHandshakeComplete = (...args: unknown[]) => {
    const sendOurs = first && raw._kex?.remoteExtInfoEnabled === true;
    if (first && raw._kex) raw._kex.remoteExtInfoEnabled = false;
    first = false;
    original(...args);
    if (sendOurs) sendPayload(raw, payload);
  };
}

/** A private key's `sign` uses a KeyObject made once; see signWithKeyObject. */
export function parseKey(data: Buffer | string): ParsedKey | Error {
  const parsed = keyParserModule.parseKey(data);
  const key = Array.isArray(parsed) ? parsed[0]! : parsed;
  if (!(key instanceof Error) && key.isPrivateKey()) signWithKeyObject(key);
  return key;
}

/**
 * ssh2's `sign` hands node the private key as a PEM string, which OpenSSL 3
 * decodes again on every call: an ed25519 signature took 0.71 ms here,
 * against 0.06 ms with a KeyObject made once (RSA-3072 4.2 against 2.6 ms).
 * Every login signs twice on the daemon's one thread (the client leg's
 * exchange hash with a host key, the upstream login with the client key),
 * so a burst of logins paid for the decoding. The replacement makes the
 * same call as ssh2's (keyParser.js BaseKey.sign): the caller's hash
 * algorithm, else the key's own (kept under a private symbol), and an Error
 * returned rather than thrown.
 */
function signWithKeyObject(key: ParsedKey): void {
  const hashSymbol = Object.getOwnPropertySymbols(key).find((s) => s.description === 'Hash Algorithm');
  // Not where it was (a changed ssh2): keep ssh2's own sign; the contract test fails.
  if (hashSymbol === undefined) return;
  const keyHash = (key as any)[hashSymbol] as string | null | undefined;
  const keyObject: KeyObject = createPrivateKey(key.getPrivatePEM()!);
  key.sign = (data: Buffer, algo?: string): Buffer | Error => {
    try {
      return cryptoSign(algo || keyHash || null, data, keyObject);
    } catch (err) {
      return err as Error;
    }
  };
}

/** Attempts before giving up on generating a key ssh2 can read back. */
const KEYGEN_ATTEMPTS = 10;

export function generateKeyPair(type: 'ed25519' | 'ecdsa' | 'rsa', bits?: number): { private: string; public: string } {
  // ssh2 1.17 strips leading zero bytes of an ed25519 public key, so about
  // 1 in 200 generated keys cannot be parsed again: generate another.
  for (let attempt = 0; attempt < KEYGEN_ATTEMPTS; attempt++) {
    const pair = keygenModule.generateKeyPairSync(type, bits ? { bits } : {});
    if (![pair.private, pair.public].some((k) => keyParserModule.parseKey(k) instanceof Error)) return pair;
  }
  throw new Error(`could not generate a readable ${type} key`);
}

/** Whether ssh2's native crypto binding (fast chacha20-poly1305, AES-GCM) was built. */
export const nativeCryptoAvailable: boolean = cryptoModule.bindingAvailable;

/** Resolves once ssh2's crypto is usable (the WASM poly1305 fallback loads asynchronously). */
export const cryptoReady: Promise<void> = cryptoModule.init;

/** AEAD ciphers of ssh2's native binding whose packets are built here, with their padding block sizes. */
const FAST_PACKET_CIPHERS = { 'aes128-gcm@openssh.com': 16, 'chacha20-poly1305@openssh.com': 8 } as const;

/** Payload lengths at which the replacement must match ssh2's own layout. */
const LAYOUT_SAMPLES = [0, 1, 2, 3, 10, 11, 12, 13, 14, 27, 28, 100, 16384, 32777, 34000];

/**
 * ssh2's native AES-GCM and ChaCha20-Poly1305 ciphers make each outgoing
 * packet in `allocPacket`: a new buffer, and a randomFillSync call for the
 * padding. Per packet forwarded, that was ~10 % and ~7 % of the daemon's CPU
 * (and most of its garbage). This replaces the method on those two classes'
 * prototypes with one that lays out the same packet (RFC 4253 §6, as ssh2
 * does for these ciphers: uint32 length, byte padding length, payload, at
 * least 4 random padding bytes so that all but the length field fills whole
 * blocks, then room for the 16-byte tag) in a buffer from packetbuffers.ts,
 * with padding from its block of CSPRNG bytes.
 *
 * Every buffer allocPacket returns goes straight to `encrypt`, which writes it
 * once through onWrite (Leg.write gives it back when the socket is done).
 *
 * Before replacing, the new layout is compared with ssh2's own at several
 * sizes; on any difference ssh2's method stays (and the contract test fails).
 * Returns the cipher names whose packets are now built here.
 */
function installFastPackets(): string[] {
  if (!cryptoModule.bindingAvailable) return [];
  const installed: string[] = [];
  for (const [name, blockBytes] of Object.entries(FAST_PACKET_CIPHERS)) {
    const info = cryptoModule.CIPHER_INFO[name]!;
    const sample = cryptoModule.createCipher({
      outbound: { onWrite: () => {}, cipherInfo: info, cipherKey: Buffer.alloc(info.keyLen), cipherIV: Buffer.alloc(info.ivLen), seqno: 0 },
    });
    sample.free();
    const prototype = Object.getPrototypeOf(sample) as RawCipher;
    const original = prototype.allocPacket;
    const replacement = function allocPacket(payloadLength: number): Buffer {
      const unpadded = 1 + payloadLength;
      let padding = blockBytes - (unpadded & (blockBytes - 1));
      if (padding < 4) padding += blockBytes;
      const packet = takePacketBuffer(4 + unpadded + padding + 16);
      packet.writeUInt32BE(unpadded + padding, 0);
      packet[4] = padding;
      fillRandom(packet, 5 + payloadLength, padding);
      return packet;
    };
    const sameLayout = LAYOUT_SAMPLES.every((n) => {
      const theirs = original.call(sample, n);
      const ours = replacement(n);
      return theirs.length === ours.length && theirs.subarray(0, 5).equals(ours.subarray(0, 5));
    });
    if (!sameLayout) continue;
    prototype.allocPacket = replacement;
    installed.push(name);
  }
  return installed;
}

/** Ciphers (on either leg) whose outgoing packets the daemon builds itself; see installFastPackets. */
export const fastPacketCiphers: readonly string[] = installFastPackets();

export function installedSsh2Version(): string {
  return ssh2Package.version;
}
