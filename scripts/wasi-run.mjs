// Runs a wasm32-wasip1 program (here: a test binary) under Node's WASI, i.e.
// V8, the engine Envoy runs the filter in. Cargo calls it as the target runner:
// `CARGO_TARGET_WASM32_WASIP1_RUNNER="node scripts/wasi-run.mjs"`.
import { readFile } from "node:fs/promises";
import { WASI } from "node:wasi";
import { argv, exit } from "node:process";
const wasi = new WASI({ version: "preview1", args: argv.slice(2), env: {}, returnOnExit: true });
const module = await WebAssembly.compile(await readFile(argv[2]));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
exit(wasi.start(instance));
