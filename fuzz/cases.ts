/**
 * The fuzz cases, one generator per pre-auth stage. `generateCase(seed, i)`
 * draws every decision of case `i` up front from its own generator, so a case
 * is the same whatever ran before it or beside it; only what is random by
 * nature (ephemeral keys, cookies, padding, the daemon's answers) differs
 * between runs. Mutations of packets that ssh2 builds at run time (the
 * client's KEXINIT, its key exchange init) use a sub-generator seeded by the
 * plan, so they are deterministic for a given packet length.
 */
import { buildOffer, type KexInitOffer } from '../lib/ssh2internals.js';
import { FuzzClient, type WriteFilter } from './client.js';
import { mutate } from './mutate.js';
import { Rng } from './rng.js';
import * as w from './wire.js';

export const STAGES = ['version', 'kexinit', 'kex', 'userauth', 'stream', 'random'] as const;
export type Stage = (typeof STAGES)[number];

/** How often each stage is drawn. Userauth is the richest surface. */
const STAGE_WEIGHTS: [Stage, number][] = [
  ['version', 14],
  ['kexinit', 16],
  ['kex', 16],
  ['userauth', 30],
  ['stream', 10],
  ['random', 14],
];

export interface CaseContext {
  port: number;
  host: string;
  localAddress?: string;
  /** A unix + Hub user, and a token that logs in as that user. */
  user: string;
  token: string;
  /** Opens a connection that the runner destroys when the case ends. */
  open(options: Omit<ConstructorParameters<typeof FuzzClient>[0], 'port' | 'host' | 'localAddress'>): FuzzClient;
}

export interface FuzzCase {
  index: number;
  stage: Stage;
  /** What the case does, for reports and replays. */
  desc: string;
  /** May a case end in a login (and an sshd)? */
  mayLogin: boolean;
  exec(ctx: CaseContext): Promise<void>;
}

// ---------------------------------------------------------------------------
// Algorithm offers of the fuzz client, built once each (ssh2 mutates plain offers).

const KEX_CHOICES: [string, number][] = [
  ['curve25519-sha256', 8],
  ['curve25519-sha256@libssh.org', 2],
  ['ecdh-sha2-nistp256', 3],
  ['ecdh-sha2-nistp384', 1],
  ['ecdh-sha2-nistp521', 1],
  ['diffie-hellman-group14-sha256', 1],
  ['diffie-hellman-group16-sha512', 0.3],
  ['diffie-hellman-group18-sha512', 0.1],
];
const CIPHER_CHOICES: [string, number][] = [
  ['aes128-gcm@openssh.com', 4],
  ['chacha20-poly1305@openssh.com', 4],
  ['aes256-gcm@openssh.com', 1],
  ['aes128-ctr', 1],
  ['aes256-ctr', 1],
];
const MAC_CHOICES: [string, number][] = [
  ['hmac-sha2-256-etm@openssh.com', 2],
  ['hmac-sha2-256', 1],
  ['hmac-sha2-512', 1],
  ['hmac-sha2-512-etm@openssh.com', 1],
];
const HOSTKEY_CHOICES: [string, number][] = [
  ['ssh-ed25519', 8],
  ['ecdsa-sha2-nistp256', 2],
  ['rsa-sha2-512', 0.5],
  ['rsa-sha2-256', 0.5],
];

interface OfferChoice {
  kex: string;
  cipher: string;
  mac: string;
  hostKey: string;
  strict: boolean;
}

const offers = new Map<string, KexInitOffer>();

function offerOf(c: OfferChoice): KexInitOffer {
  const key = JSON.stringify(c);
  let offer = offers.get(key);
  if (!offer) {
    const dir = () => ({ cipher: [c.cipher], mac: [c.mac], compress: ['none'], lang: [] });
    offer = buildOffer({
      kex: [c.kex, 'ext-info-c', ...(c.strict ? ['kex-strict-c-v00@openssh.com'] : [])],
      serverHostKey: [c.hostKey],
      cs: dir(),
      sc: dir(),
    });
    offers.set(key, offer);
  }
  return offer;
}

function drawOffer(rng: Rng, cheap = false): OfferChoice {
  return {
    kex: cheap ? rng.weighted(KEX_CHOICES.slice(0, 3)) : rng.weighted(KEX_CHOICES),
    cipher: rng.weighted(CIPHER_CHOICES),
    mac: rng.weighted(MAC_CHOICES),
    hostKey: cheap ? 'ssh-ed25519' : rng.weighted(HOSTKEY_CHOICES),
    strict: rng.chance(0.85),
  };
}

const offerDesc = (c: OfferChoice) => `${c.kex}/${c.hostKey}/${c.cipher}${c.cipher.endsWith('-ctr') ? `+${c.mac}` : ''}${c.strict ? '' : '/nostrict'}`;

// ---------------------------------------------------------------------------
// Shared pieces.

/** A plausible client KEXINIT for raw cases. */
function cannedKexInit(rng: Rng): Buffer {
  return w.buildKexInit({
    cookie: rng.bytes(16),
    lists: [
      'curve25519-sha256,ecdh-sha2-nistp256,ext-info-c,kex-strict-c-v00@openssh.com',
      'ssh-ed25519,ecdsa-sha2-nistp256,rsa-sha2-512',
      'chacha20-poly1305@openssh.com,aes128-gcm@openssh.com',
      'chacha20-poly1305@openssh.com,aes128-gcm@openssh.com',
      'hmac-sha2-256-etm@openssh.com',
      'hmac-sha2-256-etm@openssh.com',
      'none',
      'none',
      '',
      '',
    ],
    firstKexFollows: 0,
    reserved: 0,
  });
}

const IDENT = 'SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n';

/** Messages that do not belong where the case puts them. */
function strayMessage(rng: Rng, user: string): { payload: Buffer; name: string } {
  return rng.weighted<() => { payload: Buffer; name: string }>([
    [() => ({ payload: w.ignore(rng.bytes(rng.size(2000))), name: 'IGNORE' }), 2],
    [() => ({ payload: w.debugMsg('fuzz'), name: 'DEBUG' }), 1],
    [() => ({ payload: w.unimplemented(rng.u32()), name: 'UNIMPLEMENTED' }), 1],
    [() => ({ payload: w.serviceRequest('ssh-userauth'), name: 'SERVICE_REQUEST' }), 1],
    [() => ({ payload: w.authNone(user), name: 'USERAUTH_REQUEST' }), 1],
    [() => ({ payload: w.infoResponse(['x']), name: 'INFO_RESPONSE' }), 1],
    [() => ({ payload: w.channelOpenSession(rng.u32()), name: 'CHANNEL_OPEN' }), 1],
    [() => ({ payload: w.globalRequest('tcpip-forward', true, Buffer.concat([w.str('127.0.0.1'), w.u32(0)])), name: 'GLOBAL_REQUEST' }), 1],
    [() => ({ payload: w.msg(w.MSG.CHANNEL_REQUEST, w.u32(0), w.str('exec'), w.bool(true), w.str('id')), name: 'CHANNEL_REQUEST' }), 1],
    [() => ({ payload: w.msg(w.MSG.NEWKEYS), name: 'NEWKEYS' }), 1],
    [() => ({ payload: cannedKexInit(rng), name: 'KEXINIT' }), 1],
    [() => ({ payload: w.msg(w.MSG.KEXDH_INIT, w.str(rng.bytes(32))), name: 'KEXDH_INIT' }), 1],
    [() => ({ payload: w.msg(w.MSG.USERAUTH_SUCCESS), name: 'USERAUTH_SUCCESS' }), 0.5],
    [() => ({ payload: w.disconnect(11, 'bye'), name: 'DISCONNECT' }), 0.5],
    [() => ({ payload: w.msg(w.MSG.EXT_INFO, w.u32(rng.pick([0, 1, 0xffffffff])), w.str('server-sig-algs'), w.str('x')), name: 'EXT_INFO' }), 0.5],
    [() => {
      const type = rng.pick([0, 8, 19, 22, 29, 32, 49, 54, 59, 62, 79, 100, 127, 128, 191, 192, 255]);
      return { payload: Buffer.concat([Buffer.of(type), rng.bytes(rng.size(64))]), name: `type-${type}` };
    }, 2],
  ])();
}

/** A random payload whose type byte is usually one the daemon knows. */
function randomPayload(rng: Rng): Buffer {
  const type = rng.chance(0.7)
    ? rng.pick([1, 2, 3, 4, 5, 6, 7, 20, 21, 30, 31, 50, 51, 52, 53, 60, 61, 80, 81, 82, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100])
    : rng.int(256);
  return Buffer.concat([Buffer.of(type), rng.bytes(rng.size(2048))]);
}

function randomChunks(rng: Rng, max = 65536): Buffer[] {
  return Array.from({ length: rng.range(1, 4) }, () => rng.bytes(Math.max(1, rng.size(max))));
}

/** Rewrites an unencrypted packet: its payload through `change`, optionally its framing. */
function reframe(packet: Buffer, change: (payload: Buffer) => Buffer, frameOptions?: w.FrameOptions): Buffer {
  const payload = w.unframe(packet);
  if (payload === undefined) return packet;
  return w.frame(change(Buffer.from(payload)), frameOptions);
}

/** Framing mutations of an unencrypted packet (the payload stays valid). */
function drawFrameMutation(rng: Rng): { options: w.FrameOptions; desc: string } {
  return rng.weighted<() => { options: w.FrameOptions; desc: string }>([
    [() => {
      const v = rng.pick([0, 1, 4, 5, 8, 12, 34999, 35000, 35001, 65536, 0x7fffffff, 0xffffffff]);
      return { options: { packetLength: v }, desc: `packet-length=${v}` };
    }, 3],
    [() => {
      const v = rng.pick([0, 1, 3, 255]);
      return { options: { padLength: v }, desc: `pad-length=${v}` };
    }, 2],
    [() => ({ options: { padLength: 4, actualPadding: 4 + rng.range(1, 7) }, desc: 'misaligned' }), 1],
    [() => ({ options: { padLength: 252, actualPadding: 252 }, desc: 'max-padding' }), 1],
  ])();
}

/** Accepts anything the daemon said: a reply, a close, or silence. */
const QUIET_MS = 150;

async function settle(client: FuzzClient, timeoutMs = 3000): Promise<void> {
  await client.wait(() => false, timeoutMs, QUIET_MS);
}

/** After a key exchange that survived its mutation: ask for auth once, to see the daemon still answers. */
async function probeAuth(client: FuzzClient, user: string): Promise<void> {
  await client.wait(() => client.ready, 5000, 400);
  if (!client.ready) return settle(client);
  client.sendPayload(w.serviceRequest('ssh-userauth'));
  await client.wait(() => client.count(w.MSG.SERVICE_ACCEPT) > 0, 2000, 400);
  client.sendPayload(w.authNone(user));
  await client.wait(() => client.count(w.MSG.USERAUTH_FAILURE) > 0, 2000, 400);
}

/** Writes chunks, now and then yielding between them so they arrive as separate reads. */
async function writeChunks(client: FuzzClient, chunks: Buffer[], gapMs: number): Promise<void> {
  if (!(await client.connect(3000))) return;
  for (const c of chunks) {
    if (client.closed) return;
    client.write(c);
    if (gapMs > 0) await new Promise((r) => setTimeout(r, gapMs));
  }
}

// ---------------------------------------------------------------------------
// Stage: the identification line.

const IDENT_BASES = [
  'SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n',
  'SSH-2.0-PuTTY_Release_0.78\r\n',
  'SSH-1.99-OpenSSH_3.9p1\r\n',
  'SSH-2.0-libssh_0.10.4\r\n',
  'SSH-2.0-Go\r\n',
  'SSH-2.0-x\n',
];

function nastyIdent(rng: Rng): { bytes: Buffer; desc: string } {
  const long = (n: number) => `SSH-2.0-${'A'.repeat(n)}\r\n`;
  const n = rng.pick([200, 245, 246, 247, 253, 254, 255, 256, 1000, 8183, 8184, 8185, 8192, 9000, 70000]);
  const choices: [string, string][] = [
    ['SSH-1.5-old\r\n', 'ssh-1.5'],
    ['SSH-2.0\r\n', 'no-software'],
    ['SSH-2.0-\r\n', 'empty-software'],
    ['SSH-2.0- spaces first\r\n', 'space-software'],
    ['SSH-2.0-x\r\r\n', 'double-cr'],
    ['SSH-2.0-x\ry\n', 'cr-without-lf'],
    ['ssh-2.0-x\r\n', 'lowercase'],
    ['SSH-3.0-x\r\n', 'ssh-3.0'],
    ['SSH-2.0-x\0y\r\n', 'nul'],
    ['SSH-2.0-\xff\xfe\xfd\r\n', '8bit'],
    ['hello there\r\nSSH-2.0-x\r\n', 'greeting-line'],
    ['\r\n'.repeat(rng.range(1, 2000)) + IDENT, 'empty-lines'],
    ['x\r\n'.repeat(rng.range(1, 2000)) + IDENT, 'many-greeting-lines'],
    ['SSH-2.0-x with a comment\r\n', 'comment'],
    ['\nSSH-2.0-x\r\n', 'leading-lf'],
    ['SSH-2.0-OpenSSH_2.5.0\r\n', 'old-openssh'],
    ['SSH-2.0-x', 'no-newline'],
    ['GET / HTTP/1.1\r\nHost: x\r\n\r\n', 'http'],
    ['\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03', 'tls-hello'],
    [long(n), `long-${n}`],
    ['SSH-2.0-' + 'A'.repeat(n), `long-no-newline-${n}`],
    [IDENT + IDENT, 'ident-twice'],
  ];
  const [text, desc] = rng.pick(choices);
  return { bytes: Buffer.from(text, 'latin1'), desc };
}

/** Software versions that select ssh2's compatibility flags, and odd ones. */
const SOFTWARE = [
  'OpenSSH_9.2p1', 'OpenSSH_2.5.0', 'OpenSSH_2.3.0', 'OpenSSH_3.0', 'OpenSSH_5.9', 'OpenSSH_7.4 Debian',
  'PuTTY_Release_0.50', 'PuTTY_Release_0.70', 'Sun_SSH_1.1', 'SSH_Version_Mapper', 'dropbear_2012.55',
  'libssh2_1.4.2', 'JSCH-0.1.54', 'Go', 'paramiko_2.0.0', '1.2.3', 'x', 'Ω', '\u0000', 'OpenSSH_8.9 %s%s%n',
];

function versionCase(rng: Rng): Omit<FuzzCase, 'index' | 'stage'> {
  const kind = rng.weighted([
    ['mutated', 4],
    ['nasty', 4],
    ['handshake', 2],
  ] as const);
  if (kind === 'handshake') {
    // A valid but unusual identification, then a full key exchange and an auth probe.
    const software = rng.pick(SOFTWARE) + (rng.chance(0.3) ? ` comment ${rng.u32()}` : '');
    const offer = drawOffer(rng, true);
    return {
      desc: `version: handshake with software ${JSON.stringify(software)} (${offerDesc(offer)})`,
      mayLogin: false,
      exec: async (ctx) => {
        const client = ctx.open({ ssh: { offer: offerOf(offer), ident: Buffer.from(software, 'utf8') } });
        await probeAuth(client, ctx.user);
      },
    };
  }
  const { bytes, desc } =
    kind === 'mutated'
      ? (() => {
          const base = Buffer.from(rng.pick(IDENT_BASES), 'latin1');
          const m = mutate(rng, base, false);
          return { bytes: m.out, desc: `mutated ${JSON.stringify(base.toString('latin1').trim())} ${m.ops.join(',')}` };
        })()
      : nastyIdent(rng);
  const split = rng.chance(0.3) ? rng.range(2, 16) : 1;
  const then = rng.weighted([
    ['nothing', 3],
    ['kexinit', 3],
    ['random', 2],
  ] as const);
  const tail = then === 'kexinit' ? [w.frame(cannedKexInit(rng))] : then === 'random' ? randomChunks(rng, 4096) : [];
  const chunks: Buffer[] = [];
  const step = Math.ceil(bytes.length / split);
  for (let p = 0; p < bytes.length; p += step) chunks.push(bytes.subarray(p, p + step));
  const gap = split > 1 && rng.chance(0.3) ? rng.range(1, 5) : 0;
  return {
    desc: `version: ${desc}${split > 1 ? ` in ${split} writes` : ''}, then ${then}`,
    mayLogin: false,
    exec: async (ctx) => {
      const client = ctx.open({});
      await writeChunks(client, [...chunks, ...tail], gap);
      await settle(client);
    },
  };
}

// ---------------------------------------------------------------------------
// Stage: the client's KEXINIT.

function mutateKexInitFields(rng: Rng, k: w.KexInit): string {
  const i = rng.int(10);
  const which = w.KEXINIT_LISTS[i]!;
  const op = rng.weighted([
    ['empty', 3],
    ['junk', 2],
    ['long', 1],
    ['unknown-only', 2],
    ['no-common', 3],
    ['zlib', 1],
    ['drop-strict', 1],
    ['server-marker', 1],
    ['dup', 1],
    ['nul', 1],
    ['commas', 1],
    ['first-kex-follows', 2],
    ['reserved', 1],
    ['lang', 1],
    ['cookie', 1],
  ] as const);
  switch (op) {
    case 'empty':
      k.lists[i] = '';
      return `${which}=''`;
    case 'junk':
      k.lists[i] = rng.bytes(rng.size(300)).toString('latin1');
      return `${which}=junk`;
    case 'long': {
      const n = rng.pick([1000, 8000, 16000, 17400]);
      k.lists[i] = Array.from({ length: n }, (_, j) => `a${j}`).join(',').slice(0, 34000);
      return `${which}=long(${k.lists[i]!.length})`;
    }
    case 'unknown-only':
      k.lists[i] = 'nonexistent@example.org';
      return `${which}=unknown`;
    case 'no-common': {
      const none = ['diffie-hellman-group1-sha1', 'ssh-dss', '3des-cbc', '3des-cbc', 'hmac-md5', 'hmac-md5', 'zlib', 'zlib', 'xx', 'xx'];
      k.lists[i] = none[i]!;
      return `${which}=${none[i]}`;
    }
    case 'zlib':
      k.lists[6] = k.lists[7] = rng.pick(['zlib@openssh.com', 'zlib@openssh.com,none', 'zlib', 'zlib,none']);
      return `compression=${k.lists[6]}`;
    case 'drop-strict':
      k.lists[0] = k.lists[0]!.split(',').filter((a) => !a.startsWith('kex-strict') && a !== 'ext-info-c').join(',');
      return 'no strict/ext-info markers';
    case 'server-marker':
      k.lists[0] = `${k.lists[0]},kex-strict-s-v00@openssh.com,ext-info-s`;
      return 'server-side markers';
    case 'dup':
      k.lists[i] = Array<string>(50).fill(k.lists[i]!).join(',');
      return `${which} x50`;
    case 'nul':
      k.lists[i] = `${k.lists[i]}\0evil`;
      return `${which} with NUL`;
    case 'commas':
      k.lists[i] = `,${k.lists[i]!.split(',').join(',,')},`;
      return `${which} with empty names`;
    case 'first-kex-follows':
      k.firstKexFollows = rng.pick([1, 2, 255]);
      return `first_kex_packet_follows=${k.firstKexFollows}`;
    case 'reserved':
      k.reserved = rng.pick([1, 0xffffffff]);
      return `reserved=${k.reserved}`;
    case 'lang':
      k.lists[8] = k.lists[9] = 'en-US,de';
      return 'languages set';
    case 'cookie':
      k.cookie = Buffer.alloc(16);
      return 'zero cookie';
  }
}

/** A filter acting on the first unencrypted packet of `type`. */
function packetAction(rng: Rng, type: number, stray: () => { payload: Buffer; name: string }, structured?: (r: Rng, payload: Buffer) => { out: Buffer; desc: string }): { filter: WriteFilter; desc: string } {
  const kind = rng.weighted([
    ['structured', structured ? 5 : 0],
    ['bytes', 5],
    ['frame', 2],
    ['drop', 1],
    ['duplicate', 1],
    ['reorder', 1],
    ['inject-before', 2],
    ['inject-after', 1],
    ['random-payload', 1],
  ] as const);
  const sub = new Rng(rng.u32());
  const inject = kind === 'inject-before' || kind === 'inject-after' ? stray() : undefined;
  const frameMutation = kind === 'frame' ? drawFrameMutation(rng) : undefined;
  let done = false;
  let held: Buffer | undefined;
  let desc = kind as string;
  if (inject) desc += ` ${inject.name}`;
  if (frameMutation) desc += ` ${frameMutation.desc}`;
  const filter: WriteFilter = (data, info) => {
    if (held) {
      const out = [data, held];
      held = undefined;
      return out;
    }
    if (done || info.phase !== 'plain' || info.type !== type) return [data];
    done = true;
    switch (kind) {
      case 'structured':
        return [reframe(data, (p) => structured!(sub, p).out)];
      case 'bytes':
        return [reframe(data, (p) => mutate(sub, p).out)];
      case 'frame':
        return [reframe(data, (p) => p, frameMutation!.options)];
      case 'drop':
        return [];
      case 'duplicate':
        return [data, data];
      case 'reorder':
        held = data;
        return [];
      case 'inject-before':
        return [w.frame(inject!.payload), data];
      case 'inject-after':
        return [data, w.frame(inject!.payload)];
      case 'random-payload':
        return [w.frame(Buffer.concat([Buffer.of(type), sub.bytes(sub.size(4000))]))];
    }
  };
  return { filter, desc };
}

function kexinitCase(rng: Rng): Omit<FuzzCase, 'index' | 'stage'> {
  const offer = drawOffer(rng);
  // Structured mutations are drawn at run time (the packet is ssh2's), from a seeded generator.
  const structured = (r: Rng, payload: Buffer) => {
    const k = w.parseKexInit(payload);
    if (!k) return { out: mutate(r, payload).out, desc: 'unparsable' };
    const desc = mutateKexInitFields(r, k);
    let out = w.buildKexInit(k);
    if (r.chance(0.2)) out = mutate(r, out).out;
    return { out, desc };
  };
  const action = packetAction(rng, w.MSG.KEXINIT, () => strayMessage(rng, 'x'), structured);
  return {
    desc: `kexinit: ${action.desc} (${offerDesc(offer)})`,
    mayLogin: false,
    exec: async (ctx) => {
      const client = ctx.open({ ssh: { offer: offerOf(offer), filter: action.filter } });
      await probeAuth(client, ctx.user);
    },
  };
}

// ---------------------------------------------------------------------------
// Stage: key exchange messages (KEXDH/ECDH init, NEWKEYS).

/** Known low-order points of curve25519 (RFC 7748 §6.1 notes; libsodium's blocklist). */
const X25519_LOW_ORDER = [
  '0000000000000000000000000000000000000000000000000000000000000000',
  '0100000000000000000000000000000000000000000000000000000000000000',
  'e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800',
  '5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157',
  'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  'edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  'eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
];

function kexInitValue(r: Rng, kex: string, original: Buffer): { value: Buffer; desc: string } {
  const pick = r.weighted([
    ['length', 3],
    ['special', 4],
    ['random-same-length', 2],
    ['empty', 1],
  ] as const);
  if (pick === 'empty') return { value: Buffer.alloc(0), desc: 'empty key' };
  if (pick === 'random-same-length') return { value: r.bytes(original.length), desc: 'random key' };
  if (pick === 'length') {
    const n = r.pick([1, 31, 33, 48, 64, 65, 66, 97, 133, 256, 512, 1024, 2048, 8192, 30000]);
    return { value: r.bytes(n), desc: `key of ${n} bytes` };
  }
  if (kex.startsWith('curve25519')) {
    const p = r.pick(X25519_LOW_ORDER);
    return { value: Buffer.from(p, 'hex'), desc: `x25519 low-order ${p.slice(0, 8)}` };
  }
  if (kex.startsWith('ecdh')) {
    const len = original.length;
    return r.weighted<() => { value: Buffer; desc: string }>([
      [() => ({ value: Buffer.of(0), desc: 'point at infinity' }), 1],
      [() => ({ value: Buffer.concat([Buffer.of(4), Buffer.alloc(len - 1)]), desc: 'zero point' }), 1],
      [() => ({ value: Buffer.concat([Buffer.of(4), r.bytes(len - 1)]), desc: 'point not on curve' }), 2],
      [() => ({ value: Buffer.concat([Buffer.of(2), original.subarray(1, 1 + (len - 1) / 2)]), desc: 'compressed point' }), 1],
      [() => ({ value: Buffer.concat([Buffer.of(r.pick([0, 1, 5, 6, 7, 0xff])), original.subarray(1)]), desc: 'bad point prefix' }), 1],
    ])();
  }
  // Finite-field DH: e is an mpint; 0, 1, p-1, p and beyond must be refused.
  const bits = kex.includes('group14') ? 2048 : kex.includes('group16') ? 4096 : 8192;
  const ones = Buffer.alloc(bits / 8, 0xff);
  return r.weighted<() => { value: Buffer; desc: string }>([
    [() => ({ value: Buffer.alloc(0), desc: 'e=0' }), 1],
    [() => ({ value: Buffer.of(1), desc: 'e=1' }), 1],
    [() => ({ value: Buffer.concat([Buffer.of(0), ones]), desc: 'e>=p' }), 1],
    [() => ({ value: Buffer.concat([Buffer.of(1), Buffer.alloc(bits / 8)]), desc: 'e=2^bits' }), 1],
    [() => ({ value: Buffer.concat([Buffer.of(0x80), r.bytes(bits / 8 - 1)]), desc: 'negative e' }), 1],
    [() => ({ value: Buffer.concat([Buffer.of(0), Buffer.alloc(bits / 8 + 1, 0xff)]), desc: 'e too long' }), 1],
  ])();
}

function kexCase(rng: Rng): Omit<FuzzCase, 'index' | 'stage'> {
  const offer = drawOffer(rng);
  const target = rng.weighted([
    ['init', 6],
    ['newkeys', 3],
  ] as const);
  let action: { filter: WriteFilter; desc: string };
  if (target === 'init') {
    const structured = (r: Rng, payload: Buffer) => {
      // [30][string Q_C] (ECDH) or [30][mpint e] (DH).
      if (payload.length < 5) return { out: mutate(r, payload).out, desc: 'short' };
      const original = payload.subarray(5, 5 + payload.readUInt32BE(1));
      const { value, desc } = kexInitValue(r, offer.kex, original);
      let out = w.msg(w.MSG.KEXDH_INIT, w.str(value));
      if (r.chance(0.15)) out = Buffer.concat([out, r.bytes(r.range(1, 64))]);
      return { out, desc };
    };
    action = packetAction(rng, w.MSG.KEXDH_INIT, () => strayMessage(rng, 'x'), structured);
  } else {
    const structured = (r: Rng, payload: Buffer) => ({
      out: r.chance(0.5) ? Buffer.concat([payload, r.bytes(r.range(1, 100))]) : w.msg(r.pick([w.MSG.KEXINIT, w.MSG.KEXDH_INIT, 22, 49])),
      desc: 'newkeys-payload',
    });
    action = packetAction(rng, w.MSG.NEWKEYS, () => strayMessage(rng, 'x'), structured);
  }
  return {
    desc: `kex: ${target} ${action.desc} (${offerDesc(offer)})`,
    mayLogin: false,
    exec: async (ctx) => {
      const client = ctx.open({ ssh: { offer: offerOf(offer), filter: action.filter } });
      await probeAuth(client, ctx.user);
    },
  };
}

// ---------------------------------------------------------------------------
// Stage: user authentication (after a valid key exchange).

interface AuthStep {
  payload?: Buffer;
  /** A client-initiated rekey instead of a payload. */
  rekey?: boolean;
  /** What a well-formed version of this message gets back. */
  expect: 'service' | 'auth' | 'none';
  /** The daemon may ask the Hub before answering. */
  hub: boolean;
  /** Carries the valid token for the valid user: may log in. */
  login?: boolean;
  desc: string;
}

const BAD_TOKENS = Array.from({ length: 8 }, (_, i) => `bad-fuzz-token-${i}-0123456789abcdef`);

function drawUser(rng: Rng, user: string): { value: string | Buffer; desc: string; valid: boolean } {
  return rng.weighted<() => { value: string | Buffer; desc: string; valid: boolean }>([
    [() => ({ value: user, desc: 'user', valid: true }), 10],
    [() => ({ value: `${user}+srv${rng.int(3)}`, desc: 'user+server', valid: false }), 1],
    [() => ({ value: 'root', desc: 'root', valid: false }), 1],
    [() => ({ value: '', desc: 'empty user', valid: false }), 1],
    [() => ({ value: 'nobody-here', desc: 'unknown user', valid: false }), 1],
    [() => ({ value: 'a'.repeat(rng.pick([33, 300, 5000])), desc: 'long user', valid: false }), 0.5],
    [() => ({ value: rng.bytes(rng.range(1, 40)), desc: 'binary user', valid: false }), 0.5],
    [() => ({ value: `${user}\0x`, desc: 'user with NUL', valid: false }), 0.3],
    [() => ({ value: '../../etc/passwd', desc: 'path user', valid: false }), 0.3],
    [() => ({ value: `${user}+a+b+c+d+e+f`, desc: 'many separators', valid: false }), 0.3],
  ])();
}

function drawToken(rng: Rng, token: string): { value: string | Buffer; desc: string; valid: boolean; newToHub: boolean } {
  return rng.weighted<() => { value: string | Buffer; desc: string; valid: boolean; newToHub: boolean }>([
    [() => ({ value: token, desc: 'valid token', valid: true, newToHub: false }), 1.5],
    [() => ({ value: ` ${token}\n`, desc: 'valid token with spaces', valid: true, newToHub: false }), 0.3],
    [() => ({ value: rng.pick(BAD_TOKENS), desc: 'bad token', valid: false, newToHub: false }), 50],
    [() => ({ value: '', desc: 'empty token', valid: false, newToHub: false }), 5],
    [() => ({ value: '   ', desc: 'blank token', valid: false, newToHub: false }), 2],
    [() => {
      const t = Buffer.from(token);
      t[rng.int(t.length)] ^= 1 << rng.int(7);
      return { value: t, desc: 'mutated valid token', valid: false, newToHub: true };
    }, 5],
    [() => ({ value: rng.bytes(16).toString('hex'), desc: 'random token', valid: false, newToHub: true }), 3],
    [() => ({ value: 'A'.repeat(rng.pick([1000, 8000, 30000])), desc: 'long token', valid: false, newToHub: true }), 1],
    [() => ({ value: rng.bytes(rng.range(1, 64)), desc: 'binary token', valid: false, newToHub: true }), 2],
    [() => ({ value: 'x\r\nX-Injected: 1', desc: 'header injection token', valid: false, newToHub: true }), 0.5],
  ])();
}

function drawAuthStep(rng: Rng, user: string, token: string): { step: AuthStep; followUp?: AuthStep; login: boolean } {
  const u = drawUser(rng, user);
  const method = rng.weighted([
    ['none', 3],
    ['password', 8],
    ['password-change', 1],
    ['keyboard-interactive', 5],
    ['publickey', 3],
    ['hostbased', 1],
    ['gssapi', 1],
    ['unknown', 1],
    ['wrong-service', 1],
  ] as const);
  switch (method) {
    case 'none':
      return { step: { payload: w.authNone(u.value), expect: 'auth', hub: false, desc: `none(${u.desc})` }, login: false };
    case 'password':
    case 'password-change': {
      const t = drawToken(rng, token);
      const payload = method === 'password' ? w.authPassword(u.value, t.value) : w.authPasswordChange(u.value, t.value, 'new');
      const login = method === 'password' && t.valid && u.valid;
      return { step: { payload, expect: 'auth', hub: method === 'password', login, desc: `${method}(${u.desc}, ${t.desc})` }, login };
    }
    case 'keyboard-interactive': {
      const t = drawToken(rng, token);
      const shape = rng.weighted([
        ['one', 8],
        ['none', 1],
        ['two', 1],
        ['count-mismatch', 1],
      ] as const);
      const responses = shape === 'none' ? [] : shape === 'two' ? [t.value, t.value] : [t.value];
      // 2^25-1: the largest count for which V8 allocates a real array (ssh2 does new Array(count)).
      const claimed = shape === 'count-mismatch' ? rng.pick([0, 2, 100, 0xffff, 0xffffff, 0x1ffffff, 0x2000000, 0x7fffffff, 0xffffffff]) : responses.length;
      return {
        step: { payload: w.authKeyboard(u.value, rng.chance(0.1) ? 'pam,bsdauth' : ''), expect: 'auth', hub: false, desc: `keyboard-interactive(${u.desc})` },
        followUp: { payload: w.infoResponse(responses, claimed), expect: 'auth', hub: true, login: shape === 'one' && t.valid && u.valid, desc: `info-response(${shape}, ${t.desc})` },
        login: shape === 'one' && t.valid && u.valid,
      };
    }
    case 'publickey': {
      const algo = rng.pick(['ssh-ed25519', 'rsa-sha2-256', 'rsa-sha2-512', 'ssh-rsa', 'ecdsa-sha2-nistp256', 'sk-ssh-ed25519@openssh.com', 'x']);
      const blob = rng.chance(0.6) ? Buffer.concat([w.str(algo.startsWith('rsa') ? 'ssh-rsa' : algo), w.str(rng.bytes(rng.pick([32, 65, 256])))]) : rng.bytes(rng.size(600));
      const sig = rng.chance(0.5) ? undefined : rng.chance(0.5) ? Buffer.concat([w.str(algo), w.str(rng.bytes(rng.pick([0, 64, 72, 256, 512])))]) : rng.bytes(rng.size(600));
      return { step: { payload: w.authPublickey(u.value, algo, blob, sig), expect: 'auth', hub: false, desc: `publickey(${algo}${sig ? ', signed' : ''})` }, login: false };
    }
    case 'hostbased':
      return {
        step: { payload: w.authHostbased(user, 'ssh-ed25519', Buffer.concat([w.str('ssh-ed25519'), w.str(rng.bytes(32))]), 'localhost', user, rng.bytes(rng.size(200))), expect: 'auth', hub: false, desc: 'hostbased' },
        login: false,
      };
    case 'gssapi':
      return {
        step: { payload: w.userauth(user, 'ssh-connection', 'gssapi-with-mic', w.u32(1), w.str(Buffer.from('06092a864886f712010202', 'hex'))), expect: 'auth', hub: false, desc: 'gssapi-with-mic' },
        login: false,
      };
    case 'unknown':
      return { step: { payload: w.userauth(user, 'ssh-connection', rng.pick(['', 'x', 'PASSWORD', 'none ', 'password\0']), rng.bytes(rng.size(100))), expect: 'auth', hub: false, desc: 'unknown method' }, login: false };
    case 'wrong-service':
      return { step: { payload: w.userauth(user, rng.pick(['', 'ssh-userauth', 'x', 'ssh-connection\0']), 'password', w.bool(false), w.str(rng.pick(BAD_TOKENS))), expect: 'auth', hub: false, desc: 'wrong service' }, login: false };
  }
}

function userauthCase(rng: Rng, user: string, token: string): Omit<FuzzCase, 'index' | 'stage'> {
  const offer = drawOffer(rng, true);
  const steps: AuthStep[] = [];
  const service = rng.weighted([
    ['valid', 12],
    ['skip', 1],
    ['other', 1],
  ] as const);
  if (service === 'valid') steps.push({ payload: w.serviceRequest('ssh-userauth'), expect: 'service', hub: false, desc: 'service' });
  if (service === 'other') {
    const name = rng.pick(['ssh-connection', '', 'x'.repeat(1000), 'ssh-userauth\0', 'SSH-USERAUTH']);
    steps.push({ payload: w.serviceRequest(name), expect: 'service', hub: false, desc: 'other service' });
  }
  let login = false;
  const n = rng.weighted([
    [1, 4],
    [2, 3],
    [3, 2],
    [7, 1],
  ] as const);
  for (let i = 0; i < n; i++) {
    const drawn = drawAuthStep(rng, user, token);
    steps.push(drawn.step);
    if (drawn.followUp) steps.push(drawn.followUp);
    login ||= drawn.login;
  }
  // Some messages mutated: payload-level, so the daemon's parsers see them.
  const pMutate = rng.pick([0, 0.3, 0.6, 1]);
  for (const s of steps) {
    if (s.payload && rng.chance(pMutate)) {
      const m = mutate(rng, s.payload);
      s.payload = m.out;
      s.desc += `~${m.ops.join('+')}`;
      // A mutated message may still carry a token the Hub has not seen.
      if (s.expect === 'auth') s.hub = true;
    }
  }
  // Sequence-level: duplicates, swaps, stray messages, a rekey in the middle.
  if (rng.chance(0.1) && steps.length > 0) {
    const i = rng.int(steps.length);
    steps.splice(i, 0, { ...steps[i]! });
  }
  if (rng.chance(0.1) && steps.length > 1) {
    const i = rng.int(steps.length - 1);
    [steps[i], steps[i + 1]] = [steps[i + 1]!, steps[i]!];
  }
  if (rng.chance(0.15)) {
    const s = strayMessage(rng, user);
    steps.splice(rng.int(steps.length + 1), 0, { payload: s.payload, expect: 'none', hub: false, desc: `stray ${s.name}` });
  }
  if (rng.chance(0.05)) steps.splice(rng.int(steps.length + 1), 0, { rekey: true, expect: 'none', hub: false, desc: 'rekey' });
  // Pipelined: everything at once, without waiting for answers.
  const pipelined = rng.chance(0.15);
  const afterLogin = rng.chance(0.5) ? (rng.chance(0.5) ? w.channelOpenSession(0) : mutate(rng, w.channelOpenSession(0)).out) : undefined;
  return {
    desc: `userauth${pipelined ? ' pipelined' : ''}: ${steps.map((s) => s.desc).join(' | ')} (${offerDesc(offer)})`,
    mayLogin: login,
    exec: async (ctx) => {
      const client = ctx.open({ ssh: { offer: offerOf(offer) } });
      if ((await client.wait(() => client.ready, 5000, 2000)) !== 'ok') return;
      const replies = () => client.count(w.MSG.USERAUTH_FAILURE) + client.count(w.MSG.USERAUTH_SUCCESS) + client.count(w.MSG.USERAUTH_INFO_REQUEST);
      for (const s of steps) {
        // After a login the daemon ignores further auth requests (RFC 4252 §5.1): stop asking.
        if (client.closed || !client.ready || client.count(w.MSG.USERAUTH_SUCCESS) > 0) break;
        const accepts = client.count(w.MSG.SERVICE_ACCEPT);
        const before = replies();
        if (s.rekey) {
          (client.proto as unknown as { rekey(): void }).rekey();
        } else {
          client.sendPayload(s.payload!);
        }
        if (pipelined) continue;
        if (s.expect === 'service') await client.wait(() => client.count(w.MSG.SERVICE_ACCEPT) > accepts, 2000, 300);
        // A login may wait for the Hub to start the server (seconds, the first time).
        else if (s.expect === 'auth') await client.wait(() => replies() > before, s.login ? 8000 : s.hub ? 4000 : 2000, s.hub ? Infinity : 300);
        else await client.wait(() => false, 300, 50);
      }
      if (pipelined) await client.wait(() => false, 5000, 500);
      if (client.count(w.MSG.USERAUTH_SUCCESS) > 0 && afterLogin) {
        client.sendPayload(afterLogin);
        await client.wait(() => false, 1000, 200);
      }
    },
  };
}

// ---------------------------------------------------------------------------
// Stage: the encrypted stream right after key exchange.

function streamCase(rng: Rng, user: string): Omit<FuzzCase, 'index' | 'stage'> {
  const offer = drawOffer(rng, true);
  const serviceFirst = rng.chance(0.5);
  const op = rng.weighted([
    // Two valid packets in one TCP write: a first one that ends the connection
    // (DISCONNECT, an unknown service) makes the daemon close while parsing.
    ['together', 3],
    ['flip', 4],
    ['length', 3],
    ['truncate', 2],
    ['replay', 2],
    ['reorder', 2],
    ['drop', 2],
    ['append-random', 2],
    ['oversized', 1],
  ] as const);
  const sub = rng.u32();
  const packets = [
    rng.pick([
      w.authNone(user),
      w.authPassword(user, rng.pick(BAD_TOKENS)),
      w.serviceRequest('ssh-userauth'),
      w.serviceRequest('no-such-service'),
      w.disconnect(11, 'bye'),
    ]),
    rng.chance(0.5) ? w.ignore(rng.bytes(rng.size(3000))) : w.authNone(user),
  ];
  return {
    desc: `stream: ${op}${serviceFirst ? ' after service accept' : ''} (${offerDesc(offer)})`,
    mayLogin: false,
    exec: async (ctx) => {
      const r = new Rng(sub);
      const client = ctx.open({ ssh: { offer: offerOf(offer) } });
      if ((await client.wait(() => client.ready, 5000, 2000)) !== 'ok') return;
      if (serviceFirst) {
        client.sendPayload(w.serviceRequest('ssh-userauth'));
        await client.wait(() => client.count(w.MSG.SERVICE_ACCEPT) > 0, 2000, 300);
      }
      const a = client.encrypt(packets[0]!);
      const b = client.encrypt(packets[1]!);
      if (!a || !b) return;
      switch (op) {
        case 'together':
          client.write(Buffer.concat([a, b]));
          break;
        case 'flip': {
          const x = Buffer.from(a);
          for (let i = r.range(1, 3); i > 0; i--) x[r.int(x.length)] ^= 1 << r.int(8);
          client.write(Buffer.concat([x, b]));
          break;
        }
        case 'length': {
          // Plain for AES-GCM and EtM MACs, encrypted otherwise: either way the daemon must not trust it.
          const x = Buffer.from(a);
          x.writeUInt32BE(r.pick([0, 1, 4, 5, 15, 16, 17, 34999, 35000, 35001, 65536, 0x7fffffff, 0xffffffff]) >>> 0, 0);
          client.write(Buffer.concat([x, b]));
          break;
        }
        case 'truncate':
          client.write(a.subarray(0, r.int(a.length)));
          break;
        case 'replay':
          client.write(Buffer.concat([a, a, b]));
          break;
        case 'reorder':
          client.write(Buffer.concat([b, a]));
          break;
        case 'drop':
          client.write(b);
          break;
        case 'append-random':
          client.write(Buffer.concat([a, b, r.bytes(Math.max(1, r.size(65536)))]));
          break;
        case 'oversized': {
          const big = client.encrypt(w.ignore(r.bytes(r.pick([35000, 40000, 70000]))));
          if (big) client.write(Buffer.concat([a, big]));
          break;
        }
      }
      await settle(client);
    },
  };
}

// ---------------------------------------------------------------------------
// Stage: random bytes and random payloads, at each point of the handshake.

function randomCase(rng: Rng, user: string): Omit<FuzzCase, 'index' | 'stage'> {
  const at = rng.weighted([
    ['start', 3],
    ['after-ident', 3],
    ['after-kexinit', 2],
    ['plain-payloads', 2],
    ['after-handshake', 2],
    ['encrypted-payloads', 3],
  ] as const);
  const chunks = randomChunks(rng);
  const payloads = Array.from({ length: rng.range(1, 8) }, () => randomPayload(rng));
  const offer = drawOffer(rng, true);
  const total = (at.endsWith('payloads') ? payloads : chunks).reduce((s, c) => s + c.length, 0);
  const kexinit = w.frame(cannedKexInit(rng));
  return {
    desc: `random: ${at}, ${at.endsWith('payloads') ? `${payloads.length} payloads (types ${payloads.map((p) => p[0]).join(',')})` : `${chunks.length} chunks`}, ${total} bytes`,
    mayLogin: false,
    exec: async (ctx) => {
      if (at === 'after-handshake' || at === 'encrypted-payloads') {
        const client = ctx.open({ ssh: { offer: offerOf(offer) } });
        if ((await client.wait(() => client.ready, 5000, 2000)) !== 'ok') return;
        if (at === 'after-handshake') for (const c of chunks) client.write(c);
        else {
          client.sendPayload(w.serviceRequest('ssh-userauth'));
          for (const p of payloads) client.sendPayload(p);
          // A well-formed request last: does the daemon still answer?
          client.sendPayload(w.authNone(user));
        }
        await settle(client);
        return;
      }
      const client = ctx.open({});
      const prefix =
        at === 'start' ? [] : at === 'after-ident' ? [Buffer.from(IDENT)] : [Buffer.from(IDENT), kexinit];
      const body = at === 'plain-payloads' ? payloads.map((p) => w.frame(p)) : chunks;
      await writeChunks(client, [...prefix, ...body], 0);
      await settle(client);
    },
  };
}

// ---------------------------------------------------------------------------

export function generateCase(seed: number, index: number, user: string, token: string, only?: readonly Stage[]): FuzzCase {
  const rng = new Rng(seed, index);
  const weights = only ? STAGE_WEIGHTS.filter(([s]) => only.includes(s)) : STAGE_WEIGHTS;
  const stage = rng.weighted(weights);
  const body =
    stage === 'version'
      ? versionCase(rng)
      : stage === 'kexinit'
        ? kexinitCase(rng)
        : stage === 'kex'
          ? kexCase(rng)
          : stage === 'userauth'
            ? userauthCase(rng, user, token)
            : stage === 'stream'
              ? streamCase(rng, user)
              : randomCase(rng, user);
  return { index, stage, ...body };
}
