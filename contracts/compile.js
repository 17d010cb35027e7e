#!/usr/bin/env node
// Compile contracts/src and contracts/test with the pinned solcjs into contracts/out/<Name>.json
// (ABI + bytecode). `--check` recompiles in memory and exits 1 if a committed artifact differs,
// so a source change without `make contracts` fails the tests.
"use strict";
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const ROOT = __dirname;
const OUT = path.join(ROOT, "out");
const SETTINGS = {
  evmVersion: "prague", // OpenZeppelin 5.7 needs mcopy (Cancun); py-evm lacks osaka's opcodes
  optimizer: { enabled: true, runs: 200 },
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};

function sources() {
  const out = {};
  for (const dir of ["src", "test"]) {
    for (const f of fs.readdirSync(path.join(ROOT, dir)).sort()) {
      if (f.endsWith(".sol")) {
        out[`${dir}/${f}`] = { content: fs.readFileSync(path.join(ROOT, dir, f), "utf8") };
      }
    }
  }
  return out;
}

function findImports(p) {
  for (const base of [path.join(ROOT, "node_modules"), ROOT]) {
    const full = path.join(base, p);
    if (fs.existsSync(full)) return { contents: fs.readFileSync(full, "utf8") };
  }
  return { error: `not found: ${p}` };
}

function compile() {
  const input = { language: "Solidity", sources: sources(), settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
  const errors = (output.errors || []).filter((e) => e.severity === "error");
  for (const e of output.errors || []) console.error(e.formattedMessage);
  if (errors.length) process.exit(2);
  const artifacts = {};
  for (const [file, contracts] of Object.entries(output.contracts)) {
    if (!file.startsWith("src/") && !file.startsWith("test/")) continue;
    for (const [name, c] of Object.entries(contracts)) {
      artifacts[name] = JSON.stringify(
        {
          contractName: name,
          sourceName: file,
          compiler: `solc ${solc.version()}`,
          settings: { evmVersion: SETTINGS.evmVersion, optimizer: SETTINGS.optimizer },
          abi: c.abi,
          bytecode: "0x" + c.evm.bytecode.object,
          deployedBytecode: "0x" + c.evm.deployedBytecode.object,
        },
        null,
        1,
      ) + "\n";
    }
  }
  return artifacts;
}

const artifacts = compile();
if (process.argv.includes("--check")) {
  const stale = Object.entries(artifacts).filter(([name, text]) => {
    const f = path.join(OUT, `${name}.json`);
    return !fs.existsSync(f) || fs.readFileSync(f, "utf8") !== text;
  });
  if (stale.length) {
    console.error(`stale artifacts: ${stale.map(([n]) => n).join(", ")}; run \`make contracts\``);
    process.exit(1);
  }
  console.log(`artifacts up to date (${Object.keys(artifacts).length} contracts)`);
} else {
  fs.mkdirSync(OUT, { recursive: true });
  for (const [name, text] of Object.entries(artifacts)) {
    fs.writeFileSync(path.join(OUT, `${name}.json`), text);
  }
  console.log(`wrote ${Object.keys(artifacts).length} artifacts to ${OUT} (solc ${solc.version()})`);
}
