/**
 * What each leg offers in key exchange: modern algorithms only, no
 * compression (the relay forwards payloads as they are decrypted, so neither
 * leg may compress), and strict KEX (the Terrapin fix) on both legs.
 */
import { buildOffer, type AlgorithmOffer, type KexInitOffer } from './ssh2internals.js';

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
];

function offer(kex: string[], serverHostKey: string[]): AlgorithmOffer {
  const direction = () => ({ cipher: [...CIPHERS], mac: [...MACS], compress: ['none'], lang: [] });
  return { kex, serverHostKey, cs: direction(), sc: direction() };
}

/** The offer of the proxy as an SSH server, for exactly the host key algorithms it has keys for. */
export function serverOffer(hostKeyAlgos: string[]): KexInitOffer {
  return buildOffer(offer([...KEX, 'kex-strict-s-v00@openssh.com'], hostKeyAlgos));
}

/** The offer of the proxy as an SSH client towards the internal sshd, whose ed25519 host key it pins. */
export function clientOffer(): KexInitOffer {
  return buildOffer(offer([...KEX, 'ext-info-c', 'kex-strict-c-v00@openssh.com'], ['ssh-ed25519']));
}
