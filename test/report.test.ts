// The bench's report (bench/report.ts): the CPU budget of a bulk case, whole-path and per core.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { writeReports, type Results } from '../bench/report.js';

const GiB = 1024 ** 3;

function results(): Results {
  return {
    startedAt: '2026-12-05T00:00:00.000Z',
    finishedAt: '2026-12-05T00:01:00.000Z',
    machine: { cpu: 'test CPU', cores: 2, openssh: 'OpenSSH_test', node: 'v20', ssh2: '1.17.0', memoryGiB: 1, kernel: 'test', cpuFlags: [] },
    settings: { runs: 3 },
    loadavg: { start: [0, 0, 0], end: [0, 0, 0] },
    hostSpeed: [],
    cases: [
      {
        id: 'download/aes128-gcm@openssh.com',
        group: 'bulk',
        title: 'download 2 GiB',
        cipher: 'aes128-gcm@openssh.com',
        bytesPerRun: 2 * GiB,
        // All CPU per GiB: direct 1.5, 1.6, 1.7; proxy 2.0, 2.2, 2.4.
        direct: [
          { path: 'direct', seconds: 2, bytes: 2 * GiB, cpu: { sshd: 1.6, client: 1.4 } },
          { path: 'direct', seconds: 2, bytes: 2 * GiB, cpu: { sshd: 1.8, client: 1.4 } },
          { path: 'direct', seconds: 2, bytes: 2 * GiB, cpu: { sshd: 2.0, client: 1.4 } },
        ],
        proxy: [
          { path: 'proxy', seconds: 4, bytes: 2 * GiB, cpu: { proxy: 1.0, proxyUser: 0.4, sshd: 1.6, client: 1.4 } },
          { path: 'proxy', seconds: 4, bytes: 2 * GiB, cpu: { proxy: 1.4, proxyUser: 0.5, sshd: 1.6, client: 1.4 } },
          { path: 'proxy', seconds: 4, bytes: 2 * GiB, cpu: { proxy: 1.8, proxyUser: 0.6, sshd: 1.6, client: 1.4 } },
        ],
      },
    ],
    cpuCost: [],
    profiles: [],
    notes: [],
  };
}

describe('bench report', function () {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jsp-report-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("sums each run's CPU over every process of the path, per GiB and per second of wall time", function () {
    writeReports(results(), dir);
    const written = JSON.parse(fs.readFileSync(path.join(dir, 'results.json'), 'utf8')) as Results;
    const summary = written.cases[0]!.summary!;
    expect(summary.ratio).to.equal(2);
    expect(summary.allCpuSecondsPerGiB!.direct).to.be.closeTo(1.6, 1e-9);
    expect(summary.allCpuSecondsPerGiB!.proxy).to.be.closeTo(2.2, 1e-9);
    // Cores busy: all CPU seconds of a run over its wall time (medians: direct 3.2 s in 2 s, proxy 4.4 s in 4 s).
    expect(summary.coresBusy!.direct).to.be.closeTo(1.6, 1e-9);
    expect(summary.coresBusy!.proxy).to.be.closeTo(1.1, 1e-9);

    const md = fs.readFileSync(path.join(dir, 'results.md'), 'utf8');
    const row = md.split('\n').find((line) => line.startsWith('| download 2 GiB | aes128-gcm | 0.70 (0.25)'));
    expect(row, md).to.be.a('string');
    expect(row).to.match(/\| 1\.60 \| 2\.20 \| 1\.38 \| 1\.60 \/ 1\.10 \|$/);
  });
});
