/*
 * One direction of a proxied connection, run on the sockets themselves: the
 * addon reads one leg's socket, takes what it reads through the relay loop
 * (relay_packets) and writes the result to the other leg's socket, with no
 * JavaScript call per read or write. lib/socketrelay.ts says when a leg
 * hands its input to a SocketRelay and how it takes it back.
 *
 * Why: with the relay loop in native code, what was left of the daemon's
 * CPU per GiB above a relay written in C was Node's: a JavaScript callback
 * per read, a stream write per output block, a write request each
 * (bench/README.md, "Native socket I/O").
 *
 * How it shares the sockets with Node: it polls duplicates of the two
 * descriptors (F_DUPFD_CLOEXEC), so that its poll handles and Node's own
 * never share an entry of libuv's watcher table. While it runs, Node does
 * not read the input socket (the leg has stopped it) and writes nothing to
 * the output socket (the legs stop the relay before anything else is sent
 * there: its cipher state is the relay's while it runs). uv_close() of a
 * poll handle removes the duplicate from epoll before it is closed.
 *
 * It stops, and calls its onStop callback (code, a, b, c), at:
 * - a packet of a type not forwarded unchanged: SR_OTHER_TYPE, with the
 *   range of the shared read buffer [a, b) that starts with that packet
 *   (decrypted in place, its length field in the clear, c bytes on the
 *   wire) and holds the rest of the read;
 * - the end of the input (SR_EOF), a read or write error (SR_READ_ERROR,
 *   SR_WRITE_ERROR, a = -errno), a protocol error (SR_PROTOCOL_ERROR, a =
 *   the message: "Invalid MAC", "Bad packet length", ...).
 * The leg can also stop it at any time (stop()). Either way stop() then
 * hands back what the leg needs to go on: the start of a split packet, the
 * output the socket did not take yet, and the sequence numbers (stats).
 *
 * Batching: once a read brings BATCH_START bytes or more (bulk data), the
 * input socket's low-water mark (SO_RCVLOWAT) becomes the read buffer's
 * size, so that the kernel wakes the relay when a full read waits rather
 * than for every segment sshd or the client writes; each wake-up is a
 * context switch and a write that wakes the other side. A larger mark would
 * only keep bytes waiting (one read per wake-up), a smaller one costs more
 * wake-ups. A timer BATCH_PAUSE_MS after the last read ends it (the
 * low-water mark back at 1, and what waits read at once): a pause in the
 * flow never holds bytes back longer than that. Small reads, such as the
 * window adjustments of the direction that follows a bulk one, never
 * start it. The kernel still wakes a reader below the mark when its receive
 * window runs short. bench/README.md, "Fewer wake-ups" and "A full read per
 * wake-up" (also what it costs a keystroke behind bulk data).
 *
 * The replies to bulk data are batched too: while the other direction of
 * the connection (the relay's partner, see pair()) batches bulk data, a
 * small read (window adjustments, sftp requests, acknowledgements) sets
 * this direction's mark to REPLY_MARK, under the same pause timer. Without
 * it the daemon woke for every few dozen bytes of them, several thousand
 * times per GiB, and woke the sender of the bulk data as often. The timer
 * bounds what a reply waits (BATCH_PAUSE_MS after the last read), and only
 * a read while the partner batches starts it: small packets wait only while
 * bulk data streams the other way, and a conversation of small packets
 * alone (a shell, the requests of an sftp listing) is read as it comes.
 * bench/README.md, "Batched replies".
 *
 * A budget per event-loop turn, like lib/turnbudget.ts's: once a turn's
 * BYTES_PER_TURN are read, a readable relay waits in a queue instead of
 * reading, and the queue is served in order at the end of the turn (a
 * check handle; an idle handle keeps the loop from blocking in poll while
 * relays wait). A new connection thus waits a few milliseconds for its
 * banner, not the time it takes to read every busy socket. The budget is
 * the addon's own, not lib/turnbudget.ts's: that one renews in a
 * setImmediate a leg schedules when it charges it, and these reads happen
 * outside JavaScript, in turns where no leg may run at all. So a turn
 * reads up to a budget through the legs and one here.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "packetrelay.h"

/* Output is encrypted into one block and written from there (a socket write each). */
#define OUT_BLOCK (256 * 1024)
/* Bytes read per event-loop turn by all relays together (lib/turnbudget.ts has the same for the legs). */
#define BYTES_PER_TURN (1024 * 1024)
/* Batching: a read of BATCH_START bytes starts it; the kernel then wakes the relay once read_cap bytes wait; BATCH_PAUSE_MS without a read ends it. */
#define BATCH_START (64 * 1024)
#define BATCH_PAUSE_MS 1
/* Replies: a read under REPLY_READ_MAX while the partner batches sets the mark to REPLY_MARK (some 25 window adjustments of AES-GCM). */
#define REPLY_READ_MAX (4 * 1024)
#define REPLY_MARK 1024

/* A relay's low-water mark: 1, a full read (bulk data), or REPLY_MARK (replies to the partner's bulk data). */
enum { BATCH_OFF = 0, BATCH_BULK = 1, BATCH_REPLIES = 2 };

/* Why a relay stopped by itself: onStop's first argument. */
enum { SR_OTHER_TYPE = 1, SR_EOF = 2, SR_READ_ERROR = 3, SR_WRITE_ERROR = 4, SR_PROTOCOL_ERROR = 5 };

/* Slots of a relay's stats (a Float64Array of STATS_LENGTH given at construction). */
enum { ST_BYTES_IN = 0, ST_BYTES_OUT = 1, ST_IN_SEQNO = 2, ST_OUT_SEQNO = 3, ST_PENDING = 4, STATS_LENGTH = 16 };

/* Slots of socketRelayTotals (all relays since start). */
enum { TOTAL_BYTES_READ = 0, TOTAL_RELAYED = 1, TOTAL_BATCHES = 2, TOTAL_REPLY_BATCHES = 3, TOTALS_LENGTH = 4 };

typedef struct socket_relay {
  napi_env env;
  /* Weak, but held (count 1) while running. The callback is the object's
     own onStop property: a reference to it from here would be a root, and
     it reaches the leg, which holds this object. */
  napi_ref self;
  napi_ref stats_ref;
  double *stats;
  napi_ref dec_ref, enc_ref;
  cipher_t *dec, *enc;
  uint32_t in_seqno, out_seqno;
  int running;
  int in_fd, out_fd;
  uv_poll_t *in_poll, *out_poll;
  int reading, writing;
  /* In the queue of relays waiting for a turn's budget. */
  int waiting;
  struct socket_relay *next_waiting;
  unsigned char forwarded[256];
  /* BATCH_*: the input socket's SO_RCVLOWAT; the timer that ends it (while running). */
  int batching;
  /* The relay of the connection's other direction (pair()), or NULL. */
  struct socket_relay *partner;
  uv_timer_t *pause_timer;
  /* The start of a packet split across reads (MAX_WIRE_PACKET bytes while running). */
  unsigned char *pending;
  size_t pending_len;
  /* Output the socket has not taken yet. */
  unsigned char *outq;
  size_t outq_start, outq_end, outq_cap;
} socket_relay_t;

static unsigned char *read_buf; /* lib/sharedreads.ts's buffer: Node's reads and ours never overlap */
static size_t read_cap;
static napi_ref read_buf_ref;
static unsigned char out_block[OUT_BLOCK];
static double *totals;
static napi_async_context async_context;

static size_t spent; /* bytes read in this turn */
static socket_relay_t *waiting_head, *waiting_tail;
static uv_check_t turn_end;
static uv_idle_t keep_polling;
static int turn_handles_ready;

static void stop_with(socket_relay_t *s, int code, napi_value a, double b, double c);
static void stop_with_number(socket_relay_t *s, int code, double a, double b, double c);

/* ---- polling ----------------------------------------------------------- */

static void on_poll(uv_poll_t *handle, int status, int events);
static void on_idle(uv_idle_t *handle);
static void read_and_relay(socket_relay_t *s);

static void set_reading(socket_relay_t *s, int on) {
  if (s->reading == on) return;
  s->reading = on;
  if (on) uv_poll_start(s->in_poll, UV_READABLE, on_poll);
  else uv_poll_stop(s->in_poll);
}

static void set_writing(socket_relay_t *s, int on) {
  if (s->writing == on) return;
  s->writing = on;
  if (on) uv_poll_start(s->out_poll, UV_WRITABLE, on_poll);
  else uv_poll_stop(s->out_poll);
}

static void unqueue(socket_relay_t *s) {
  if (!s->waiting) return;
  socket_relay_t **link = &waiting_head, *prev = NULL;
  while (*link != s) {
    prev = *link;
    link = &(*link)->next_waiting;
  }
  *link = s->next_waiting;
  if (waiting_tail == s) waiting_tail = prev;
  s->next_waiting = NULL;
  s->waiting = 0;
}

/* Waits for the next turn's budget: no reading until the queue reaches it. */
static void wait_for_turn(socket_relay_t *s) {
  set_reading(s, 0);
  if (s->waiting) return;
  s->waiting = 1;
  s->next_waiting = NULL;
  if (waiting_tail) waiting_tail->next_waiting = s;
  else waiting_head = s;
  waiting_tail = s;
  uv_idle_start(&keep_polling, on_idle);
}

/* ---- batching ---------------------------------------------------------- */

/* The input socket's low-water mark (BATCH_*). A socket option, so Node's reads after the relay see it too: teardown ends it. */
static void set_batching(socket_relay_t *s, int mode) {
  if (s->batching == mode) return;
  const int lowat = mode == BATCH_BULK ? (int)read_cap : mode == BATCH_REPLIES ? REPLY_MARK : 1;
  if (setsockopt(s->in_fd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof lowat) != 0) return;
  s->batching = mode;
  if (mode == BATCH_BULK) totals[TOTAL_BATCHES]++;
  if (mode == BATCH_REPLIES) totals[TOTAL_REPLY_BATCHES]++;
}

/* Whether this relay's small reads are replies to bulk data its partner batches. */
static int replying_to_bulk(const socket_relay_t *s) {
  return s->partner != NULL && s->partner->running && s->partner->batching == BATCH_BULK;
}

/* BATCH_PAUSE_MS without a read: the flow paused. Back to waking for any byte, and read what waits. */
static void on_pause(uv_timer_t *timer) {
  socket_relay_t *s = timer->data;
  if (s == NULL || !s->running) return;
  set_batching(s, BATCH_OFF);
  if (!s->reading) return;
  if (spent >= BYTES_PER_TURN) wait_for_turn(s);
  else read_and_relay(s);
}

/* ---- output ------------------------------------------------------------ */

/* 0, or -errno. */
static int queue_output(socket_relay_t *s, const unsigned char *data, size_t len) {
  if (s->outq_start > 0 && s->outq_start == s->outq_end) s->outq_start = s->outq_end = 0;
  if (s->outq_cap - s->outq_end < len) {
    const size_t held = s->outq_end - s->outq_start;
    if (s->outq_start > 0) {
      memmove(s->outq, s->outq + s->outq_start, held);
      s->outq_start = 0;
      s->outq_end = held;
    }
    if (s->outq_cap - held < len) {
      size_t cap = s->outq_cap ? s->outq_cap : OUT_BLOCK;
      while (cap - held < len) cap *= 2;
      unsigned char *grown = realloc(s->outq, cap);
      if (grown == NULL) return -ENOMEM;
      s->outq = grown;
      s->outq_cap = cap;
    }
  }
  memcpy(s->outq + s->outq_end, data, len);
  s->outq_end += len;
  return 0;
}

/* Writes what the socket takes now and queues the rest. 0, or -errno. */
static int send_output(socket_relay_t *s, const unsigned char *data, size_t len) {
  if (len == 0) return 0;
  s->stats[ST_BYTES_OUT] += (double)len;
  if (s->outq_end == s->outq_start) {
    ssize_t w;
    do w = send(s->out_fd, data, len, MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
    if (w == (ssize_t)len) return 0;
    if (w < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK) return -errno;
      w = 0;
    }
    data += w;
    len -= (size_t)w;
  }
  return queue_output(s, data, len);
}

static void release_output(socket_relay_t *s) {
  free(s->outq);
  s->outq = NULL;
  s->outq_start = s->outq_end = s->outq_cap = 0;
}

/* The output socket is writable: send what is queued; once all is out, read again. */
static void drain_output(socket_relay_t *s) {
  while (s->outq_start < s->outq_end) {
    ssize_t w = send(s->out_fd, s->outq + s->outq_start, s->outq_end - s->outq_start, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      stop_with_number(s, SR_WRITE_ERROR, -errno, 0, 0);
      return;
    }
    s->outq_start += (size_t)w;
  }
  release_output(s);
  set_writing(s, 0);
  if (!s->waiting) set_reading(s, 1);
}

/* ---- input ------------------------------------------------------------- */

/* One read of the input socket, relayed. */
static void read_and_relay(socket_relay_t *s) {
  const size_t held = s->pending_len;
  if (held > 0) memcpy(read_buf, s->pending, held);
  ssize_t n;
  do n = read(s->in_fd, read_buf + held, read_cap - held);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK) stop_with_number(s, SR_READ_ERROR, -errno, 0, 0);
    return;
  }
  if (n == 0) {
    stop_with_number(s, SR_EOF, 0, 0, 0);
    return;
  }
  spent += (size_t)n;
  if ((size_t)n >= BATCH_START) set_batching(s, BATCH_BULK);
  else if ((size_t)n < REPLY_READ_MAX && s->batching == BATCH_OFF && replying_to_bulk(s)) set_batching(s, BATCH_REPLIES);
  if (s->batching != BATCH_OFF) uv_timer_start(s->pause_timer, on_pause, BATCH_PAUSE_MS, 0);
  totals[TOTAL_BYTES_READ] += (double)n;
  s->stats[ST_BYTES_IN] += (double)n;
  s->pending_len = 0;
  const size_t end = held + (size_t)n;
  size_t p = 0;
  for (;;) {
    relay_result_t r;
    const char *error = relay_packets(read_buf, p, end, s->dec, s->in_seqno, s->enc, s->out_seqno, s->forwarded, out_block, 0, OUT_BLOCK, &r);
    if (error != NULL) {
      napi_value message;
      napi_handle_scope scope;
      napi_open_handle_scope(s->env, &scope);
      napi_create_string_utf8(s->env, error, NAPI_AUTO_LENGTH, &message);
      stop_with(s, SR_PROTOCOL_ERROR, message, 0, 0);
      napi_close_handle_scope(s->env, scope);
      return;
    }
    s->in_seqno += r.relayed;
    s->out_seqno += r.relayed;
    totals[TOTAL_RELAYED] += r.relayed;
    const int werr = send_output(s, out_block, r.out_end);
    if (werr != 0) {
      stop_with_number(s, SR_WRITE_ERROR, werr, 0, 0);
      return;
    }
    if (r.stop == STOP_OUTPUT_FULL) {
      p = r.next;
      continue;
    }
    if (r.stop == STOP_OTHER_TYPE) {
      stop_with_number(s, SR_OTHER_TYPE, (double)r.next, (double)end, (double)(r.after - r.next));
      return;
    }
    s->pending_len = end - r.next;
    memcpy(s->pending, read_buf + r.next, s->pending_len);
    break;
  }
  /* Backpressure: no more reading until the output socket has taken it all. */
  if (s->outq_end > s->outq_start) {
    set_reading(s, 0);
    set_writing(s, 1);
  }
}

static void on_poll(uv_poll_t *handle, int status, int events) {
  (void)events;
  socket_relay_t *s = handle->data;
  if (s == NULL || !s->running) return;
  if (handle == s->out_poll) {
    if (status < 0) stop_with_number(s, SR_WRITE_ERROR, status, 0, 0);
    else drain_output(s);
    return;
  }
  if (status < 0) {
    stop_with_number(s, SR_READ_ERROR, status, 0, 0);
    return;
  }
  if (spent >= BYTES_PER_TURN) {
    wait_for_turn(s);
    return;
  }
  read_and_relay(s);
}

/* The end of a turn: a new budget, and the relays that waited for one read first, in order. */
static void on_turn_end(uv_check_t *handle) {
  (void)handle;
  spent = 0;
  while (waiting_head != NULL && spent < BYTES_PER_TURN) {
    socket_relay_t *s = waiting_head;
    unqueue(s);
    read_and_relay(s);
    if (s->running && !s->waiting && !s->writing) set_reading(s, 1);
  }
  if (waiting_head == NULL) uv_idle_stop(&keep_polling);
}

static void on_idle(uv_idle_t *handle) {
  (void)handle;
}

/* ---- start and stop ---------------------------------------------------- */

static void free_handle(uv_handle_t *handle) {
  free(handle);
}

static void close_poll(uv_poll_t **poll, int *fd) {
  if (*poll != NULL) {
    (*poll)->data = NULL;
    uv_close((uv_handle_t *)*poll, free_handle);
    *poll = NULL;
  }
  /* Safe now: uv_close() took the descriptor out of epoll. */
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

/* Stops polling and gives back the descriptors and ciphers; the pending bytes and queued output stay for stop(). */
static void teardown(socket_relay_t *s) {
  if (!s->running) return;
  s->running = 0;
  unqueue(s);
  s->reading = s->writing = 0;
  set_batching(s, BATCH_OFF);
  s->pause_timer->data = NULL;
  uv_close((uv_handle_t *)s->pause_timer, free_handle);
  s->pause_timer = NULL;
  close_poll(&s->in_poll, &s->in_fd);
  close_poll(&s->out_poll, &s->out_fd);
  s->stats[ST_IN_SEQNO] = s->in_seqno;
  s->stats[ST_OUT_SEQNO] = s->out_seqno;
  s->stats[ST_PENDING] = (double)s->pending_len;
  napi_delete_reference(s->env, s->dec_ref);
  napi_delete_reference(s->env, s->enc_ref);
  s->dec_ref = s->enc_ref = NULL;
  s->dec = s->enc = NULL;
  napi_reference_unref(s->env, s->self, NULL);
}

/* Stops by itself and tells the leg: onStop(code, a, b, c). */
static void stop_with(socket_relay_t *s, int code, napi_value a, double b, double c) {
  napi_env env = s->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value self, on_stop, argv[4], result;
  napi_get_reference_value(env, s->self, &self);
  napi_get_named_property(env, self, "onStop", &on_stop);
  teardown(s);
  napi_create_int32(env, code, &argv[0]);
  argv[1] = a;
  napi_create_double(env, b, &argv[2]);
  napi_create_double(env, c, &argv[3]);
  if (napi_make_callback(env, async_context, self, on_stop, 4, argv, &result) == napi_pending_exception) {
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    napi_fatal_exception(env, err);
  }
  napi_close_handle_scope(env, scope);
}

static void stop_with_number(socket_relay_t *s, int code, double a, double b, double c) {
  napi_handle_scope scope;
  napi_open_handle_scope(s->env, &scope);
  napi_value value;
  napi_create_double(s->env, a, &value);
  stop_with(s, code, value, b, c);
  napi_close_handle_scope(s->env, scope);
}

/* Marks the objects made by construct_relay, so that no other wrapped object passes for one. */
static const napi_type_tag RELAY_TAG = {0x6a73702d736f636bULL, 0x657472656c6179ULL};

/* The socket_relay_t of `object`, or NULL (an exception pending) if it is not a SocketRelay. */
static socket_relay_t *unwrap_relay(napi_env env, napi_value object) {
  bool tagged = false;
  void *data = NULL;
  if (napi_check_object_type_tag(env, object, &RELAY_TAG, &tagged) != napi_ok || !tagged || napi_unwrap(env, object, &data) != napi_ok
      || data == NULL) {
    throw_error(env, "not a SocketRelay");
    return NULL;
  }
  return data;
}

static socket_relay_t *this_relay(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv) {
  napi_value self;
  napi_get_cb_info(env, info, argc, argv, &self, NULL);
  return unwrap_relay(env, self);
}

static int open_poll(uv_loop_t *loop, socket_relay_t *s, int fd, int *dup_fd, uv_poll_t **poll) {
  *dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (*dup_fd < 0) return 0;
  *poll = malloc(sizeof **poll);
  if (*poll == NULL || uv_poll_init_socket(loop, *poll, *dup_fd) != 0) {
    free(*poll);
    *poll = NULL;
    return 0;
  }
  (*poll)->data = s;
  return 1;
}

/*
 * start(inFd, outFd, decipher, inSeqno, cipher, outSeqno, forwarded, pending, pendingLength):
 * relays from socket inFd to socket outFd from now on; `pending` holds the
 * start of a split packet (pendingLength bytes, copied).
 */
static napi_value method_start(napi_env env, napi_callback_info info) {
  size_t argc = 9;
  napi_value argv[9];
  socket_relay_t *s = this_relay(env, info, &argc, argv);
  if (s == NULL) return NULL;
  int32_t in_fd, out_fd;
  uint32_t in_seqno, out_seqno, pending_len;
  unsigned char *forwarded, *pending;
  size_t forwarded_len, pending_cap;
  if (s->running) return throw_error(env, "SocketRelay: already running");
  if (read_buf == NULL) return throw_error(env, "SocketRelay: no read buffer (setReadBuffer)");
  if (argc < 9 || napi_get_value_int32(env, argv[0], &in_fd) != napi_ok || napi_get_value_int32(env, argv[1], &out_fd) != napi_ok || in_fd < 0
      || out_fd < 0 || !get_u32(env, argv[3], &in_seqno) || !get_u32(env, argv[5], &out_seqno) || !get_buffer(env, argv[6], &forwarded, &forwarded_len)
      || forwarded_len != 256 || !get_buffer(env, argv[7], &pending, &pending_cap) || !get_u32(env, argv[8], &pending_len) || pending_len > pending_cap
      || pending_len > MAX_WIRE_PACKET)
    return throw_error(env, "SocketRelay.start: invalid arguments");
  cipher_t *dec = unwrap(env, argv[2], 0);
  if (dec == NULL) return NULL;
  cipher_t *enc = unwrap(env, argv[4], 1);
  if (enc == NULL) return NULL;
  uv_loop_t *loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return throw_error(env, "SocketRelay: no event loop");
  if (!turn_handles_ready) {
    uv_check_init(loop, &turn_end);
    uv_check_start(&turn_end, on_turn_end);
    uv_unref((uv_handle_t *)&turn_end);
    uv_idle_init(loop, &keep_polling);
    uv_unref((uv_handle_t *)&keep_polling);
    turn_handles_ready = 1;
  }
  if (s->pending == NULL && (s->pending = malloc(MAX_WIRE_PACKET)) == NULL) return throw_error(env, "out of memory");
  s->in_fd = s->out_fd = -1;
  if (!open_poll(loop, s, in_fd, &s->in_fd, &s->in_poll) || !open_poll(loop, s, out_fd, &s->out_fd, &s->out_poll)) {
    const int err = errno;
    close_poll(&s->in_poll, &s->in_fd);
    close_poll(&s->out_poll, &s->out_fd);
    return throw_error(env, err == EMFILE || err == ENFILE ? "SocketRelay: out of file descriptors" : "SocketRelay: cannot poll the sockets");
  }
  if ((s->pause_timer = malloc(sizeof *s->pause_timer)) == NULL) {
    close_poll(&s->in_poll, &s->in_fd);
    close_poll(&s->out_poll, &s->out_fd);
    return throw_error(env, "out of memory");
  }
  uv_timer_init(loop, s->pause_timer);
  s->pause_timer->data = s;
  s->batching = BATCH_OFF;
  napi_create_reference(env, argv[2], 1, &s->dec_ref);
  napi_create_reference(env, argv[4], 1, &s->enc_ref);
  s->dec = dec;
  s->enc = enc;
  s->in_seqno = in_seqno;
  s->out_seqno = out_seqno;
  memcpy(s->forwarded, forwarded, 256);
  memcpy(s->pending, pending, pending_len);
  s->pending_len = pending_len;
  s->running = 1;
  napi_reference_ref(env, s->self, NULL);
  set_reading(s, 1);
  return NULL;
}

/*
 * stop(pendingOut): stops if running; copies the start of a split packet
 * into pendingOut (stats[ST_PENDING] bytes) and returns the output the
 * socket has not taken yet (a Buffer, to be written before anything else),
 * or null. stats[ST_IN_SEQNO] and [ST_OUT_SEQNO] are the sequence numbers
 * the next packets carry.
 */
static napi_value method_stop(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result;
  socket_relay_t *s = this_relay(env, info, &argc, argv);
  if (s == NULL) return NULL;
  unsigned char *out;
  size_t out_len;
  if (argc < 1 || !get_buffer(env, argv[0], &out, &out_len) || out_len < s->pending_len) return throw_error(env, "SocketRelay.stop: invalid arguments");
  teardown(s);
  if (s->pending_len > 0) memcpy(out, s->pending, s->pending_len);
  s->stats[ST_PENDING] = (double)s->pending_len;
  s->pending_len = 0;
  free(s->pending);
  s->pending = NULL;
  if (s->outq_end > s->outq_start) {
    void *data;
    if (napi_create_buffer_copy(env, s->outq_end - s->outq_start, s->outq + s->outq_start, &data, &result) != napi_ok) result = NULL;
  } else {
    napi_get_null(env, &result);
  }
  release_output(s);
  return result;
}

/*
 * pair(other): `other` relays the connection's other direction. Each then
 * batches its small reads while the other batches bulk data (REPLY_MARK).
 */
static napi_value method_pair(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  socket_relay_t *s = this_relay(env, info, &argc, argv);
  if (s == NULL) return NULL;
  if (argc < 1) return throw_error(env, "SocketRelay.pair: another SocketRelay");
  socket_relay_t *other = unwrap_relay(env, argv[0]);
  if (other == NULL) return NULL;
  if (other == s) return throw_error(env, "SocketRelay.pair: another SocketRelay");
  if (s->partner != NULL) s->partner->partner = NULL;
  if (other->partner != NULL) other->partner->partner = NULL;
  s->partner = other;
  other->partner = s;
  return NULL;
}

static void relay_finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  socket_relay_t *s = data;
  /* Never running here: a running relay holds its own object. */
  if (s->partner != NULL) s->partner->partner = NULL;
  napi_delete_reference(env, s->stats_ref);
  napi_delete_reference(env, s->self);
  free(s->pending);
  free(s->outq);
  free(s);
}

/* new SocketRelay(onStop, stats: Float64Array(16)) */
static napi_value construct_relay(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], self;
  napi_get_cb_info(env, info, &argc, argv, &self, NULL);
  napi_valuetype type;
  napi_typedarray_type array_type;
  size_t length;
  void *data;
  if (argc < 2 || napi_typeof(env, argv[0], &type) != napi_ok || type != napi_function
      || napi_get_typedarray_info(env, argv[1], &array_type, &length, &data, NULL, NULL) != napi_ok || array_type != napi_float64_array
      || length < STATS_LENGTH)
    return throw_error(env, "SocketRelay: (onStop, Float64Array(16))");
  socket_relay_t *s = calloc(1, sizeof *s);
  if (s == NULL) return throw_error(env, "out of memory");
  s->env = env;
  s->in_fd = s->out_fd = -1;
  s->stats = data;
  if (napi_wrap(env, self, s, relay_finalize, NULL, &s->self) != napi_ok) {
    free(s);
    return throw_error(env, "napi_wrap failed");
  }
  napi_type_tag_object(env, self, &RELAY_TAG);
  napi_set_named_property(env, self, "onStop", argv[0]);
  napi_create_reference(env, argv[1], 1, &s->stats_ref);
  return self;
}

/* setReadBuffer(buffer): the buffer every relay reads into (lib/sharedreads.ts's). */
static napi_value set_read_buffer(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  unsigned char *data;
  size_t len;
  if (argc < 1 || !get_buffer(env, argv[0], &data, &len) || len < 2 * MAX_WIRE_PACKET) return throw_error(env, "setReadBuffer: a Buffer");
  if (waiting_head != NULL) return throw_error(env, "setReadBuffer: relays are running");
  if (read_buf_ref != NULL) napi_delete_reference(env, read_buf_ref);
  napi_create_reference(env, argv[0], 1, &read_buf_ref);
  read_buf = data;
  read_cap = len;
  return NULL;
}

void socket_relay_init(napi_env env, napi_value exports) {
  napi_value cls, fn, name, buffer, array;
  napi_property_descriptor methods[] = {
      {"start", NULL, method_start, NULL, NULL, NULL, napi_default_method, NULL},
      {"stop", NULL, method_stop, NULL, NULL, NULL, napi_default_method, NULL},
      {"pair", NULL, method_pair, NULL, NULL, NULL, napi_default_method, NULL},
  };
  napi_define_class(env, "SocketRelay", NAPI_AUTO_LENGTH, construct_relay, NULL, 3, methods, &cls);
  napi_set_named_property(env, exports, "SocketRelay", cls);
  napi_create_function(env, "setReadBuffer", NAPI_AUTO_LENGTH, set_read_buffer, NULL, &fn);
  napi_set_named_property(env, exports, "setReadBuffer", fn);
  void *data;
  napi_create_arraybuffer(env, TOTALS_LENGTH * sizeof(double), &data, &buffer);
  napi_create_typedarray(env, napi_float64_array, TOTALS_LENGTH, buffer, 0, &array);
  napi_set_named_property(env, exports, "socketRelayTotals", array);
  totals = data;
  napi_create_string_utf8(env, "SocketRelay", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, NULL, name, &async_context);
}
