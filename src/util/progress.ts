/**
 * How far a long step has come (proposals/daemon.md §Progress): `done` of `total` in the step's
 * unit. Steps: `journal` (bytes of the journal read and verified at open), `checkpoint` (records
 * of a checkpoint loaded: the base at open, or the relay's latest when a device bootstraps),
 * `compaction` (bytes of the journal rewritten onto a new base).
 */
export type ProgressStep = 'journal' | 'checkpoint' | 'compaction';

export type Progress = (step: ProgressStep, done: number, total: number) => void;
