// The bench's /proc readings (bench/procfs.ts) that no integration test reads.
import { execFileSync } from 'node:child_process';
import { expect } from 'chai';
import { CLK_TCK, hostStealSeconds } from '../bench/procfs.js';

describe('bench procfs', function () {
  it("reads the host's steal time from the steal column of /proc/stat", function () {
    // awk's $9 on the `cpu` line is steal (user nice system idle iowait irq softirq steal ...).
    const awk = () => Number(execFileSync('awk', ['/^cpu /{print $9}', '/proc/stat'], { encoding: 'utf8' }).trim()) / CLK_TCK;
    const before = awk();
    const read = hostStealSeconds();
    const after = awk();
    expect(read).to.be.at.least(before);
    expect(read).to.be.at.most(after);
  });
});
