// lib/localsshd.ts check(): `sshd -t` on the generated configuration, run
// through the spawner, and the one-line problem the daemon logs at start.
import { expect } from 'chai';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LocalSshdUpstream } from '../lib/localsshd.js';

describe('internal sshd check (lib/localsshd.ts)', function () {
  this.timeout(60_000);
  let runtimeDir: string;
  beforeEach(() => {
    runtimeDir = fs.mkdtempSync(path.join(os.tmpdir(), 'jsp-localsshd-'));
  });
  afterEach(() => fs.rmSync(runtimeDir, { recursive: true, force: true }));

  function upstream(sshdPath: string, sshdOptions: string[] = []): LocalSshdUpstream {
    return new LocalSshdUpstream({ sshdPath, unixUserTemplate: '{username}', runtimeDir, sshdOptions });
  }

  it('accepts the generated configuration', async () => {
    const u = upstream('/usr/sbin/sshd');
    try {
      expect(await u.check()).to.equal(undefined);
    } finally {
      u.dispose();
    }
  });

  it('names a missing binary and what to install', async () => {
    const u = upstream('/nonexistent/sshd');
    try {
      expect(await u.check()).to.equal('sshd not found at /nonexistent/sshd (install openssh-server)');
    } finally {
      u.dispose();
    }
  });

  it("quotes sshd's own last line when it rejects the configuration", async () => {
    const u = upstream('/usr/sbin/sshd', ['NoSuchOption=yes']);
    try {
      expect(await u.check()).to.match(/^sshd rejects its configuration: .*NoSuchOption/);
    } finally {
      u.dispose();
    }
  });
});
