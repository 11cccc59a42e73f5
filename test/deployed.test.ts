import { expect } from 'chai';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DAEMON_ENV, DAEMON_NODE_ARGS } from './helpers/deployed.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const read = (file: string) => fs.readFileSync(path.join(ROOT, file), 'utf8');

// The bench and the tests measure the daemon as DAEMON_NODE_ARGS/DAEMON_ENV
// say; an operator gets what these launchers say. They must not drift apart.
describe('deployed launchers: the node flags and malloc settings the bench measures', function () {
  it('deploy/jupyter-ssh-proxy.service', function () {
    const unit = read('deploy/jupyter-ssh-proxy.service');
    expect(unit).to.include(`ExecStart=/usr/bin/node ${DAEMON_NODE_ARGS.join(' ')} /opt/jupyter-ssh-proxy/bin/jupyter_ssh_proxy`);
    expect(unit).to.include(`Environment=${Object.entries(DAEMON_ENV).map(([k, v]) => `${k}=${v}`).join(' ')}\n`);
  });

  it('deploy/jupyter-ssh-proxy.service sets no sandboxing, which would reach the users\' sessions', function () {
    // Every process of the unit gets these, the sessions sshd -i starts too
    // (the unit's comment says what each broke or would break for them).
    const sandboxing = /^(Protect\w+|Private\w+|Restrict\w+|NoNewPrivileges|LockPersonality|SystemCallFilter|SystemCallArchitectures|MemoryDenyWriteExecute|CapabilityBoundingSet|DevicePolicy|DeviceAllow|ReadOnlyPaths|InaccessiblePaths|ReadWritePaths|DynamicUser|RemoveIPC)=/;
    const set = read('deploy/jupyter-ssh-proxy.service').split('\n').filter((line) => sandboxing.test(line));
    expect(set).to.deep.equal([]);
  });

  it('scripts/start.sh (npm start)', function () {
    const script = read('scripts/start.sh');
    expect(script).to.include(`exec node ${DAEMON_NODE_ARGS.join(' ')} bin/jupyter_ssh_proxy`);
    expect(script).to.include(`export ${Object.entries(DAEMON_ENV).map(([k, v]) => `${k}=${v}`).join(' ')}\n`);
  });

  it("the README's managed-service entry", function () {
    const readme = read('README.md');
    expect(readme).to.include(`"command": ["/usr/bin/node", ${DAEMON_NODE_ARGS.map((a) => JSON.stringify(a)).join(', ')},`);
    expect(readme).to.include(`"environment": ${JSON.stringify(DAEMON_ENV).replace(/":/g, '": ').replace(/,"/g, ', "')}`);
  });
});
