// Two Legs (lib/leg.ts) over a real loopback TCP connection, handshaken:
// for tests of what a leg does with its socket (turn budget, shared reads,
// TCP acknowledgements).
import { expect } from 'chai';
import net from 'node:net';
import { clientOffer, hostKeyAlgorithms, serverOffer } from '../../lib/algorithms.js';
import { Leg } from '../../lib/leg.js';
import { MAX_CHANNEL_PACKET } from '../../lib/relay.js';
import { adoptWithSharedReads } from '../../lib/sharedreads.js';
import { generateKeyPair, parseKey } from '../../lib/ssh2internals.js';
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

/** Two Legs over a loopback TCP connection, handshaken, with the server side's payloads recorded. */
export async function legPair(budget?: TurnBudget, sharedReads = false): Promise<{ client: Leg; server: Leg; clientSocket: net.Socket; received: number[]; close(): void }> {
  const hostKey = parseKey(generateKeyPair('ed25519').private);
  if (hostKey instanceof Error) throw hostKey;
  const [clientSocket, serverSocket] = await socketPair(sharedReads);
  const server = new Leg({
    name: 'client', // the daemon's client-facing leg: an SSH server
    input: serverSocket,
    output: serverSocket,
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
  const client = new Leg({
    name: 'upstream',
    input: clientSocket,
    output: clientSocket,
    maxQueuedBytes: 64 * 1024 * 1024,
    protocol: {
      server: false,
      ident: 'jsp-test-client',
      offer: clientOffer(),
      hostVerifier: (key: Buffer) => key.equals(hostKey.getPublicSSH()),
      messageHandlers: {},
    },
  });
  const errors: Error[] = [];
  for (const leg of [server, client]) leg.on('error', (err: Error) => errors.push(err));
  const handshakes = Promise.all([server, client].map((leg) => new Promise((resolve) => leg.once('handshake', resolve))));
  server.start();
  client.start();
  await handshakes;
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

/** A CHANNEL_DATA-typed payload of the largest channel packet size, numbered `n`. */
export function numbered(n: number): Buffer {
  const payload = Buffer.alloc(MAX_CHANNEL_PACKET);
  payload[0] = CHANNEL_DATA;
  payload.writeUInt32BE(n, 1);
  return payload;
}

