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
