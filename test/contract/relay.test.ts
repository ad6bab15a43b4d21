import { MemoryRelayStore } from '../../relay/memory-relay.js';
import { DirectoryRelay } from '../../relay/directory-relay.js';
import { useTempDirs } from '../helpers/temp-dir.js';
import { coreCrypto } from '../helpers/test-device.js';
import { runRelayContract } from './relay-contract.js';

const tempDir = useTempDirs();

runRelayContract('memory', () => {
  let now = 1_700_000_000_000;
  const store = new MemoryRelayStore(coreCrypto, () => now);
  return Promise.resolve({
    connect: (device) => Promise.resolve(store.connect(device)),
    advance: (ms) => {
      now += ms;
    },
  });
});

runRelayContract('directory', async () => {
  let now = 1_700_000_000_000;
  const root = await tempDir();
  return {
    connect: (self) => DirectoryRelay.open({ root, self, crypto: coreCrypto, now: () => now }),
    advance: (ms) => {
      now += ms;
    },
  };
});
