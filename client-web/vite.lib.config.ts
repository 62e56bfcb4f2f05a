import { defineConfig } from 'vite';

// The client library as an ES module (`npm run build:lib` → lib/fanout.js); its type
// declarations come from tsconfig.lib.json. The demo page is built by vite.config.ts.
export default defineConfig({
  build: {
    outDir: 'lib',
    emptyOutDir: false,
    target: 'es2022',
    sourcemap: true,
    lib: { entry: 'src/fanout.ts', formats: ['es'], fileName: () => 'fanout.js' },
  },
});
