/**
 * A small Node host: it finds the daemon of a data directory, appends, reads its status and
 * follows the change feed. Type-checked with `tsc --strict` by test/integration/client.test.ts;
 * in a host of your own, import from `opsync/client` instead of the source path.
 */
import { fromDataDir, OpsyncRpcError } from '../src/client/node.js';

export async function main(dataDir: string): Promise<void> {
  const client = await fromDataDir(dataDir);
  await client.subscribe({ surfaces: ['knowledge'] }, (change) => console.log('changed', change.surfaces, change.state_hash));
  const { op_id, seq } = await client.sync.append({ surface: 'knowledge', payload: { id: 'note-1', text: 'hello' } });
  console.log('appended', op_id, seq);
  const status = await client.sync.status();
  console.log('records', status.counts.records, 'on', status.device_id);
  try {
    await client.lease.acquire({ agent_id: 'agent-1', ttl_ms: 30_000 });
  } catch (error) {
    if (error instanceof OpsyncRpcError && error.kind === 'lease_held') console.log('another device runs agent-1');
    else throw error;
  }

  // @ts-expect-error: an append needs a payload.
  await client.sync.append({ surface: 'knowledge' });
  // @ts-expect-error: no such method.
  await client.sync.appendd({ surface: 'knowledge', payload: {} }); // eslint-disable-line @typescript-eslint/no-unsafe-call
  // @ts-expect-error: a lease's ttl is a number of milliseconds.
  await client.lease.acquire({ agent_id: 'agent-1', ttl_ms: '30s' });
  // @ts-expect-error: the result is typed: seq is a number.
  const wrong: string = (await client.sync.append({ surface: 'skill', payload: { id: 's' } })).seq;
  console.log(wrong);
  client.close();
}
