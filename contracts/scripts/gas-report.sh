#!/usr/bin/env bash
# Prints the per-step gas table of the README: every call that test/Gas.t.sol
# makes, each as its own transaction (--isolate: cold storage, refunds, the
# 21000 base and calldata all counted, as in a receipt's gasUsed), followed
# by forge's own gas report for the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-tools.sh
FORGE=node_modules/@foundry-rs/forge-linux-amd64/bin/forge
"$FORGE" test --match-contract GasTest --isolate -vvvv | node -e '
let test = null;
const lines = require("fs").readFileSync(0, "utf8").split("\n");
console.log("| scenario | call | gas |");
console.log("|---|---|---:|");
for (const l of lines) {
  const t = l.match(/^\[PASS\] (test_gas_\w+)/);
  if (t) { test = t[1].replace("test_gas_", ""); continue; }
  const c = l.match(/^    ├─ \[(\d+)\] (Market|Gate)::(\w+)\(([^,)]*)/);
  if (test && c && c[3] !== "transferDigest" && c[3] !== "setKeeper") {
    let name = c[3];
    if (name === "placeOrder") name += /orderType: 1/.test(l) ? " (bid)" : " (ask)";
    if (name === "closeDeal") name += /, true\)/.test(l) ? " (blacklist)" : "";
    console.log(`| ${test} | ${c[2]}.${name} | ${c[1]} |`);
  }
}'
echo
"$FORGE" test --match-contract GasTest --isolate --gas-report | sed -n '/╭/,$p'
