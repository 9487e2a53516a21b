# Sourced by scripts/*: one virtualenv for the project, created on first use.
VENV="${RTCLAB_VENV:-$PWD/.venv}"

ensure_venv() {  # ensure_venv EXTRA  (e.g. "test"); re-installs when pyproject changes
  local extra="$1" stamp
  # A venv whose creation was interrupted has a python but no pip: make it again.
  if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    python3 -m venv --clear "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
  fi
  stamp="$VENV/.installed-$extra-$(sha1sum pyproject.toml | cut -c1-12)"
  if [ ! -f "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q -e ".[$extra]"
    touch "$stamp"
  fi
}

# Run a command in a new network namespace with only loopback, when permitted.
run_isolated() {
  if [ -z "${RTCLAB_NO_NETNS:-}" ] && unshare --net true 2>/dev/null; then
    unshare --net sh -c 'ip link set lo up && exec "$@"' sh "$@"
  elif [ -z "${RTCLAB_NO_NETNS:-}" ] && unshare --net --map-root-user true 2>/dev/null; then
    unshare --net --map-root-user sh -c 'ip link set lo up && exec "$@"' sh "$@"
  else
    echo "note: cannot create a network namespace here; running on the host's loopback" >&2
    "$@"
  fi
}

# The Node WebRTC stacks (interop) come from the npm registry: fetch them before
# entering an offline namespace.  Without npm they are reported as unavailable.
ensure_node_clients() {
  if command -v npm >/dev/null 2>&1; then
    "$VENV/bin/python" -m lab.callers.node install >/dev/null \
      || echo "note: could not install the Node clients; they will be reported as unavailable" >&2
  fi
}

# The compose lab's images are built before the tests enter their offline namespace
# (debootstrap and pip reach Debian's mirror and the package index; both are cached);
# the compose test then only talks to the Docker daemon's socket.  No daemon: nothing.
ensure_compose_images() {
  if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
    return 0
  fi
  if ! "$VENV/bin/python" -m lab.compose build; then
    echo "note: could not build the compose lab's images; its test will say why" >&2
    [ "${RTCLAB_COMPOSE_TEST:-}" != required ] || return 1
  fi
}
