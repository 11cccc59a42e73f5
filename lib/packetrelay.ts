/**
 * The packet relay addon (native/packetrelay.c): ciphers that stand in for
 * those of ssh2's binding (AES-GCM, ChaCha20-Poly1305, AES-CTR with HMAC),
 * and a loop that relays channel packets from one leg's socket chunk to the
 * other leg's cipher without a JavaScript call per packet.
 * lib/ssh2internals.ts installs the ciphers into ssh2;
 * lib/leg.ts runs the loop. native/socketrelay.c runs the same loop on the
 * sockets themselves (lib/socketrelay.ts). It also has TCP_QUICKACK for
 * lib/quickack.ts. AES-GCM runs on VAES where the CPU has it: intel-ipsec-mb's
 * code with AVX-512, native/aesgcm_avx2.c without (native/packetrelay.c says
 * why).
 */
import { loadAddon } from './addons.js';

/** An outbound cipher object of the addon (opaque to JS; ssh2's wrappers call its methods). */
export interface NativeCipher {
  readonly __brand?: 'cipher';
}
/** An inbound cipher object of the addon. */
export interface NativeDecipher {
  readonly __brand?: 'decipher';
}

/** Why a relay() call stopped: `RelayResult[STOPPED]`. */
export const enum Stop {
  /** Every whole packet is done: the chunk ends, or ends inside a packet. */
  End = 0,
  /** A packet of a type not relayed unchanged, decrypted in place for the caller (its length field in the clear). */
  OtherType = 1,
  /** The output buffer cannot take the next packet. */
  OutputFull = 2,
}

/** Slots of the result array relay() fills. */
export const enum ResultSlot {
  /** Where the chunk's next packet starts. */
  Next = 0,
  /** The end of the output written so far. */
  OutputEnd = 1,
  /** Packets relayed by this call. */
  Relayed = 2,
  Stopped = 3,
  /** For Stop.OtherType: where the packet after that one starts. */
  After = 4,
}

interface PacketRelayAddon {
  AESGCMCipher: new (name: string, key: Buffer, iv: Buffer) => NativeCipher;
  AESGCMDecipher: new (name: string, key: Buffer, iv: Buffer) => NativeDecipher;
  ChaChaPolyCipher: new (keys: Buffer) => NativeCipher;
  ChaChaPolyDecipher: new (keys: Buffer) => NativeDecipher;
  CtrHmacCipher: new (name: string, key: Buffer, iv: Buffer, digest: string, macKey: Buffer, etm: boolean) => NativeCipher;
  CtrHmacDecipher: new (name: string, key: Buffer, iv: Buffer, digest: string, macKey: Buffer, etm: boolean, macActualLength: number) => NativeDecipher;
  /**
   * Whether CtrHmacCipher (no MAC length) or CtrHmacDecipher takes a cipher and
   * HMAC by the OpenSSL names ssh2 passes (CIPHER_INFO's and MAC_INFO's
   * sslName), and the MAC length on the wire: whole MACs only. ssh2's own
   * classes keep the rest (CBC modes, MD5, hmac-*-96), which the proxy does
   * not offer.
   */
  ctrHmacTakes(cipher: string, digest: string, macLength?: number): boolean;
  relay(
    chunk: Buffer,
    start: number,
    end: number,
    decipher: NativeDecipher,
    inSeqno: number,
    cipher: NativeCipher,
    outSeqno: number,
    forwardedTypes: Buffer,
    out: Buffer,
    outStart: number,
    result: Float64Array,
  ): void;
  /**
   * The AES-GCM code of ciphers made from now on: the fastest the CPU runs
   * (the default), OpenSSL's, or native/aesgcm_avx2.c (throws if the CPU
   * lacks VAES or VPCLMULQDQ); returns aesGcmImplementation().
   */
  useAesGcm(which: 'best' | 'openssl' | 'vaes-avx2'): string;
  /** "intel-ipsec-mb VERSION (VAES)", "VAES-AVX2 (native/aesgcm_avx2.c)" or "OpenSSL": the AES-GCM code new ciphers get. */
  aesGcmImplementation(): string;
  /** TCP_QUICKACK on socket `fd`; false if the socket does not take it (lib/quickack.ts). */
  quickAck(fd: number): boolean;
  /** native/socketrelay.c, for lib/socketrelay.ts. */
  SocketRelay: new (onStop: (code: number, a: number | string, b: number, c: number) => void, stats: Float64Array) => NativeSocketRelay;
  setReadBuffer(buffer: Buffer): void;
  /** [bytes read, packets relayed, bulk batches, reply batches] by all SocketRelays since start. */
  socketRelayTotals: Float64Array;
}

/** One direction of a connection relayed on its sockets (native/socketrelay.c). */
export interface NativeSocketRelay {
  start(
    inFd: number,
    outFd: number,
    decipher: NativeDecipher,
    inSeqno: number,
    cipher: NativeCipher,
    outSeqno: number,
    forwardedTypes: Buffer,
    pending: Buffer,
    pendingLength: number,
  ): void;
  /** Stops; copies the start of a split packet into `pendingOut`; returns output the socket did not take yet. */
  stop(pendingOut: Buffer): Buffer | null;
  /** `other` relays the connection's other direction: each batches its replies to the other's bulk data. */
  pair(other: NativeSocketRelay): void;
}

export const packetRelay = loadAddon<PacketRelayAddon>('packetrelay', 'packet relay');

/** The AEAD cipher classes by the names ssh2's binding exports them under. */
export const cipherClasses = {
  AESGCMCipher: packetRelay.AESGCMCipher,
  AESGCMDecipher: packetRelay.AESGCMDecipher,
  ChaChaPolyCipher: packetRelay.ChaChaPolyCipher,
  ChaChaPolyDecipher: packetRelay.ChaChaPolyDecipher,
} as const;

/** The AES-CTR with HMAC classes, for ssh2's GenericCipher and GenericDecipher where they take the algorithms (packetRelay.ctrHmacTakes). */
export const ctrHmacClasses = { GenericCipher: packetRelay.CtrHmacCipher, GenericDecipher: packetRelay.CtrHmacDecipher } as const;

export function isNativeCipher(value: unknown): value is NativeCipher {
  return value instanceof packetRelay.AESGCMCipher || value instanceof packetRelay.ChaChaPolyCipher || value instanceof packetRelay.CtrHmacCipher;
}

export function isNativeDecipher(value: unknown): value is NativeDecipher {
  return value instanceof packetRelay.AESGCMDecipher || value instanceof packetRelay.ChaChaPolyDecipher || value instanceof packetRelay.CtrHmacDecipher;
}
