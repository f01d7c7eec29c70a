/**
 * The extension's entry point for pi (package.json, "pi.extensions"). pi names an
 * extension after the directory of its entry, so this one is listed as `cordon`
 * (a checkout's `-e .../integrations/pi`) or `@cordon-sandbox/pi:cordon` (the npm
 * package), not as `pi`. The extension itself is ../index.ts.
 */
export { default } from "../index.ts";
