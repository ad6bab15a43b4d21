import type { PullPage, Truncated } from '../../relay/port/relay.js';

/** The page a pull answered; a test that expects ops fails by name when the relay answered `Truncated`. */
export function pageOf(outcome: PullPage | Truncated): PullPage {
  if ('truncated' in outcome) throw new Error(`expected a page, the relay answered truncated at ${JSON.stringify(outcome.truncated)}`);
  return outcome;
}
