/**
 * A file of the operator's that decides who logs in (--trusted-user-ca-keys,
 * --revoked-keys): read at start, and read again at a login whenever it
 * changed, as sshd reads TrustedUserCAKeys and RevokedKeys at every login,
 * so that editing it needs no restart. A file anyone but its owner (root or
 * the daemon's user) may write is refused: whoever can write it decides
 * who gets in.
 */
import fs from 'node:fs';

/** What the file held when last read: its content parsed, or why it cannot be used. */
export type Reading<T> = { value: T; problem?: undefined } | { value?: undefined; problem: string };

/** Identifies the file's state: device, inode, size, mode, owner, and the times of its last write and change (chmod, chown). */
function stampOf(stat: fs.Stats): string {
  return `${stat.dev}:${stat.ino}:${stat.size}:${stat.mode}:${stat.uid}:${stat.mtimeMs}:${stat.ctimeMs}`;
}

/** The file's state now: its stamp, or the error code that stands for it. */
function currentStamp(file: string): string {
  try {
    return stampOf(fs.statSync(file));
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? 'error';
  }
}

export class WatchedFile<T> {
  private stamp = '';
  private reading: Reading<T> = { problem: 'not read yet' };

  /** `parse` turns the content into a value, or says (a string) why it cannot be used. */
  constructor(
    readonly file: string,
    private readonly maxBytes: number,
    private readonly parse: (content: Buffer) => T | string,
  ) {
    this.refresh();
  }

  /** The last reading, after reading the file again if it changed; `onChange` gets the new one. */
  current(onChange?: (reading: Reading<T>) => void): Reading<T> {
    if (currentStamp(this.file) !== this.stamp) {
      this.refresh();
      onChange?.(this.reading);
    }
    return this.reading;
  }

  private refresh(): void {
    const fail = (problem: string) => (this.reading = { problem: `${this.file}: ${problem}` });
    let fd: number;
    try {
      // Non-blocking: a FIFO in its place must not hang the daemon.
      fd = fs.openSync(this.file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'error';
      this.stamp = code;
      return void fail(`not readable (${code})`);
    }
    try {
      // Stamped from the descriptor: what is read is what was checked.
      const stat = fs.fstatSync(fd);
      this.stamp = stampOf(stat);
      if (!stat.isFile()) return void fail('not a regular file');
      if ((stat.mode & 0o022) !== 0) return void fail(`refused, writable by others than its owner (mode ${(stat.mode & 0o777).toString(8).padStart(4, '0')})`);
      if (stat.uid !== 0 && stat.uid !== process.getuid?.()) return void fail('refused, it must belong to root or to the user the daemon runs as');
      if (stat.size > this.maxBytes) return void fail(`refused, larger than ${this.maxBytes} bytes`);
      const parsed = this.parse(fs.readFileSync(fd));
      this.reading = typeof parsed === 'string' ? { problem: `${this.file}: ${parsed}` } : { value: parsed };
    } catch (err) {
      fail(`not readable (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    } finally {
      fs.closeSync(fd);
    }
  }
}
