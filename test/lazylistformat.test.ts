// got loads with a deferring Intl.ListFormat (lib/lazylistformat.ts). Each
// case runs in a fresh node: this process may have loaded got already.
import { execFileSync } from 'node:child_process';
import { expect } from 'chai';
import { importWithLazyListFormat } from '../lib/lazylistformat.js';

const HUB_CLIENT = new URL('../lib/hub.js', import.meta.url).href;

/** Runs `body` in a fresh node after a counting Intl.ListFormat is installed; returns what it prints, parsed. */
function inFreshNode(body: string): Record<string, unknown> {
  const script = `
    let built = 0;
    const Real = Intl.ListFormat;
    const Counting = class extends Real { constructor(...args) { super(...args); built++; } };
    Intl.ListFormat = Counting;
    const out = {};
    ${body}
    console.log(JSON.stringify(out));
  `;
  // From this directory, so that bare imports resolve in the project's node_modules.
  const stdout = execFileSync(process.execPath, ['--input-type=module', '-e', script], {
    cwd: new URL('.', import.meta.url),
    encoding: 'utf8',
  });
  return JSON.parse(stdout) as Record<string, unknown>;
}

describe('Intl.ListFormat deferred while got loads (lib/lazylistformat.ts)', function () {
  it("got's dependencies build ListFormats at load without it (else this module is no longer needed)", function () {
    const out = inFreshNode(`await import('got'); out.built = built;`);
    expect(out.built).to.be.greaterThan(0);
  });

  it('builds none while the Hub client loads got, and restores Intl.ListFormat', function () {
    const out = inFreshNode(`
      await import(${JSON.stringify(HUB_CLIENT)});
      out.built = built;
      out.restored = Intl.ListFormat === Counting;
    `);
    expect(out).to.deep.equal({ built: 0, restored: true });
  });

  it("the deferred formatters build on first use and word @sindresorhus/is's message", function () {
    const out = inFreshNode(`
      await import(${JSON.stringify(HUB_CLIENT)});
      const { default: is, assert } = await import('@sindresorhus/is');
      out.builtBeforeUse = built;
      try { assert.any([is.string, is.number], true); } catch (err) { out.message = err.message; }
      out.built = built;
    `);
    expect(out).to.deep.equal({
      builtBeforeUse: 0,
      message: 'Expected values which are `string` or `number`. Received values of type `boolean`.',
      built: 2,
    });
  });

  it('the stand-in formats, formats to parts and resolves options as the real one does', async function () {
    const list = ['ssh', 'sftp', 'scp'];
    const real = new Intl.ListFormat('en', { style: 'long', type: 'disjunction' });
    const deferred = await importWithLazyListFormat(async () => new Intl.ListFormat('en', { style: 'long', type: 'disjunction' }));
    expect(deferred).not.to.be.instanceOf(Intl.ListFormat);
    expect(deferred.format(list)).to.equal(real.format(list)).and.equal('ssh, sftp, or scp');
    expect(deferred.formatToParts(list)).to.deep.equal(real.formatToParts(list));
    expect(deferred.resolvedOptions()).to.deep.equal(real.resolvedOptions());
  });

  it('restores Intl.ListFormat when the load fails', async function () {
    const Real = Intl.ListFormat;
    let failure: unknown;
    await importWithLazyListFormat(() => Promise.reject(new Error('no such module'))).catch((err: unknown) => (failure = err));
    expect((failure as Error).message).to.equal('no such module');
    expect(Intl.ListFormat).to.equal(Real);
  });
});
