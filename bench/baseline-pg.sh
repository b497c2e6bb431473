#!/usr/bin/env bash
# The classic design, measured beside dzero in the same run: one PostgreSQL transaction per
# pay-in that row-locks the hot channel account and the merchant account, updates both balances
# and inserts the payment (fsync and synchronous_commit on, PostgreSQL's defaults). Then
# `dzero bench payins` on the same machine, and the ratio.
#
# Usage (as root, with PostgreSQL 15 installed; the cluster is started if it is down):
#   bench/baseline-pg.sh [seconds] [clients]
# Last line: baseline_tps=N dzero_payins_per_sec=M ratio=R
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-10}
clients=${2:-16}
merchants=10000
db=dzero_baseline
as_pg() { runuser -u postgres -- "$@"; }

started_here=no
if ! pg_isready -q -h /var/run/postgresql; then
  pg_ctlcluster 15 main start
  started_here=yes
  for _ in $(seq 1 50); do pg_isready -q -h /var/run/postgresql && break; sleep 0.2; done
fi

as_pg psql -q -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
as_pg psql -q -v ON_ERROR_STOP=1 -d "$db" <<SQL
CREATE TABLE accounts (id bigint PRIMARY KEY, balance bigint NOT NULL);
INSERT INTO accounts SELECT g, 0 FROM generate_series(0, $merchants) g;  -- 0 is the hot channel
CREATE TABLE payins (
  id bigserial PRIMARY KEY, channel_id bigint NOT NULL, merchant_id bigint NOT NULL,
  amount bigint NOT NULL, merchant_fee bigint NOT NULL, channel_cost bigint NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
SQL

script=$(mktemp)
chmod 644 "$script"
cat > "$script" <<SQL
\set m random(1, $merchants)
\set amount random(1000, 100000)
BEGIN;
SELECT balance FROM accounts WHERE id = 0 FOR UPDATE;
SELECT balance FROM accounts WHERE id = :m FOR UPDATE;
UPDATE accounts SET balance = balance + :amount - (:amount * 25 / 10000) WHERE id = 0;
UPDATE accounts SET balance = balance + :amount - (:amount * 38 / 10000) WHERE id = :m;
INSERT INTO payins (channel_id, merchant_id, amount, merchant_fee, channel_cost)
  VALUES (0, :m, :amount, :amount * 38 / 10000, :amount * 25 / 10000);
COMMIT;
SQL

echo "baseline: pgbench, $clients clients, ${seconds}s, one transaction per pay-in" >&2
baseline=$(as_pg pgbench -n -c "$clients" -j 2 -T "$seconds" -f "$script" "$db" \
  | awk '/^tps = / { print int($3) }')
rm -f "$script"
echo "baseline_tps=$baseline" >&2
# Let PostgreSQL's background writes finish so they do not slow the next measurement.
as_pg psql -q -d "$db" -c "CHECKPOINT"
if [ "$started_here" = yes ]; then pg_ctlcluster 15 main stop; fi

cargo build --release -q -p dzero
dzero=$(./target/release/dzero bench payins --payins 1000000 | tail -n 1 | sed 's/payins_per_sec=//')
ratio=$(awk -v a="$dzero" -v b="$baseline" 'BEGIN { printf "%.0f", a / b }')
echo "baseline_tps=$baseline dzero_payins_per_sec=$dzero ratio=$ratio"
