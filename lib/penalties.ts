/**
 * Per-source penalties, after OpenSSH 9.8's PerSourcePenalties: each
 * connection that ends badly adds seconds to its source's penalty, which
 * decays as time passes; once a source's outstanding penalty reaches `min`,
 * its new connections are refused (before any Hub call) until it has run out. Sources are
 * grouped by netblock (/32 and /128 by default), an exempt list never pays,
 * and the table is bounded.
 */
import net from 'node:net';

export type PenaltyKind = 'authfail' | 'noauth' | 'grace-exceeded' | 'malformed';

export interface PenaltyConfig {
  /** Seconds added per event kind. */
  seconds: Record<PenaltyKind, number>;
  /** A source's outstanding penalty never exceeds this many seconds. */
  max: number;
  /** Seconds of outstanding penalty at which a source is refused. */
  min: number;
  netblock4: number;
  netblock6: number;
  exempt: net.BlockList;
  /** Sources tracked at most; the entries closest to expiry go first. */
  maxSources: number;
}

/** OpenSSH 9.8's defaults (its "crash" penalty is our "malformed"). */
export const DEFAULT_PENALTIES = 'authfail:5 noauth:1 grace-exceeded:10 malformed:90 max:600 min:15';

/** Parses OpenSSH's syntax: `authfail:5 noauth:1 ... max:600 min:15` (seconds; `s` suffix allowed). */
export function parsePenalties(spec: string, netblock: string, exemptList: string, maxSources: number): PenaltyConfig {
  const config: PenaltyConfig = {
    seconds: { authfail: 0, noauth: 0, 'grace-exceeded': 0, malformed: 0 },
    max: 600,
    min: 15,
    netblock4: 32,
    netblock6: 128,
    exempt: new net.BlockList(),
    maxSources,
  };
  for (const item of spec.trim().split(/[\s,]+/).filter(Boolean)) {
    const m = /^([a-z-]+):(\d+(?:\.\d+)?)s?$/.exec(item);
    if (!m) throw new Error(`penalty "${item}" is not NAME:SECONDS`);
    const [, name, value] = m as unknown as [string, string, string];
    if (name === 'max' || name === 'min') config[name] = Number(value);
    else if (name in config.seconds) config.seconds[name as PenaltyKind] = Number(value);
    else throw new Error(`unknown penalty "${name}" (known: authfail, noauth, grace-exceeded, malformed, max, min)`);
  }
  const blocks = /^(\d+)(?::(\d+))?$/.exec(netblock);
  if (!blocks) throw new Error(`netblock size "${netblock}" is not BITS4[:BITS6]`);
  config.netblock4 = Number(blocks[1]);
  config.netblock6 = Number(blocks[2] ?? 128);
  if (config.netblock4 < 1 || config.netblock4 > 32 || config.netblock6 < 1 || config.netblock6 > 128) {
    throw new Error('netblock sizes must be 1-32 for IPv4 and 1-128 for IPv6');
  }
  for (const entry of exemptList.split(',').map((e) => e.trim()).filter(Boolean)) {
    const [address, bits] = entry.split('/') as [string, string | undefined];
    const family = net.isIP(address);
    if (family === 0) throw new Error(`exempt entry "${entry}" is not an address or CIDR block`);
    const type = family === 4 ? 'ipv4' : 'ipv6';
    const prefix = bits === undefined ? (family === 4 ? 32 : 128) : Number(bits);
    if (!Number.isInteger(prefix) || prefix < 0 || prefix > (family === 4 ? 32 : 128)) throw new Error(`bad prefix in "${entry}"`);
    config.exempt.addSubnet(address, prefix, type);
  }
  return config;
}

/** IPv4-mapped IPv6 addresses (::ffff:1.2.3.4) are IPv4 sources. */
function normalize(address: string): { address: string; family: 4 | 6 } {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return { address: mapped[1]!, family: 4 };
  return { address, family: net.isIPv4(address) ? 4 : 6 };
}

function ipv6Bytes(address: string): number[] {
  const [head, tail] = address.split('::') as [string, string | undefined];
  const groups = (s: string) => (s === '' ? [] : s.split(':'));
  let parts = groups(head);
  let rest = tail === undefined ? [] : groups(tail);
  // An embedded IPv4 tail takes two groups.
  const last = (rest.length ? rest : parts).at(-1);
  if (last?.includes('.')) {
    const v4 = last.split('.').map(Number);
    const extra = [((v4[0]! << 8) | v4[1]!).toString(16), ((v4[2]! << 8) | v4[3]!).toString(16)];
    if (rest.length) rest = [...rest.slice(0, -1), ...extra];
    else parts = [...parts.slice(0, -1), ...extra];
  }
  const zeros = tail === undefined ? [] : new Array<string>(8 - parts.length - rest.length).fill('0');
  return [...parts, ...zeros, ...rest].flatMap((g) => {
    const v = parseInt(g, 16);
    return [v >> 8, v & 0xff];
  });
}

/** The netblock a source belongs to, as a map key. */
export function netblockOf(address: string, bits4: number, bits6: number): string {
  const { address: a, family } = normalize(address);
  const bytes = family === 4 ? a.split('.').map(Number) : ipv6Bytes(a);
  const bits = family === 4 ? bits4 : bits6;
  const masked = bytes.map((byte, i) => {
    const keep = Math.max(0, Math.min(8, bits - i * 8));
    return byte & ((0xff << (8 - keep)) & 0xff);
  });
  return `${family === 4 ? masked.join('.') : masked.map((b) => b.toString(16).padStart(2, '0')).join('')}/${bits}`;
}

interface Penalty {
  /** When the penalty runs out (ms since the epoch). */
  until: number;
  /** Set once the outstanding penalty reached `min`: refused until `until`. */
  active: boolean;
}

export class SourcePenalties {
  /** By netblock, in order of last penalty (for eviction). */
  private readonly penalties = new Map<string, Penalty>();

  constructor(private readonly config: PenaltyConfig, private readonly now: () => number = Date.now) {}

  private exempt(address: string): boolean {
    const { address: a, family } = normalize(address);
    return this.config.exempt.check(a, family === 4 ? 'ipv4' : 'ipv6');
  }

  private key(address: string): string {
    return netblockOf(address, this.config.netblock4, this.config.netblock6);
  }

  /** Adds the penalty for `kind`; returns true if this made the source refused. */
  penalize(address: string, kind: PenaltyKind): boolean {
    const seconds = this.config.seconds[kind];
    if (seconds <= 0 || this.exempt(address)) return false;
    const key = this.key(address);
    const now = this.now();
    const current = this.live(key, now);
    const from = Math.max(now, current?.until ?? 0);
    const until = Math.min(from + seconds * 1000, now + this.config.max * 1000);
    const active = current?.active === true || until - now >= this.config.min * 1000;
    this.penalties.delete(key);
    this.penalties.set(key, { until, active });
    this.evict(now);
    return active && current?.active !== true;
  }

  /** Seconds until `address` may connect again, or 0 if it may now. */
  blockedFor(address: string): number {
    if (this.exempt(address)) return 0;
    const now = this.now();
    const penalty = this.live(this.key(address), now);
    return penalty?.active ? Math.ceil((penalty.until - now) / 1000) : 0;
  }

  get size(): number {
    return this.penalties.size;
  }

  private live(key: string, now: number): Penalty | undefined {
    const penalty = this.penalties.get(key);
    if (penalty !== undefined && penalty.until <= now) {
      this.penalties.delete(key);
      return undefined;
    }
    return penalty;
  }

  /** Keeps the table bounded: expired entries go, then the least recently penalized. */
  private evict(now: number): void {
    if (this.penalties.size <= this.config.maxSources) return;
    for (const [key, penalty] of this.penalties) if (penalty.until <= now) this.penalties.delete(key);
    while (this.penalties.size > this.config.maxSources) this.penalties.delete(this.penalties.keys().next().value!);
  }
}
