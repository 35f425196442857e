#!/usr/bin/env bash
# supervise.sh NAME [--pid-file FILE] [--count-file FILE] [--log FILE] -- COMMAND...
#
# Runs COMMAND and runs it again whenever it exits, until this script gets SIGTERM, SIGINT or
# SIGHUP: then it sends COMMAND SIGTERM, waits up to STOP_GRACE seconds (default 8) and sends
# SIGKILL, and exits 0. What `make dev` (scripts/dev.sh) and `make run` (scripts/nitro/run.sh)
# use for the model servers and the parent front, as systemd's Restart=always does for the
# installed units (deploy/systemd/): a dead public model server or parent comes back by itself.
# The enclave is not supervised here: on an instance its restart is the nitro-enclave unit's.
#
# Backoff: the first restart waits RESTART_DELAY_MS (500), each next one twice as long, at most
# RESTART_MAX_DELAY_MS (10000); a run that lasted RESTART_RESET_S (30) seconds resets it.
# Each restart is logged on stderr ("supervise: NAME exited (status S) after T s; restart N in
# D s") and counted in --count-file (the number of restarts, rewritten each time).
# --pid-file gets the pid of the running COMMAND (removed when this script ends). Both files are
# replaced by a rename, so a reader never sees one empty. --log appends
# COMMAND's stdout and stderr to FILE (otherwise it shares this script's).
set -u

name=${1:?usage: supervise.sh NAME [--pid-file FILE] [--count-file FILE] [--log FILE] -- COMMAND...}
shift
pid_file= count_file= log_file=
while [ $# -gt 0 ]; do
    case $1 in
        --pid-file) pid_file=$2; shift 2 ;;
        --count-file) count_file=$2; shift 2 ;;
        --log) log_file=$2; shift 2 ;;
        --) shift; break ;;
        *) echo "supervise.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[ $# -gt 0 ] || { echo "supervise.sh: no command" >&2; exit 2; }

delay_ms=${RESTART_DELAY_MS:-500}
max_delay_ms=${RESTART_MAX_DELAY_MS:-10000}
reset_s=${RESTART_RESET_S:-30}
grace=${STOP_GRACE:-8}

log() { echo "supervise: $name: $*" >&2; }

child= stopping=
on_signal() {
    stopping=1
    [ -z "$child" ] || kill -TERM "$child" 2>/dev/null
}
trap on_signal TERM INT HUP

# Waits for the child, through the signals that interrupt `wait`; sets rc.
wait_child() {
    rc=0
    while :; do
        wait "$child"
        rc=$?
        kill -0 "$child" 2>/dev/null || break
        [ -z "$stopping" ] || break   # finish() bounds the wait
    done
}

# Bounded stop of the child after a signal: SIGTERM was sent by on_signal.
finish() {
    if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
        local i
        for ((i = 0; i < grace * 10; i++)); do
            kill -0 "$child" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$child" 2>/dev/null; then
            log "pid $child ignored SIGTERM for ${grace}s; sending SIGKILL"
            kill -KILL "$child" 2>/dev/null
        fi
        wait "$child" 2>/dev/null
    fi
    [ -z "$pid_file" ] || rm -f "$pid_file"
    exit 0
}

# FILE (if named) gets VALUE through a temporary file renamed over it: `echo N >FILE` truncates
# first, and a reader between the truncation and the write would see no number at all.
replace_file() { # FILE VALUE
    [ -n "$1" ] || return 0
    echo "$2" >"$1.tmp.$$" && mv -f "$1.tmp.$$" "$1"
}

restarts=0
replace_file "$count_file" 0
current=$delay_ms
while :; do
    [ -z "$stopping" ] || finish
    started=$SECONDS
    if [ -n "$log_file" ]; then "$@" >>"$log_file" 2>&1 & else "$@" & fi
    child=$!
    replace_file "$pid_file" "$child"
    [ -z "$stopping" ] || kill -TERM "$child" 2>/dev/null   # a signal that came during the fork
    wait_child
    [ -z "$stopping" ] || finish
    ran=$((SECONDS - started))
    [ "$ran" -lt "$reset_s" ] || current=$delay_ms
    restarts=$((restarts + 1))
    replace_file "$count_file" "$restarts"
    log "exited (status $rc) after ${ran}s; restart $restarts in $((current / 1000)).$(printf '%03d' $((current % 1000)))s"
    # Sleep in steps so that a stop signal is acted on within 0.1 s.
    for ((waited = 0; waited < current; waited += 100)); do
        [ -z "$stopping" ] || finish
        sleep 0.1
    done
    current=$((current * 2))
    [ "$current" -le "$max_delay_ms" ] || current=$max_delay_ms
done
