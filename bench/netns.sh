#!/usr/bin/env bash
# The internet-like link of the study's Fig. 4, on this machine only: a network
# namespace of our own, joined to the host by a veth pair with link-local
# addresses, shaped in each direction. The load generator runs inside the
# namespace; the parent listens on the host end. No other address is used and
# no packet leaves the machine.
#
#   bench/netns.sh run -- CMD ARGS...   set up, run CMD (with BENCH_NET_NS,
#                                       BENCH_NET_LISTEN, BENCH_NET_SHAPE set),
#                                       tear down, even on failure or Ctrl-C
#   bench/netns.sh check                exit 0 if it can be set up here
#
# Environment: NET_UP (client->server rate, default 25mbit), NET_DOWN
# (server->client, default 500mbit), NET_DELAY (one-way delay, default 20ms).
# Rates use tbf; the delay needs the kernel's netem qdisc: where it is missing
# (some container kernels) the link is rate-shaped only, and the report says so.
set -euo pipefail

NS=bench-net-$$
HOST_IF=bnh$$
NS_IF=bnc$$
HOST_IP=169.254.77.1
NS_IP=169.254.77.2
NET_UP=${NET_UP:-25mbit}
NET_DOWN=${NET_DOWN:-500mbit}
NET_DELAY=${NET_DELAY:-20ms}
# Interface names are at most 15 bytes.
HOST_IF=${HOST_IF:0:15}
NS_IF=${NS_IF:0:15}

say() { echo "netns.sh: $*" >&2; }

unavailable() { # why
  say "internet-like test skipped: $1"
  exit 3
}

preflight() {
  [ "$(id -u)" = 0 ] || unavailable "needs root (network namespaces, tc)"
  command -v ip >/dev/null && command -v tc >/dev/null ||
    unavailable "needs iproute2 (apt-get install -y iproute2)"
}

cleanup() {
  trap - EXIT INT TERM
  # Deleting the namespace deletes its veth end, which deletes the pair.
  ip netns del "$NS" 2>/dev/null || true
  ip link del "$HOST_IF" 2>/dev/null || true
}

# tbf for the rate; netem (if the kernel has it) for the delay, as a child of tbf.
shape() { # netns-prefix... dev rate
  local dev=$1 rate=$2; shift 2
  "$@" tc qdisc add dev "$dev" root handle 1: tbf rate "$rate" burst 64kb latency 1000ms
  if "$@" tc qdisc add dev "$dev" parent 1:1 handle 10: netem delay "$NET_DELAY" limit 100000 2>/dev/null; then
    echo "delay"
  else
    echo "nodelay"
  fi
}

setup() {
  ip netns add "$NS" || unavailable "cannot create a network namespace here"
  trap cleanup EXIT
  trap 'cleanup; exit 130' INT
  trap 'cleanup; exit 143' TERM
  ip link add "$HOST_IF" type veth peer name "$NS_IF" || unavailable "cannot create a veth pair here"
  ip link set "$NS_IF" netns "$NS"
  ip addr add "$HOST_IP/30" dev "$HOST_IF"
  ip link set "$HOST_IF" up
  ip -n "$NS" addr add "$NS_IP/30" dev "$NS_IF"
  ip -n "$NS" link set "$NS_IF" up
  ip -n "$NS" link set lo up
  local up down
  up=$(shape "$NS_IF" "$NET_UP" ip netns exec "$NS") || unavailable "tc tbf is not available"
  down=$(shape "$HOST_IF" "$NET_DOWN") || unavailable "tc tbf is not available"
  if [ "$up" = delay ] && [ "$down" = delay ]; then
    SHAPE="veth in a namespace, tbf $NET_UP client->server and $NET_DOWN back, netem $NET_DELAY one-way delay each way"
  else
    SHAPE="veth in a namespace, tbf $NET_UP client->server and $NET_DOWN back; NO added delay (this kernel has no netem qdisc)"
    say "warning: the kernel has no netem qdisc: rates are shaped, the ${NET_DELAY} delay is not applied"
  fi
  say "link: $SHAPE"
}

case "${1:-}" in
  check)
    preflight
    setup
    exit 0
    ;;
  run)
    shift
    [ "${1:-}" = -- ] && shift
    [ $# -gt 0 ] || { say "usage: netns.sh run -- CMD ARGS..."; exit 2; }
    preflight
    setup
    export BENCH_NET_NS=$NS BENCH_NET_LISTEN=$HOST_IP BENCH_NET_SHAPE=$SHAPE
    set +e
    "$@"
    status=$?
    set -e
    exit $status
    ;;
  *)
    say "usage: netns.sh run -- CMD ARGS... | netns.sh check"
    exit 2
    ;;
esac
