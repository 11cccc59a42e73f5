/**
 * SSH message numbers (RFC 4250 §4.1) and the disconnect reason codes the
 * proxy uses. Named constants so the relay's dispatch table reads like the RFC.
 */
export const MSG = {
  DISCONNECT: 1,
  IGNORE: 2,
  UNIMPLEMENTED: 3,
  DEBUG: 4,
  SERVICE_REQUEST: 5,
  SERVICE_ACCEPT: 6,
  EXT_INFO: 7,
  NEWCOMPRESS: 8,
  KEXINIT: 20,
  NEWKEYS: 21,
  /** 30–49 are key-exchange-method specific. */
  KEX_LAST: 49,
  USERAUTH_REQUEST: 50,
  USERAUTH_FAILURE: 51,
  USERAUTH_SUCCESS: 52,
  USERAUTH_BANNER: 53,
  /** Also USERAUTH_PK_OK (60 is method specific). */
  USERAUTH_INFO_REQUEST: 60,
  USERAUTH_INFO_RESPONSE: 61,
  /** 50–79 is the user authentication protocol. */
  USERAUTH_LAST: 79,
  GLOBAL_REQUEST: 80,
  REQUEST_SUCCESS: 81,
  REQUEST_FAILURE: 82,
  CHANNEL_OPEN: 90,
  CHANNEL_OPEN_CONFIRMATION: 91,
  /** OpenSSH's transport-level ping and its reply (PROTOCOL, "ping@openssh.com"). */
  PING: 192,
  PONG: 193,
} as const;

export const DISCONNECT_REASON = {
  PROTOCOL_ERROR: 2,
  KEY_EXCHANGE_FAILED: 3,
  SERVICE_NOT_AVAILABLE: 7,
  BY_APPLICATION: 11,
  TOO_MANY_CONNECTIONS: 12,
  AUTH_CANCELLED_BY_USER: 13,
  NO_MORE_AUTH_METHODS_AVAILABLE: 14,
  ILLEGAL_USER_NAME: 15,
} as const;

/** Builds an SSH_MSG_DISCONNECT payload (RFC 4253 §11.1). */
export function disconnectPayload(reason: number, description: string): Buffer {
  const desc = Buffer.from(description, 'utf8');
  const payload = Buffer.alloc(1 + 4 + 4 + desc.length + 4);
  payload[0] = MSG.DISCONNECT;
  payload.writeUInt32BE(reason, 1);
  payload.writeUInt32BE(desc.length, 5);
  desc.copy(payload, 9);
  // The language tag stays empty (zero length), as OpenSSH sends it.
  return payload;
}

/** Parses reason and description of a DISCONNECT payload; undefined if malformed. */
export function parseDisconnect(payload: Buffer): { reason: number; description: string } | undefined {
  if (payload.length < 9) return undefined;
  const reason = payload.readUInt32BE(1);
  const len = payload.readUInt32BE(5);
  if (9 + len > payload.length) return undefined;
  return { reason, description: payload.toString('utf8', 9, 9 + len) };
}

/** Builds an SSH_MSG_UNIMPLEMENTED payload for the given sequence number. */
export function unimplementedPayload(seqno: number): Buffer {
  const payload = Buffer.alloc(5);
  payload[0] = MSG.UNIMPLEMENTED;
  payload.writeUInt32BE(seqno >>> 0, 1);
  return payload;
}

/** Builds an SSH_MSG_USERAUTH_BANNER payload. */
export function bannerPayload(message: string): Buffer {
  const text = Buffer.from(message, 'utf8');
  const payload = Buffer.alloc(1 + 4 + text.length + 4);
  payload[0] = MSG.USERAUTH_BANNER;
  payload.writeUInt32BE(text.length, 1);
  text.copy(payload, 5);
  return payload;
}

/** Builds an EXT_INFO payload (RFC 8308 §2.3) with these extensions, in order. */
export function extInfoPayload(extensions: Record<string, string>): Buffer {
  const fields = Object.entries(extensions).flatMap(([name, value]) => [Buffer.from(name), Buffer.from(value)]);
  const payload = Buffer.alloc(1 + 4 + fields.reduce((sum, field) => sum + 4 + field.length, 0));
  payload[0] = MSG.EXT_INFO;
  payload.writeUInt32BE(fields.length / 2, 1);
  let p = 5;
  for (const field of fields) {
    payload.writeUInt32BE(field.length, p);
    field.copy(payload, p + 4);
    p += 4 + field.length;
  }
  return payload;
}

/** The PONG that answers a PING payload: the same data (PROTOCOL, "ping@openssh.com"); undefined if the PING is malformed. */
export function pongPayload(ping: Buffer): Buffer | undefined {
  if (ping.length < 5 || 5 + ping.readUInt32BE(1) !== ping.length) return undefined;
  const pong = Buffer.from(ping);
  pong[0] = MSG.PONG;
  return pong;
}

/**
 * Reads the request name and want_reply flag of a GLOBAL_REQUEST payload
 * (RFC 4254 §4); undefined if malformed.
 */
export function parseGlobalRequest(payload: Buffer): { name: string; wantReply: boolean } | undefined {
  if (payload.length < 6) return undefined;
  const len = payload.readUInt32BE(1);
  if (5 + len + 1 > payload.length) return undefined;
  return { name: payload.toString('latin1', 5, 5 + len), wantReply: payload[5 + len] !== 0 };
}

/**
 * The cipher lists of a KEXINIT payload (RFC 4253 §7.1: after the message
 * type and a 16-byte cookie, the name-lists of key exchange and host key
 * algorithms, then the ciphers client-to-server and server-to-client);
 * undefined if malformed.
 */
export function parseKexInitCiphers(payload: Buffer): { cs: string[]; sc: string[] } | undefined {
  const lists: string[][] = [];
  let p = 17;
  while (lists.length < 4) {
    if (p + 4 > payload.length) return undefined;
    const len = payload.readUInt32BE(p);
    if (p + 4 + len > payload.length) return undefined;
    lists.push(len === 0 ? [] : payload.toString('latin1', p + 4, p + 4 + len).split(','));
    p += 4 + len;
  }
  return { cs: lists[2]!, sc: lists[3]! };
}
