// Builds the console into ../dist: one script, one style sheet and the
// page. The output must be reproducible byte for byte from the same
// sources and package-lock.json (`make build` checks nothing else in):
// no timestamps, no source maps with absolute paths, fixed targets.
import * as esbuild from "esbuild";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";

const out = new URL("../dist/", import.meta.url).pathname;
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

const common = {
  bundle: true,
  minify: true,
  legalComments: "none",
  logLevel: "warning",
  target: ["chrome110", "firefox110", "safari16"],
  charset: "utf8",
};
await esbuild.build({ ...common, entryPoints: ["src/main.js"], outfile: out + "console.js", format: "iife" });
await esbuild.build({ ...common, entryPoints: ["src/style.css"], outfile: out + "console.css" });
copyFileSync("src/index.html", out + "index.html");
