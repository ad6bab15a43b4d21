import { afterAll, beforeAll } from 'vitest';
import { startPostgres, type TestPostgres } from './postgres.js';

/**
 * A throwaway Postgres server for the tests of one file (or describe block): started before the
 * first test, stopped after the last. Returns an accessor for use inside tests.
 */
export function usePostgres(): () => TestPostgres {
  let server: TestPostgres | undefined;
  beforeAll(async () => {
    server = await startPostgres();
  }, 120_000);
  afterAll(async () => {
    await server?.stop();
  });
  return () => {
    if (!server) throw new Error('the test Postgres server has not started');
    return server;
  };
}
