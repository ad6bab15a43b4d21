import type { conversationMethods } from './conversation-methods.js';
import type { discoverMethod } from './discover.js';
import type { leaseMethods } from './lease-methods.js';
import type { MethodMap } from './method.js';
import type { ChangeEvent } from '../session/session-reports.js';
import type { syncMethods } from './sync-methods.js';

/**
 * Every method the daemon serves, by name: what a caller sends (`input`) and what it answers
 * (`result`), derived from the very descriptors the dispatcher serves (proposals/rpc.md §Methods),
 * so a typed client cannot drift from the server. Types only: importing it loads nothing.
 */
export type OpsyncMethods = MethodMap<
  | ReturnType<typeof syncMethods>[number]
  | ReturnType<typeof leaseMethods>[number]
  | ReturnType<typeof conversationMethods>[number]
  | ReturnType<typeof discoverMethod>
>;

export type MethodName = keyof OpsyncMethods;

/** What a subscriber hears of a change (`sync.changed`, proposals/rpc.md §Change feed): the change, and how many it stands for. */
export type Change = ChangeEvent & { readonly coalesced: number };
