import { afterAll } from 'vitest';
import { killLeftoverDaemons } from './running-daemons.js';

// Setup file (vitest.config.ts): runs in every test file.
afterAll(killLeftoverDaemons);
