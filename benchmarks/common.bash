# Shared by the benchmark scripts (sourced; not a benchmark itself).

# wait_troupe_port LOG PID: prints the port from troupe's "listening on
# 127.0.0.1:PORT" line in LOG once it appears (up to 10 s); fails, showing
# the log, if troupe exits or never says it.
wait_troupe_port() {
  local log="$1" pid="$2" port=""
  for _ in $(seq 200); do
    port="$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -1)"
    [[ -n "$port" ]] && { echo "$port"; return 0; }
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "troupe did not report its port:" >&2
  cat "$log" >&2
  return 1
}

# True while a child we started is running (an exited, not yet reaped child is
# a zombie, which `kill -0` still reports as alive).
alive() {
  local s
  s="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  s="${s##*) }"
  [[ "${s%% *}" != Z ]]
}

# A free loopback port for a peer server, picked outside the kernel's ephemeral range
# (wrk's many client sockets live there, and a port held by one of them makes
# bind() fail): nothing accepts a connection on it, and ss, when present,
# shows no socket of any state on it.
free_port() {
  local p lo=32768 hi=60999 range
  range="$(cat /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true)"
  [[ "$range" =~ ^([0-9]+)[[:space:]]+([0-9]+)$ ]] && lo="${BASH_REMATCH[1]}" hi="${BASH_REMATCH[2]}"
  local try
  for try in $(seq 200); do
    p=$((10000 + RANDOM % 55000))
    # (if the ephemeral range covers nearly everything, take what is free)
    ((p >= lo && p <= hi && try <= 150)) && continue
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then continue; fi
    if command -v ss >/dev/null 2>&1 && [[ -n "$(ss -Htan "( sport = :$p or dport = :$p )" 2>/dev/null)" ]]; then continue; fi
    echo "$p"
    return 0
  done
  echo "no free loopback port found" >&2
  return 1
}

# Latency value from wrk ("612.00us", "2.10ms", "1.02s", "3.00m") → ms.
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v; sub(/[a-z]+$/, "", n); u = v; sub(/^[0-9.]+/, "", u)
    f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : (u == "h") ? 3600000 : -1
    if (f < 0 || n == "") { print "nan"; exit }
    printf "%.3f", n * f
  }'
}

# stop_started: the EXIT trap of a benchmark that keeps the pids of what it
# started in the array `pids` and its files under $work: SIGTERM to each
# that still runs, SIGKILL after 5 s, every one reaped, $work removed.
stop_started() {
  local pid
  for pid in "${pids[@]:-}"; do
    [[ -n "$pid" ]] || continue
    if alive "$pid"; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}

# now: wall-clock seconds with nanoseconds; elapsed A B: B - A in seconds (ms precision).
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
