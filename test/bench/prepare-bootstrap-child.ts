/**
 * Benchmark child: fills a relay directory with a checkpoint of 1 000 000 synthetic ops and a
 * 10 000-op tail of real signed ops from device "bench-writer" (whose data directory it leaves
 * behind). A separate process, so the benchmark's parent never holds the million-op state and
 * its garbage collection cannot compete with the device being measured.
 */
import { DirectoryRelay } from '../../relay/directory/directory-relay.js';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseDeviceKeyFile } from '../../src/crypto/device-key.js';
import { Keyring } from '../../src/crypto/keyring.js';
import { FoldState } from '../../src/fold/fold-state.js';
import type { DeviceId } from '../../src/oplog/ids.js';
import type { ChainHead } from '../../src/oplog/op-record.js';
import { cutCheckpoint } from '../../src/session/checkpoint-seal.js';
import { openDirSession } from '../helpers/dir-world.js';
import { coreCrypto } from '../helpers/test-device.js';
import { PERSONAL_KEY } from '../helpers/world.js';
import { appendMany } from './append-many.js';
import { foldOps } from './workload.js';

const [relayDir, writerDir, countText] = process.argv.slice(2);
const count = Number(countText);
const state = new FoldState(coreCrypto);
const frontier = new Map<DeviceId, ChainHead>();
for (const op of foldOps(count)) {
  state.apply(op);
  const head = frontier.get(op.device_id);
  frontier.set(op.device_id, { seq: (head?.seq ?? -1) + 1, op_id: op.op_id, hlc: op.hlc });
}
// The writer registers first: the checkpoint is its, signed with its device key.
const writer = await openDirSession(relayDir!, writerDir!, 'bench-writer');
const deviceKey = parseDeviceKeyFile(await readFile(join(writerDir!, 'device-key.json'), 'utf8'), 'device-key.json');
const { file } = cutCheckpoint(state, frontier, {
  device: 'bench-writer' as DeviceId,
  deviceKey,
  keyring: new Keyring([PERSONAL_KEY]),
  crypto: coreCrypto,
});
const relay = await DirectoryRelay.open({ root: relayDir!, self: 'bench-writer' as DeviceId, crypto: coreCrypto });
await relay.putCheckpoint(file);
await appendMany(writer, 10_000, count);
await writer.pump();
await writer.close();
