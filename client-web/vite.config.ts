import { defineConfig } from 'vite';

// The server serves dist/ at `/`; relative asset URLs keep the build usable under any path.
export default defineConfig({
  base: './',
  build: { outDir: 'dist', emptyOutDir: true, target: 'es2022' },
});
