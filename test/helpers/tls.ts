// Test fixture: a private certificate authority and a certificate it signed
// for 127.0.0.1, made with the openssl command, for a Hub served over https.
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';

export interface TlsFiles {
  /** The authority's certificate: what --hub-ca is given. */
  caFile: string;
  /** The server's certificate (subjectAltName IP:127.0.0.1) and its key. */
  certFile: string;
  keyFile: string;
}

/** Where makeCertificates puts the files in `dir`. */
export function certificatesIn(dir: string): TlsFiles {
  return { caFile: path.join(dir, 'ca.pem'), certFile: path.join(dir, 'hub.pem'), keyFile: path.join(dir, 'hub.key') };
}

/** Makes the files in `dir` (which must exist), valid for two days; returns certificatesIn(dir). */
export function makeCertificates(dir: string): TlsFiles {
  const file = (name: string) => path.join(dir, name);
  const openssl = (...args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const ecKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl('req', '-x509', ...ecKey, '-keyout', file('ca.key'), '-out', file('ca.pem'), '-days', '2', '-subj', '/CN=jupyter-ssh-proxy test CA');
  openssl('req', ...ecKey, '-keyout', file('hub.key'), '-out', file('hub.csr'), '-subj', '/CN=127.0.0.1');
  fs.writeFileSync(file('hub.ext'), 'subjectAltName = IP:127.0.0.1\nextendedKeyUsage = serverAuth\n');
  openssl('x509', '-req', '-in', file('hub.csr'), '-CA', file('ca.pem'), '-CAkey', file('ca.key'), '-CAcreateserial', '-days', '2', '-extfile', file('hub.ext'), '-out', file('hub.pem'));
  for (const key of ['ca.key', 'hub.key']) fs.chmodSync(file(key), 0o600);
  return certificatesIn(dir);
}

/** A folder with the authority and a certificate for 127.0.0.1, made before the tests (register it before a Hub that uses it) and removed after. */
export function useCertificates(): { dir: string; tls: TlsFiles } {
  const dir = path.join(os.tmpdir(), `jsp-tls-${process.pid}-${crypto.randomBytes(3).toString('hex')}`);
  before(() => {
    fs.mkdirSync(dir, { mode: 0o755 });
    makeCertificates(dir);
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return { dir, tls: certificatesIn(dir) };
}

/** The status of GET `url` within 2 s; over https, trusting the authority in `tls` (fetch cannot be given one). */
export function httpStatus(url: string, tls?: TlsFiles): Promise<number> {
  return new Promise((resolve, reject) => {
    const ca = tls ? fs.readFileSync(tls.caFile) : undefined;
    const request = (url.startsWith('https:') ? https : http).get(url, { ca, timeout: 2_000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    request.on('timeout', () => request.destroy(new Error('no answer in 2 s')));
    request.on('error', reject);
  });
}
