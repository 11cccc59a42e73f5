// Legs (lib/leg.ts) over real loopback TCP connections, handshaken: two
// for tests of what a leg does with its socket (turn budget, shared reads,
// TCP acknowledgements), and four with the relay between the middle two
// (the socket relay).
import { expect } from 'chai';
import net from 'node:net';
import { clientOffer, hostKeyAlgorithms, KEX, MACS, serverOffer } from '../../lib/algorithms.js';
import { Leg } from '../../lib/leg.js';
import { MSG } from '../../lib/messages.js';
import { MAX_CHANNEL_PACKET, Relay } from '../../lib/relay.js';
import { adoptWithSharedReads, connectWithSharedReads } from '../../lib/sharedreads.js';
import { buildOffer, generateKeyPair, parseKey, type ParsedKey } from '../../lib/ssh2internals.js';
import type { TurnBudget } from '../../lib/turnbudget.js';

/** RFC 4254 §5.2; the proxy itself never looks at channel data, so lib/messages.ts has no name for it. */
export const CHANNEL_DATA = 94;

/**
 * A connected pair of loopback TCP sockets. `sharedReads`: the accepted one
 * reads into the shared buffer, as the daemon's client sockets do.
 */
export async function socketPair(sharedReads: boolean): Promise<[net.Socket, net.Socket]> {
  const server = net.createServer({ pauseOnConnect: sharedReads });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const connecting = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  await new Promise((resolve) => connecting.once('connect', resolve));
  const socket = await accepted;
  server.close();
  return [connecting, sharedReads ? adoptWithSharedReads(socket) : socket];
}

function newHostKey(): ParsedKey {
  const hostKey = parseKey(generateKeyPair('ed25519').private);
  if (hostKey instanceof Error) throw hostKey;
  return hostKey;
}

/** The SSH server side of a connection, as the daemon's client-facing leg is. */
function serverLeg(socket: net.Socket, hostKey: ParsedKey, budget?: TurnBudget): Leg {
  return new Leg({
    name: 'client',
    input: socket,
    output: socket,
    maxQueuedBytes: 64 * 1024 * 1024,
    budget,
    protocol: {
      server: true,
      ident: 'jsp-test-server',
      offer: serverOffer(hostKeyAlgorithms(hostKey.type)),
      hostKeys: { [hostKey.type]: hostKey },
      messageHandlers: {},
    },
  });
}

/** The SSH client side, as the daemon's upstream leg is; `ciphers`: its cipher list, first choice first. */
function clientLeg(socket: net.Socket, hostKey: ParsedKey, ciphers?: string[]): Leg {
  const direction = () => ({ cipher: ciphers!, mac: [...MACS], compress: ['none'], lang: [] });
  const offer = ciphers ? buildOffer({ kex: [...KEX, 'ext-info-c', 'kex-strict-c-v00@openssh.com'], serverHostKey: ['ssh-ed25519'], cs: direction(), sc: direction() }) : clientOffer();
  return new Leg({
    name: 'upstream',
    input: socket,
    output: socket,
    maxQueuedBytes: 64 * 1024 * 1024,
    protocol: {
      server: false,
      ident: 'jsp-test-client',
      offer,
      hostVerifier: (key: Buffer) => key.equals(hostKey.getPublicSSH()),
      messageHandlers: {},
    },
  });
}

/** Starts the legs and resolves once each has completed its first key exchange. */
async function handshake(legs: Leg[]): Promise<void> {
  const handshakes = Promise.all(legs.map((leg) => new Promise((resolve) => leg.once('handshake', resolve))));
  for (const leg of legs) leg.start();
  await handshakes;
}

/** Two Legs over a loopback TCP connection, handshaken, with the server side's payloads recorded. */
export async function legPair(budget?: TurnBudget, sharedReads = false): Promise<{ client: Leg; server: Leg; clientSocket: net.Socket; received: number[]; close(): void }> {
  const hostKey = newHostKey();
  const [clientSocket, serverSocket] = await socketPair(sharedReads);
  const server = serverLeg(serverSocket, hostKey, budget);
  const client = clientLeg(clientSocket, hostKey);
  const errors: Error[] = [];
  for (const leg of [server, client]) leg.on('error', (err: Error) => errors.push(err));
  await handshake([server, client]);
  const received: number[] = [];
  // Everything after the handshake is ours: record the sequence numbers we put in CHANNEL_DATA.
  server.takeOver((payload) => {
    if (payload[0] === CHANNEL_DATA) received.push(payload.readUInt32BE(1));
    return true;
  });
  client.takeOver(() => true);
  return {
    client,
    server,
    clientSocket,
    received,
    close: () => {
      server.shutdown();
      client.shutdown();
      clientSocket.destroy();
      serverSocket.destroy();
      expect(errors.map((e) => e.message)).to.deep.equal([]);
    },
  };
}

/** A CHANNEL_DATA-typed payload numbered `n`, of `bytes` (the largest channel packet size unless given). */
export function numbered(n: number, bytes = MAX_CHANNEL_PACKET): Buffer {
  const payload = Buffer.alloc(bytes);
  payload[0] = CHANNEL_DATA;
  payload.writeUInt32BE(n, 1);
  return payload;
}


/** What a leg took: the numbers of CHANNEL_DATA payloads, and the sequence numbers UNIMPLEMENTED payloads named. */
export interface Received {
  data: number[];
  unimplemented: number[];
}

function recorder(received: Received): (payload: Buffer) => boolean {
  return (payload) => {
    if (payload[0] === CHANNEL_DATA) received.data.push(payload.readUInt32BE(1));
    else if (payload[0] === MSG.UNIMPLEMENTED) received.unimplemented.push(payload.readUInt32BE(1));
    // Key exchange messages are ssh2's, for a rekey.
    return payload[0]! < MSG.KEXINIT || payload[0]! > MSG.KEX_LAST;
  };
}

/**
 * The daemon's two legs with the relay between them, and an SSH client and
 * server at the ends, over loopback TCP:
 * `user` ⇄ `front` —relay— `back` ⇄ `sshd`. The daemon's legs read into the
 * shared buffer, as in the daemon. `userCiphers`: the user's cipher list
 * (the front leg's cipher); the back leg takes the daemon's first choice.
 */
export async function relayedLegs(userCiphers?: string[]): Promise<{
  user: Leg;
  front: Leg;
  back: Leg;
  sshd: Leg;
  userSocket: net.Socket;
  sshdSocket: net.Socket;
  atUser: Received;
  atSshd: Received;
  errors: string[];
  ended: string[];
  close(): void;
}> {
  const frontKey = newHostKey();
  const sshdKey = newHostKey();
  const [userSocket, frontSocket] = await socketPair(true);
  const listener = net.createServer();
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  const accepted = new Promise<net.Socket>((resolve) => listener.once('connection', resolve));
  const backSocket = connectWithSharedReads((listener.address() as net.AddressInfo).port, '127.0.0.1');
  const sshdSocket = await accepted;
  listener.close();
  const user = clientLeg(userSocket, frontKey, userCiphers);
  const front = serverLeg(frontSocket, frontKey);
  const back = clientLeg(backSocket, sshdKey);
  const sshd = serverLeg(sshdSocket, sshdKey);
  const errors: string[] = [];
  const ended: string[] = [];
  for (const [name, leg] of [['user', user], ['front', front], ['back', back], ['sshd', sshd]] as const) {
    leg.on('error', (err: Error) => errors.push(`${name}: ${err.message}`));
    leg.on('end', () => ended.push(name));
  }
  await handshake([user, front, back, sshd]);
  new Relay(front, back, {
    end: (leg, reason) => errors.push(`relay end from ${leg.name}: ${reason}`),
    fail: (leg, err) => errors.push(`relay failure on ${leg.name}: ${err.message}`),
    channelOpened: () => {},
  }).start();
  const atUser: Received = { data: [], unimplemented: [] };
  const atSshd: Received = { data: [], unimplemented: [] };
  user.takeOver(recorder(atUser));
  sshd.takeOver(recorder(atSshd));
  return {
    user,
    front,
    back,
    sshd,
    userSocket,
    sshdSocket,
    atUser,
    atSshd,
    errors,
    ended,
    close: () => {
      for (const leg of [user, front, back, sshd]) leg.shutdown();
      for (const socket of [userSocket, frontSocket, backSocket, sshdSocket]) socket.destroy();
    },
  };
}
