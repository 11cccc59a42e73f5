/*
 * Reads a user's file with the user's file-system identity, as sshd reads
 * a user's authorized_keys (OpenSSH's temporarily_use_uid), for
 * lib/authorizedkeys.ts. Read as root, a home that root may not enter is
 * refused: NFS exported with root_squash (the server sees root as nobody),
 * or a 0700 home on a host where the daemon runs without CAP_DAC_OVERRIDE.
 *
 * Why native: Linux keeps the identity that file access is checked against
 * (fsuid, fsgid, supplementary groups) per thread, and the switch must
 * cover exactly the calls that read. Node's fs calls run on whichever of
 * libuv's pool threads is free. Here one request runs on one pool thread:
 * it switches that thread, makes its calls, and switches back before the
 * thread serves anything else. The system calls are made directly, for
 * glibc's setgroups() changes every thread of the process.
 *
 * readAsUser(file, home, name, uid, gid, maxBytes) returns a promise of
 *   { error, step }: step 'identity' (the switch), 'realpath', 'open' or
 *     'stat' failed with the errno name `error` ('ENOENT', 'EACCES', ...);
 *     or
 *   { real, realHome, file: { uid, mode, dev, ino, regular }, named: { dev,
 *     ino }, dirs: [{ path, uid, mode }], content }: `real` and `realHome`
 *     the resolved names (realHome is `home` when it does not resolve);
 *     `file` the opened file's fstat and `named` a stat of `real` made
 *     after (unequal: the name was swapped meanwhile); `dirs` the folders
 *     from the file's own up to realHome or /; `content` at most
 *     maxBytes + 1 bytes (one more tells a file that is too large), or
 *     null when the file is not a regular one (a FIFO must not be read).
 * The caller judges the owners and modes (sshd's StrictModes).
 *
 * A daemon that does not run as root reads with its own identity.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <node_api.h>
#include <uv.h>

#include "jsstring.h"

typedef struct {
  char path[PATH_MAX];
  uid_t uid;
  mode_t mode;
} Dir;

typedef struct {
  napi_async_work work;
  napi_deferred deferred;

  /* The request, copied for the pool thread. */
  char *file;
  char *home;
  char *name;
  uid_t uid;
  gid_t gid;
  size_t max_bytes;

  /* Set by the pool thread. */
  int error; /* errno of the failed step, 0 on success */
  const char *step;
  char real[PATH_MAX];
  char real_home[PATH_MAX];
  struct stat file_stat;
  struct stat named_stat;
  Dir *dirs;
  size_t dir_count;
  char *content; /* NULL: not a regular file */
  size_t content_length;
} Request;

/* A thread's identity for file access (see the header comment). */
typedef struct {
  uid_t fsuid;
  gid_t fsgid;
  gid_t *groups;
  int group_count;
} Identity;

static void fail(Request *r, const char *step) {
  r->error = errno;
  r->step = step;
}

/* Nothing to do on a failed switch back but stop: the thread would go on to serve other requests as the user. */
static void must(int ok, const char *what) {
  if (ok) return;
  fprintf(stderr, "jupyter-ssh-proxy: cannot switch a thread's file-system identity back (%s): %s\n", what, strerror(errno));
  abort();
}

/* The supplementary groups of `name` (as initgroups would set them), malloc'd; NULL with errno. */
static gid_t *groups_of(const char *name, gid_t gid, int *count) {
  *count = 16;
  for (;;) {
    gid_t *groups = malloc((size_t)*count * sizeof *groups);
    if (!groups) return NULL;
    int want = *count;
    if (getgrouplist(name, gid, groups, count) >= 0) return groups;
    free(groups);
    /* -1 with count set to what it takes, which may have grown meanwhile. */
    if (*count <= want) *count = 2 * want;
  }
}

static void restore(const Identity *saved) {
  /* The file-system capabilities that leaving fsuid 0 dropped come back with it. */
  syscall(SYS_setfsuid, saved->fsuid);
  syscall(SYS_setfsgid, saved->fsgid);
  must((uid_t)syscall(SYS_setfsuid, -1) == saved->fsuid, "fsuid");
  must((gid_t)syscall(SYS_setfsgid, -1) == saved->fsgid, "fsgid");
  must(syscall(SYS_setgroups, (size_t)saved->group_count, saved->groups) == 0, "groups");
}

/*
 * Switches this thread to the user's identity and saves the one to go
 * back to (saved->groups is malloc'd). Returns 0; or -1 with errno, the
 * thread's identity unchanged.
 */
static int become(const Request *r, Identity *saved) {
  int count;
  gid_t *groups = groups_of(r->name, r->gid, &count);
  if (!groups) return -1;
  saved->group_count = getgroups(0, NULL);
  saved->groups = saved->group_count >= 0 ? malloc(((size_t)saved->group_count + 1) * sizeof *saved->groups) : NULL;
  if (!saved->groups || getgroups(saved->group_count, saved->groups) != saved->group_count ||
      syscall(SYS_setgroups, (size_t)count, groups) != 0) {
    int error = errno;
    free(groups);
    free(saved->groups);
    errno = error;
    return -1;
  }
  free(groups);
  /* setfsgid and setfsuid return the previous value whether or not they
   * succeed; an id of -1 changes nothing and reads it back. */
  saved->fsgid = (gid_t)syscall(SYS_setfsgid, r->gid);
  saved->fsuid = (uid_t)syscall(SYS_setfsuid, r->uid);
  if ((uid_t)syscall(SYS_setfsuid, -1) != r->uid || (gid_t)syscall(SYS_setfsgid, -1) != r->gid) {
    restore(saved);
    free(saved->groups);
    errno = EPERM;
    return -1;
  }
  return 0;
}

/* The folders from real's own up to real_home or /. Returns 0, or -1 with errno. */
static int stat_dirs(Request *r) {
  size_t capacity = 8;
  r->dirs = malloc(capacity * sizeof *r->dirs);
  if (!r->dirs) return -1;
  char dir[PATH_MAX];
  strcpy(dir, r->real);
  for (;;) {
    char *slash = strrchr(dir, '/');
    if (slash == NULL) return 0; /* realpath's names start with '/' */
    slash[slash == dir ? 1 : 0] = '\0';
    struct stat st;
    if (stat(dir, &st) != 0) return -1;
    if (r->dir_count == capacity) {
      Dir *more = realloc(r->dirs, 2 * capacity * sizeof *r->dirs);
      if (!more) return -1;
      r->dirs = more;
      capacity *= 2;
    }
    Dir *d = &r->dirs[r->dir_count++];
    strcpy(d->path, dir);
    d->uid = st.st_uid;
    d->mode = st.st_mode;
    if (strcmp(dir, r->real_home) == 0 || strcmp(dir, "/") == 0) return 0;
  }
}

/* At most max_bytes + 1 bytes of a regular file. Returns 0, or -1 with errno. */
static int read_content(Request *r, int fd) {
  size_t want = (size_t)r->file_stat.st_size < r->max_bytes ? (size_t)r->file_stat.st_size + 1 : r->max_bytes + 1;
  r->content = malloc(want);
  if (!r->content) return -1;
  while (r->content_length < want) {
    ssize_t n = pread(fd, r->content + r->content_length, want - r->content_length, (off_t)r->content_length);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (n == 0) break;
    r->content_length += (size_t)n;
  }
  return 0;
}

/* The reads, with whatever identity the thread has. */
static void read_file(Request *r) {
  if (realpath(r->file, r->real) == NULL) {
    fail(r, "realpath");
    return;
  }
  if (realpath(r->home, r->real_home) == NULL) snprintf(r->real_home, sizeof r->real_home, "%s", r->home);
  /* O_NONBLOCK: a FIFO put there must not hang the read. O_NOFOLLOW: the name was resolved above; a link swapped in since is refused. */
  int fd = open(r->real, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) {
    fail(r, "open");
    return;
  }
  if (fstat(fd, &r->file_stat) != 0 || (S_ISREG(r->file_stat.st_mode) && read_content(r, fd) != 0)) {
    fail(r, "open");
    close(fd);
    return;
  }
  close(fd);
  if (stat_dirs(r) != 0 || stat(r->real, &r->named_stat) != 0) fail(r, "stat");
}

static void execute(napi_env env, void *data) {
  (void)env;
  Request *r = data;
  if (geteuid() != 0 || r->uid == geteuid()) {
    read_file(r);
    return;
  }
  Identity saved;
  if (become(r, &saved) != 0) {
    fail(r, "identity");
    return;
  }
  read_file(r);
  restore(&saved);
  free(saved.groups);
}

static void set_string(napi_env env, napi_value object, const char *key, const char *value) {
  napi_value v;
  napi_create_string_utf8(env, value, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, object, key, v);
}

static void set_number(napi_env env, napi_value object, const char *key, double value) {
  napi_value v;
  napi_create_double(env, value, &v);
  napi_set_named_property(env, object, key, v);
}

static napi_value stat_object(napi_env env, const struct stat *st) {
  napi_value o;
  napi_create_object(env, &o);
  set_number(env, o, "dev", (double)st->st_dev);
  set_number(env, o, "ino", (double)st->st_ino);
  set_number(env, o, "uid", st->st_uid);
  set_number(env, o, "mode", st->st_mode);
  napi_value regular;
  napi_get_boolean(env, S_ISREG(st->st_mode), &regular);
  napi_set_named_property(env, o, "regular", regular);
  return o;
}

static void free_request(Request *r) {
  free(r->file);
  free(r->home);
  free(r->name);
  free(r->dirs);
  free(r->content);
  free(r);
}

static void complete(napi_env env, napi_status status, void *data) {
  Request *r = data;
  napi_delete_async_work(env, r->work);
  if (status != napi_ok && !r->error) {
    r->error = ECANCELED;
    r->step = "identity";
  }
  napi_value result;
  napi_create_object(env, &result);
  if (r->error) {
    set_string(env, result, "error", uv_err_name(-r->error));
    set_string(env, result, "step", r->step);
  } else {
    set_string(env, result, "real", r->real);
    set_string(env, result, "realHome", r->real_home);
    napi_set_named_property(env, result, "file", stat_object(env, &r->file_stat));
    napi_set_named_property(env, result, "named", stat_object(env, &r->named_stat));
    napi_value dirs;
    napi_create_array_with_length(env, r->dir_count, &dirs);
    for (size_t i = 0; i < r->dir_count; i++) {
      napi_value d;
      napi_create_object(env, &d);
      set_string(env, d, "path", r->dirs[i].path);
      set_number(env, d, "uid", r->dirs[i].uid);
      set_number(env, d, "mode", r->dirs[i].mode);
      napi_set_element(env, dirs, (uint32_t)i, d);
    }
    napi_set_named_property(env, result, "dirs", dirs);
    napi_value content;
    if (r->content)
      napi_create_buffer_copy(env, r->content_length, r->content, NULL, &content);
    else
      napi_get_null(env, &content);
    napi_set_named_property(env, result, "content", content);
  }
  napi_resolve_deferred(env, r->deferred, result);
  free_request(r);
}

static napi_value read_as_user(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  Request *r = calloc(1, sizeof *r);
  uint32_t uid = 0, gid = 0;
  int64_t max_bytes = 0;
  if (!r || argc < 6) goto bad;
  r->file = copy_string(env, argv[0]);
  r->home = copy_string(env, argv[1]);
  r->name = copy_string(env, argv[2]);
  if (!r->file || !r->home || !r->name || napi_get_value_uint32(env, argv[3], &uid) != napi_ok ||
      napi_get_value_uint32(env, argv[4], &gid) != napi_ok || napi_get_value_int64(env, argv[5], &max_bytes) != napi_ok || max_bytes < 0)
    goto bad;
  r->uid = uid;
  r->gid = gid;
  r->max_bytes = (size_t)max_bytes;

  napi_value promise, name;
  napi_create_promise(env, &r->deferred, &promise);
  napi_create_string_utf8(env, "readAsUser", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, execute, complete, r, &r->work);
  napi_queue_async_work(env, r->work);
  return promise;

bad:
  if (r) free_request(r);
  napi_throw_type_error(env, NULL, "readAsUser(file, home, name, uid, gid, maxBytes)");
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "readAsUser", NAPI_AUTO_LENGTH, read_as_user, NULL, &fn);
  napi_set_named_property(env, exports, "readAsUser", fn);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
