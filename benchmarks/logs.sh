#!/usr/bin/env bash
# Log pipeline benchmark: one job writes N lines of 100 bytes; measures lines/s
# and MiB/s into the store with the Loki sink enabled and pointed at nginx
# (`return 204`) on loopback, and troupe's peak RSS. In the same run, two
# references: (a) the same bytes through a plain pipe (cat FILE > /dev/null),
# (b) the same lines put straight into LMDB by a minimal loop, 1,000 lines per
# transaction. It reports; it asserts no speed.
#
#   benchmarks/logs.sh <build-dir>
#
# Environment: BENCH_LINES (default 1000000).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.bash"

build="$(cd "${1:?usage: $0 <build-dir>}" && pwd)"
troupe_bin="$build/troupe"
lmdb_bin="$build/benchmarks/lmdb_lines"
for b in "$troupe_bin" "$lmdb_bin"; do
  [[ -x "$b" ]] || { echo "logs: $b not found (make bench builds it)" >&2; exit 2; }
done
command -v nginx >/dev/null || { echo "logs: nginx is required" >&2; exit 2; }
lines="${BENCH_LINES:-1000000}"

work="$(mktemp -d "${TMPDIR:-/tmp}/troupe-bench-logs.XXXXXX")"
pids=()
cleanup() {
  for pid in "${pids[@]:-}"; do
    [[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.0f", n / (b - a) }'; }
mib() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.1f", n / (b - a) / 1048576 }'; }

# 100-byte lines (99 characters and a newline).
awk -v n="$lines" 'BEGIN { pad = sprintf("%090d", 0); for (i = 1; i <= n; i++) printf "%08d %s\n", i, pad }' \
  >"$work/lines.txt"
bytes=$(stat -c %s "$work/lines.txt")
echo "logs: $lines lines, $bytes bytes"

# (a) a plain pipe
t0=$(now); cat "$work/lines.txt" >/dev/null; t1=$(now)
pipe_mib=$(mib "$bytes" "$t0" "$t1")
echo "(a) cat > /dev/null: $pipe_mib MiB/s"

# (b) a minimal LMDB loop
mkdir -p "$work/lmdb"
lmdb_out="$("$lmdb_bin" "$work/lines.txt" "$work/lmdb")"
lmdb_rate=$(sed -n 's/.*lines_per_s=\([0-9]*\).*/\1/p' <<<"$lmdb_out")
echo "(b) LMDB loop, 1000 lines/txn: $lmdb_out"

# nginx standing in for Loki.
nginx_port=""
for port in $(shuf -i 20000-29999 -n 20); do
  if ! (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then nginx_port=$port; break; fi
done
mkdir -p "$work/nginx/logs"
cat >"$work/nginx/nginx.conf" <<CONF
worker_processes 1;
error_log $work/nginx/logs/error.log;
pid $work/nginx/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/nginx;
  client_max_body_size 64m;
  server { listen 127.0.0.1:$nginx_port; location /loki/api/v1/push { return 204; } }
}
CONF
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' &
pids+=($!)

cd "$work"
TROUPE_LOGS__LOKI__URL="http://127.0.0.1:$nginx_port" TROUPE_JOBS__CONCURRENCY=1 \
  "$troupe_bin" serve --listen 127.0.0.1:0 --proxy-listen 127.0.0.1:0 --data-dir "$work/data" >"$work/troupe.log" 2>&1 &
tpid=$!
pids+=($tpid)
port="$(wait_troupe_port "$work/troupe.log" "$tpid")"

t0=$(now)
for _ in $(seq 200); do [[ -s "$work/data/token" ]] && break; sleep 0.05; done
auth="Authorization: Bearer $(cat "$work/data/token")"
id=$(curl -s -XPOST "127.0.0.1:$port/jobs" -H "$auth" -H 'Content-Type: application/json' \
  -d "{\"name\":\"flood\",\"command\":[\"cat\",\"$work/lines.txt\"]}" | sed 's/.*"job_id":"\([^"]*\)".*/\1/')
status=""
for _ in $(seq 6000); do
  status=$(curl -s -H "$auth" "127.0.0.1:$port/jobs/$id" | sed 's/.*"status":"\([a-z_]*\)".*/\1/')
  [[ "$status" == succeeded || "$status" == failed ]] && break
  sleep 0.05
done
t1=$(now)
[[ "$status" == succeeded ]] || { echo "logs: job ended $status" >&2; exit 1; }
stored=$(curl -s -H "$auth" "127.0.0.1:$port/jobs/$id/logs" | wc -l)
# VmHWM counts LMDB's file-backed pages too; RssAnon is the heap.
rss_kb=$(awk '/VmHWM/ { print $2 }' "/proc/$tpid/status")
anon_kb=$(awk '/RssAnon/ { print $2 }' "/proc/$tpid/status")
troupe_rate=$(rate "$lines" "$t0" "$t1")
troupe_mib=$(mib "$bytes" "$t0" "$t1")
echo "troupe (job → store, Loki sink on): $troupe_rate lines/s, $troupe_mib MiB/s, peak RSS $((rss_kb / 1024)) MiB incl. LMDB pages, anonymous RSS $((anon_kb / 1024)) MiB; $stored lines stored"
r_lmdb=$(awk -v a="$troupe_rate" -v b="$lmdb_rate" 'BEGIN { printf "%.2f", a / b }')
r_pipe=$(awk -v a="$troupe_mib" -v b="$pipe_mib" 'BEGIN { printf "%.3f", a / b }')
echo "ratio vs LMDB loop: $r_lmdb   ratio vs pipe: $r_pipe"
echo "RESULT logs lines=$lines troupe_lines_per_s=$troupe_rate troupe_mib_per_s=$troupe_mib lmdb_lines_per_s=$lmdb_rate pipe_mib_per_s=$pipe_mib ratio_lmdb=$r_lmdb ratio_pipe=$r_pipe peak_rss_mib=$((rss_kb / 1024)) anon_rss_mib=$((anon_kb / 1024))"
