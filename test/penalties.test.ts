// Per-source penalties (the module), with a fake clock.
import { expect } from 'chai';
import { DEFAULT_PENALTIES, netblockOf, parsePenalties, SourcePenalties } from '../lib/penalties.js';

function make(spec = DEFAULT_PENALTIES, netblock = '32:128', exempt = '', maxSources = 65536) {
  let now = 1_000_000;
  const penalties = new SourcePenalties(parsePenalties(spec, netblock, exempt, maxSources), () => now);
  return { penalties, advance: (seconds: number) => (now += seconds * 1000) };
}

describe('per-source penalties', function () {
  it('refuses a source once its penalty reaches min, until it has run out', function () {
    const { penalties, advance } = make('authfail:5 max:600 min:15');
    expect(penalties.penalize('192.0.2.1', 'authfail')).to.equal(false);
    expect(penalties.penalize('192.0.2.1', 'authfail')).to.equal(false);
    expect(penalties.blockedFor('192.0.2.1')).to.equal(0);
    expect(penalties.penalize('192.0.2.1', 'authfail'), 'third failure: 15 s').to.equal(true);
    expect(penalties.blockedFor('192.0.2.1')).to.equal(15);
    advance(10);
    expect(penalties.blockedFor('192.0.2.1'), 'decays').to.equal(5);
    advance(5);
    expect(penalties.blockedFor('192.0.2.1')).to.equal(0);
    expect(penalties.size, 'expired entries go').to.equal(0);
  });

  it('caps a penalty at max', function () {
    const { penalties } = make('malformed:90 max:120 min:15');
    for (let i = 0; i < 10; i++) penalties.penalize('192.0.2.1', 'malformed');
    expect(penalties.blockedFor('192.0.2.1')).to.equal(120);
  });

  it('charges each event kind its own price', function () {
    const { penalties } = make('authfail:5 noauth:1 grace-exceeded:10 malformed:90 max:600 min:15');
    penalties.penalize('192.0.2.1', 'noauth');
    penalties.penalize('192.0.2.2', 'grace-exceeded');
    penalties.penalize('192.0.2.2', 'grace-exceeded');
    penalties.penalize('192.0.2.3', 'malformed');
    expect(penalties.blockedFor('192.0.2.1')).to.equal(0);
    expect(penalties.blockedFor('192.0.2.2')).to.equal(20);
    expect(penalties.blockedFor('192.0.2.3')).to.equal(90);
  });

  it('groups sources by netblock (IPv4, IPv6, IPv4-mapped)', function () {
    expect(netblockOf('192.0.2.77', 24, 64)).to.equal(netblockOf('192.0.2.1', 24, 64));
    expect(netblockOf('192.0.2.77', 32, 64)).to.not.equal(netblockOf('192.0.2.1', 32, 64));
    expect(netblockOf('::ffff:192.0.2.1', 32, 128)).to.equal(netblockOf('192.0.2.1', 32, 128));
    expect(netblockOf('2001:db8::1', 32, 64)).to.equal(netblockOf('2001:db8:0:0:ffff::9', 32, 64));
    expect(netblockOf('2001:db8::1', 32, 128)).to.not.equal(netblockOf('2001:db8::2', 32, 128));
    const { penalties } = make('malformed:90 max:600 min:15', '24:64');
    penalties.penalize('198.51.100.7', 'malformed');
    expect(penalties.blockedFor('198.51.100.200')).to.equal(90);
    expect(penalties.blockedFor('198.51.101.1')).to.equal(0);
  });

  it('never penalizes the exempt list', function () {
    const { penalties } = make('malformed:90 max:600 min:15', '32:128', '10.0.0.0/8, 2001:db8::/32, 192.0.2.9');
    for (const address of ['10.1.2.3', '2001:db8::7', '192.0.2.9', '::ffff:10.9.9.9']) {
      penalties.penalize(address, 'malformed');
      expect(penalties.blockedFor(address), address).to.equal(0);
    }
    penalties.penalize('192.0.2.10', 'malformed');
    expect(penalties.blockedFor('192.0.2.10')).to.equal(90);
  });

  it('keeps the table bounded', function () {
    const { penalties } = make('malformed:90 max:600 min:15', '32:128', '', 100);
    for (let i = 0; i < 1000; i++) penalties.penalize(`10.0.${i >> 8}.${i & 255}`, 'malformed');
    expect(penalties.size).to.equal(100);
    expect(penalties.blockedFor('10.0.3.231'), 'the most recent stays').to.equal(90);
  });

  it('refuses malformed specifications with a reason', function () {
    expect(() => parsePenalties('authfail:lots', '32:128', '', 1)).to.throw(/not NAME:SECONDS/);
    expect(() => parsePenalties('crash:5', '32:128', '', 1)).to.throw(/unknown penalty "crash"/);
    expect(() => parsePenalties('', '33:128', '', 1)).to.throw(/1-32/);
    expect(() => parsePenalties('', '32:128', 'example.org', 1)).to.throw(/not an address or CIDR/);
    expect(parsePenalties('authfail:5s max:60s min:10s', '24', '', 1)).to.deep.include({ max: 60, min: 10, netblock4: 24, netblock6: 128 });
  });
});
