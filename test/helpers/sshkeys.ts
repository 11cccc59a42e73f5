// Key pairs made by the real ssh-keygen, for tests of key and certificate logins.
import { expect } from 'chai';
import fs from 'node:fs';
import path from 'node:path';
import { run } from './ssh.js';

/** A new key pair in `dir`, without a passphrase, commented `name`; returns the private key's path. */
export async function newKey(dir: string, name: string, type = 'ed25519'): Promise<string> {
  const file = path.join(dir, name);
  const made = await run('ssh-keygen', ['-q', '-t', type, '-N', '', '-C', name, '-f', file]);
  expect(made.code, made.stderr).to.equal(0);
  return file;
}

/** The public key line of a key made by newKey. */
export const publicLine = (keyFile: string): string => fs.readFileSync(`${keyFile}.pub`, 'utf8').trim();
