/**
 * The proxy's own host keys in KEYDIR, under the file names sshd uses so that
 * an existing /etc/ssh key set can be reused. Missing keys are generated at
 * first start (like `ssh-keygen -A`) and written 0600.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ConfigError } from './config.js';
import { generateKeyPair, parseKey, type ParsedKey } from './ssh2internals.js';

interface KeySpec {
  file: string;
  type: 'ed25519' | 'ecdsa' | 'rsa';
  bits?: number;
}

export const HOST_KEY_SPECS: readonly KeySpec[] = [
  { file: 'ssh_host_ed25519_key', type: 'ed25519' },
  { file: 'ssh_host_ecdsa_key', type: 'ecdsa', bits: 256 },
  { file: 'ssh_host_rsa_key', type: 'rsa', bits: 3072 },
];

export interface HostKey {
  path: string;
  key: ParsedKey;
}

/** A key's fingerprint as ssh shows it at a first connection (and `ssh-keygen -l`): SHA256 and unpadded base64. */
export function fingerprint(key: { getPublicSSH(): Buffer } | Buffer): string {
  const blob = Buffer.isBuffer(key) ? key : key.getPublicSSH();
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

/** A problem with KEYDIR that must stop the daemon; its message is one line. */
export class HostKeyError extends ConfigError {}

/** Writes a new private key (0600) and its .pub (0644); never overwrites. */
export function writeKeyPair(file: string, pair: { private: string; public: string }, comment: string): void {
  fs.writeFileSync(file, pair.private, { mode: 0o600, flag: 'wx' });
  fs.writeFileSync(`${file}.pub`, `${pair.public} ${comment}\n`, { mode: 0o644, flag: 'wx' });
}

function loadKey(file: string): ParsedKey {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(file);
  } catch (err) {
    throw new HostKeyError(`cannot read host key ${file}: ${(err as Error).message}`);
  }
  if ((stat.mode & 0o077) !== 0) {
    const mode = (stat.mode & 0o777).toString(8).padStart(4, '0');
    throw new HostKeyError(
      `host key ${file} has permissions ${mode}, which lets other users read it; run: chmod 600 ${file}`,
    );
  }
  let data: Buffer;
  try {
    data = fs.readFileSync(file);
  } catch (err) {
    throw new HostKeyError(`cannot read host key ${file}: ${(err as Error).message}`);
  }
  const key = parseKey(data);
  if (key instanceof Error || !key.isPrivateKey()) {
    const why = key instanceof Error ? key.message : 'not a private key';
    throw new HostKeyError(`cannot parse host key ${file}: ${why}`);
  }
  return key;
}

/**
 * Loads every host key in `dir`, generating the missing ones. Returns the
 * keys and the paths of those it generated.
 */
export function loadHostKeys(dir: string): { keys: HostKey[]; generated: string[] } {
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new HostKeyError(`cannot create key directory ${dir}: ${(err as Error).message}`);
  }
  const keys: HostKey[] = [];
  const generated: string[] = [];
  for (const spec of HOST_KEY_SPECS) {
    const file = path.join(dir, spec.file);
    if (!fs.existsSync(file)) {
      try {
        writeKeyPair(file, generateKeyPair(spec.type, spec.bits), 'jupyter-ssh-proxy');
      } catch (err) {
        throw new HostKeyError(`cannot write host key ${file}: ${(err as Error).message}`);
      }
      generated.push(file);
    }
    keys.push({ path: file, key: loadKey(file) });
  }
  return { keys, generated };
}
