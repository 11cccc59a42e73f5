// `npm run demo` without its install step (CI's `npm test` installs): the demo
// starts, the user it prints logs in through the proxy with the token it
// prints, and Ctrl-C removes everything it made. Other test files run hubs at
// the same time, so the demo's processes are told apart by its own process
// tree and an environment marker, never by name.
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { markedPids } from './helpers/hub.js';
import { REPO_ROOT } from './helpers/proxy.js';
import { askpassEnv, keyLoginOptions, run, ssh, sshOptions } from './helpers/ssh.js';
import { removeUnixUser } from './helpers/unixuser.js';
import { waitFor } from './helpers/wait.js';

const DEMO = path.join(REPO_ROOT, 'dist', 'demo', 'demo.js');
/** Inherited by everything the demo starts except what drops its environment (servers, sessions). */
const MARKER_VAR = 'JSP_DEMO_TEST_ID';
const READY_TIMEOUT_MS = 120_000;
const EXIT_TIMEOUT_MS = 60_000;

interface Proc {
  pid: number;
  /** pid and start time: the same process, not a later one that reuses the pid. */
  id: string;
  ppid: number;
  args: string;
}

/** Every live (non-zombie) process. */
async function processes(): Promise<Proc[]> {
  const res = await run('ps', ['-e', '-o', 'pid=,ppid=,stat=,lstart=,args=']);
  if (res.code !== 0) throw new Error(`ps failed: ${res.stderr}`);
  const procs: Proc[] = [];
  for (const line of res.stdout.toString().split('\n')) {
    const [pid, ppid, stat, ...rest] = line.trim().split(/\s+/);
    if (!pid || !stat || stat.startsWith('Z')) continue;
    // lstart is five words: "Sun Nov 23 12:00:00 2025".
    procs.push({ pid: Number(pid), id: `${pid} ${rest.slice(0, 5).join(' ')}`, ppid: Number(ppid), args: rest.slice(5).join(' ') });
  }
  return procs;
}

/** `root` and all its descendants. */
function tree(all: Proc[], root: number): Proc[] {
  const found = all.filter((p) => p.pid === root);
  for (let i = 0; i < found.length; i++) found.push(...all.filter((p) => p.ppid === found[i]!.pid));
  return found;
}

async function userExists(name: string): Promise<boolean> {
  const res = await run('getent', ['passwd', name]);
  return res.code === 0;
}

class Demo {
  readonly marker = crypto.randomBytes(8).toString('hex');
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  private closed = false;
  /** Processes seen in the demo's tree, for the leftover check and the last-resort kill. */
  seen: Proc[] = [];

  constructor(args: string[], env: NodeJS.ProcessEnv = {}) {
    this.child = spawn(process.execPath, [DEMO, ...args], {
      env: { ...process.env, ...env, [MARKER_VAR]: this.marker },
      // Its own process group, like a terminal's foreground job, so SIGINT to
      // the group is what Ctrl-C sends.
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child.stdout!.on('data', (c: Buffer) => (this.stdout += c.toString()));
    this.child.stderr!.on('data', (c: Buffer) => (this.stderr += c.toString()));
    this.child.once('close', () => (this.closed = true));
  }

  /** Waits for `re` in stdout; fails at once if the demo exits first. */
  waitForLine(re: RegExp, what: string): Promise<RegExpExecArray> {
    return waitFor(
      () => {
        const m = re.exec(this.stdout);
        if (m) return m;
        if (this.closed) throw new Error(`the demo exited first:\n${this.stdout}${this.stderr}`);
        return undefined;
      },
      { timeoutMs: READY_TIMEOUT_MS, intervalMs: 100, what },
    );
  }

  /** Waits for the exit and the end of its output. */
  async exit(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    try {
      await waitFor(() => this.closed, { timeoutMs: EXIT_TIMEOUT_MS, what: 'the demo to exit' });
    } catch (err) {
      throw new Error(`${(err as Error).message}; its output:\n${this.stdout}${this.stderr}`);
    }
    return { code: this.child.exitCode, signal: this.child.signalCode };
  }

  async snapshot(): Promise<Proc[]> {
    this.seen = tree(await processes(), this.child.pid!);
    return this.seen;
  }

  /** The demo's processes that are still alive: seen in its tree, or carrying its marker. */
  async leftovers(): Promise<Proc[]> {
    const seen = new Set(this.seen.map((p) => p.id));
    const marked = new Set(markedPids(this.marker, MARKER_VAR));
    return (await processes()).filter((p) => seen.has(p.id) || marked.has(p.pid));
  }

  /** Whatever the test left: Ctrl-C, and if the demo does not finish, kill what is left. */
  async dispose(user?: string, dirs: string[] = []): Promise<void> {
    if (!this.closed) {
      process.kill(-this.child.pid!, 'SIGINT');
      await this.exit().catch(() => undefined);
    }
    for (const p of await this.leftovers()) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    if (user !== undefined) await removeUnixUser(user);
    for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe('npm run demo', function () {
  this.timeout(READY_TIMEOUT_MS + 2 * EXIT_TIMEOUT_MS);

  it('prints a login that works through the proxy, and Ctrl-C removes everything it made', async () => {
    const demo = new Demo(['--port', '0']);
    let user: string | undefined;
    let hubDir: string | undefined;
    // The client's side: a key and a HOME for ssh-copy-id.
    const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'jsp-demo-client-'));
    try {
      const ready = await demo.waitForLine(/^DEMO_READY port=(\d+) user=(\S+) token=(\S+) hub=(\S+) hubdir=(\S+)$/m, 'DEMO_READY');
      const [, port, , token, hubUrl] = ready;
      [user, hubDir] = [ready[2]!, ready[5]!];
      // The human-readable lines say the same.
      expect(demo.stdout).to.include(`ssh -p ${port} ${user}@127.0.0.1\n`);
      expect(demo.stdout).to.include(`    ${token}\n`);
      expect(demo.stdout).to.include(`sftp -P ${port} ${user}@127.0.0.1\n`);
      expect(demo.stdout).to.include('Ctrl-C to stop');
      expect(demo.stdout).to.include(hubUrl);
      // The proxy's log is on the terminal, set apart from the demo's own lines.
      expect(demo.stdout).to.match(/^ {2}proxy \| .* info: listening on 127\.0\.0\.1:\d+/m);
      const passwd = await run('getent', ['passwd', user]);
      expect(passwd.code, 'the demo user exists').to.equal(0);
      const home = passwd.stdout.toString().split(':')[5]!;
      expect(fs.existsSync(hubDir), 'the Hub dir exists').to.equal(true);

      const login = await ssh(Number(port), user, token!, ['id -un']);
      expect(login.code, login.stderr).to.equal(0);
      expect(login.stdout.toString().trim()).to.equal(user);

      // The key login the demo offers: ssh-copy-id with the token, then the key alone.
      expect(demo.stdout).to.include(`ssh-copy-id -p ${port} ${user}@127.0.0.1\n`);
      const keyFile = path.join(scratch, 'id_ed25519');
      await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', keyFile]);
      fs.mkdirSync(path.join(scratch, '.ssh'), { mode: 0o700 });
      const options = sshOptions(Number(port)).filter((o) => o !== '-p' && o !== port);
      const copied = await run('ssh-copy-id', ['-i', `${keyFile}.pub`, '-p', port!, ...options, `${user}@127.0.0.1`], { env: askpassEnv(token!, { HOME: scratch }) });
      expect(copied.code, copied.stderr).to.equal(0);
      const keyLogin = await run('ssh', [...keyLoginOptions(Number(port), keyFile), `${user}@127.0.0.1`, 'id -un']);
      expect(keyLogin.code, keyLogin.stderr).to.equal(0);
      expect(keyLogin.stdout.toString().trim()).to.equal(user);

      // Everything the demo runs now, so the check after Ctrl-C can see what survived.
      const running = (await demo.snapshot()).map((p) => p.args).join('\n');
      expect(running).to.match(/jupyterhub -f \S+jupyterhub_config\.py/);
      expect(running).to.match(/configurable-http-proxy/);
      expect(running).to.match(/jupyterhub-singleuser/);
      expect(running).to.match(/jupyter_ssh_proxy .*-p 0/);

      // Ctrl-C while a session is open, as in a real demo.
      const sessions = demo.stdout.split('session started').length;
      const session = ssh(Number(port), user, token!, ['sleep 600'], [], { timeoutMs: EXIT_TIMEOUT_MS });
      await waitFor(() => demo.stdout.split('session started').length === sessions + 1, { timeoutMs: 30_000, what: 'the last session' });
      process.kill(-demo.child.pid!, 'SIGINT');
      expect(await demo.exit()).to.deep.equal({ code: 0, signal: null });
      const ended = await session;
      expect(ended.code, 'the open session ended').to.equal(255);
      expect(ended.stderr, 'with the daemon\'s shutdown message').to.include('Server shutting down');
      expect(await userExists(user), 'the demo user is gone').to.equal(false);
      expect(fs.existsSync(home), 'its home is gone').to.equal(false);
      expect(fs.existsSync(hubDir), 'the Hub dir is gone').to.equal(false);
      expect((await demo.leftovers()).map((p) => `${p.pid} ${p.args}`)).to.deep.equal([]);
      expect(demo.stderr).to.equal('');
    } finally {
      await demo.dispose(user, hubDir === undefined ? [scratch] : [hubDir, scratch]);
    }
  });

  it('says in one line that the port is taken, and which to try', async () => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as net.AddressInfo).port;
    const demo = new Demo(['--port', String(port)]);
    try {
      expect(await demo.exit()).to.deep.equal({ code: 1, signal: null });
      expect(demo.stderr).to.equal(`demo: port ${port} is already in use; pick another one: npm run demo -- --port ${port + 1}\n`);
      expect(demo.stdout, 'nothing was started').to.equal('');
      expect(await demo.leftovers()).to.deep.equal([]);
    } finally {
      blocker.close();
      await demo.dispose();
    }
  });

  it('removes what it made when the start fails, with a one-line error', async () => {
    // The Hub fails after the unix user was made.
    const demo = new Demo(['--port', '0'], { JUPYTERHUB_BIN: '/bin/false' });
    let user: string | undefined;
    try {
      user = (await demo.waitForLine(/^demo: created unix user (\S+)$/m, 'the unix user'))[1]!;
      expect(await demo.exit()).to.deep.equal({ code: 1, signal: null });
      expect(demo.stderr).to.match(/^demo: jupyterhub exited during startup \(code 1\)\n$/);
      expect(await userExists(user), 'the demo user is gone').to.equal(false);
      expect(demo.stdout).to.not.include('DEMO_READY');
      expect((await demo.leftovers()).map((p) => `${p.pid} ${p.args}`)).to.deep.equal([]);
    } finally {
      await demo.dispose(user);
    }
  });
});
