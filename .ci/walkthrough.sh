#!/usr/bin/env bash
# Runs the README's grpcurl walkthrough word for word against a fresh
# `themodel up`, and fails if any step fails (the one step that shows an
# error must fail, with INVALID_ARGUMENT). Needs grpcurl and a built binary
# (THEMODEL_BIN, default target/debug/themodel).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${THEMODEL_BIN:-target/debug/themodel}")
readme=$(realpath README.md)
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

# As a newcomer would: `themodel up` with its default ./data, and every
# step run from that same directory.
cd "$work"
"$bin" up >"$work/up.log" 2>&1 &
pid=$!
up=""
for _ in $(seq 1 150); do
  if grpcurl -plaintext -d '{}' localhost:50055 grpc.health.v1.Health/Check >/dev/null 2>&1; then up=1; break; fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.2
done
if [ -z "$up" ]; then
  echo "themodel up did not come up; its log:" >&2
  cat "$work/up.log" >&2
  ss -tanp 2>/dev/null | awk '$4 ~ /:5005[0-9]$/' >&2 || true
  exit 1
fi

# The token the walkthrough exports, then every grpcurl line of it, in order.
token_line=$(awk '/^## Walk a lead/{on=1} /^## Test it/{on=0} on && /^export TOKEN=/' "$readme")
[ -n "$token_line" ] || { echo "the walkthrough exports no TOKEN" >&2; exit 1; }
eval "$token_line"
[ -n "$TOKEN" ] || { echo "no admin token in $work/data/tokens" >&2; exit 1; }
awk '/^## Walk a lead/{on=1} /^## Test it/{on=0} on && /^grpcurl /' "$readme" >"$work/steps"
[ -s "$work/steps" ] || { echo "no walkthrough steps found in README.md" >&2; exit 1; }
n=0
while IFS= read -r step; do
  n=$((n + 1))
  if [[ "$step" == *'"request_id": "oops"'* ]]; then
    if out=$(bash -c "$step" 2>&1); then
      echo "step $n should have failed: $step" >&2; exit 1
    fi
    grep -q "InvalidArgument" <<<"$out" || { echo "step $n: expected InvalidArgument, got: $out" >&2; exit 1; }
  else
    bash -c "$step" >"$work/out" 2>&1 || { echo "step $n failed: $step" >&2; cat "$work/out" >&2; exit 1; }
  fi
done <"$work/steps"

# Without the token, a call is refused.
if out=$(grpcurl -plaintext -d '{"lead_id": "lead-ada"}' localhost:50051 themodel.marketing.v1.MarketingService/GetLead 2>&1); then
  echo "a call without a token was answered: $out" >&2; exit 1
fi
grep -q "Unauthenticated" <<<"$out" || { echo "expected Unauthenticated without a token, got: $out" >&2; exit 1; }
auth=(-H "authorization: Bearer $TOKEN")

# The funnel the README promises.
funnel=$(grpcurl -plaintext "${auth[@]}" -emit-defaults -d '{"start_date": "2026-11-01", "end_date": "2026-12-01"}' \
  localhost:50055 themodel.kpi.v1.KpiService/GetFunnel)
for want in '"visitors": "2"' '"leads": "2"' '"excludedLeads": "1"' '"opportunities": "1"' '"wins": "1"' '"retained": "1"' \
  '"currencyCode": "JPY"' '"units": "1200000"'; do
  grep -q "$want" <<<"$funnel" || { echo "funnel lacks $want: $funnel" >&2; exit 1; }
done
attainment=$(grpcurl -plaintext "${auth[@]}" -d '{"start_date": "2026-11-15", "period_unit": "PERIOD_UNIT_MONTH"}' \
  localhost:50055 themodel.kpi.v1.KpiService/GetAttainment)
for want in '"target": "3"' '"actual": "2"' '"attainment": 1.2'; do
  grep -q "$want" <<<"$attainment" || { echo "attainment lacks $want: $attainment" >&2; exit 1; }
done
retention=$(grpcurl -plaintext "${auth[@]}" -d '{"start_date": "2026-12-01", "period_unit": "PERIOD_UNIT_MONTH"}' \
  localhost:50055 themodel.kpi.v1.KpiService/GetRetention)
for want in '"accountsAtStart": "1"' '"grossRevenueRetention": 1' '"netRevenueRetention": 1'; do
  grep -q "$want" <<<"$retention" || { echo "retention lacks $want: $retention" >&2; exit 1; }
done
velocity=$(grpcurl -plaintext "${auth[@]}" -d '{"start_date": "2026-11-01", "end_date": "2026-12-01"}' \
  localhost:50055 themodel.kpi.v1.KpiService/GetVelocity)
for want in '"firstContacts": "1"' '"withinSla": "1"' '"slaAttainment": 1' '"medianTimeToFirstContact": "1800s"'; do
  grep -q "$want" <<<"$velocity" || { echo "velocity lacks $want: $velocity" >&2; exit 1; }
done
# `themodel report`, as the README gives it (with the binary just built).
report=$("$bin" report --start-date 2026-11-01 --end-date 2026-12-01)
for want in 'flow view, 2026-11-01 to 2026-12-01 (UTC)' 'Wins                     1' 'Revenue JPY: won 1200000'; do
  grep -qF "$want" <<<"$report" || { echo "report lacks $want: $report" >&2; exit 1; }
done
# The dashboard page is served.
page=$(python3 -c 'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:50056/").read().decode())')
grep -q "The Model" <<<"$page" || { echo "no dashboard page on 50056" >&2; exit 1; }
echo "README walkthrough: $n steps as written, funnel, retention, velocity, report and dashboard as promised"
