#!/usr/bin/env node
// Copies the ABI and bytecode of the deployable contracts from forge's build
// output (out/forge) into one small JSON file per contract under the given
// directory. These files are what the Rust bindings and the deploy tool read.
'use strict';
const fs = require('fs');
const path = require('path');

const CONTRACTS = ['SNM', 'Market', 'ProfileRegistry', 'Blacklist', 'Gate', 'OracleUSD'];
const root = path.join(__dirname, '..');
const dest = path.resolve(process.argv[2] || path.join(root, 'artifacts'));
const solcVersion = require(path.join(root, 'node_modules', 'solc', 'package.json')).version;

fs.mkdirSync(dest, { recursive: true });
for (const name of CONTRACTS) {
  const built = JSON.parse(fs.readFileSync(path.join(root, 'out', 'forge', `${name}.sol`, `${name}.json`), 'utf8'));
  const artifact = {
    contractName: name,
    sourceName: `src/${name}.sol`,
    compiler: `solc ${solcVersion}`,
    abi: built.abi,
    bytecode: built.bytecode.object,
    deployedBytecode: built.deployedBytecode.object,
  };
  fs.writeFileSync(path.join(dest, `${name}.json`), JSON.stringify(artifact, null, 2) + '\n');
}
