// Runs the wasm32-wasip1 build of the profiler under Node's WASI: V8, the
// engine Envoy runs Wasm filters in (TurboFan after warm-up).
import { readFile } from "node:fs/promises";
import { WASI } from "node:wasi";
import { argv } from "node:process";

const wasi = new WASI({ version: "preview1", args: ["profile", ...argv.slice(3)], env: {} });
const module = await WebAssembly.compile(await readFile(argv[2]));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
wasi.start(instance);
