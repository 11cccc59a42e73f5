/**
 * SSH wire encodings (RFC 4251 §5), binary packet framing (RFC 4253 §6) and
 * the pre-auth messages the fuzzer sends, built from scratch so that each
 * field can be mutated.
 */
import { MSG as PROXY_MSG } from '../lib/messages.js';

/** The proxy's message numbers, plus the kex-method and channel ones the fuzzer also sends. */
export const MSG = {
  ...PROXY_MSG,
  KEXDH_INIT: 30,
  KEXDH_REPLY: 31,
  CHANNEL_REQUEST: 98,
} as const;

export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

export function str(s: string | Buffer): Buffer {
  const b = typeof s === 'string' ? Buffer.from(s, 'utf8') : s;
  return Buffer.concat([u32(b.length), b]);
}

export function bool(v: boolean): Buffer {
  return Buffer.of(v ? 1 : 0);
}

/** An mpint from big-endian magnitude bytes (adds the sign byte when needed). */
export function mpint(magnitude: Buffer): Buffer {
  let i = 0;
  while (i < magnitude.length && magnitude[i] === 0) i++;
  const m = magnitude.subarray(i);
  return str(m.length > 0 && m[0]! & 0x80 ? Buffer.concat([Buffer.of(0), m]) : m);
}

export function msg(type: number, ...fields: Buffer[]): Buffer {
  return Buffer.concat([Buffer.of(type), ...fields]);
}

export interface FrameOptions {
  /** Padding length to claim (default: the correct one). */
  padLength?: number;
  /** Packet length to claim (default: the correct one). */
  packetLength?: number;
  /** Padding bytes actually appended (default: as claimed). */
  actualPadding?: number;
}

/**
 * Frames a payload as an unencrypted binary packet: uint32 length, byte
 * padding length, payload, padding (>= 4 bytes, total a multiple of 8).
 */
export function frame(payload: Buffer, options: FrameOptions = {}): Buffer {
  let pad = 8 - ((5 + payload.length) % 8);
  if (pad < 4) pad += 8;
  const padLength = options.padLength ?? pad;
  const actual = options.actualPadding ?? padLength;
  const packetLength = options.packetLength ?? 1 + payload.length + actual;
  return Buffer.concat([u32(packetLength), Buffer.of(padLength & 0xff), payload, Buffer.alloc(actual, 0x5a)]);
}

/** The payload of an unencrypted packet, or undefined if `packet` is not exactly one well-formed packet. */
export function unframe(packet: Buffer): Buffer | undefined {
  if (packet.length < 5) return undefined;
  const len = packet.readUInt32BE(0);
  const pad = packet[4]!;
  if (len + 4 !== packet.length || pad + 1 > len) return undefined;
  return packet.subarray(5, 4 + len - pad);
}

/** KEXINIT fields (RFC 4253 §7.1). */
export interface KexInit {
  cookie: Buffer;
  /** kex, hostkey, enc c2s, enc s2c, mac c2s, mac s2c, comp c2s, comp s2c, lang c2s, lang s2c */
  lists: string[];
  firstKexFollows: number;
  reserved: number;
}

export const KEXINIT_LISTS = ['kex', 'hostkey', 'enc-cs', 'enc-sc', 'mac-cs', 'mac-sc', 'comp-cs', 'comp-sc', 'lang-cs', 'lang-sc'];

export function parseKexInit(payload: Buffer): KexInit | undefined {
  if (payload[0] !== MSG.KEXINIT || payload.length < 17) return undefined;
  let p = 17;
  const lists: string[] = [];
  for (let i = 0; i < 10; i++) {
    if (p + 4 > payload.length) return undefined;
    const len = payload.readUInt32BE(p);
    if (p + 4 + len > payload.length) return undefined;
    lists.push(payload.toString('latin1', p + 4, p + 4 + len));
    p += 4 + len;
  }
  if (p + 5 > payload.length) return undefined;
  return { cookie: payload.subarray(1, 17), lists, firstKexFollows: payload[p]!, reserved: payload.readUInt32BE(p + 1) };
}

export function buildKexInit(k: KexInit): Buffer {
  return Buffer.concat([
    Buffer.of(MSG.KEXINIT),
    k.cookie,
    ...k.lists.map((l) => str(Buffer.from(l, 'latin1'))),
    Buffer.of(k.firstKexFollows & 0xff),
    u32(k.reserved),
  ]);
}

// Pre-auth messages of the client.

export const serviceRequest = (name: string | Buffer): Buffer => msg(MSG.SERVICE_REQUEST, str(name));

export function userauth(user: string | Buffer, service: string | Buffer, method: string | Buffer, ...rest: Buffer[]): Buffer {
  return msg(MSG.USERAUTH_REQUEST, str(user), str(service), str(method), ...rest);
}

export const authNone = (user: string | Buffer): Buffer => userauth(user, 'ssh-connection', 'none');

export const authPassword = (user: string | Buffer, password: string | Buffer): Buffer =>
  userauth(user, 'ssh-connection', 'password', bool(false), str(password));

export const authPasswordChange = (user: string | Buffer, old: string | Buffer, next: string | Buffer): Buffer =>
  userauth(user, 'ssh-connection', 'password', bool(true), str(old), str(next));

export const authKeyboard = (user: string | Buffer, submethods = ''): Buffer =>
  userauth(user, 'ssh-connection', 'keyboard-interactive', str(''), str(submethods));

export const infoResponse = (responses: (string | Buffer)[], claimed = responses.length): Buffer =>
  msg(MSG.USERAUTH_INFO_RESPONSE, u32(claimed), ...responses.map((r) => str(r)));

export function authPublickey(user: string | Buffer, algo: string, blob: Buffer, signature?: Buffer): Buffer {
  return userauth(
    user,
    'ssh-connection',
    'publickey',
    bool(signature !== undefined),
    str(algo),
    str(blob),
    ...(signature !== undefined ? [str(signature)] : []),
  );
}

export function authHostbased(user: string, algo: string, blob: Buffer, host: string, localUser: string, signature: Buffer): Buffer {
  return userauth(user, 'ssh-connection', 'hostbased', str(algo), str(blob), str(host), str(localUser), str(signature));
}

export const channelOpenSession = (id = 0): Buffer => msg(MSG.CHANNEL_OPEN, str('session'), u32(id), u32(2 ** 21), u32(32768));

export const globalRequest = (name: string, wantReply: boolean, data: Buffer = Buffer.alloc(0)): Buffer =>
  msg(MSG.GLOBAL_REQUEST, str(name), bool(wantReply), data);

export const ignore = (data: Buffer): Buffer => msg(MSG.IGNORE, str(data));

export const debugMsg = (text: string): Buffer => msg(MSG.DEBUG, bool(true), str(text), str(''));

export const disconnect = (reason: number, text: string): Buffer => msg(MSG.DISCONNECT, u32(reason), str(text), str(''));

export const unimplemented = (seqno: number): Buffer => msg(MSG.UNIMPLEMENTED, u32(seqno));
