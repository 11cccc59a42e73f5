// JupyterHub scope filters as the authorizer reads them.
import { expect } from 'chai';
import { dependsOnGroups, grantsOn } from '../lib/scopes.js';

describe('scopes: access:servers filters', function () {
  const alice = { user: 'alice', server: '' };
  const aliceGpu = { user: 'alice', server: 'gpu' };

  it('grants an unfiltered scope on every server', function () {
    expect(grantsOn(['access:servers'], 'access:servers', aliceGpu)).to.equal(true);
  });

  it('grants !user=NAME on all of that user\'s servers, no one else\'s', function () {
    const scopes = ['access:servers!user=alice'];
    expect(grantsOn(scopes, 'access:servers', alice)).to.equal(true);
    expect(grantsOn(scopes, 'access:servers', aliceGpu)).to.equal(true);
    expect(grantsOn(scopes, 'access:servers', { user: 'alicia', server: '' })).to.equal(false);
  });

  it('grants !server=NAME/SERVER on exactly that server (NAME/ is the default one)', function () {
    expect(grantsOn(['access:servers!server=alice/gpu'], 'access:servers', aliceGpu)).to.equal(true);
    expect(grantsOn(['access:servers!server=alice/gpu'], 'access:servers', alice)).to.equal(false);
    expect(grantsOn(['access:servers!server=alice/'], 'access:servers', alice)).to.equal(true);
    expect(grantsOn(['access:servers!server=alice/'], 'access:servers', aliceGpu)).to.equal(false);
  });

  it('grants !group=G when the target user is in G', function () {
    const scopes = ['access:servers!group=physics'];
    expect(dependsOnGroups(scopes, 'access:servers')).to.equal(true);
    expect(grantsOn(scopes, 'access:servers', alice, ['physics'])).to.equal(true);
    expect(grantsOn(scopes, 'access:servers', alice, ['chemistry'])).to.equal(false);
  });

  it('does not confuse other scopes or prefixes with access:servers', function () {
    const scopes = ['servers!user=alice', 'access:services', 'read:servers', 'access:servers-extra'];
    expect(grantsOn(scopes, 'access:servers', alice)).to.equal(false);
    expect(dependsOnGroups(scopes, 'access:servers')).to.equal(false);
  });

  it('keeps user names with separators and slashes in server filters apart', function () {
    const scopes = ['access:servers!server=a+b/gpu'];
    expect(grantsOn(scopes, 'access:servers', { user: 'a+b', server: 'gpu' })).to.equal(true);
    expect(grantsOn(scopes, 'access:servers', { user: 'a', server: 'b/gpu' })).to.equal(false);
  });
});
