// The bench's host-speed probe (bench/hostspeed.ts) reads `openssl speed`'s
// output: a change of that format must show here, not as a silent "n/a" in
// the next benchmark's header.
import { expect } from 'chai';
import { aesGcmMiBps } from '../bench/hostspeed.js';

describe('bench host-speed probe', function () {
  this.timeout(30_000);

  it("reads one core's AES-128-GCM rate from openssl speed", function () {
    const mibps = aesGcmMiBps();
    // Any x86-64 or arm64 core with AES instructions moves well over 100 MiB/s
    // here, and none reaches 100 GiB/s: a wrong unit or column fails either way.
    expect(mibps).to.be.a('number');
    expect(mibps!).to.be.greaterThan(100).and.lessThan(100 * 1024);
  });
});
