// The server extension of --upstream websocket (server-extension/), installed
// for a test Hub as an image would install it: pip-installed into a folder of
// its own, and enabled by the configuration pip puts next to it.
import { expect } from 'chai';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DEBIAN_13, type HubDistribution } from './hub.js';
import { REPO_ROOT } from './proxy.js';
import { run } from './ssh.js';

const EXTENSION_SOURCE = path.join(REPO_ROOT, 'server-extension');

/**
 * A single-user server the extension runs in: its application class, what
 * PYTHONPATH needs for it, and the Hub's distribution (the machine's own
 * unless given).
 */
export interface SingleUserServer {
  name: string;
  app: string;
  pythonPath: string[];
  distribution?: HubDistribution;
}

/** The classic notebook server, what Debian 12's jupyterhub-singleuser runs. */
export const CLASSIC_NOTEBOOK_SERVER: SingleUserServer = { name: 'the classic notebook server', app: 'notebook.notebookapp.NotebookApp', pythonPath: [] };

/** jupyter_server 2 with JupyterHub 5, Python 3.13 and OpenSSH 10: Debian 13's, in its root (DEBIAN_13). */
export const JUPYTER_SERVER_2: SingleUserServer = {
  name: `jupyter_server 2 (${DEBIAN_13.name})`,
  app: 'jupyter_server.serverapp.ServerApp',
  pythonPath: [],
  distribution: DEBIAN_13,
};

/**
 * A command for a session in the user's server: prints what the session's sshd (the shell's parent) holds as its input
 * and output, on two lines: the socket it holds twice (`socket:[INODE]`, or `none`: two pipes), and `tcp` or
 * `not-tcp`. The raw stream gives sshd the connection's TCP socket itself.
 */
export const SESSION_SOCKET =
  'twice=$(ls -l /proc/$PPID/fd/ | sed -n "s/.* -> \\(socket:\\)/\\1/p" | sort | uniq -d); echo "${twice:-none}"; inode=${twice#socket:[}; inode=${inode%]}; ' +
  'if [ -n "$twice" ] && awk \'{ print $10 }\' /proc/net/tcp /proc/net/tcp6 | grep -qx "$inode"; then echo tcp; else echo not-tcp; fi';

/** pip-installs the extension into `site` (made), from a copy of the source, as server-extension/README.md says. */
export async function installServerExtension(site: string): Promise<void> {
  // pip builds in the source folder: a copy keeps the checkout clean.
  const source = `${site}-source`;
  fs.cpSync(EXTENSION_SOURCE, source, { recursive: true });
  try {
    const pip = await run('/usr/bin/python3', ['-m', 'pip', 'install', '-q', '--no-build-isolation', '--no-deps', '--no-index', '--target', site, source]);
    if (pip.code !== 0) throw new Error(`pip install of the server extension failed: ${pip.stderr}`);
  } finally {
    fs.rmSync(source, { recursive: true, force: true });
  }
}

/**
 * The `jupyterhub_config.py` lines that give every server `server` the
 * extension installed in `site`, enabled by the configuration pip put next
 * to it, but those of users named jsp-n-* (for tests of servers without it).
 */
export function serverExtensionConfig(site: string, server: SingleUserServer): string {
  return [
    `c.Spawner.environment['JUPYTERHUB_SINGLEUSER_APP'] = ${JSON.stringify(server.app)}`,
    `c.Spawner.environment['PYTHONPATH'] = ${JSON.stringify([site, ...server.pythonPath].join(':'))}`,
    `c.Spawner.environment['JUPYTER_CONFIG_PATH'] = ${JSON.stringify(path.join(site, 'etc', 'jupyter'))}`,
    'def _without_extension(spawner):',
    "    if spawner.user.name.startswith('jsp-n-'):",
    "        spawner.environment = {k: v for k, v in spawner.environment.items() if k != 'JUPYTER_CONFIG_PATH'}",
    'c.Spawner.pre_spawn_hook = _without_extension',
  ].join('\n');
}

/**
 * Registers hooks that install the extension before the tests (register it
 * before useEnv: the Hub's servers load it at their start) and remove it
 * after; returns serverExtensionConfig for it.
 */
export function useServerExtension(server: SingleUserServer): string {
  const dir = path.join(os.tmpdir(), `jsp-ext-${process.pid}-${crypto.randomBytes(3).toString('hex')}`);
  const site = path.join(dir, 'site');
  before(async function () {
    this.timeout(120_000);
    for (const folder of server.pythonPath) expect(fs.existsSync(folder), `run scripts/install-deps.sh --test: ${folder} is missing`).to.equal(true);
    fs.mkdirSync(dir, { mode: 0o755 });
    await installServerExtension(site);
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return serverExtensionConfig(site, server);
}
