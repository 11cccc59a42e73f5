/**
 * Reading SSH wire data (RFC 4251 5): the key blobs, certificates and
 * signatures that ssh2 hands over unparsed.
 */

/** Reads a buffer front to back; every read returns undefined once it would run past the end. */
export class WireReader {
  private offset = 0;
  private failed = false;

  constructor(private readonly buffer: Buffer) {}

  string(): Buffer | undefined {
    const length = this.uint32();
    if (length === undefined) return undefined;
    return this.take(length);
  }

  text(): string | undefined {
    return this.string()?.toString('utf8');
  }

  byte(): number | undefined {
    return this.take(1)?.[0];
  }

  uint32(): number | undefined {
    const bytes = this.take(4);
    return bytes && bytes.readUInt32BE(0);
  }

  uint64(): bigint | undefined {
    const bytes = this.take(8);
    return bytes && bytes.readBigUInt64BE(0);
  }

  /** The strings of the rest of the buffer (a "packed" list). */
  strings(): Buffer[] | undefined {
    const list: Buffer[] = [];
    while (!this.done()) {
      const s = this.string();
      if (s === undefined) return undefined;
      list.push(s);
    }
    return list;
  }

  /** Everything up to here. */
  consumed(): Buffer {
    return this.buffer.subarray(0, this.offset);
  }

  /** Whether every byte was read, and no read failed. */
  done(): boolean {
    return !this.failed && this.offset === this.buffer.length;
  }

  private take(length: number): Buffer | undefined {
    if (this.failed || this.offset + length > this.buffer.length) {
      this.failed = true;
      return undefined;
    }
    const bytes = this.buffer.subarray(this.offset, this.offset + length);
    this.offset += length;
    return bytes;
  }
}

/** An SSH string (uint32 length, then the bytes). */
export function sshString(value: string | Buffer): Buffer {
  const bytes = typeof value === 'string' ? Buffer.from(value) : value;
  const length = Buffer.alloc(4);
  length.writeUInt32BE(bytes.length);
  return Buffer.concat([length, bytes]);
}

/** A key or certificate blob's type: its first string; undefined if there is none. */
export function blobType(blob: Buffer): string | undefined {
  return new WireReader(blob).string()?.toString('latin1');
}
