// The packet relay addon (native/packetrelay.c, lib/packetrelay.ts): its
// ciphers against ssh2's own binding, the relay loop on crafted chunks, and
// the loop under real traffic (ssh through the daemon into sshd, per client
// cipher, with the metric that shows which path the packets took).
import { expect } from 'chai';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { FORWARDED_UNCHANGED } from '../lib/relay.js';
import { packetRelay, ResultSlot, Stop, type NativeCipher, type NativeDecipher } from '../lib/packetrelay.js';
import { relayLoopAvailable, ssh2BindingCiphers } from '../lib/ssh2internals.js';
import { MSG } from '../lib/messages.js';
import { useEnv } from './helpers/fixture.js';
import { metricsOrigin, scrapeMetrics } from './helpers/metrics.js';
import { waitFor } from './helpers/wait.js';

const TAG = 16;
// RFC 4254 §5.2 (the relay forwards these unchanged).
const MSG_CHANNEL_WINDOW_ADJUST = 93;
const MSG_CHANNEL_DATA = 94;

interface CipherSpec {
  name: string;
  block: number;
  /** The tag or MAC after each packet. */
  mac: number;
  /** Bytes of the length field that count towards the block multiple (4 where the cipher covers it). */
  lengthInBlocks: number;
  keyBytes: number;
  ivBytes: number;
  /** A cipher and a decipher of the addon, and ssh2's own cipher, on the same keys. */
  make(keys: Keys): { cipher: NativeCipher; decipher: NativeDecipher; ssh2Cipher: unknown };
  /** Encrypts `packet` (length, body, room for the tag) in place. */
  encrypt(cipher: unknown, packet: Buffer, seqno: number): void;
  /** Decrypts a whole packet on the wire (a copy) as ssh2 calls the decipher; returns its body. */
  open(decipher: NativeDecipher, wire: Buffer, seqno: number): Buffer;
}

interface Keys {
  key: Buffer;
  iv: Buffer;
  macKey: Buffer;
}

type Callable = Record<string, (...args: unknown[]) => unknown>;

const CPU_FLAGS = new Set(fs.readFileSync('/proc/cpuinfo', 'utf8').match(/^flags\s*:(.*)$/m)?.[1]?.trim().split(/\s+/) ?? []);
/** native/aesgcm_avx2.c runs here: VAES and VPCLMULQDQ, on AVX2. */
const VAES_AVX2 = ['avx2', 'aes', 'pclmulqdq', 'vaes', 'vpclmulqdq'].every((flag) => CPU_FLAGS.has(flag));
/** intel-ipsec-mb's AVX-512 code runs here, if the build found the library. */
const VAES_AVX512 = ['avx512f', 'avx512dq', 'avx512cd', 'avx512bw', 'avx512vl', 'vaes', 'vpclmulqdq'].every((flag) => CPU_FLAGS.has(flag));
/** Every AES-GCM code this CPU runs, by useAesGcm()'s names ('best' is one of them, or intel-ipsec-mb's). */
const AES_GCM_CODES = ['best', 'openssl', ...(VAES_AVX2 ? ['vaes-avx2' as const] : [])] as const;

function gcm(name: 'aes-128-gcm' | 'aes-256-gcm', keyBytes: number): CipherSpec {
  return {
    name,
    block: 16,
    mac: TAG,
    lengthInBlocks: 0,
    keyBytes,
    ivBytes: 12,
    make: ({ key, iv }) => ({
      cipher: new packetRelay.AESGCMCipher(name, key, iv),
      decipher: new packetRelay.AESGCMDecipher(name, key, iv),
      ssh2Cipher: new ssh2BindingCiphers.AESGCMCipher!(name, key, iv),
    }),
    encrypt: (cipher, packet) => (cipher as Callable).encrypt!(packet),
    open: (decipher, wire) => {
      const length = wire.readUInt32BE(0);
      const body = Buffer.from(wire.subarray(4, 4 + length));
      (decipher as Callable).decrypt!(body, length, wire.subarray(4 + length, 4 + length + TAG));
      return body;
    },
  };
}

const chacha: CipherSpec = {
  name: 'chacha20-poly1305',
  block: 8,
  mac: TAG,
  lengthInBlocks: 0,
  keyBytes: 64,
  ivBytes: 0,
  make: ({ key }) => ({
    cipher: new packetRelay.ChaChaPolyCipher(key),
    decipher: new packetRelay.ChaChaPolyDecipher(key),
    ssh2Cipher: new ssh2BindingCiphers.ChaChaPolyCipher!(key),
  }),
  encrypt: (cipher, packet, seqno) => (cipher as Callable).encrypt!(packet, seqno),
  open: (decipher, wire, seqno) => {
    const length = (decipher as Callable).decryptLen!(wire.subarray(0, 4), seqno) as number;
    const body = Buffer.from(wire.subarray(4, 4 + length));
    (decipher as Callable).decrypt!(body, wire.subarray(4 + length, 4 + length + TAG), seqno);
    return body;
  },
};

/** AES-CTR with HMAC, as ssh2's GenericCipher and GenericDecipher take it (OpenSSL names). */
function ctr(name: 'aes-128-ctr' | 'aes-192-ctr' | 'aes-256-ctr', keyBytes: number, digest: 'sha1' | 'sha256' | 'sha512', mac: number, etm: boolean): CipherSpec {
  return {
    name: `${name} with HMAC-${digest.toUpperCase()}${etm ? ', encrypt-then-MAC' : ''}`,
    block: 16,
    mac,
    lengthInBlocks: etm ? 0 : 4,
    keyBytes,
    ivBytes: 16,
    make: ({ key, iv, macKey }) => ({
      cipher: new packetRelay.CtrHmacCipher(name, key, iv, digest, macKey, etm),
      decipher: new packetRelay.CtrHmacDecipher(name, key, iv, digest, macKey, etm, mac),
      ssh2Cipher: new ssh2BindingCiphers.GenericCipher!(name, key, iv, digest, macKey, etm),
    }),
    encrypt: (cipher, packet, seqno) => (cipher as Callable).encrypt!(packet, seqno),
    open: (decipher, wire, seqno) => {
      // ssh2's GenericDecipherBinding: the length apart (decrypted first without encrypt-then-MAC), then the rest.
      const first = Buffer.from(wire.subarray(0, 4));
      if (!etm) (decipher as Callable).decryptBlock!(first);
      const length = first.readUInt32BE(0);
      const body = Buffer.from(wire.subarray(4, 4 + length));
      (decipher as Callable).decrypt!(body, seqno, first, wire.subarray(4 + length, 4 + length + mac));
      return body;
    },
  };
}

const CTR_SPECS = [ctr('aes-128-ctr', 16, 'sha256', 32, true), ctr('aes-256-ctr', 32, 'sha512', 64, false), ctr('aes-192-ctr', 24, 'sha1', 20, true)];
const SPECS = [gcm('aes-128-gcm', 16), gcm('aes-256-gcm', 32), chacha, ...CTR_SPECS];

function keysFor(spec: CipherSpec): Keys {
  return { key: crypto.randomBytes(spec.keyBytes), iv: crypto.randomBytes(spec.ivBytes), macKey: crypto.randomBytes(spec.mac) };
}

/** An unencrypted packet for `spec` (RFC 4253 §6 layout) carrying `payload`, room for the tag or MAC at the end. */
function plainPacket(spec: CipherSpec, payload: Buffer): Buffer {
  let padding = spec.block - ((spec.lengthInBlocks + 1 + payload.length) % spec.block);
  if (padding < 4) padding += spec.block;
  const body = 1 + payload.length + padding;
  const packet = Buffer.alloc(4 + body + spec.mac);
  packet.writeUInt32BE(body, 0);
  packet[4] = padding;
  payload.copy(packet, 5);
  crypto.randomFillSync(packet, 5 + payload.length, padding);
  return packet;
}

function channelData(bytes: number): Buffer {
  const payload = Buffer.alloc(9 + bytes);
  payload[0] = MSG_CHANNEL_DATA;
  payload.writeUInt32BE(7, 1);
  payload.writeUInt32BE(bytes, 5);
  crypto.randomFillSync(payload, 9);
  return payload;
}

describe('packet relay addon (native/packetrelay.c)', function () {
  it('is in place of ssh2\'s ciphers in this process', function () {
    expect(relayLoopAvailable, 'the addon\'s ciphers installed into ssh2 before its crypto loaded').to.equal(true);
  });

  it('runs AES-GCM on intel-ipsec-mb where the build has it and the CPU has AVX-512 VAES, else on VAES-AVX2 where the CPU has it, else on OpenSSL', function () {
    const avx2 = 'VAES-AVX2 (native/aesgcm_avx2.c)';
    const expected =
      VAES_AVX512 && fs.existsSync('/usr/include/intel-ipsec-mb.h') ? /^intel-ipsec-mb \d+\.\d+\.\d+ \(VAES\)$/ : VAES_AVX2 ? /^VAES-AVX2 / : /^OpenSSL$/;
    expect(packetRelay.aesGcmImplementation()).to.match(expected);
    expect(packetRelay.useAesGcm('openssl')).to.equal('OpenSSL');
    if (VAES_AVX2) expect(packetRelay.useAesGcm('vaes-avx2')).to.equal(avx2);
    else expect(() => packetRelay.useAesGcm('vaes-avx2')).to.throw('no VAES');
    expect(packetRelay.useAesGcm('best')).to.match(expected);
    expect(() => packetRelay.useAesGcm('fast' as 'best')).to.throw('useAesGcm');
  });

  it('AES-GCM: ciphers of each implementation talk to each other, across the IV counter\'s carry and wrap', function () {
    for (const name of ['aes-128-gcm', 'aes-256-gcm'] as const) {
      const spec = gcm(name, name === 'aes-128-gcm' ? 16 : 32);
      // The fixed field, then the invocation counter two packets before carrying out of its low 32 bits, and at its wrap.
      for (const counter of ['00000000fffffffe', 'fffffffffffffffe']) {
        const keys = { key: crypto.randomBytes(spec.keyBytes), iv: Buffer.from(`a1b2c3d4${counter}`, 'hex'), macKey: Buffer.alloc(0) };
        const made = AES_GCM_CODES.map((code) => {
          packetRelay.useAesGcm(code);
          return { code, ...spec.make(keys) };
        });
        packetRelay.useAesGcm('best');
        const ssh2Cipher = made[0]!.ssh2Cipher;
        for (let i = 0; i < 4; i++) {
          // Packets of 7 blocks, and of 20, 39 and 59 steps of VAES-AVX2's bulk loop (16 blocks) with 0, 8 and 1 blocks after them.
          const payload = crypto.randomBytes(100 + i * 5000);
          const theirs = plainPacket(spec, payload);
          const packets = made.map(() => Buffer.from(theirs));
          spec.encrypt(ssh2Cipher, theirs, i);
          made.forEach(({ code, cipher }, k) => {
            spec.encrypt(cipher, packets[k]!, i);
            expect(packets[k]!.equals(theirs), `${name} ${counter} packet ${i}: ${code} as ssh2`).to.equal(true);
          });
          // Each decipher opens what the next implementation sent.
          made.forEach(({ code, decipher }, k) => {
            const body = spec.open(decipher, packets[(k + 1) % packets.length]!, i);
            expect(body.subarray(1, 1 + payload.length).equals(payload), `${name} ${counter} packet ${i}: ${code} opens`).to.equal(true);
          });
        }
      }
    }
  });

  it('AES-GCM: each implementation decrypts and authenticates as Node\'s OpenSSL does, at any length (a last partial block too)', function () {
    for (const name of ['aes-128-gcm', 'aes-256-gcm'] as const) {
      const key = crypto.randomBytes(name === 'aes-128-gcm' ? 16 : 32);
      const iv = crypto.randomBytes(12);
      for (const code of AES_GCM_CODES) {
        packetRelay.useAesGcm(code);
        const decipher = new packetRelay.AESGCMDecipher(name, key, iv);
        packetRelay.useAesGcm('best');
        // Lengths from none to past several strides; each packet the next IV, as the decipher counts.
        const lengths = [0, 1, 15, 16, 17, 127, 128, 129, 143, 255, 256, 1000, 4099, 32768 + 7];
        lengths.forEach((length, n) => {
          const packetIv = Buffer.from(iv);
          packetIv.writeBigUInt64BE(iv.readBigUInt64BE(4) + BigInt(n), 4);
          const lengthField = Buffer.alloc(4);
          lengthField.writeUInt32BE(length);
          const plain = crypto.randomBytes(length);
          const sealer = crypto.createCipheriv(name, key, packetIv).setAAD(lengthField);
          const body = Buffer.concat([sealer.update(plain), sealer.final()]);
          const tag = sealer.getAuthTag();
          if (n === lengths.length - 1) {
            tag[3] ^= 0x40;
            expect(() => (decipher as unknown as Callable).decrypt!(body, length, tag), `${code} ${name}: a forged tag`).to.throw('Invalid MAC');
            return;
          }
          (decipher as unknown as Callable).decrypt!(body, length, tag);
          expect(body.equals(plain), `${code} ${name}: ${length} bytes`).to.equal(true);
        });
      }
    }
  });

  it('AES-CTR: counts as ssh2\'s binding does across carries out of the low 32 bits and the 128-bit wrap', function () {
    for (const spec of CTR_SPECS) {
      for (const counter of ['000000000000000000000000ffffff00', 'ffffffffffffffffffffffffffffff00']) {
        const keys = { ...keysFor(spec), iv: Buffer.from(counter, 'hex') };
        const { cipher, decipher, ssh2Cipher } = spec.make(keys);
        // 256 blocks to the carry: it falls inside the second packet.
        for (let i = 0; i < 4; i++) {
          const payload = crypto.randomBytes(3000 + i * 1000);
          const ours = plainPacket(spec, payload);
          const theirs = Buffer.from(ours);
          spec.encrypt(cipher, ours, i);
          spec.encrypt(ssh2Cipher, theirs, i);
          expect(ours.equals(theirs), `${spec.name} from ${counter}, packet ${i}`).to.equal(true);
          expect(spec.open(decipher, ours, i).subarray(1, 1 + payload.length).equals(payload)).to.equal(true);
        }
      }
    }
  });

  for (const aesGcm of AES_GCM_CODES) {
    describe(`with useAesGcm('${aesGcm}')`, function () {
    before(() => packetRelay.useAesGcm(aesGcm));
    after(() => packetRelay.useAesGcm('best'));

    for (const spec of SPECS) {
      it(`${spec.name}: encrypts byte for byte as ssh2's binding does, and decrypts and authenticates what it sends`, function () {
        const keys = keysFor(spec);
        const { cipher, decipher, ssh2Cipher } = spec.make(keys);
        for (let i = 0; i < 40; i++) {
          const seqno = (i * 2654435761) >>> 0;
          const payload = crypto.randomBytes((i * 977) % 34000);
          const ours = plainPacket(spec, payload);
          const theirs = Buffer.from(ours);
          spec.encrypt(cipher, ours, seqno);
          spec.encrypt(ssh2Cipher, theirs, seqno);
          expect(ours.equals(theirs), `packet ${i} (${payload.length} bytes of payload)`).to.equal(true);
          const body = spec.open(decipher, ours, seqno);
          expect(body.subarray(1, 1 + payload.length).equals(payload)).to.equal(true);
        }
        const tampered = plainPacket(spec, Buffer.from('x'));
        spec.encrypt(cipher, tampered, 40);
        tampered[6] ^= 1;
        expect(() => spec.open(decipher, tampered, 40)).to.throw('Invalid MAC');
        (cipher as Callable).free!();
        expect(() => spec.encrypt(cipher, plainPacket(spec, Buffer.from('x')), 41)).to.throw('after free');
      });
    }

    for (const from of SPECS) {
      for (const to of SPECS) {
        it(`relay(): ${from.name} to ${to.name}, re-framed channel packets, a stop at any other type and at a split packet`, function () {
          const inKeys = keysFor(from);
          const outKeys = keysFor(to);
          const sender = from.make(inKeys);
          const receiver = to.make(outKeys);
          const { decipher } = from.make(inKeys);
          const { cipher } = to.make(outKeys);
          const payloads = [
            channelData(32768),
            Buffer.of(MSG_CHANNEL_WINDOW_ADJUST, 0, 0, 0, 7, 0, 1, 0, 0),
            channelData(0),
            channelData(5),
            Buffer.concat([Buffer.of(MSG.GLOBAL_REQUEST), Buffer.from('not relayed unchanged')]),
            channelData(1000),
          ];
          const inSeqno = 2 ** 32 - 3; // across the wrap
          const wire = payloads.map((payload, i) => {
            const packet = plainPacket(from, payload);
            from.encrypt(sender.cipher, packet, (inSeqno + i) >>> 0);
            return packet;
          });
          const splitPayload = channelData(100);
          const split = plainPacket(from, splitPayload);
          from.encrypt(sender.cipher, split, (inSeqno + payloads.length) >>> 0);
          const chunk = Buffer.concat([...wire, split.subarray(0, 50)]);
          const result = new Float64Array(5);
          const out = Buffer.alloc(128 * 1024);
          const splitSeqno = (inSeqno + payloads.length) >>> 0;
          const outSeqno = 77;

          packetRelay.relay(chunk, 0, chunk.length, decipher, inSeqno, cipher, outSeqno, FORWARDED_UNCHANGED, out, 0, result);
          expect(result[ResultSlot.Relayed], 'packets before the global request').to.equal(4);
          expect(result[ResultSlot.Stopped]).to.equal(Stop.OtherType);
          const at = result[ResultSlot.Next]!;
          expect(at).to.equal(wire.slice(0, 4).reduce((n, w) => n + w.length, 0));
          // The global request lies decrypted in place, its length in the clear, for the caller.
          const after = at + wire[4]!.length;
          expect(result[ResultSlot.After], 'where the packet after it starts').to.equal(after);
          const bodyLength = chunk.readUInt32BE(at);
          expect(4 + bodyLength + from.mac).to.equal(wire[4]!.length);
          const body = chunk.subarray(at + 4, at + 4 + bodyLength);
          expect(body.subarray(1, 1 + payloads[4]!.length).equals(payloads[4]!)).to.equal(true);
          let outEnd = result[ResultSlot.OutputEnd]!;

          packetRelay.relay(chunk, after, chunk.length, decipher, (inSeqno + 5) >>> 0, cipher, outSeqno + 4, FORWARDED_UNCHANGED, out, outEnd, result);
          expect(result[ResultSlot.Relayed]).to.equal(1);
          expect(result[ResultSlot.Stopped]).to.equal(Stop.End);
          expect(result[ResultSlot.Next], 'stops at the split packet').to.equal(chunk.length - 50);
          outEnd = result[ResultSlot.OutputEnd]!;
          // Reading the split packet's length left the decipher where it was: ssh2 (which keeps split packets) decrypts it whole.
          const opened = from.open(decipher, Buffer.from(split), splitSeqno);
          expect(opened.subarray(1, 1 + splitPayload.length).equals(splitPayload), 'the split packet').to.equal(true);

          // The output: packets for `to`, in order, each re-padded for its block.
          const relayed = [0, 1, 2, 3, 5].map((i) => payloads[i]!);
          let p = 0;
          relayed.forEach((payload, i) => {
            // ChaCha20-Poly1305 and AES-CTR encrypt-and-MAC encrypt the length too.
            const length = to === chacha || to.lengthInBlocks > 0 ? -1 : out.readUInt32BE(p);
            const opened = to.open(receiver.decipher, out.subarray(p), outSeqno + i);
            const bodyLength = opened.length;
            if (length >= 0) expect(bodyLength).to.equal(length);
            expect((to.lengthInBlocks + bodyLength) % to.block, 'padded to the block').to.equal(0);
            expect(opened[0], 'at least 4 bytes of padding').to.be.at.least(4);
            expect(opened.subarray(1, bodyLength - opened[0]!).equals(payload), `payload ${i}`).to.equal(true);
            p += 4 + bodyLength + to.mac;
          });
          expect(p, 'nothing else in the output').to.equal(outEnd);
        });
      }
    }

    it('relay(): stops before a packet the output cannot take, and throws on a bad length or a bad tag', function () {
      const spec = SPECS[0]!;
      const keys = keysFor(spec);
      const sender = spec.make(keys);
      const packet = plainPacket(spec, channelData(32768));
      spec.encrypt(sender.cipher, packet, 0);
      const result = new Float64Array(5);
      const { cipher } = spec.make(keysFor(spec));
      const run = (chunk: Buffer, decipher: NativeDecipher, outBytes: number) =>
        packetRelay.relay(chunk, 0, chunk.length, decipher, 0, cipher, 0, FORWARDED_UNCHANGED, Buffer.alloc(outBytes), 0, result);

      run(Buffer.from(packet), spec.make(keys).decipher, 1000);
      expect(result[ResultSlot.Stopped]).to.equal(Stop.OutputFull);
      expect(result[ResultSlot.Next], 'nothing taken').to.equal(0);
      expect(result[ResultSlot.Relayed]).to.equal(0);

      const long = Buffer.from(packet);
      long.writeUInt32BE(64 * 1024, 0);
      expect(() => run(long, spec.make(keys).decipher, 128 * 1024)).to.throw('Bad packet length');
      const tampered = Buffer.from(packet);
      tampered[100] ^= 1;
      expect(() => run(tampered, spec.make(keys).decipher, 128 * 1024)).to.throw('Invalid MAC');
      expect(() => run(Buffer.from(packet), sender.cipher as unknown as NativeDecipher, 128 * 1024)).to.throw('not a packetrelay decipher');
      // Packets are decrypted from the chunk into the output: the two must not share memory.
      const shared = Buffer.alloc(256 * 1024);
      packet.copy(shared);
      const chunk = shared.subarray(0, packet.length);
      expect(() => packetRelay.relay(chunk, 0, chunk.length, spec.make(keys).decipher, 0, cipher, 0, FORWARDED_UNCHANGED, shared.subarray(64 * 1024), 0, result)).not.to.throw();
      expect(() => packetRelay.relay(chunk, 0, chunk.length, spec.make(keys).decipher, 0, cipher, 0, FORWARDED_UNCHANGED, shared.subarray(1000), 0, result)).to.throw('invalid arguments');
    });
    });
  }
});

describe('packet relay loop under real traffic (ssh, daemon, sshd)', function () {
  const env = useEnv({ proxyArgs: ['--metrics-ip', '127.0.0.1', '--metrics-port', '0'] });
  const MiB = 1024 * 1024;
  let origin = '';

  before(async function () {
    origin = await waitFor(() => metricsOrigin(env.proxy.logs()), { timeoutMs: 10_000, what: 'the metrics address in the log' });
  });

  const forwarded = async () => {
    const m = await scrapeMetrics(origin);
    return {
      loop: m.get('jupyter_ssh_proxy_packets_forwarded_total{path="relay_loop"}') ?? 0,
      sockets: m.get('jupyter_ssh_proxy_packets_forwarded_total{path="socket_relay"}') ?? 0,
      ssh2: m.get('jupyter_ssh_proxy_packets_forwarded_total{path="ssh2"}') ?? 0,
    };
  };

  const sha256 = (data: Buffer) => crypto.createHash('sha256').update(data).digest('hex');

  /** `bytes` of random data from sshd to the client, checked by its sha256. */
  const downloadIntact = async (bytes: number, options: string[]) => {
    const down = await env.ssh([`head -c ${bytes} /dev/urandom | tee >(sha256sum >&2)`], options, { timeoutMs: 100_000 });
    expect(down.code, down.stderr).to.equal(0);
    expect(down.stdout.length).to.equal(bytes);
    expect(down.stderr.split(' ')[0]).to.equal(sha256(down.stdout));
  };
  /** `bytes` of random data from the client to sshd, checked by its sha256. */
  const uploadIntact = async (bytes: number, options: string[]) => {
    const data = crypto.randomBytes(bytes);
    const up = await env.ssh(['sha256sum'], options, { input: data, timeoutMs: 100_000 });
    expect(up.code, up.stderr).to.equal(0);
    expect(up.stdout.toString().split(' ')[0]).to.equal(sha256(data));
  };

  it('says in its start-up log that the relay loop is on, and which AES-GCM code it runs', function () {
    expect(env.proxy.logs()).to.contain(`packet relay loop on, AES-GCM by ${packetRelay.aesGcmImplementation()}`);
  });

  it('batches a real transfer both ways: the bulk data, and the window adjustments that answer it', async function () {
    this.timeout(120_000);
    const batches = async () => {
      const m = await scrapeMetrics(origin);
      return {
        bulk: m.get('jupyter_ssh_proxy_socket_relay_batches_total{kind="bulk"}') ?? 0,
        replies: m.get('jupyter_ssh_proxy_socket_relay_batches_total{kind="replies"}') ?? 0,
      };
    };
    const before = await batches();
    const options = ['-o', 'LogLevel=ERROR', '-c', 'aes128-gcm@openssh.com'];
    // A download: sshd's data batched, the client's window adjustments as replies.
    await downloadIntact(64 * MiB, options);
    const afterDown = await batches();
    expect(afterDown.bulk - before.bulk, 'bulk batches in the download').to.be.at.least(1);
    expect(afterDown.replies - before.replies, 'reply batches in the download').to.be.at.least(1);
    // An upload: the client's data batched, sshd's window adjustments as replies.
    await uploadIntact(64 * MiB, options);
    const afterUp = await batches();
    expect(afterUp.bulk - afterDown.bulk, 'bulk batches in the upload').to.be.at.least(1);
    expect(afterUp.replies - afterDown.replies, 'reply batches in the upload').to.be.at.least(1);
  });

  // Each client-leg cipher the proxy offers, AES-CTR with each kind of MAC (OpenSSH offers no AES-GCM with -c aes128-ctr: no switch).
  const clientLegs: [string, string[]][] = [
    ['aes128-gcm@openssh.com', []],
    ['aes256-gcm@openssh.com', []],
    ['chacha20-poly1305@openssh.com', []],
    ['aes128-ctr', ['-m', 'hmac-sha2-256-etm@openssh.com']],
    ['aes192-ctr', ['-m', 'hmac-sha2-256']],
    ['aes256-ctr', ['-m', 'hmac-sha2-512-etm@openssh.com']],
    ['aes128-ctr', ['-m', 'hmac-sha2-512']],
  ];
  for (const [cipher, mac] of clientLegs) {
    it(`moves 16 MiB each way intact with client cipher ${cipher}${mac.length > 0 ? ` and ${mac[1]}` : ''}, nearly all of it through the relay loop`, async function () {
      this.timeout(120_000);
      const before = await forwarded();
      const options = ['-o', 'LogLevel=ERROR', '-c', cipher, ...mac];
      await downloadIntact(16 * MiB, options);
      await uploadIntact(16 * MiB, options);
      const after = await forwarded();
      const loop = after.loop - before.loop;
      const sockets = after.sockets - before.sockets;
      const oneByOne = after.ssh2 - before.ssh2;
      // 32 MiB in 32 KiB channel packets: over 1,000 of them, plus window adjusts.
      // Bulk reads move each direction onto the sockets (lib/socketrelay.ts), after some through the loop.
      expect(sockets, 'packets relayed on the sockets').to.be.greaterThan(500);
      expect(loop + sockets, 'packets through the relay loop').to.be.greaterThan(1000);
      expect((loop + sockets) / (loop + sockets + oneByOne), `share of the loop (${loop} loop, ${sockets} on the sockets, ${oneByOne} ssh2)`).to.be.greaterThan(0.9);
    });
  }
});
