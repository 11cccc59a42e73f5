/**
 * The relay: after both legs are authenticated, every message that is not
 * transport, key exchange or user authentication is forwarded as its raw
 * payload. Channels are never parsed; only a few fields are touched, each for
 * a reason given in the dispatch table below.
 */
import type { Leg } from './leg.js';
import { OWN_PACKET, seqnoOfTag, sourceTag } from './leg.js';
import { MSG, parseDisconnect, parseGlobalRequest, pongPayload, unimplementedPayload } from './messages.js';

/**
 * The largest channel packet either leg accepts: ssh2 rejects inbound packets
 * over 35000 bytes, OpenSSH channels use 32768.
 */
export const MAX_CHANNEL_PACKET = 32768;

/** Global requests awaiting a reply, per requesting leg. */
const MAX_PENDING_GLOBAL_REQUESTS = 1024;

/**
 * `hostkeys-00@openssh.com` would announce the internal sshd's host keys to
 * the user (and the client would then prove them over the wrong session):
 * never forward it. A proof request can only follow an announcement we never
 * made, so it is answered with failure by the proxy itself.
 */
const DROPPED_FROM_UPSTREAM = new Set(['hostkeys-00@openssh.com']);
const REFUSED_FROM_CLIENT = new Set(['hostkeys-prove-00@openssh.com']);

export interface RelayHooks {
  /** A leg sent DISCONNECT (already forwarded) or the relay must end: close both legs. */
  end(initiator: Leg, reason: string): void;
  /** A leg broke the protocol in a way that ends the connection. */
  fail(leg: Leg, err: Error): void;
  /** A channel of this type was requested (for logs and metrics). */
  channelOpened(type: string): void;
}

type Route = (relay: Relay, from: Leg, to: Leg, payload: Buffer, seqno: number) => boolean;

const forward: Route = (relay, from, to, payload, seqno) => {
  to.send(payload, relay.tag(from, seqno));
  return true;
};
const consume: Route = () => true;
const toSsh2: Route = () => false;
const unimplemented: Route = (_relay, from, _to, _payload, seqno) => {
  from.send(unimplementedPayload(seqno), OWN_PACKET);
  return true;
};

/** Clamps the uint32 maximum packet size at `offset` in place. */
function clampMaxPacket(payload: Buffer, offset: number): void {
  if (offset + 4 <= payload.length && payload.readUInt32BE(offset) > MAX_CHANNEL_PACKET) {
    payload.writeUInt32BE(MAX_CHANNEL_PACKET, offset);
  }
}

const ROUTES: Route[] = new Array<Route>(256).fill(forward);
// Transport messages other than those below are answered as OpenSSH would.
for (let t = 0; t < MSG.KEXINIT; t++) ROUTES[t] = unimplemented;
// Key exchange stays with ssh2: each leg rekeys on its own.
for (let t = MSG.KEXINIT; t <= MSG.KEX_LAST; t++) ROUTES[t] = toSsh2;
// User authentication messages after success are ignored, as OpenSSH does.
for (let t = MSG.USERAUTH_REQUEST; t <= MSG.USERAUTH_LAST; t++) ROUTES[t] = consume;
ROUTES[MSG.IGNORE] = consume;
ROUTES[MSG.DEBUG] = consume;
// EXT_INFO describes one leg's transport; it means nothing on the other.
ROUTES[MSG.EXT_INFO] = consume;

// A PING is for the hop it came over: the proxy answers it there (the
// client's chaff while it obscures keystroke timing, which sshd before 9.5
// would not know), and PONGs answer nothing the proxy sent.
ROUTES[MSG.PING] = (relay, from, _to, payload) => {
  const pong = pongPayload(payload);
  if (pong === undefined) relay.hooks.fail(from, new Error('malformed PING'));
  else from.send(pong, OWN_PACKET);
  return true;
};
ROUTES[MSG.PONG] = consume;

ROUTES[MSG.DISCONNECT] = (relay, from, to, payload) => {
  const parsed = parseDisconnect(payload);
  to.sendUrgent(payload);
  relay.hooks.end(from, parsed ? `disconnect ${parsed.reason}: ${parsed.description}` : 'disconnect');
  return true;
};

ROUTES[MSG.UNIMPLEMENTED] = (relay, from, to, payload) => {
  if (payload.length < 5) return true;
  // The peer of `from` did not implement a packet that `from` sent; if that
  // packet was forwarded, tell its origin, with the origin's sequence number.
  const source = from.sourceOf(payload.readUInt32BE(1));
  const seqno = source === undefined ? undefined : relay.untag(to, source);
  if (seqno !== undefined) to.send(unimplementedPayload(seqno), OWN_PACKET);
  return true;
};

ROUTES[MSG.GLOBAL_REQUEST] = (relay, from, to, payload, seqno) => {
  const request = parseGlobalRequest(payload);
  if (!request) return forward(relay, from, to, payload, seqno);
  if (from.name === 'upstream' && DROPPED_FROM_UPSTREAM.has(request.name)) return true;
  if (from.name === 'client' && REFUSED_FROM_CLIENT.has(request.name)) {
    if (request.wantReply) relay.answerLocally(from, Buffer.of(MSG.REQUEST_FAILURE));
    return true;
  }
  if (request.wantReply) relay.awaitReply(from);
  return forward(relay, from, to, payload, seqno);
};

const globalReply: Route = (relay, from, to, payload, seqno) => {
  relay.deliverReply(to, payload, relay.tag(from, seqno));
  return true;
};
ROUTES[MSG.REQUEST_SUCCESS] = globalReply;
ROUTES[MSG.REQUEST_FAILURE] = globalReply;

ROUTES[MSG.CHANNEL_OPEN] = (relay, from, to, payload, seqno) => {
  // string channel type, uint32 sender channel, uint32 window, uint32 max packet
  if (payload.length >= 5) {
    const typeEnd = 5 + payload.readUInt32BE(1);
    if (typeEnd <= payload.length) relay.hooks.channelOpened(payload.toString('latin1', 5, typeEnd));
    clampMaxPacket(payload, typeEnd + 8);
  }
  return forward(relay, from, to, payload, seqno);
};

ROUTES[MSG.CHANNEL_OPEN_CONFIRMATION] = (relay, from, to, payload, seqno) => {
  // uint32 recipient, uint32 sender, uint32 window, uint32 max packet
  clampMaxPacket(payload, 13);
  return forward(relay, from, to, payload, seqno);
};

/**
 * The message types forwarded unchanged, by type (1: forwarded): the legs'
 * relay loop (native/packetrelay.c) re-encrypts these itself, and hands all
 * others to the table above.
 */
export const FORWARDED_UNCHANGED: Buffer = Buffer.from(ROUTES.map((route) => (route === forward ? 1 : 0)));

export class Relay {
  /**
   * Replies owed to each leg's global requests, in request order (RFC 4254 §4:
   * replies carry no id). `null` stands for a forwarded request whose reply
   * comes from the other leg; a Buffer is an answer the proxy made itself and
   * must hold back until the replies before it have gone out.
   */
  private readonly owed = new Map<Leg, (Buffer | null)[]>();

  constructor(readonly client: Leg, readonly upstream: Leg, readonly hooks: RelayHooks) {
    this.owed.set(client, []);
    this.owed.set(upstream, []);
  }

  start(): void {
    this.attach(this.client, this.upstream);
    this.attach(this.upstream, this.client);
  }

  private attach(from: Leg, to: Leg): void {
    from.takeOver((payload, seqno) => ROUTES[payload[0]!]!(this, from, to, payload, seqno));
    from.relayDirectly(to, FORWARDED_UNCHANGED);
    from.peerOutput = to.output;
    // Backpressure: when one leg cannot write, stop reading from the other.
    to.on('congested', () => from.pause());
    to.on('drained', () => from.resume());
  }

  /** A source tag: the sequence number on `leg`, with its strict-KEX epoch. */
  tag(leg: Leg, seqno: number): number {
    return sourceTag(leg, seqno);
  }

  /** The sequence number in a tag, if it is still valid on `leg`. */
  untag(leg: Leg, tag: number): number | undefined {
    return seqnoOfTag(leg, tag);
  }

  awaitReply(requester: Leg): void {
    const queue = this.owed.get(requester)!;
    if (queue.length >= MAX_PENDING_GLOBAL_REQUESTS) {
      this.hooks.fail(requester, new Error('too many global requests awaiting replies'));
      return;
    }
    queue.push(null);
  }

  answerLocally(requester: Leg, reply: Buffer): void {
    const queue = this.owed.get(requester)!;
    if (queue.length === 0) requester.send(reply, OWN_PACKET);
    else if (queue.length < MAX_PENDING_GLOBAL_REQUESTS) queue.push(reply);
    else this.hooks.fail(requester, new Error('too many global requests awaiting replies'));
  }

  deliverReply(requester: Leg, reply: Buffer, tag: number): void {
    const queue = this.owed.get(requester)!;
    // A reply to nothing we forwarded is a protocol error of the replier; drop it.
    if (queue[0] !== null) return;
    queue.shift();
    requester.send(reply, tag);
    while (queue.length > 0 && queue[0] !== null) requester.send(queue.shift()!, OWN_PACKET);
  }
}
