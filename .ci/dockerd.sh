# Sourced by .ci/run: a Docker daemon of the run's own for the compose lab's test.
# Its data root, exec root and socket live in a temporary directory; stop_dockerd
# stops it and removes them.  Where no daemon can start (no root, no cgroups) the
# compose test is told why and skips with that reason; where one starts, it must run.

start_dockerd() {
  if ! command -v dockerd >/dev/null 2>&1; then
    export RTCLAB_COMPOSE_SKIP="no dockerd (Debian: apt-get install docker.io)"
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    export RTCLAB_COMPOSE_SKIP="dockerd needs root"
    return 0
  fi
  DOCKERD_DIR="$(mktemp -d /tmp/rtclab-ci-docker.XXXXXX)"
  dockerd --data-root "$DOCKERD_DIR/data" --exec-root "$DOCKERD_DIR/exec" \
    --pidfile "$DOCKERD_DIR/dockerd.pid" --host "unix://$DOCKERD_DIR/docker.sock" \
    >"$DOCKERD_DIR/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  export DOCKER_HOST="unix://$DOCKERD_DIR/docker.sock"
  for _ in $(seq 60); do
    if docker info >/dev/null 2>&1; then
      export RTCLAB_COMPOSE_TEST=required
      echo "dockerd $(docker info --format '{{.ServerVersion}}') for the compose test" >&2
      return 0
    fi
    kill -0 "$DOCKERD_PID" 2>/dev/null || break
    sleep 1
  done
  export RTCLAB_COMPOSE_SKIP="dockerd did not start: $(tail -n 2 "$DOCKERD_DIR/dockerd.log" | tr '\n' ' ')"
  echo "$RTCLAB_COMPOSE_SKIP" >&2
  stop_dockerd
}

stop_dockerd() {
  [ -n "${DOCKERD_DIR:-}" ] || return 0
  if [ -n "${DOCKERD_PID:-}" ] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
    docker ps -aq 2>/dev/null | xargs -r docker rm -f >/dev/null 2>&1 || true
    kill -TERM "$DOCKERD_PID"
    for _ in $(seq 30); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 1; done
    kill -KILL "$DOCKERD_PID" 2>/dev/null || true
  fi
  # What a daemon that died hard may have left mounted under its roots, then the roots.
  grep -o " $DOCKERD_DIR/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$DOCKERD_DIR"
  unset DOCKERD_DIR DOCKERD_PID
}
