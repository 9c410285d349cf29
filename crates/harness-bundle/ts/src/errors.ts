// The protocol's error envelope, with its stable codes and their HTTP statuses.

export type ErrorCode =
  | "VALIDATION" | "UNKNOWN_ENGINE" | "PATH_ESCAPE" | "UNAUTHORIZED" | "NOT_FOUND"
  | "METHOD_NOT_ALLOWED" | "CONFLICT" | "SESSION_ENDED" | "INPUT_ENDED" | "EVENTS_EXPIRED"
  | "PAYLOAD_TOO_LARGE" | "NOT_A_FILE" | "NOT_A_DIRECTORY" | "EDIT_NO_MATCH" | "EDIT_AMBIGUOUS"
  | "ENGINE_UNAVAILABLE" | "INTERNAL";

const statusOf: Record<ErrorCode, number> = {
  VALIDATION: 400, UNKNOWN_ENGINE: 400, PATH_ESCAPE: 400, NOT_A_FILE: 400, NOT_A_DIRECTORY: 400,
  EDIT_NO_MATCH: 400, EDIT_AMBIGUOUS: 400, UNAUTHORIZED: 401, NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405, CONFLICT: 409, SESSION_ENDED: 409, INPUT_ENDED: 409,
  EVENTS_EXPIRED: 410, PAYLOAD_TOO_LARGE: 413, INTERNAL: 500, ENGINE_UNAVAILABLE: 503,
};

export class HttpError extends Error {
  readonly status: number;
  constructor(readonly code: ErrorCode, message: string, readonly details?: unknown) {
    super(message);
    this.status = statusOf[code];
  }
  body(): string {
    const error: Record<string, unknown> = { code: this.code, message: this.message };
    if (this.details !== undefined) error.details = this.details;
    return JSON.stringify({ error });
  }
}

export const validation = (message: string) => new HttpError("VALIDATION", message);
export const notFound = (message: string) => new HttpError("NOT_FOUND", message);
