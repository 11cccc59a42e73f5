#!/bin/sh
# Installs what jupyter-ssh-proxy needs on Debian 12, skipping what is there:
#   scripts/install-deps.sh          the daemon's own needs (OpenSSH's sshd, jemalloc,
#                                    intel-ipsec-mb on x86-64, and what node-gyp builds
#                                    the native addons with)
#   scripts/install-deps.sh --test   plus what the test suite drives (JupyterHub,
#                                    the OpenSSH client tools, PuTTY's tools, paramiko,
#                                    Xvfb for X11, curl, openssl for the bench's
#                                    host-speed probe), and
#                                    where the system's ssh has no ML-KEM key
#                                    exchange (Debian 12's 9.2), the ssh client of
#                                    bookworm-backports unpacked in $RECENT_SSH_ROOT;
#                                    pip, jupyter_server unpacked in
#                                    $JUPYTER_SERVER_ROOT, a Debian 13 root with
#                                    JupyterHub 5 in $DEBIAN_13_ROOT, and /dev/pts
#                                    with Debian's options (the server extension's tests)
#   scripts/install-deps.sh --bench  plus Linux perf (the benchmark's CPU profiles)
# then the npm packages (npm ci builds dist/, the process starter addon and
# ssh2's native crypto binding, and patch-package applies patches/).
set -eu
cd "$(dirname "$0")/.."

packages="openssh-server openssh-client libjemalloc2 g++ make python3"
# intel-ipsec-mb (x86-64 only): AES-GCM on VAES, where the CPU has it (native/packetrelay.c).
if [ "$(dpkg --print-architecture)" = amd64 ]; then
  packages="$packages libipsec-mb-dev"
fi
case "${1:-}" in
  # libssl-dev: the tests build a security key in software (test/securitykey/softkey.c);
  # python3-pip: they pip install the server extension (server-extension/) as an image would.
  --test | --bench) packages="$packages jupyterhub node-configurable-http-proxy xvfb xauth x11-utils curl rsync openssl putty-tools python3-paramiko libssl-dev python3-pip" ;;
esac
if [ "${1:-}" = "--bench" ]; then
  packages="$packages linux-perf"
fi

# The packages among the arguments after the first that are not installed in the
# root file system the first names (/ for this machine's), each after a space.
missing_in() {
  in_root=$1
  shift
  for pkg in "$@"; do
    dpkg-query --admindir="$in_root/var/lib/dpkg" -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || printf ' %s' "$pkg"
  done
}

missing=$(missing_in / $packages)
if [ -n "$missing" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: run as root to install:$missing" >&2
    exit 1
  fi
  echo "install-deps: installing$missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

# Unpacks Debian packages in a folder of their own without installing them:
# nothing of theirs replaces the system's, and no service of theirs starts.
# unpack ROOT WHAT PACKAGE...
unpack() {
  unpack_root=$1 unpack_what=$2
  shift 2
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: run as root to unpack $unpack_what in $unpack_root" >&2
    exit 1
  fi
  echo "install-deps: unpacking $unpack_what in $unpack_root"
  apt-get update -qq
  download=$(mktemp -d)
  chown _apt "$download" 2>/dev/null || true # apt-get download fetches as the _apt user
  (cd "$download" && apt-get download -qq "$@")
  mkdir -p "$unpack_root"
  for deb in "$download"/*.deb; do dpkg-deb -x "$deb" "$unpack_root"; done
  rm -rf "$download"
}

# The tests of the post-quantum key exchange, keystroke timing obfuscation
# and the newer sftp and scp need OpenSSH 9.9 or later (test/helpers/ssh.ts,
# RECENT_SSH_CLIENT). Only unpacked, next to the system's own 9.2, which
# every other test and the benchmark use.
RECENT_SSH_ROOT=/opt/jupyter-ssh-proxy-test/openssh-client
case "${1:-}" in
  --test | --bench)
    if ! ssh -Q kex | grep -qx mlkem768x25519-sha256 && [ ! -x "$RECENT_SSH_ROOT/usr/bin/ssh" ]; then
      if [ "$(id -u)" != 0 ]; then
        echo "install-deps: run as root to unpack a newer ssh client in $RECENT_SSH_ROOT" >&2
        exit 1
      fi
      backports="$(. /etc/os-release && echo "$VERSION_CODENAME")-backports"
      if ! grep -rqs "$backports" /etc/apt/sources.list /etc/apt/sources.list.d; then
        echo "install-deps: adding $backports to apt's sources (nothing is installed from it)"
        echo "deb http://deb.debian.org/debian $backports main" > /etc/apt/sources.list.d/$backports.list
      fi
      unpack "$RECENT_SSH_ROOT" "openssh-client from $backports" "openssh-client/$backports"
    fi
    ;;
esac

# The tests of --upstream websocket behind a front proxy run Debian's nginx, only
# unpacked (test/helpers/nginx.ts): installing the package would start a system
# nginx on port 80.
NGINX_ROOT=/opt/jupyter-ssh-proxy-test/nginx
case "${1:-}" in
  --test)
    if [ ! -x "$NGINX_ROOT/usr/sbin/nginx" ]; then
      unpack "$NGINX_ROOT" nginx nginx
    fi
    ;;
esac

# The server extension (server-extension/) is tested in jupyter_server too, not only in
# the classic notebook server that Debian's jupyterhub runs: Debian's jupyter_server 1.23
# and what it needs beyond that are only unpacked, so that every other test keeps the
# classic server (JupyterHub 3.0 would start jupyter_server wherever it is installed).
JUPYTER_SERVER_ROOT=/opt/jupyter-ssh-proxy-test/jupyter-server
case "${1:-}" in
  --test | --bench)
    if [ ! -d "$JUPYTER_SERVER_ROOT/usr/lib/python3/dist-packages/jupyter_server" ]; then
      unpack "$JUPYTER_SERVER_ROOT" jupyter_server python3-jupyter-server python3-anyio python3-sniffio python3-websocket
    fi
    ;;
esac

# The Hub and the server extension are also tested with what current deployments run:
# JupyterHub 5, jupyter_server 2 and OpenSSH 10, all Debian 13's. They need Python 3.13
# (jupyter_events needs the compiled rpds-py), so they get a Debian 13 root file system
# of their own, as a container image would be: test/helpers/hub.ts runs the Hub there
# (chroot, in a mount namespace of its own that sees the machine's /home, /tmp and,
# through the symbolic links made here, its accounts). About 90 s and 750 MB.
DEBIAN_13_ROOT=/opt/jupyter-ssh-proxy-test/debian-13
# What the tests use in the users' servers there (xdpyinfo for -X), as an image for --upstream websocket has it.
debian_13_packages="jupyterhub python3-jupyter-server openssh-server openssh-client xauth x11-utils rsync"
case "${1:-}" in
  --test | --bench)
    missing_13=$(missing_in "$DEBIAN_13_ROOT" $debian_13_packages)
    if [ -n "$missing_13" ]; then
      if [ "$(id -u)" != 0 ]; then
        echo "install-deps: run as root to make a Debian 13 root with JupyterHub 5 in $DEBIAN_13_ROOT" >&2
        exit 1
      fi
      # Made anew when it lacks a package: its accounts are the machine's (below), not for apt's scripts to change.
      echo "install-deps: making a Debian 13 root with$missing_13 in $DEBIAN_13_ROOT"
      [ -z "$(missing_in / debootstrap)" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
      rm -rf "$DEBIAN_13_ROOT" "$DEBIAN_13_ROOT.partial"
      debootstrap --variant=minbase trixie "$DEBIAN_13_ROOT.partial" http://deb.debian.org/debian >/dev/null
      # Then the packages, with apt's resolver: debootstrap's own trips on jupyterhub's node modules.
      # Its maintainer scripts' complaints (no /proc, no init) are expected in a chroot: logged, shown on failure.
      if ! DEBIAN_FRONTEND=noninteractive chroot "$DEBIAN_13_ROOT.partial" apt-get install -y -qq --no-install-recommends \
        $debian_13_packages > "$DEBIAN_13_ROOT.partial.log" 2>&1; then
        tail -30 "$DEBIAN_13_ROOT.partial.log" >&2
        exit 1
      fi
      rm -f "$DEBIAN_13_ROOT.partial.log"
      chroot "$DEBIAN_13_ROOT.partial" apt-get clean
      # The machine's accounts (the tests' users come and go while a Hub runs) and names.
      mkdir "$DEBIAN_13_ROOT.partial/.host-etc"
      for file in passwd group shadow gshadow hosts; do
        ln -sf "/.host-etc/$file" "$DEBIAN_13_ROOT.partial/etc/$file"
      done
      mv "$DEBIAN_13_ROOT.partial" "$DEBIAN_13_ROOT"
    fi
    ;;
esac

# Terminals from an unprivileged sshd (the server extension's, test/websocketupstream.test.ts)
# need /dev/pts as Debian and every container runtime mount it (gid=5,mode=620): sshd
# gives a terminal to the tty group, and only the mount's gid= makes that possible
# without root. Some sandboxes' kernels mount it without; set Debian's defaults there.
case "${1:-}" in
  --test | --bench)
    if ! awk '$2 == "/dev/pts" { last = $4 } END { exit !(last ~ /(^|,)gid=5(,|$)/ && last ~ /(^|,)mode=620(,|$)/) }' /proc/mounts; then
      if [ "$(id -u)" != 0 ]; then
        echo "install-deps: run as root to remount /dev/pts with gid=5,mode=620" >&2
        exit 1
      fi
      echo "install-deps: remounting /dev/pts with Debian's defaults (gid=5,mode=620)"
      mount -o remount,gid=5,mode=620 /dev/pts
    fi
    ;;
esac

# Reinstall node_modules only when the lockfile changed; always rebuild dist/.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
else
  # A checkout that pulled a change to an addon keeps node_modules but not
  # build/; a library installed just now changes what binding.gyp links.
  stale=$(find native binding.gyp -newer build/Release/packetrelay.node 2>/dev/null | head -1)
  if [ ! -f build/Release/processstarter.node ] || [ ! -f build/Release/packetrelay.node ] || [ -n "$stale" ] || [ -n "$missing" ]; then
    npm run --silent install
  fi
  # A checkout that pulled a new patch of a dependency (patches/).
  npx --no-install patch-package >/dev/null
  npm run --silent build
fi
