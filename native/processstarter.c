/*
 * Starts processes for lib/spawner.ts without blocking the event loop and
 * without a second V8 isolate.
 *
 * Node's spawn forks the whole daemon (page tables of ~100 MiB, copy-on-write
 * faults after) and blocks its thread until the child has exec'd: 100-290 ms
 * per spawn with 100 busy processes on 2 cores. glibc's posix_spawn shares
 * the parent's memory until exec (CLONE_VM | CLONE_VFORK) and runs here on
 * libuv's thread pool, so only a pool thread waits. A worker thread did this
 * before, at ~10 MiB for its isolate and ~2 KiB per running process.
 *
 * After the start, the main thread's loop watches the child: a pidfd for its
 * end (libuv reaps only the pids it started itself) and non-blocking pipes
 * for its output. Events go to methods of the JS object given to start():
 *   onStarted(code, message, pid)   code null on success, else "ENOENT", ...
 *   onOutput(fd, buffer)            a chunk of the child's fd 1 or 2
 *   onExit(status, signal)          after the end and after every pipe's EOF
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <node_api.h>
#include <uv.h>

#include "jsstring.h"

/* Output pipes a process can have: its stdout (when asked for) and stderr. */
enum { OUT = 0, ERR = 1, PIPES = 2 };
/* Bytes read per read(2) (sshd's log lines, getent's one line), and reads
 * per readiness event (others then get a turn). */
enum { READ_CHUNK = 16384, READS_PER_EVENT = 16 };

typedef struct {
  napi_env env;
  napi_async_work work;
  napi_async_context async;
  napi_ref target; /* the JS object whose methods get the events; held until onExit() */

  /* The start request, copied for the pool thread. */
  char *file;
  char **argv; /* NULL-terminated */
  char **envp; /* NULL-terminated */
  int stdin_fd;  /* -1: /dev/null */
  int stdout_fd; /* -1: a pipe, reported through output() */

  /* Set by the pool thread. */
  int error; /* errno of the failed step, 0 on success */
  pid_t pid;
  int pidfd;
  int pipe_fd[PIPES]; /* read ends, -1 when none or closed */

  /* Watched on the main thread. */
  uv_poll_t pipe_poll[PIPES];
  uv_poll_t pid_poll;
  int open_polls; /* uv handles not yet closed */
  int ended;      /* reaped: status holds its wait status */
  int status;
  int reported;   /* onExit() was called */
  int refs;       /* the JS external and the native side: freed at 0 */
} Process;

static void free_strings(char **list) {
  if (!list) return;
  for (char **s = list; *s; s++) free(*s);
  free(list);
}

/* The start request's strings, once the pool thread is done with them. */
static void free_request(Process *p) {
  free(p->file);
  free_strings(p->argv);
  free_strings(p->envp);
  p->file = NULL;
  p->argv = p->envp = NULL;
}

static void release(Process *p) {
  if (--p->refs > 0) return;
  free_request(p);
  free(p);
}

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

/* Calls target[method](...args) as a callback from the event loop: node
 * drains promises and nextTicks after it, and an exception becomes uncaught. */
static void call_target(Process *p, const char *method, size_t argc, napi_value *argv) {
  napi_env env = p->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value target, fn, result;
  if (napi_get_reference_value(env, p->target, &target) == napi_ok && target &&
      napi_get_named_property(env, target, method, &fn) == napi_ok) {
    if (napi_make_callback(env, p->async, target, fn, argc, argv, &result) == napi_pending_exception) {
      napi_value err;
      napi_get_and_clear_last_exception(env, &err);
      napi_fatal_exception(env, err);
    }
  }
  napi_close_handle_scope(env, scope);
}

static void on_poll_closed(uv_handle_t *handle) {
  Process *p = handle->data;
  p->open_polls--;
  if (p->open_polls == 0) {
    napi_async_destroy(p->env, p->async);
    release(p);
  }
}

/* onExit() once the process is reaped and every pipe has reached its end,
 * as child_process's 'close': by then all of its output has been passed on. */
static void report_if_done(Process *p) {
  if (p->reported || !p->ended) return;
  for (int i = 0; i < PIPES; i++)
    if (p->pipe_fd[i] >= 0) return;
  p->reported = 1;
  napi_env env = p->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value args[2];
  if (WIFSIGNALED(p->status)) {
    napi_get_null(env, &args[0]);
    napi_create_int32(env, WTERMSIG(p->status), &args[1]);
  } else {
    napi_create_int32(env, WEXITSTATUS(p->status), &args[0]);
    napi_get_null(env, &args[1]);
  }
  call_target(p, "onExit", 2, args);
  napi_close_handle_scope(env, scope);
  napi_delete_reference(env, p->target);
  p->target = NULL;
  /* Its poll handle is stopped (uv_close stops it at once), so the pidfd can
   * go; kill() from now on signals nothing rather than a recycled pid. */
  close_fd(&p->pidfd);
}

static void on_pipe_readable(uv_poll_t *poll, int status, int events) {
  (void)events;
  Process *p = poll->data;
  int which = poll == &p->pipe_poll[OUT] ? OUT : ERR;
  char chunk[READ_CHUNK];
  int at_end = status < 0;
  for (int reads = 0; !at_end && reads < READS_PER_EVENT; reads++) {
    ssize_t n = read(p->pipe_fd[which], chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n <= 0) {
      at_end = 1;
      break;
    }
    napi_handle_scope scope;
    napi_open_handle_scope(p->env, &scope);
    napi_value args[2];
    void *data;
    napi_create_int32(p->env, which == OUT ? 1 : 2, &args[0]);
    napi_create_buffer_copy(p->env, (size_t)n, chunk, &data, &args[1]);
    call_target(p, "onOutput", 2, args);
    napi_close_handle_scope(p->env, scope);
  }
  if (!at_end) return;
  uv_poll_stop(poll);
  uv_close((uv_handle_t *)poll, on_poll_closed);
  close_fd(&p->pipe_fd[which]);
  report_if_done(p);
}

static void on_pid_readable(uv_poll_t *poll, int status, int events) {
  (void)status;
  (void)events;
  Process *p = poll->data;
  int wstatus;
  pid_t got;
  do got = waitpid(p->pid, &wstatus, WNOHANG);
  while (got < 0 && errno == EINTR);
  if (got == 0) return; /* not yet (a spurious wake-up) */
  /* got < 0 (ECHILD) would mean someone else reaped it; the end is all we can tell. */
  p->ended = 1;
  p->status = got > 0 ? wstatus : 0;
  uv_poll_stop(poll);
  uv_close((uv_handle_t *)poll, on_poll_closed);
  report_if_done(p);
}

/* On the pool thread: pipes, posix_spawn, pidfd. No N-API calls here. */
static void execute(napi_env env, void *data) {
  (void)env;
  Process *p = data;
  int write_end[PIPES] = {-1, -1};
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  int actions_made = 0, attr_made = 0;

  for (int i = 0; i < PIPES; i++) {
    if (i == OUT && p->stdout_fd >= 0) continue;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
      p->error = errno;
      goto done;
    }
    p->pipe_fd[i] = fds[0];
    write_end[i] = fds[1];
    /* Only our read end: the child's stderr stays blocking, as sshd expects. */
    fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK);
  }

  /* The child's stdio must block, as libuv makes it for its children. The
   * flag belongs to the open file the daemon shares with the child, but the
   * daemon hands these descriptors over and closes its own. */
  if (p->stdin_fd >= 0) fcntl(p->stdin_fd, F_SETFL, fcntl(p->stdin_fd, F_GETFL) & ~O_NONBLOCK);
  if (p->stdout_fd >= 0) fcntl(p->stdout_fd, F_SETFL, fcntl(p->stdout_fd, F_GETFL) & ~O_NONBLOCK);

  if ((p->error = posix_spawn_file_actions_init(&actions)) != 0) goto done;
  actions_made = 1;
  if (p->stdin_fd >= 0)
    p->error = posix_spawn_file_actions_adddup2(&actions, p->stdin_fd, 0);
  else
    p->error = posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  if (!p->error)
    p->error = posix_spawn_file_actions_adddup2(&actions, p->stdout_fd >= 0 ? p->stdout_fd : write_end[OUT], 1);
  if (!p->error) p->error = posix_spawn_file_actions_adddup2(&actions, write_end[ERR], 2);
  /* Node opens its own descriptors close-on-exec, but not what the daemon
   * inherited from whoever started it: a user's sshd gets none of those. */
  if (!p->error) p->error = posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  if (p->error) goto done;

  /* As libuv does for its children: a session of its own (a Ctrl-C for a
   * daemon in a terminal must not reach them), no blocked signals, and the
   * default action for every signal (node ignores SIGPIPE, and SIG_IGN
   * would survive the exec). glibc keeps its two internal signals (32, 33)
   * out of any set; its posix_spawn leaves them ignored in every child. */
  if ((p->error = posix_spawnattr_init(&attr)) != 0) goto done;
  attr_made = 1;
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  /* posix_spawnp: "getent" is looked up on PATH, as execFile does. */
  p->error = posix_spawnp(&p->pid, p->file, &actions, &attr, p->argv, p->envp);
  if (p->error) goto done;

  p->pidfd = (int)syscall(SYS_pidfd_open, p->pid, 0);
  if (p->pidfd < 0) {
    /* Cannot watch it (a kernel before 5.3): do not leave it running unwatched. */
    p->error = errno;
    kill(p->pid, SIGKILL);
    while (waitpid(p->pid, NULL, 0) < 0 && errno == EINTR) {
    }
  }

done:
  if (actions_made) posix_spawn_file_actions_destroy(&actions);
  if (attr_made) posix_spawnattr_destroy(&attr);
  for (int i = 0; i < PIPES; i++) close_fd(&write_end[i]);
  if (p->error)
    for (int i = 0; i < PIPES; i++) close_fd(&p->pipe_fd[i]);
}

/* On the main thread, after execute: report the start and begin watching. */
static void complete(napi_env env, napi_status status, void *data) {
  Process *p = data;
  napi_delete_async_work(env, p->work);
  free_request(p); /* the environment alone is a few KiB per running process */
  if (status != napi_ok && !p->error) p->error = ECANCELED;

  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value args[3];
  if (p->error) {
    napi_create_string_utf8(env, uv_err_name(-p->error), NAPI_AUTO_LENGTH, &args[0]);
    napi_create_string_utf8(env, strerror(p->error), NAPI_AUTO_LENGTH, &args[1]);
    napi_create_int32(env, 0, &args[2]);
  } else {
    napi_get_null(env, &args[0]);
    napi_get_null(env, &args[1]);
    napi_create_int32(env, p->pid, &args[2]);
  }

  if (!p->error) {
    uv_loop_t *loop;
    napi_get_uv_event_loop(env, &loop);
    p->pid_poll.data = p;
    uv_poll_init(loop, &p->pid_poll, p->pidfd);
    uv_poll_start(&p->pid_poll, UV_READABLE, on_pid_readable);
    p->open_polls++;
    for (int i = 0; i < PIPES; i++) {
      if (p->pipe_fd[i] < 0) continue;
      p->pipe_poll[i].data = p;
      uv_poll_init(loop, &p->pipe_poll[i], p->pipe_fd[i]);
      uv_poll_start(&p->pipe_poll[i], UV_READABLE | UV_DISCONNECT, on_pipe_readable);
      p->open_polls++;
    }
  }
  call_target(p, "onStarted", 3, args);
  napi_close_handle_scope(env, scope);
  if (p->error) {
    napi_delete_reference(env, p->target);
    p->target = NULL;
    napi_async_destroy(env, p->async);
    release(p);
  }
}

static void finalize_external(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  release(data);
}

/* Copies a JS array of strings into a NULL-terminated list; NULL on failure. */
static char **copy_strings(napi_env env, napi_value array) {
  uint32_t n;
  if (napi_get_array_length(env, array, &n) != napi_ok) return NULL;
  char **list = calloc(n + 1, sizeof *list);
  for (uint32_t i = 0; list && i < n; i++) {
    napi_value item;
    if (napi_get_element(env, array, i, &item) != napi_ok || !(list[i] = copy_string(env, item))) {
      free_strings(list);
      return NULL;
    }
  }
  return list;
}

static napi_value throw_type_error(napi_env env, const char *message) {
  napi_throw_type_error(env, NULL, message);
  return NULL;
}

/* start(file, argv, envp, stdinFd, stdoutFd, target) -> handle for kill().
 * argv includes argv[0]; a descriptor of -1 means /dev/null (stdin) or a
 * pipe (stdout). The descriptors must stay open until onStarted() is called,
 * and are made blocking: they are the child's from then on. */
static napi_value start(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value args[6];
  napi_get_cb_info(env, info, &argc, args, NULL, NULL);
  if (argc < 6) return throw_type_error(env, "start(file, argv, envp, stdinFd, stdoutFd, target)");

  Process *p = calloc(1, sizeof *p);
  if (!p) return throw_type_error(env, "out of memory");
  p->env = env;
  p->pidfd = -1;
  p->pipe_fd[OUT] = p->pipe_fd[ERR] = -1;
  p->refs = 1; /* until the arguments are checked */
  p->file = copy_string(env, args[0]);
  p->argv = copy_strings(env, args[1]);
  p->envp = copy_strings(env, args[2]);
  if (!p->file || !p->argv || !p->envp || napi_get_value_int32(env, args[3], &p->stdin_fd) != napi_ok ||
      napi_get_value_int32(env, args[4], &p->stdout_fd) != napi_ok) {
    release(p);
    return throw_type_error(env, "start: file must be a string, argv and envp arrays of strings, descriptors integers");
  }
  /* dup2 onto 0-2 in order would clobber a source among them; node keeps 0-2 its own stdio. */
  if ((p->stdin_fd >= 0 && p->stdin_fd <= 2) || (p->stdout_fd >= 0 && p->stdout_fd <= 2)) {
    release(p);
    return throw_type_error(env, "start: descriptors 0-2 cannot be passed");
  }

  /* The external returned below, and the native side: the start, then the
   * poll handles until their close callbacks (the caller may drop the
   * external at once). */
  p->refs = 2;
  napi_value name, external;
  napi_create_string_utf8(env, "jupyter-ssh-proxy:process", NAPI_AUTO_LENGTH, &name);
  if (napi_create_reference(env, args[5], 1, &p->target) != napi_ok ||
      napi_async_init(env, args[5], name, &p->async) != napi_ok ||
      napi_create_external(env, p, finalize_external, NULL, &external) != napi_ok ||
      napi_create_async_work(env, args[5], name, execute, complete, p, &p->work) != napi_ok ||
      napi_queue_async_work(env, p->work) != napi_ok) {
    /* Only reachable when V8 is out of memory; the pieces made leak. */
    napi_throw_error(env, NULL, "start: cannot queue the process start");
    return NULL;
  }
  return external;
}

/* kill(handle, signal): signals the process unless it has ended. Returns 0
 * or an errno (ESRCH once it has ended). */
static napi_value kill_process(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value args[2], result;
  napi_get_cb_info(env, info, &argc, args, NULL, NULL);
  void *data;
  int32_t signal;
  if (argc < 2 || napi_get_value_external(env, args[0], &data) != napi_ok || napi_get_value_int32(env, args[1], &signal) != napi_ok)
    return throw_type_error(env, "kill(handle, signal)");
  Process *p = data;
  int error = ESRCH;
  if (p->pidfd >= 0 && !p->ended) error = syscall(SYS_pidfd_send_signal, p->pidfd, signal, NULL, 0) == 0 ? 0 : errno;
  napi_create_int32(env, error, &result);
  return result;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "start", NAPI_AUTO_LENGTH, start, NULL, &fn);
  napi_set_named_property(env, exports, "start", fn);
  napi_create_function(env, "kill", NAPI_AUTO_LENGTH, kill_process, NULL, &fn);
  napi_set_named_property(env, exports, "kill", fn);
  return exports;
}
