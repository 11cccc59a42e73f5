// The bench's report (bench/report.ts): the CPU budget of a bulk case, whole-path and per core.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { REDUCED_NOTE, writeReports, type Results } from '../bench/report.js';

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
        // All CPU per GiB: direct 1.5, 1.6, 1.7; proxy 2.0, 2.2, 2.4. Host steal in cores: direct 0, 0.1, 0.3; proxy 0, 0, 0.2.
        direct: [
          { path: 'direct', seconds: 2, bytes: 2 * GiB, cpu: { sshd: 1.6, client: 1.4 }, stealSeconds: 0 },
          { path: 'direct', seconds: 2, bytes: 2 * GiB, cpu: { sshd: 1.8, client: 1.4 }, stealSeconds: 0.2 },
          { path: 'direct', seconds: 2, bytes: 2 * GiB, cpu: { sshd: 2.0, client: 1.4 }, stealSeconds: 0.6 },
        ],
        proxy: [
          { path: 'proxy', seconds: 4, bytes: 2 * GiB, cpu: { proxy: 1.0, proxyUser: 0.4, sshd: 1.6, client: 1.4 }, stealSeconds: 0 },
          { path: 'proxy', seconds: 4, bytes: 2 * GiB, cpu: { proxy: 1.4, proxyUser: 0.5, sshd: 1.6, client: 1.4 }, stealSeconds: 0 },
          { path: 'proxy', seconds: 4, bytes: 2 * GiB, cpu: { proxy: 1.8, proxyUser: 0.6, sshd: 1.6, client: 1.4 }, stealSeconds: 0.8 },
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
    // Host steal: each run's steal seconds over its wall time, median.
    expect(summary.stealCores!.direct).to.be.closeTo(0.1, 1e-9);
    expect(summary.stealCores!.proxy).to.equal(0);

    const md = fs.readFileSync(path.join(dir, 'results.md'), 'utf8');
    const row = md.split('\n').find((line) => line.startsWith('| download 2 GiB | aes128-gcm | 0.70 (0.25)'));
    expect(row, md).to.be.a('string');
    expect(row).to.match(/\| 1\.60 \| 2\.20 \| 1\.38 \| 1\.60 \/ 1\.10 \| 0\.10 \/ 0\.00 \|$/);
  });
  it("checks issue 5's targets: bulk and parallel throughput, the warm login, the idle daemon's RSS", function () {
    const r = results();
    const run = (path: 'direct' | 'proxy', seconds: number, extra?: Record<string, number>) => ({ path, seconds, bytes: 0, cpu: { sshd: 0, client: 0 }, stealSeconds: 0, extra });
    r.cases.push(
      // Throughput 10 / 11 = 0.909: met.
      { id: 'parallel-checksums', group: 'concurrency', title: '100 parallel sessions', cipher: 'default', bytesPerRun: GiB, direct: [{ ...run('direct', 10), bytes: GiB }], proxy: [{ ...run('proxy', 11), bytes: GiB }] },
      // 0.12 / 0.1 = 1.2: not met.
      { id: 'latency-warm', group: 'latency', title: 'ssh host true', cipher: 'default', bytesPerRun: 0, direct: [run('direct', 0.1)], proxy: [run('proxy', 0.12)] },
      // A clients case is no target: its two paths use different ciphers.
      { id: 'clients-download', group: 'clients', title: "download, OpenSSH's default client", cipher: 'default', bytesPerRun: GiB, direct: [{ ...run('direct', 10), bytes: GiB }], proxy: [{ ...run('proxy', 30), bytes: GiB }] },
      // The cold login is no target.
      { id: 'latency-cold', group: 'latency', title: 'ssh host true, cold', cipher: 'default', bytesPerRun: 0, direct: [run('direct', 0.1)], proxy: [run('proxy', 0.5)] },
      // Median RSS 99 MiB: met.
      {
        id: 'idle',
        group: 'idle',
        title: '1000 idle sessions',
        cipher: 'default',
        bytesPerRun: 0,
        direct: [run('direct', 20)],
        proxy: [run('proxy', 21, { daemonRssKb: 98 * 1024 }), run('proxy', 22, { daemonRssKb: 99 * 1024 }), run('proxy', 23, { daemonRssKb: 120 * 1024 })],
      },
    );
    writeReports(r, dir);
    const written = JSON.parse(fs.readFileSync(path.join(dir, 'results.json'), 'utf8')) as Results;
    expect(written.targets!.map((t) => [t.case, t.measured, t.met])).to.deep.equal([
      ['download 2 GiB [aes128-gcm]', '0.500×', false],
      ['100 parallel sessions', '0.909×', true],
      ['ssh host true', '1.20×', false],
      ['1000 idle sessions', '99.0 MiB', true],
    ]);
    const md = fs.readFileSync(path.join(dir, 'results.md'), 'utf8');
    expect(md).to.include("Issue 5's targets: 2 of 4 met in this run");
    expect(md).to.include('| throughput ≥ 0.9× direct | 100 parallel sessions | 0.909× | yes |');
    expect(md).to.include('| daemon RSS ≤ 100 MiB | 1000 idle sessions | 99.0 MiB | yes |');
  });

  it('says when the targets were checked on reduced sizes', function () {
    const r = results();
    r.notes.push(`${REDUCED_NOTE} (1 GiB bulk, ...): bulk 128 MiB.`);
    writeReports(r, dir);
    expect(fs.readFileSync(path.join(dir, 'results.md'), 'utf8')).to.include("on reduced sizes (see the note at the end): not the issue's figures");
  });
});
