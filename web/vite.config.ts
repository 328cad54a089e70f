import { defineConfig } from "vite";

// The dev server proxies the API to a running stack's Envoy (GOFUND_EDGE, default
// `make up`'s address), so the app calls relative URLs in development as it does
// when Envoy serves the built app on the API's own origin.
const edge = process.env.GOFUND_EDGE ?? "http://127.0.0.1:8080";

export default defineConfig({
  // Relative asset URLs: the built app works wherever Envoy mounts web/dist.
  base: "./",
  server: { host: "127.0.0.1", proxy: { "/v1": { target: edge, changeOrigin: false } } },
  build: { outDir: "dist", emptyOutDir: true, sourcemap: true },
});
