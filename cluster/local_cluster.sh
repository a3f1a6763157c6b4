#!/usr/bin/env bash
# A multi-node Ray cluster on ONE machine, for developing and testing against a real cluster
# (head + N worker nodes, each its own raylet, object store and temp dir).
#
#   cluster/local_cluster.sh [start] [--workers N] [--port P] [--cpus C] [--dir DIR] [--no-auth]
#   cluster/local_cluster.sh stop   [--dir DIR]
#   cluster/local_cluster.sh status [--dir DIR]
#
# Ray >= 2.52 authenticates every RPC with a shared token when RAY_AUTH_MODE=token. This script
# writes a fresh token to DIR/auth_token (mode 600) and runs every node with RAY_AUTH_MODE=token
# and RAY_AUTH_TOKEN_PATH=DIR/auth_token; clients need the same two variables, which
# DIR/env.sh exports (`. DIR/env.sh`). Every process it starts runs in its own session
# (setsid) whose id is kept in DIR/*.pid, so `stop` ends exactly those processes and never
# touches another Ray on the machine (no `ray stop`, which kills every Ray of the user).
set -euo pipefail

RAY_BIN=${RAY_BIN:-ray}
DIR=${OCCLUTRACE_CLUSTER_DIR:-/tmp/occlutrace-cluster-$(id -u)}
PORT=${OCCLUTRACE_CLUSTER_PORT:-6390}
WORKERS=2
CPUS=1
AUTH=token
START_TIMEOUT_S=${OCCLUTRACE_CLUSTER_START_TIMEOUT_S:-180}
STOP_TIMEOUT_S=${OCCLUTRACE_CLUSTER_STOP_TIMEOUT_S:-15}

usage() {
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}

die() {
  echo "local_cluster: $*" >&2
  exit 1
}

parse_options() {
  while [ $# -gt 0 ]; do
    case "$1" in
      -w|--workers) WORKERS=${2:?--workers needs a number}; shift 2 ;;
      -p|--port) PORT=${2:?--port needs a number}; shift 2 ;;
      -c|--cpus) CPUS=${2:?--cpus needs a number}; shift 2 ;;
      -d|--dir) DIR=${2:?--dir needs a path}; shift 2 ;;
      --no-auth) AUTH=disabled; shift ;;
      -h|--help) usage 0 ;;
      *) echo "local_cluster: unknown option $1" >&2; usage 2 ;;
    esac
  done
  [[ $WORKERS =~ ^[0-9]+$ ]] || die "--workers must be a whole number, got '$WORKERS'"
  [[ $PORT =~ ^[0-9]+$ ]] && [ "$PORT" -ge 1024 ] && [ "$PORT" -le 9900 ] \
    || die "--port must be 1024-9900 (Ray's worker ports use 10002-19999), got '$PORT'"
  [[ $CPUS =~ ^[0-9]+$ ]] && [ "$CPUS" -ge 1 ] || die "--cpus must be >= 1, got '$CPUS'"
}

# Live members of session $1 (a pid file's id), zombies excluded.
session_alive() {
  # shellcheck disable=SC2009  # pgrep cannot leave zombies out
  ps -o stat= -s "$1" 2>/dev/null | grep -qv '^Z'
}

running_sessions() {
  local f
  for f in "$DIR"/node*.pid; do
    [ -e "$f" ] || continue
    if session_alive "$(cat "$f")"; then cat "$f"; fi
  done
}

# Waits for a node's log to say it started; fails early when the node's process is gone.
wait_started() {
  local name=$1 sid=$2 deadline=$((SECONDS + START_TIMEOUT_S))
  while [ $SECONDS -lt $deadline ]; do
    if grep -q "Ray runtime started" "$DIR/$name.log" 2>/dev/null; then return 0; fi
    session_alive "$sid" || break
    sleep 0.5
  done
  echo "local_cluster: $name did not start; last lines of $DIR/$name.log:" >&2
  tail -n 20 "$DIR/$name.log" >&2 || true
  return 1
}

# Starts `ray start --block ARGS` as node $1 in a new session, in the background.
launch() {
  local name=$1
  shift
  setsid "$RAY_BIN" start --block --disable-usage-stats --num-cpus "$CPUS" \
    --temp-dir "$DIR/$name" "$@" >"$DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$DIR/$name.pid"
}

write_env() {
  local address=127.0.0.1:$PORT
  {
    echo "export RAY_AUTH_MODE=$AUTH"
    if [ "$AUTH" = token ]; then echo "export RAY_AUTH_TOKEN_PATH=$DIR/auth_token"; fi
    echo "export RAY_ADDRESS=$address"
    echo "export OCCLUTRACE_RAY_ADDRESS=$address"
  } >"$DIR/env.sh"
  echo "$address" >"$DIR/address"
}

start() {
  command -v "$RAY_BIN" >/dev/null || die "'$RAY_BIN' not found: activate the project's virtualenv first"
  if [ -d "$DIR" ] && [ -n "$(running_sessions)" ]; then
    die "a cluster from $DIR is running; run '$0 stop --dir $DIR' first"
  fi
  rm -rf "$DIR"
  mkdir -p "$DIR"
  chmod 700 "$DIR"
  export RAY_AUTH_MODE=$AUTH
  if [ "$AUTH" = token ]; then
    (umask 077 && python3 -c 'import secrets; print(secrets.token_hex(32))' >"$DIR/auth_token")
    export RAY_AUTH_TOKEN_PATH=$DIR/auth_token
  fi
  # Fixed, distinct ports per node: two raylets on one host must not share an agent port.
  launch node0 --head --node-ip-address 127.0.0.1 --port "$PORT" \
    --ray-client-server-port $((PORT + 1)) --dashboard-agent-listen-port $((PORT + 2)) \
    --include-dashboard false
  trap 'echo "local_cluster: start failed, stopping what was started" >&2; stop' ERR
  wait_started node0 "$(cat "$DIR/node0.pid")"
  local k
  for k in $(seq 1 "$WORKERS"); do
    launch "node$k" --address "127.0.0.1:$PORT" --node-ip-address 127.0.0.1 \
      --dashboard-agent-listen-port $((PORT + 2 + k))
  done
  for k in $(seq 1 "$WORKERS"); do
    wait_started "node$k" "$(cat "$DIR/node$k.pid")"
  done
  trap - ERR
  write_env
  local address=127.0.0.1:$PORT
  cat <<EOF
Ray cluster up: head + $WORKERS worker node(s), $CPUS CPU(s) each, auth: $AUTH
  address:      $address        (Ray Client: ray://127.0.0.1:$((PORT + 1)))
  environment:  . $DIR/env.sh   (RAY_AUTH_MODE, RAY_AUTH_TOKEN_PATH, OCCLUTRACE_RAY_ADDRESS)
  controller:   . $DIR/env.sh && occlutrace serve --ray-address $address --host 127.0.0.1 --port 8000
  batch:        . $DIR/env.sh && occlutrace batch samples -o out --address $address
  stop:         $0 stop --dir $DIR
EOF
}

stop() {
  trap - ERR
  [ -d "$DIR" ] || { echo "local_cluster: nothing to stop in $DIR"; return 0; }
  local sid deadline i
  local files=("$DIR"/node*.pid)
  # Workers first, then the head, so that no worker reports a lost head on the way down.
  for ((i = ${#files[@]} - 1; i >= 0; i--)); do
    [ -e "${files[i]}" ] || continue
    sid=$(cat "${files[i]}")
    if session_alive "$sid"; then kill -TERM -- "-$sid" 2>/dev/null || true; fi
  done
  deadline=$((SECONDS + STOP_TIMEOUT_S))
  while [ $SECONDS -lt $deadline ] && [ -n "$(running_sessions)" ]; do sleep 0.5; done
  # Ray's GCS can take ~30 s to exit on SIGTERM; a dev cluster keeps no state worth that wait.
  for sid in $(running_sessions); do
    echo "local_cluster: session $sid still running after ${STOP_TIMEOUT_S}s, killing it" >&2
    kill -KILL -- "-$sid" 2>/dev/null || true
  done
  deadline=$((SECONDS + 10))
  while [ $SECONDS -lt $deadline ] && [ -n "$(running_sessions)" ]; do sleep 0.2; done
  if [ -n "$(running_sessions)" ]; then
    die "processes of session(s) $(running_sessions | tr '\n' ' ')outlived SIGKILL; see ps -s <id>"
  fi
  rm -f "$DIR"/node*.pid "$DIR/address" "$DIR/env.sh" "$DIR/auth_token"
  echo "Ray cluster in $DIR stopped (logs kept in $DIR)"
}

status() {
  local sids
  sids=$(running_sessions 2>/dev/null || true)
  if [ -z "$sids" ]; then
    echo "no cluster running from $DIR"
    return 3
  fi
  echo "running from $DIR at $(cat "$DIR/address" 2>/dev/null || echo '(starting)'): $(echo "$sids" | wc -l) node(s)"
}

command=start
case "${1:-}" in
  start|stop|status) command=$1; shift ;;
  -h|--help) usage 0 ;;
esac
parse_options "$@"
"$command"
