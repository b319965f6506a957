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
// Each scenario'"'"'s calls in order, then (for the lives) their sum.
let test = null;
let rows = [];
const flush = () => {
  if (rows.length > 2 && /Life|Lifecycle/.test(test || "")) {
    console.log(`| ${test} | **total** | **${rows.reduce((a, r) => a + r, 0)}** |`);
  }
  rows = [];
};
const lines = require("fs").readFileSync(0, "utf8").split("\n");
console.log("| scenario | call | gas |");
console.log("|---|---|---:|");
const skip = ["transferDigest", "setKeeper", "signedOrderDigest"];
for (const l of lines) {
  const t = l.match(/^\[PASS\] (test_gas_\w+)/);
  if (t) { flush(); test = t[1].replace("test_gas_", ""); continue; }
  const c = l.match(/^    ├─ \[(\d+)\] (Market|Gate)::(\w+)\((.*)/);
  if (test && c && !skip.includes(c[3])) {
    let name = c[3];
    if (name === "placeOrder") name += /orderType: 1/.test(l) ? " (bid)" : " (ask)";
    if (name === "openDeal" || name === "quickBuy") {
      const ids = [...c[4].matchAll(/OrderRef\(\{ id: (\d+)/g)].map((m) => (m[1] === "0" ? "signed" : "placed"));
      name += ` (${ids.join(" ask, ")}${ids.length > 1 ? " bid" : " ask"})`;
    }
    if (name === "closeDeal") name += /, true\)$/.test(l) ? " (blacklist)" : "";
    console.log(`| ${test} | ${c[2]}.${name} | ${c[1]} |`);
    rows.push(Number(c[1]));
  }
}
flush();'
echo
"$FORGE" test --match-contract GasTest --isolate --gas-report | sed -n '/╭/,$p'
