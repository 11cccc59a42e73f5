"""jupyter-ssh-proxy's server extension: SSH into this Jupyter server's own
environment, wherever the spawner runs it (a container, another host).

The proxy daemon, started with ``--upstream websocket``, opens a WebSocket to
``{base_url}ssh-proxy/connect`` through the Hub's proxy, authenticated by the
Hub like any request to this server (its service token, with access to the
server). Each connection runs ``sshd -i`` as this server's user, with binary
messages carrying the SSH byte stream both ways.

A daemon that asks for it (``X-SSH-Proxy-Stream: raw``) gets the raw stream
instead: the answer to its upgrade says so in the same header, and from then
on the connection carries the SSH bytes themselves, with no WebSocket frames:
its socket is sshd's standard input and output, and this server's Python is
out of the data path. Only where the connection is plain TCP (not this
server's own TLS); others, and daemons that do not ask, get binary messages.

The daemon logs in there with its own key, sent in the ``X-SSH-Proxy-Key``
request header, together with the options of the user's login (the
authorized_keys options of a key or certificate, such as ``restrict`` and
``command="..."``) in ``X-SSH-Proxy-Options``; sshd applies them to the
session. The host key the daemon must expect, and the user it logs in as,
come back in the ``X-SSH-Host-Key`` and ``X-SSH-User`` response headers.
The host key is made when the extension loads and kept in memory; each
connection's sshd reads it, and the proxy's key, from a private folder of
that connection's, removed when it ends.

With ``--authorized-keys-file``, the daemon also reads the user's keys
here: ``{base_url}ssh-proxy/authorized-keys`` answers with the file the
``X-SSH-Proxy-Keys-File`` header names (sshd's ``AuthorizedKeysFile``:
``%h``, ``%u``, relative to the home), read as this server's user and
checked as sshd's StrictModes checks it, so that keys users keep in their
server's home log in through the proxy as they would into sshd.

Sessions get this server's environment (its PATH, conda or virtualenv, the
JUPYTERHUB_* variables), as the server's own terminals do, but for what sshd
sets for a login (HOME, USER, SHELL, TERM, SSH_*, ...): ``python`` is the
server's python. It goes to sshd as ``environment=`` options of the proxy's
key, which ``PermitUserEnvironment`` allows for exactly those names.

Works with the classic notebook server (6.x) and with jupyter_server (1.x,
2.x). Load it with ``--NotebookApp.nbserver_extensions`` /
``--ServerApp.jpserver_extensions``, or ``jupyter server extension enable``.
"""
import asyncio
import atexit
import base64
import fcntl
import getpass
import hashlib
import json
import os
import pwd
import re
import stat
import shutil
import subprocess
import tempfile

from tornado import iostream, web, websocket

# What the proxy's key line may look like: a key type and base64, nothing else.
_KEY_LINE = re.compile(r"^[a-z0-9@.-]+ [A-Za-z0-9+/]+={0,2}$")
# Bytes read from sshd per message at most, and the size asked for the pipes to and from sshd (Linux's default
# is 64 KiB): fewer, larger reads and messages cost less CPU per byte.
_READ_SIZE = 256 * 1024
_PIPE_SIZE = 1024 * 1024
# What sshd sets for the login, or what means nothing in another process: not passed on.
_LOGIN_VARIABLES = {"HOME", "USER", "LOGNAME", "SHELL", "MAIL", "TERM", "PWD", "OLDPWD", "SHLVL", "_", "DISPLAY"}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# The largest authorized_keys file served, as the daemon's limit for files it reads itself.
_MAX_KEYS_FILE_BYTES = 1024 * 1024
# sshd's every live child, ended with the server.
_live = set()
# RFC 6455's key for Sec-WebSocket-Accept.
_WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _session_environment():
    """This server's environment for its SSH sessions: (names, authorized_keys options)."""
    names, options = [], []
    for name, value in sorted(os.environ.items()):
        if name in _LOGIN_VARIABLES or name.startswith("SSH_") or not _NAME.match(name):
            continue
        # In sshd's quoting only \" is special: a value ending in a backslash would not be read back.
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value) or value.endswith("\\"):
            continue
        quoted = value.replace('"', '\\"')
        names.append(name)
        options.append(f'environment="{name}={quoted}"')
    return names, options


@atexit.register
def _end_sessions():
    for proc in list(_live):
        if proc.returncode is None:
            try:
                proc.terminate()
            except ProcessLookupError:
                pass


def _enlarge_pipe(stream):
    """Asks Linux for a larger pipe to or from sshd; where it cannot (another OS, a lower pipe-max-size), the pipe stays as it is."""
    transport = getattr(stream, "transport", None) or getattr(stream, "_transport", None)
    pipe = transport.get_extra_info("pipe") if transport is not None else None
    if pipe is None or not hasattr(fcntl, "F_SETPIPE_SZ"):
        return
    try:
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
    except OSError:
        pass


def _private_file(path, content):
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(content)


class _HostKey:
    """This server's SSH host key, made once per process and kept in memory.

    A file of it lives only in each connection's folder, removed when the
    connection ends: a server that is killed (and skips atexit) leaves no
    folder behind but those of sessions open at that moment.
    """

    def __init__(self, sshd):
        keygen = shutil.which("ssh-keygen") or os.path.join(os.path.dirname(sshd), "ssh-keygen")
        made = tempfile.mkdtemp(prefix="jupyter-ssh-proxy-")
        try:
            file = os.path.join(made, "key")
            subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", file], check=True)
            with open(file) as f:
                self.private = f.read()
            with open(file + ".pub") as f:
                self.public = " ".join(f.read().split()[:2])
        finally:
            shutil.rmtree(made, ignore_errors=True)


class _SSHSocket:
    """One SSH connection: ``sshd -i`` as this server's user, over the WebSocket.

    Mixed into the running server's own handler class (_base_handler):
    JupyterHub's single-user app puts its authentication there.
    """

    proc = None

    @property
    def sshd(self):
        return self.settings["jupyter_ssh_proxy_sshd"]

    @property
    def host_key(self):
        return self.settings["jupyter_ssh_proxy_host_key"]

    def check_origin(self, origin=None):
        # The daemon is no browser: it sends a token, not cookies, and no Origin.
        return origin is None

    async def get(self, *args, **kwargs):
        # Set by the server's authentication (JupyterHub's, with the token's scopes) before get().
        if not self.current_user:
            raise web.HTTPError(403)
        key = self.request.headers.get("X-SSH-Proxy-Key", "")
        options = self.request.headers.get("X-SSH-Proxy-Options", "")
        if not _KEY_LINE.match(key):
            raise web.HTTPError(400, "X-SSH-Proxy-Key must be one public key: TYPE BASE64")
        # sshd reads the options as one line of C text.
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in options):
            raise web.HTTPError(400, "X-SSH-Proxy-Options holds control characters")
        self.set_header("X-SSH-Host-Key", self.host_key.public)
        self.set_header("X-SSH-User", getpass.getuser())
        if self._raw_stream_possible():
            # This skips tornado's WebSocket handshake, and with it check_origin: no browser's page may open it either.
            if not self.check_origin(self.request.headers.get("Origin")):
                raise web.HTTPError(403, "Cross origin SSH connections are not allowed")
            return await self._open_raw_stream()
        return await super().get(*args, **kwargs)

    def _session(self):
        """A new private folder for the connection, with the host key and the proxy's key line; and sshd's command."""
        # The proxy's key with the login's options: sshd applies them to the session.
        key = self.request.headers["X-SSH-Proxy-Key"]
        options = self.request.headers.get("X-SSH-Proxy-Options", "")
        conn_dir = tempfile.mkdtemp(prefix="jupyter-ssh-proxy-")
        host_key_file = os.path.join(conn_dir, "ssh_host_ed25519_key")
        _private_file(host_key_file, self.host_key.private)
        keys_file = os.path.join(conn_dir, "authorized_keys")
        # The server's environment first: an environment= of the login's own options comes later and wins.
        names, environment = _session_environment()
        line_options = ",".join(environment + ([options] if options else []))
        _private_file(keys_file, f"{line_options} {key}\n" if line_options else f"{key}\n")
        return conn_dir, [
            self.sshd,
            "-i",
            "-e",
            "-f", "/dev/null",
            "-h", host_key_file,
            "-o", f"AuthorizedKeysFile={keys_file}",
            "-o", "PubkeyAuthentication=yes",
            "-o", "PasswordAuthentication=no",
            "-o", "KbdInteractiveAuthentication=no",
            "-o", "UsePAM=no",
            # The key file is this extension's own, in its 0700 folder.
            "-o", "StrictModes=no",
            "-o", "PidFile=none",
            "-o", "PrintMotd=no",
            "-o", "PrintLastLog=no",
            # What the proxy's local sshd allows (lib/localsshd.ts, sshdConfig): X11 needs xauth in the image.
            "-o", "X11Forwarding=yes",
            "-o", "X11UseLocalhost=yes",
            "-o", "AllowTcpForwarding=yes",
            "-o", "AllowAgentForwarding=yes",
            "-o", "AllowStreamLocalForwarding=yes",
            "-o", "AcceptEnv=LANG LC_* COLORTERM NO_COLOR",
            # A client gone without a FIN or RST would hold its session for hours; keepalives through the proxy find it
            # (within 100 to 200 s). And the connection passes the Hub's proxy and whatever stands in front of it (nginx,
            # ingress-nginx, cloud load balancers), which close a WebSocket idle for 60 s or less: sshd, which checks on
            # whole seconds, sends a keepalive after 10 to 20 s of silence, so no byte-less stretch gets that long.
            "-o", "ClientAliveInterval=10",
            "-o", "ClientAliveCountMax=9",
            "-o", "Subsystem=sftp internal-sftp",
            "-o", f"PermitUserEnvironment={','.join(names) or 'no'}",
            "-o", "LogLevel=ERROR",
        ]

    def _raw_stream_possible(self):
        """Whether the daemon asked for the raw stream and this connection can be sshd's own: plain TCP, not TLS."""
        stream = getattr(self.request.connection, "stream", None)
        return (
            self.request.headers.get("X-SSH-Proxy-Stream", "") == "raw"
            and self.request.headers.get("Upgrade", "").lower() == "websocket"
            and bool(self.request.headers.get("Sec-WebSocket-Key"))
            and isinstance(stream, iostream.IOStream)
            and not isinstance(stream, iostream.SSLIOStream)
        )

    async def _open_raw_stream(self):
        """Answers the upgrade, then gives the connection's socket itself to ``sshd -i``."""
        conn_dir, command = self._session()
        challenge = self.request.headers["Sec-WebSocket-Key"] + _WEBSOCKET_GUID
        self.set_status(101)
        self.set_header("Upgrade", "websocket")
        self.set_header("Connection", "Upgrade")
        self.set_header("Sec-WebSocket-Accept", base64.b64encode(hashlib.sha1(challenge.encode()).digest()).decode())
        self.set_header("X-SSH-Proxy-Stream", "raw")
        self.finish()
        stream = self.detach()
        fd = None
        try:
            # The answer out first: closing the stream would drop what it still holds.
            try:
                await stream.write(b"")
            except iostream.StreamClosedError:
                # The daemon (or a proxy in between) went away during the handshake: nothing is left to serve.
                self.log.info("jupyter-ssh-proxy: a connection closed before its sshd started")
                shutil.rmtree(conn_dir, ignore_errors=True)
                return
            fd = os.dup(stream.socket.fileno())
            stream.close()
            # sshd -i sets what it needs on its standard input and output; it starts with a blocking socket.
            os.set_blocking(fd, True)
            proc = await asyncio.create_subprocess_exec(
                *command, stdin=fd, stdout=fd, stderr=asyncio.subprocess.PIPE, start_new_session=True
            )
        except Exception:
            shutil.rmtree(conn_dir, ignore_errors=True)
            stream.close()
            raise
        finally:
            if fd is not None:
                os.close(fd)
        _live.add(proc)
        asyncio.ensure_future(self._reap_raw(proc, conn_dir))

    async def _reap_raw(self, proc, conn_dir):
        """Logs a raw session's sshd errors; when it ends (and with it the connection), removes its folder."""
        try:
            async for line in proc.stderr:
                self.log.warning("jupyter-ssh-proxy sshd: %s", line.decode(errors="replace").rstrip())
            await proc.wait()
        finally:
            _live.discard(proc)
            shutil.rmtree(conn_dir, ignore_errors=True)

    async def open(self, *args, **kwargs):
        self.conn_dir, command = self._session()
        self.proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            # Out of the server's process group: a signal meant for the server is not one for its sessions.
            start_new_session=True,
        )
        _live.add(self.proc)
        for pipe in (self.proc.stdin, self.proc.stdout):
            _enlarge_pipe(pipe)
        asyncio.ensure_future(self._pump())
        asyncio.ensure_future(self._log_errors())

    async def _pump(self):
        """sshd's output to the WebSocket, as fast as the WebSocket takes it."""
        try:
            while True:
                data = await self.proc.stdout.read(_READ_SIZE)
                if not data:
                    break
                await self.write_message(data, binary=True)
        except websocket.WebSocketClosedError:
            pass
        finally:
            self.close()

    async def _log_errors(self):
        async for line in self.proc.stderr:
            self.log.warning("jupyter-ssh-proxy sshd: %s", line.decode(errors="replace").rstrip())

    async def on_message(self, message):
        if not isinstance(message, bytes) or self.proc is None:
            return
        try:
            self.proc.stdin.write(message)
            # Awaited: tornado reads the next message only after this one is taken.
            await self.proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            self.close()

    def on_close(self):
        if self.proc is not None:
            _live.discard(self.proc)
            if self.proc.returncode is None:
                try:
                    # Closing stdin is sshd's cue to end the session; the signal follows at once.
                    self.proc.stdin.close()
                    self.proc.terminate()
                except ProcessLookupError:
                    pass
        shutil.rmtree(getattr(self, "conn_dir", ""), ignore_errors=True)


def _keys_file_path(pattern, user, home):
    """sshd's AuthorizedKeysFile expansion: %h the home, %u the user, %% a percent; relative to the home."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c != "%":
            out.append(c)
        elif pattern[i + 1 : i + 2] in ("h", "u", "%"):
            out.append({"h": home, "u": user, "%": "%"}[pattern[i + 1]])
            i += 1
        else:
            raise ValueError("only %h, %u and %% may follow a %")
        i += 1
    path = "".join(out)
    return path if path.startswith("/") else os.path.join(home, path)


def _unsafe(path, home, uid):
    """Why sshd's StrictModes would not trust the file at `path` (auth_secure_path); None if it would."""
    real = os.path.realpath(path)
    st = os.stat(real)
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file"
    if st.st_uid not in (0, uid) or st.st_mode & 0o022:
        return f"bad ownership or modes for file {real}"
    real_home = os.path.realpath(home)
    folder = real
    while True:
        folder = os.path.dirname(folder)
        st = os.stat(folder)
        if st.st_uid not in (0, uid) or st.st_mode & 0o022:
            return f"bad ownership or modes for directory {folder}"
        if folder in (real_home, "/"):
            return None


class _AuthorizedKeys:
    """The user's authorized_keys, for the daemon's key logins: GET, JSON.

    ``{"user", "file", "text"}``; ``text`` is empty when there is no file, and
    ``{"user", "file", "problem"}`` replaces it when sshd would not use it.
    Whoever may call this may already run anything as this server's user.
    """

    async def get(self, *args, **kwargs):
        if not self.current_user:
            raise web.HTTPError(403)
        pattern = self.request.headers.get("X-SSH-Proxy-Keys-File", "")
        if not pattern or any(ord(c) < 0x20 or ord(c) == 0x7F for c in pattern):
            raise web.HTTPError(400, "X-SSH-Proxy-Keys-File must name a file")
        account = pwd.getpwuid(os.getuid())
        home = account.pw_dir or os.path.expanduser("~")
        try:
            file = _keys_file_path(pattern, account.pw_name, home)
        except ValueError as e:
            raise web.HTTPError(400, f"X-SSH-Proxy-Keys-File: {e}")
        answer = {"user": account.pw_name, "file": file}
        try:
            problem = _unsafe(file, home, os.getuid())
            if problem is None:
                # Non-blocking: a FIFO put there must not hang the server.
                fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
                with os.fdopen(fd, "rb") as f:
                    if not stat.S_ISREG(os.fstat(fd).st_mode):
                        problem = f"{file} is not a regular file"
                    else:
                        data = f.read(_MAX_KEYS_FILE_BYTES + 1)
                        if len(data) > _MAX_KEYS_FILE_BYTES:
                            problem = f"{file} is larger than {_MAX_KEYS_FILE_BYTES} bytes"
                        else:
                            answer["text"] = data.decode("utf-8", errors="replace")
        except FileNotFoundError:
            answer["text"] = ""
        except OSError as e:
            problem = f"cannot read {file}: {e.strerror}"
        if problem is not None:
            answer["problem"] = problem
            answer.pop("text", None)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(answer))


def _base_handler(app):
    """The running server's base handler: the classic notebook server's or jupyter_server's."""
    try:
        from notebook.notebookapp import NotebookApp
    except ImportError:
        NotebookApp = None
    if NotebookApp is not None and isinstance(app, NotebookApp):
        from notebook.base.handlers import IPythonHandler as base
    else:
        from jupyter_server.base.handlers import JupyterHandler as base
    return base


def _setup(app, web_app):
    sshd = shutil.which("sshd", path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/local/sbin")
    if sshd is None:
        app.log.error("jupyter-ssh-proxy: no sshd found (install openssh-server in this image); SSH logins will fail")
        return
    web_app.settings["jupyter_ssh_proxy_sshd"] = sshd
    web_app.settings["jupyter_ssh_proxy_host_key"] = _HostKey(sshd)
    route = web_app.settings["base_url"].rstrip("/") + "/ssh-proxy/connect"
    # On the running server's own base handler: JupyterHub's single-user app puts its authentication there.
    base = _base_handler(app)
    web_app.add_handlers(
        ".*$",
        [
            (route, type("SSHSocket", (_SSHSocket, websocket.WebSocketHandler, base), {})),
            (route.replace("/connect", "/authorized-keys"), type("AuthorizedKeys", (_AuthorizedKeys, base), {})),
        ],
    )
    app.log.info("jupyter-ssh-proxy: SSH logins at %s, with %s", route, sshd)


def _jupyter_server_extension_points():
    return [{"module": "jupyter_ssh_proxy_server"}]


def _load_jupyter_server_extension(serverapp):
    _setup(serverapp, serverapp.web_app)


# The classic notebook server's names.
_jupyter_server_extension_paths = _jupyter_server_extension_points
load_jupyter_server_extension = _load_jupyter_server_extension
