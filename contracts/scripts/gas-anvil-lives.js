#!/usr/bin/env node
// Part of scripts/gas-anvil.sh: given the forge script's broadcast (which
// opened the measured deals), bills each deal three times and closes it from
// the parties' unlocked anvil accounts, rebuilding each deal's state from
// the receipts' events (DealOpened, then DealBilled.billedUntil), and prints
// every life's receipts.
'use strict';
const path = require('path');
const { keccak256 } = require(path.join(__dirname, '..', 'node_modules', 'js-sha3'));

const [rpcUrl, runFile] = process.argv.slice(2);
const run = require(runFile);
const out = require(path.join(__dirname, '..', 'out', 'forge', 'Market.sol', 'Market.json'));
const STATE = '(address,address,address,uint256,uint64,uint64,uint64)';
const sel = (sig) => {
  const id = out.methodIdentifiers[sig];
  if (!id) throw new Error('no selector for ' + sig);
  return id;
};
const topic = (sig) => '0x' + keccak256(sig);
const OPENED = topic('DealOpened(uint256,address,address,address,uint256,uint256,uint256,uint64,uint64,uint256)');
const BILLED = topic('DealBilled(uint256,uint256,uint256,uint64)');

let nextId = 1;
async function rpc(method, params) {
  const res = await fetch(rpcUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ jsonrpc: '2.0', id: nextId++, method, params }),
  });
  const body = await res.json();
  if (body.error) throw new Error(method + ': ' + JSON.stringify(body.error));
  return body.result;
}
const word = (x) => BigInt(x).toString(16).padStart(64, '0');
const words = (data) => (data.slice(2).match(/.{64}/g) || []).map((w) => BigInt('0x' + w));
const addr = (w) => '0x' + w.toString(16).padStart(40, '0');

async function send(from, to, data) {
  const hash = await rpc('eth_sendTransaction', [{ from, to, data, gas: '0x7a120' }]);
  for (;;) {
    const r = await rpc('eth_getTransactionReceipt', [hash]);
    if (r) {
      if (r.status !== '0x1') throw new Error('reverted: ' + hash);
      return r;
    }
    await new Promise((ok) => setTimeout(ok, 100));
  }
}

function encodeState(s) {
  return [s.supplier, s.consumer, s.master, s.price, s.start, s.duration, s.last].map(word).join('');
}

(async () => {
  const txs = run.transactions.map((t, i) => ({
    fn: t.function || 'deploy ' + t.contractName,
    to: t.transaction.to,
    receipt: run.receipts[i],
  }));
  // The measured opens are the last five transactions: place ask, place
  // bid, open (placed); open (signed, fresh nonce word); open (signed, warm).
  const last = txs.slice(-5);
  const lives = [
    { name: 'placed orders (spot)', open: last.slice(0, 3) },
    { name: 'signed orders, fresh nonce word (spot)', open: [last[3]] },
    { name: 'signed orders, warm nonce word (spot)', open: [last[4]] },
  ];
  for (const life of lives) {
    const opened = life.open[life.open.length - 1];
    const market = opened.to;
    const log = opened.receipt.logs.find((l) => l.topics[0] === OPENED);
    const d = words(log.data);
    const s = {
      supplier: addr(BigInt(log.topics[2])),
      consumer: addr(BigInt(log.topics[3])),
      master: addr(d[0]),
      price: d[3],
      duration: d[4],
      start: d[5],
      last: d[5],
    };
    const id = BigInt(log.topics[1]);
    const rows = life.open.map((t) => [t.fn.split('(')[0], parseInt(t.receipt.gasUsed, 16)]);
    for (let i = 0; i < 3; i++) {
      const r = await send(s.supplier, market, '0x' + sel(`bill(uint256,${STATE})`) + word(id) + encodeState(s));
      const billed = r.logs.find((l) => l.topics[0] === BILLED);
      s.last = words(billed.data)[2];
      rows.push(['bill', parseInt(r.gasUsed, 16)]);
    }
    const r = await send(s.consumer, market, '0x' + sel(`closeDeal(uint256,${STATE},bool)`) + word(id) + encodeState(s) + word(0));
    rows.push(['closeDeal', parseInt(r.gasUsed, 16)]);
    console.log(life.name);
    for (const [f, g] of rows) console.log(String(g).padStart(8) + '  ' + f);
    console.log(String(rows.reduce((a, [, g]) => a + g, 0)).padStart(8) + '  total');
    console.log();
  }
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
