#!/usr/bin/env bash
# The local stack, for development: the development NSM (tools/dev-nsm, standing
# in for the Nitro Secure Module), the secure model server (standing in for the
# enclave, on a Unix socket instead of vsock, attesting through that NSM), the
# public model server (the same binary, without attestation: --nsm none) and
# the parent front, all in the foreground until Ctrl-C or SIGTERM, which stops
# all four and leaves no process behind.
#
# The development NSM signs attestation documents with a local test CA, NOT
# AWS Nitro's: its root is made once in $RUN_DIR/dev-nsm/ and written to
# $RUN_DIR/dev-nsm-root.pem; its PCR0/1/2 (SHA-384 of $BIN/enclave, of the
# string "dev-nsm kernel" and of the model file) to
# $RUN_DIR/dev-measurements.json, in nitro-cli's form. Give both to a client
# (--dev-root, --measurements) to check sealed requests end to end. It starts
# first, and the secure model server only once its socket is there.
#
# Each process runs under scripts/nitro/supervise.sh, as in production (`make
# run`, the systemd units): one that dies is started again with backoff (0.5 s
# doubling to 10 s), logged here and counted in $RUN_DIR/NAME.restarts, while
# the others keep running. Kill the secure model server and /predict-secure/
# answers 503 until it is back; /predict-public/ is unaffected; the parent
# reconnects by itself. Only a process that dies before the stack is first
# ready stops everything (a bad model, a port in use).
#
# `make dev` builds the release binaries (the model server with the dev-nsm
# feature) and prepares the model, then runs this.
#
# With EMULATE=EIF (`make emulate`), the secure model server is the enclave
# itself: tools/emulate boots that EIF in QEMU (the emulation EIF: Debian's
# kernel, our init, and the production EIF's application ramdisk, byte for
# byte), and the parent reaches it over the guest's real vsock, port 5005,
# through vhost-device-vsock's Unix socket (--secure hybrid-vsock:...). The
# enclave image has no development NSM and QEMU 7.2 no NSM device, so there
# is no attestation (GET /attestation answers 503 attestation_unavailable) and
# no development NSM is started. Killing the VM (kill $(cat
# $RUN_DIR/emulate/qemu.pid)) fails the secure route closed until the
# supervisor has booted it again.
#
# With EMULATE_NSM=dev as well (`make test-emulate-sealed`), EMULATE must be a
# development emulation image whose model server has the dev-nsm feature and
# is told `--nsm vsock:2:9100` (build/emulate/enclave-dev-nsm.eif, from `make
# eif-emulate-dev-nsm`). The development NSM starts first, on the Unix socket
# $RUN_DIR/emulate/vsock.sock_9100, where vhost-device-vsock delivers the
# guest's connections to host port 9100 (the launcher leaves that file alone),
# and attests the image's real PCR0/1/2 (--eif): the sealed path then runs over
# the guest's real vsock, with the root and measurements in the same files as
# without EMULATE. That image's PCR2 is not production's: its command differs.
#
# Environment: MODEL (default efficientnet-lite0), PORT (default 8080),
# RUN_DIR (default .run), BIN (default target/release), EMULATE (an EIF path;
# empty: the model server runs as a host process), EMULATE_NSM (empty, or dev
# with EMULATE: the development NSM over the guest's vsock), READY_TIMEOUT (seconds;
# default 60, 300 when emulated: software emulation loads a model slowly),
# and supervise.sh's RESTART_DELAY_MS / RESTART_MAX_DELAY_MS (the backoff).
# Logs: $RUN_DIR/{nsm,secure,public,parent}.log; pid files of the running
# processes $RUN_DIR/{nsm,secure,public,parent}.pid.
set -euo pipefail

MODEL=${MODEL:-efficientnet-lite0}
PORT=${PORT:-8080}
RUN_DIR=${RUN_DIR:-.run}
BIN=${BIN:-target/release}
EMULATE=${EMULATE:-}
EMULATE_NSM=${EMULATE_NSM:-}
if [ -n "$EMULATE" ]; then
  READY_TIMEOUT=${READY_TIMEOUT:-300}   # seconds to wait for /ready
else
  READY_TIMEOUT=${READY_TIMEOUT:-60}
fi

cd "$(dirname "$0")/.."

die() { echo "dev.sh: $*" >&2; exit 1; }

case "$EMULATE_NSM" in
  '') ;;
  dev) [ -n "$EMULATE" ] || die "EMULATE_NSM=dev needs EMULATE=EIF (the development emulation image)" ;;
  *) die "EMULATE_NSM must be empty or dev, not '$EMULATE_NSM'" ;;
esac

if [ -n "$EMULATE" ]; then
  needed=(enclave parent emulate)
  NAMES=(parent public secure)
  [ -f "$EMULATE" ] || die "$EMULATE is missing: run 'make eif-emulate MODEL=$MODEL' first"
  if [ "$EMULATE_NSM" = dev ]; then
    needed+=(dev-nsm)
    NAMES+=(nsm)
  fi
else
  needed=(enclave parent dev-nsm)
  NAMES=(parent public secure nsm)
fi
for b in "${needed[@]}"; do
  [ -x "$BIN/$b" ] || die "$BIN/$b is missing: run 'make build' first"
done
[ -f "models/$MODEL/model.onnx" ] || die "models/$MODEL is missing: run 'make model MODEL=$MODEL' first"
command -v curl >/dev/null || die "curl is needed to wait for /ready"

mkdir -p "$RUN_DIR"
SUPERVISORS=()
TAIL=

stop_all() {
  trap - INT TERM EXIT
  local i pid
  # The supervisors stop their process (SIGTERM, its shutdown grace, then KILL) and exit.
  [ -z "$TAIL" ] || kill -TERM "$TAIL" 2>/dev/null || true
  for pid in "${SUPERVISORS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${SUPERVISORS[@]}"; do
    for _ in $(seq 1 120); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  for i in "${NAMES[@]}"; do   # what a killed supervisor left
    if [ -f "$RUN_DIR/$i.pid" ]; then
      kill -KILL "$(cat "$RUN_DIR/$i.pid")" 2>/dev/null || true
      rm -f "$RUN_DIR/$i.pid"
    fi
  done
  echo "dev.sh: stopped"
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap 'stop_all' EXIT

start() { # name, then the command
  local name=$1; shift
  rm -f "$RUN_DIR/$name.pid" "$RUN_DIR/$name.restarts"   # none yet: not a stale count
  # setsid: a Ctrl-C in the terminal reaches this script only, which stops them in order.
  setsid scripts/nitro/supervise.sh "$name" --pid-file "$RUN_DIR/$name.pid" \
    --count-file "$RUN_DIR/$name.restarts" --log "$RUN_DIR/$name.log" -- "$@" \
    </dev/null >>"$RUN_DIR/supervise.log" 2>&1 &
  SUPERVISORS+=($!)
}
: >"$RUN_DIR/supervise.log"
for name in "${NAMES[@]}"; do : >"$RUN_DIR/$name.log"; done

# Fails with the process's last log lines if NAME was restarted (it died before the stack was ready).
check_alive() { # name...
  local name n
  for name in "$@"; do
    # No file (the supervisor has not written it yet) or no number reads as 0 restarts.
    n=$(cat "$RUN_DIR/$name.restarts" 2>/dev/null || true)
    [ "${n:-0}" = 0 ] || {
      echo "dev.sh: the $name process exited before the stack was ready; last lines of $RUN_DIR/$name.log:" >&2
      tail -n 20 "$RUN_DIR/$name.log" >&2 || true
      exit 1
    }
  done
}

# The development NSM first: the secure model server asks it for PCR0 at start.
# It writes the root and the measurements before it binds, so once the socket
# exists both files are current; a socket left by a killed run is removed first.
start_nsm() { # socket, then the flags that say what it measures
  local sock=$1; shift
  rm -f "$sock"
  start nsm "$BIN/dev-nsm" --socket "$sock" --state-dir "$RUN_DIR/dev-nsm" "$@" \
    --root-out "$RUN_DIR/dev-nsm-root.pem" --measurements-out "$RUN_DIR/dev-measurements.json"
  for _ in $(seq 1 $((READY_TIMEOUT * 10))); do
    check_alive nsm
    [ -S "$sock" ] && break
    sleep 0.1
  done
  [ -S "$sock" ] || die "the development NSM did not listen within ${READY_TIMEOUT}s; see $RUN_DIR/nsm.log"
}

if [ -n "$EMULATE" ]; then
  if [ "$EMULATE_NSM" = dev ]; then
    # Where vhost-device-vsock hands over the guest's connections to CID 2 port 9100
    # (the image's `--nsm vsock:2:9100`); the PCRs are the image's own.
    mkdir -p "$RUN_DIR/emulate"
    start_nsm "$RUN_DIR/emulate/vsock.sock_9100" --eif "$EMULATE"
  fi
  # The enclave in QEMU; the launcher's own files (sockets, console.log,
  # qemu.pid) are in $RUN_DIR/emulate and gone when it stops.
  start secure "$BIN/emulate" --eif "$EMULATE" --run-dir "$RUN_DIR/emulate"
  SECURE=hybrid-vsock:$RUN_DIR/emulate/vsock.sock:5005
else
  NSM_SOCK=$RUN_DIR/dev-nsm.sock
  start_nsm "$NSM_SOCK" --enclave-bin "$BIN/enclave" --model "models/$MODEL/model.onnx"
  start secure "$BIN/enclave" --listen "unix:$RUN_DIR/secure.sock" --model "models/$MODEL" --nsm "unix:$NSM_SOCK"
  SECURE=unix:$RUN_DIR/secure.sock
fi
start public "$BIN/enclave" --listen "unix:$RUN_DIR/public.sock" --model "models/$MODEL" --nsm none
start parent "$BIN/parent" --listen "127.0.0.1:$PORT" --secure "$SECURE" --public "unix:$RUN_DIR/public.sock"

echo "dev.sh: waiting for http://127.0.0.1:$PORT/ready (up to ${READY_TIMEOUT}s)"
ready=0
for _ in $(seq 1 $((READY_TIMEOUT * 10))); do
  check_alive "${NAMES[@]}"
  if curl -fsS -o /dev/null "http://127.0.0.1:$PORT/ready" 2>/dev/null; then ready=1; break; fi
  sleep 0.1
done
[ "$ready" = 1 ] || die "not ready after ${READY_TIMEOUT}s; see $RUN_DIR/{nsm,secure,public,parent}.log"

if [ -n "$EMULATE" ] && [ "$EMULATE_NSM" = dev ]; then
  cat <<EOF
dev.sh: the secure model server is the enclave $EMULATE, booted in QEMU
(software emulation, so it is slow; console in $RUN_DIR/emulate/console.log),
reached over its vsock port 5005. It attests through the development NSM,
NOT AWS Nitro, over its vsock (CID 2 port 9100): root $RUN_DIR/dev-nsm-root.pem,
the image's PCRs $RUN_DIR/dev-measurements.json (a development image: its
PCR2 is not the production image's).
EOF
elif [ -n "$EMULATE" ]; then
  cat <<EOF
dev.sh: the secure model server is the enclave $EMULATE, booted in QEMU
(software emulation, so it is slow; console in $RUN_DIR/emulate/console.log),
reached over its vsock port 5005. No attestation here: QEMU 7.2 has no NSM.
EOF
fi
cat <<EOF
dev.sh: ready. Model $MODEL; logs in $RUN_DIR/. Try:

  curl -s http://127.0.0.1:$PORT/ready
  curl -s --data-binary @testdata/chelsea.jpg -H 'Content-Type: image/jpeg' http://127.0.0.1:$PORT/predict-secure/
  curl -s --data-binary @testdata/chelsea.jpg -H 'Content-Type: image/jpeg' http://127.0.0.1:$PORT/predict-public/?top_k=3
  printf '{"images": ["%s"]}' "\$(base64 -w0 testdata/chelsea.jpg)" | \\
    curl -s -H 'Content-Type: application/json' --data-binary @- http://127.0.0.1:$PORT/predict-secure/
  curl -s http://127.0.0.1:$PORT/metrics
  curl -s -o attestation.cbor "http://127.0.0.1:$PORT/attestation?nonce=\$(openssl rand -hex 32)"

EOF
if [ -n "$EMULATE" ]; then
  cat <<EOF
Kill the VM (kill \$(cat $RUN_DIR/emulate/qemu.pid)) to watch the secure route fail
closed (503) and recover: the enclave boots again, logged here. Ctrl-C stops everything.
EOF
else
  cat <<EOF
Attestation here comes from the development NSM, NOT AWS Nitro: its root is
$RUN_DIR/dev-nsm-root.pem and its PCRs $RUN_DIR/dev-measurements.json (a client's
--dev-root and --measurements).

Kill a model server (kill \$(cat $RUN_DIR/secure.pid)) to watch the secure route fail
closed (503) and recover: it restarts with backoff, logged here. Ctrl-C stops everything.
EOF
fi

# Stay in the foreground until we are told to stop, showing the supervisors'
# restart lines as they come. A supervisor that itself ends (it should not)
# stops everything.
tail -n 0 -F "$RUN_DIR/supervise.log" >&2 2>/dev/null &
TAIL=$!
set +e
wait -n "${SUPERVISORS[@]}"
status=$?
set -e
echo "dev.sh: a supervisor exited (status $status); stopping the rest" >&2
exit 1
