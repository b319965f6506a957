#!/usr/bin/env node
// A `solc` executable for forge, built on the pinned solcjs npm module.
//
// Why: no native solc can be installed on these machines (forge's own download
// fails offline), so foundry.toml points `solc` at this script. forge only
// needs two things from a compiler binary: `--version` (to learn which
// compiler it is talking to) and `--standard-json` (JSON in on stdin, JSON out
// on stdout). Both are answered here from the same solcjs build.
'use strict';
const fs = require('fs');
const path = require('path');
const solc = require(path.join(__dirname, '..', 'node_modules', 'solc'));

const args = process.argv.slice(2);

if (args.includes('--version')) {
  // forge parses the "Version:" line; solc.version() is e.g. 0.8.37+commit.f401782d.Emscripten.clang.
  // It is re-labelled as the Linux build so that forge treats it as a native compiler of that version.
  const v = solc.version().replace(/\.Emscripten\.clang$/, '.Linux.g++');
  process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${v}\n`);
  process.exit(0);
}

if (!args.includes('--standard-json')) {
  process.stderr.write('solc-wrapper: only --version and --standard-json are supported\n');
  process.exit(2);
}

// Import roots: the base path and include paths forge passes, then the cwd.
const roots = [];
for (let i = 0; i < args.length; i++) {
  if ((args[i] === '--base-path' || args[i] === '--include-path') && args[i + 1]) roots.push(args[++i]);
}
roots.push(process.cwd());

// forge normally sends every source in the input already; this callback only
// covers an import it did not resolve itself.
function findImports(p) {
  for (const root of roots) {
    const full = path.resolve(root, p);
    if (fs.existsSync(full)) return { contents: fs.readFileSync(full, 'utf8') };
  }
  return { error: `File not found: ${p}` };
}

const input = fs.readFileSync(0, 'utf8');
process.stdout.write(solc.compile(input, { import: findImports }));
