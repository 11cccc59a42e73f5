// How fast this host runs at the moment, as a figure a reader can compare
// between runs. The project's machines are shared VMs: two runs a day apart
// found OpenSSH needing 0.84 and then 2.08 CPU s/GiB for the same direct
// download, with nothing else running in the VM (vmstat showed no steal
// time), and only the direct times told that the second run's host was at
// half speed. The probe is `openssl speed` for AES-128-GCM on 16 KiB blocks:
// one core running the system's libcrypto, the code sshd spends its cipher
// time in, with no garbage collector in the measurement (timing node:crypto
// in the bench's own process drifted by 15 % over six probes on a quiet
// host). The host's speed itself moved by a third within 15 s when this was
// written, hence a probe after every case group rather than one at the start.
// What it cannot see: a host slowed in its memory, kernel or scheduling. In the
// first run with it the probes read 2130-2539 MiB/s while the direct download
// still took twice as long as on the quiet host of the day before, whose probe
// reading nobody has; the direct path's own times stay the reference.
import { execFileSync } from 'node:child_process';
import { MiB, median } from './stats.js';

const PROBES = 3;
const RESULT_LINE = /^AES-128-GCM\s+([\d.]+)k\s*$/m;

/** MiB/s, the median of 3 one-second runs; undefined without a usable `openssl`. */
export function aesGcmMiBps(): number | undefined {
  const rates: number[] = [];
  for (let i = 0; i < PROBES; i++) {
    let out: string;
    try {
      out = execFileSync('openssl', ['speed', '-seconds', '1', '-bytes', '16384', '-evp', 'aes-128-gcm'], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
        timeout: 30_000,
      });
    } catch {
      return undefined;
    }
    const match = RESULT_LINE.exec(out);
    if (!match) return undefined;
    rates.push((Number(match[1]) * 1000) / MiB); // openssl's "k" is 1000 bytes per second
  }
  return median(rates);
}
