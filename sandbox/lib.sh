# Helpers for the sandbox scripts: background processes in their own session,
# recorded by PID file, stopped by process group.

# start_bg NAME PIDFILE LOGFILE CMD...  (no-op when the recorded process is alive)
start_bg() {
  local name=$1 pidfile=$2 logfile=$3
  shift 3
  if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "sandbox: $name already running (pid $(cat "$pidfile"))" >&2
    return 0
  fi
  setsid "$@" >>"$logfile" 2>&1 < /dev/null &
  echo $! > "$pidfile"
  echo "sandbox: started $name (pid $!, log $logfile)" >&2
}

# stop_bg PIDFILE  SIGTERM the process group, SIGKILL it after 20 s.
stop_bg() {
  local pidfile=$1 pid i
  [[ -f "$pidfile" ]] || return 0
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 40); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    echo "sandbox: stopped pid $pid ($(basename "$pidfile" .pid))" >&2
  fi
  rm -f "$pidfile"
}
