/**
 * sshd's `from="pattern-list"` of an authorized_keys line (match.c,
 * match_host_and_ip; addrmatch.c, addr_match_list), as sshd applies it with
 * its default UseDNS no, where the client's host name is its address.
 *
 * Entries are separated by commas; `!` negates one. An entry is an address
 * or an address/prefix, or else a pattern with `*` and `?` matched against
 * the address as text. A negated entry that matches refuses; otherwise an
 * entry that matches allows; no match refuses. A prefix with host bits set
 * (`10.0.0.1/8`) is an error in sshd, and refuses here too.
 */
import net from 'node:net';
import { wildcardMatch } from './wildcard.js';

/** An address as bytes (4 or 16), or undefined if it is none. */
function addressBytes(address: string): Buffer | undefined {
  if (net.isIPv4(address)) return Buffer.from(address.split('.').map(Number));
  if (!net.isIPv6(address)) return undefined;
  // A trailing dotted quad (::ffff:10.0.0.1) is two groups.
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(address);
  let text = address;
  if (dotted) {
    const [a, b, c, d] = dotted[1]!.split('.').map(Number) as [number, number, number, number];
    text = `${address.slice(0, -dotted[1]!.length)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.split('::') as [string, string | undefined];
  const groups = (part: string | undefined) => (part ? part.split(':') : []);
  const fill = tail === undefined ? [] : Array(8 - groups(head).length - groups(tail).length).fill('0');
  const all = [...groups(head), ...fill, ...groups(tail)];
  const bytes = Buffer.alloc(16);
  all.forEach((group, i) => bytes.writeUInt16BE(parseInt(group, 16), 2 * i));
  return bytes;
}

/** Whether the first `bits` bits of `a` and `b` are equal. */
function samePrefix(a: Buffer, b: Buffer, bits: number): boolean {
  for (let i = 0; i < a.length; i++) {
    const take = Math.max(0, Math.min(8, bits - 8 * i));
    const mask = (0xff << (8 - take)) & 0xff;
    if ((a[i]! & mask) !== (b[i]! & mask)) return false;
  }
  return true;
}

/** Whether every bit of `bytes` past the first `bits` is 0. */
function hostBitsClear(bytes: Buffer, bits: number): boolean {
  return bytes.every((byte, i) => (byte & (0xff >> Math.max(0, Math.min(8, bits - 8 * i)))) === 0);
}

/** Whether the client at `address` may log in with a key whose line says from="`patterns`". */
export function fromAllows(patterns: string, address: string): boolean {
  // A listener on :: sees IPv4 clients as ::ffff:a.b.c.d; sshd sees a.b.c.d.
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  const client = (mapped ? mapped[1]! : address).toLowerCase();
  const clientBytes = addressBytes(client);
  let allowed = false;
  for (const entry of patterns.split(',')) {
    const negated = entry.startsWith('!');
    const pattern = (negated ? entry.slice(1) : entry).toLowerCase();
    // An empty entry is an error in sshd: the key is refused.
    if (pattern === '') return false;
    const [network, prefix, extra] = pattern.split('/');
    const networkBytes = extra === undefined ? addressBytes(network!) : undefined;
    let matches: boolean;
    if (networkBytes !== undefined && (prefix === undefined || /^\d+$/.test(prefix))) {
      const bits = prefix === undefined ? networkBytes.length * 8 : Number(prefix);
      // sshd's "inconsistent mask length" (too long, or host bits set): an error that refuses the key.
      if (bits > networkBytes.length * 8 || !hostBitsClear(networkBytes, bits)) return false;
      matches = clientBytes?.length === networkBytes.length && samePrefix(clientBytes, networkBytes, bits);
    } else {
      matches = wildcardMatch(client, pattern);
    }
    if (matches && negated) return false;
    if (matches) allowed = true;
  }
  return allowed;
}
