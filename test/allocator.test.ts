// The daemon's allocator settings stay the daemon's: what its children get.
// (That the daemon really runs on jemalloc and its sshd does not is checked
// against the real thing in managed.test.ts.)
import { expect } from 'chai';
import { activeAllocator, childEnv } from '../lib/allocator.js';

describe('allocator settings (lib/allocator.ts)', function () {
  it('removes the allocator variables and the jemalloc preload from a child environment', function () {
    const env = childEnv({
      PATH: '/usr/bin',
      LD_PRELOAD: 'libjemalloc.so.2',
      MALLOC_CONF: 'narenas:1',
      MALLOC_ARENA_MAX: '2',
    });
    expect(env).to.deep.equal({ PATH: '/usr/bin' });
  });

  it("keeps the operator's own preloads, whatever the separator", function () {
    expect(childEnv({ LD_PRELOAD: '/usr/lib/x86_64-linux-gnu/libjemalloc.so.2:libfoo.so' }).LD_PRELOAD).to.equal('libfoo.so');
    expect(childEnv({ LD_PRELOAD: 'libfoo.so libjemalloc.so.2 /opt/libbar.so' }).LD_PRELOAD).to.equal('libfoo.so:/opt/libbar.so');
    expect(childEnv({ LD_PRELOAD: 'libfoo.so' }).LD_PRELOAD).to.equal('libfoo.so');
  });

  it('leaves the environment it is given untouched', function () {
    const env = { LD_PRELOAD: 'libjemalloc.so.2', MALLOC_CONF: 'narenas:1' };
    childEnv(env);
    expect(env).to.deep.equal({ LD_PRELOAD: 'libjemalloc.so.2', MALLOC_CONF: 'narenas:1' });
  });

  it('names the malloc the process runs with, from its memory map', function () {
    const jemalloc = '7f00-7f01 r-xp 00000000 08:01 42 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n';
    expect(activeAllocator(jemalloc, ['node', 'jemalloc_bg_thd', 'node'])).to.equal('jemalloc with background purging');
    expect(activeAllocator(jemalloc, ['node', 'node'])).to.equal('jemalloc WITHOUT background purging (add background_thread:true to MALLOC_CONF)');
    expect(activeAllocator('7f00-7f01 r-xp 00000000 08:01 42 /usr/lib/x86_64-linux-gnu/libc.so.6\n', [])).to.equal('glibc malloc');
    // This test process was started without the preload.
    expect(activeAllocator()).to.equal('glibc malloc');
  });
});
