/**
 * What each leg offers in key exchange: modern algorithms only (the defaults,
 * which an operator may narrow on the client leg), no
 * compression (the relay forwards payloads as they are decrypted, so neither
 * leg may compress), and strict KEX (the Terrapin fix) on both legs.
 */
import { HYBRID_KEY_EXCHANGES } from './hybridkex.js';
import { wildcardMatch } from './wildcard.js';
import { buildOffer, hybridKeyExchangesInstalled, type AlgorithmOffer, type KexInitOffer } from './ssh2internals.js';

export const KEX = [
  'curve25519-sha256',
  'curve25519-sha256@libssh.org',
  'ecdh-sha2-nistp256',
  'ecdh-sha2-nistp384',
  'ecdh-sha2-nistp521',
  'diffie-hellman-group16-sha512',
  'diffie-hellman-group18-sha512',
  'diffie-hellman-group14-sha256',
];

/**
 * The client leg's key exchange methods: the post-quantum hybrids first
 * (lib/hybridkex.ts), which OpenSSH's client prefers since 9.0 (10.1 and
 * later warn on every connection without one), where ssh2 runs them
 * (lib/ssh2internals.ts). The upstream leg stays on KEX: the proxy runs
 * the hybrids as a server only.
 */
export const CLIENT_LEG_KEX = hybridKeyExchangesInstalled ? [...HYBRID_KEY_EXCHANGES.keys(), ...KEX] : KEX;

/**
 * Cipher order. On the upstream leg the proxy is the client, so its first
 * choice wins: AES-GCM runs on AES-NI and costs the least CPU per byte. On the
 * client leg the user's ssh decides (OpenSSH prefers chacha20-poly1305), and
 * ssh2's native binding makes either one fast.
 */
export const CIPHERS = [
  'aes128-gcm@openssh.com',
  'aes256-gcm@openssh.com',
  'chacha20-poly1305@openssh.com',
  'aes128-ctr',
  'aes192-ctr',
  'aes256-ctr',
];

export const MACS = [
  'hmac-sha2-256-etm@openssh.com',
  'hmac-sha2-512-etm@openssh.com',
  'hmac-sha2-256',
  'hmac-sha2-512',
];

/** Host key algorithms per loaded key type; RSA is only offered with SHA-2. */
export function hostKeyAlgorithms(keyType: string): string[] {
  return keyType === 'ssh-rsa' ? ['rsa-sha2-512', 'rsa-sha2-256'] : [keyType];
}

/** Signature algorithms the proxy verifies, announced in EXT_INFO server-sig-algs. */
export const SERVER_SIG_ALGS = [
  'ssh-ed25519',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'rsa-sha2-512',
  'rsa-sha2-256',
  'sk-ssh-ed25519@openssh.com',
  'sk-ecdsa-sha2-nistp256@openssh.com',
];

/** All host key algorithms the proxy can sign with, given a key of the right type. */
export const HOST_KEY_ALGORITHMS = ['ssh-ed25519', 'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384', 'ecdsa-sha2-nistp521', 'rsa-sha2-512', 'rsa-sha2-256'];

/**
 * What the proxy offers clients, as the operator chose it (`--kex-algorithms`,
 * `--ciphers`, `--macs`, `--host-key-algorithms`). The upstream leg is not
 * the operator's concern: it always offers the full lists, AES-GCM first.
 */
export interface ClientLegAlgorithms {
  kex: string[];
  ciphers: string[];
  macs: string[];
  hostKey: string[];
}

/** The flag that sets each list, named after its sshd_config option. */
export const CLIENT_LEG_FLAGS = {
  kex: 'kex-algorithms',
  ciphers: 'ciphers',
  macs: 'macs',
  hostKey: 'host-key-algorithms',
} as const satisfies Record<keyof ClientLegAlgorithms, string>;

export const DEFAULT_CLIENT_LEG: ClientLegAlgorithms = { kex: CLIENT_LEG_KEX, ciphers: CIPHERS, macs: MACS, hostKey: HOST_KEY_ALGORITHMS };

/** The AES-GCM ciphers of `ciphers`: what --prefer-aes-gcm switches clients to. */
export function aesGcmCiphers(ciphers: readonly string[]): string[] {
  return ciphers.filter((c) => /^aes\d+-gcm@openssh\.com$/.test(c));
}

/**
 * Resolves an algorithm list in sshd_config's syntax against `defaults`, the
 * way OpenSSH's kex_assemble_names does: a list replaces the defaults,
 * `+list` appends to them, `-list` removes from them and `^list` puts its
 * names first. Names may hold `*` and `?` wildcards. Every name or pattern
 * must match an algorithm the proxy supports (`defaults`: nothing else is run
 * or tested), and something must be left. Throws a one-line reason.
 */
export function resolveAlgorithmList(spec: string, defaults: readonly string[], what: string): string[] {
  const head = spec[0];
  const prefixed = head === '+' || head === '-' || head === '^';
  const patterns = (prefixed ? spec.slice(1) : spec).split(',').map((p) => p.trim());
  if (patterns.some((p) => p === '')) throw new Error(`${what} must be a comma-separated list of names, got "${spec}"`);
  for (const p of patterns) {
    if (!defaults.some((name) => wildcardMatch(name, p))) throw new Error(`${what}: ${p} is not supported; choose from ${defaults.join(',')}`);
  }
  const picked = (names: readonly string[]) => names.filter((name) => patterns.some((p) => wildcardMatch(name, p)));
  const kept = (names: readonly string[]) => names.filter((name) => !patterns.some((p) => wildcardMatch(name, p)));
  let list: string[];
  if (head === '-') list = kept(defaults);
  else if (head === '^') list = [...picked(defaults), ...kept(defaults)];
  else if (head === '+') list = [...defaults];
  else list = patterns.flatMap((p) => defaults.filter((name) => wildcardMatch(name, p))).filter((name, i, all) => all.indexOf(name) === i);
  if (list.length === 0) throw new Error(`${what} "${spec}" leaves nothing to offer`);
  return list;
}

function offer(kex: string[], serverHostKey: string[], ciphers: readonly string[], macs: readonly string[]): AlgorithmOffer {
  const direction = () => ({ cipher: [...ciphers], mac: [...macs], compress: ['none'], lang: [] });
  return { kex, serverHostKey, cs: direction(), sc: direction() };
}

/** The offer of the proxy as an SSH server, for exactly the host key algorithms it signs with (the operator's choice of those its keys allow). */
export function serverOffer(hostKeyAlgos: string[], choice: Omit<ClientLegAlgorithms, 'hostKey'> = DEFAULT_CLIENT_LEG): KexInitOffer {
  return buildOffer(offer([...choice.kex, 'kex-strict-s-v00@openssh.com'], hostKeyAlgos, choice.ciphers, choice.macs));
}

/** Which clients --prefer-aes-gcm switches: those on AES-CTR (the default), those on any other cipher, or none. */
export type PreferAesGcm = 'ctr' | 'all' | 'no';

/**
 * What --prefer-aes-gcm needs: which clients it switches, the AES-GCM
 * ciphers the operator allows, and the server offer with only those, for the
 * key exchange that switches a client to one of them.
 */
export interface AesGcmSwitch {
  from: Exclude<PreferAesGcm, 'no'>;
  ciphers: readonly string[];
  offer: KexInitOffer;
}

/** The switch for `prefer`; undefined when it is 'no' or no AES-GCM cipher is allowed. */
export function aesGcmSwitch(hostKeyAlgos: string[], choice: Omit<ClientLegAlgorithms, 'hostKey'>, prefer: PreferAesGcm): AesGcmSwitch | undefined {
  const ciphers = aesGcmCiphers(choice.ciphers);
  if (prefer === 'no' || ciphers.length === 0) return undefined;
  return { from: prefer, ciphers, offer: serverOffer(hostKeyAlgos, { ...choice, ciphers }) };
}

/** Whether `s` switches a client that negotiated `cipher` (and offered AES-GCM). */
export function switchesFrom(s: AesGcmSwitch, cipher: string): boolean {
  if (s.ciphers.includes(cipher)) return false;
  return s.from === 'all' || /^aes\d+-ctr$/.test(cipher);
}

/** The offer of the proxy as an SSH client towards the internal sshd, whose ed25519 host key it pins. */
export function clientOffer(): KexInitOffer {
  return buildOffer(offer([...KEX, 'ext-info-c', 'kex-strict-c-v00@openssh.com'], ['ssh-ed25519'], CIPHERS, MACS));
}
