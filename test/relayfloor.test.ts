// The bench's relay floor (bench/relayfloor.ts) drives ssh2's native AES-GCM
// binding directly: a change there must show here, not as a failed case in
// the next benchmark.
import { expect } from 'chai';
import { VARIANTS, aesGcmPassSecondsPerGiB, measureRelayFloor } from '../bench/relayfloor.js';

const MiB = 1024 * 1024;

describe('bench relay floor', function () {
  this.timeout(60_000);

  it('relays 16 MiB through every variant, the consumer checking each packet, and reports CPU per GiB', async function () {
    const lines: string[] = [];
    const results = await measureRelayFloor(16 * MiB, 1, (line) => lines.push(line));
    expect(results.map((r) => r.variant)).to.deep.equal([...VARIANTS]);
    for (const r of results) {
      expect(r.cpuSecondsPerGiB).to.have.length(1);
      // A relay that did nothing would read ~0; one that is wrong by a unit
      // (ms, or per MiB) reads over 100.
      expect(r.medianCpuSecondsPerGiB, r.variant).to.be.greaterThan(0.05).and.lessThan(100);
    }
    expect(lines).to.have.length(VARIANTS.length);
  });

  it('times one AES-GCM pass of the native binding', function () {
    const seconds = aesGcmPassSecondsPerGiB(64 * MiB);
    // AES-NI moves a GiB in well under a second; without it, in seconds.
    expect(seconds).to.be.greaterThan(0.01).and.lessThan(20);
  });
});
