/** What the session logs through (pino in the daemon; nothing in most tests). */
export interface SessionLog {
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
}
