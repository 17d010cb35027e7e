// Records the source's hash in the build, so a test can tell a stale build without npm.
const fs = require("fs");
const crypto = require("crypto");
const source = fs.readFileSync("src/wallet.ts");
const hash = crypto.createHash("sha256").update(source).digest("hex");
const built = fs.readFileSync("build/wallet.js", "utf8").replace(/^\/\/ source sha256: .*\n/, "");
fs.writeFileSync("build/wallet.js", `// source sha256: ${hash}\n` + built);
