// lib/unixname.ts: --unix-user templates and The Littlest JupyterHub's
// account names (the real accounts through the proxy: test/core.test.ts).
import { expect } from 'chai';
import { TLJH_NAMING, unixNamingProblem, unixUserFor } from '../lib/unixname.js';

describe('unixUserFor', function () {
  it('replaces every {username} in a template', function () {
    expect(unixUserFor('{username}', 'alice')).to.equal('alice');
    expect(unixUserFor('jupyter-{username}', 'alice')).to.equal('jupyter-alice');
    expect(unixUserFor('{username}-{username}', 'bo')).to.equal('bo-bo');
  });

  // Expected names from TLJH's generate_system_username('jupyter-' + name)
  // (tljh/normalize.py), run with Python's hashlib.
  it("gives TLJH's account names: jupyter-NAME, cut and hashed from 26 characters on", function () {
    expect(unixUserFor(TLJH_NAMING, 'alice')).to.equal('jupyter-alice');
    expect(unixUserFor(TLJH_NAMING, 'a'.repeat(17))).to.equal(`jupyter-${'a'.repeat(17)}`);
    expect(unixUserFor(TLJH_NAMING, 'a'.repeat(18))).to.equal(`jupyter-${'a'.repeat(18)}-3f1e4`);
    expect(unixUserFor(TLJH_NAMING, 'firstname.lastname')).to.equal('jupyter-firstname.lastname-ea781');
    expect(unixUserFor(TLJH_NAMING, 'jsp-tljh-a-rather-long-hub-name')).to.equal('jupyter-jsp-tljh-a-rather--30e67');
    expect(unixUserFor(TLJH_NAMING, 'x'.repeat(100))).to.have.length(32);
  });

  it('takes a template with {username}, or tljh', function () {
    expect(unixNamingProblem('{username}')).to.equal(undefined);
    expect(unixNamingProblem('tljh')).to.equal(undefined);
    expect(unixNamingProblem('jupyter')).to.match(/must contain \{username\}, or be tljh/);
  });
});
