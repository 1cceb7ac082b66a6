// Multipart uploads, streamed: the fields that come before the file part, then the file part as a
// stream handed on without buffering (busboy parses; nothing is held in memory or written here).
import type { IncomingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import busboy from 'busboy';
import { DomainError } from '../errors.js';

export interface MultipartFile {
  /** The file part's bytes. */
  stream: Readable;
  /** The filename the client gave the part, if any. */
  filename: string | null;
  /** The part's media type, if the client gave one other than application/octet-stream. */
  mimeType: string | null;
  /** The fields sent before the file part. */
  fields: Record<string, string>;
  /** Resolves when the whole body was read; rejects if anything but the end followed the file. */
  finished: Promise<void>;
}

const badRequest = (detail: string) => new DomainError('bad-request', detail);

/**
 * Reads a multipart body up to its `file` part (resolving then), refusing anything else with 400.
 * `checkFields` sees the fields before the file is handed on, and throws to refuse them.
 */
export function readMultipartFile(
  body: Readable,
  headers: IncomingHttpHeaders,
  checkFields: (fields: Record<string, string>) => void,
): Promise<MultipartFile> {
  return new Promise((resolve, reject) => {
    let parser: busboy.Busboy;
    try {
      parser = busboy({ headers, limits: { files: 1, fields: 20, fieldSize: 8 * 1024, parts: 22 } });
    } catch (error) {
      reject(badRequest(`not a readable multipart body: ${(error as Error).message}`));
      return;
    }
    const fields: Record<string, string> = {};
    let file: MultipartFile | null = null;
    let settle!: { resolve: () => void; reject: (e: unknown) => void };
    const finished = new Promise<void>((res, rej) => (settle = { resolve: res, reject: rej }));
    // Read only when the file's consumer asks: an unobserved rejection must not crash the process.
    finished.catch(() => undefined);
    // Once refused, the rest of the body is read and dropped, so that the parser never stalls.
    let refused = false;
    const fail = (error: unknown) => {
      refused = true;
      if (file) {
        file.stream.destroy(error as Error);
        settle.reject(error);
      } else reject(error);
    };
    parser.on('field', (name, value, info) => {
      if (refused) return;
      if (file) return fail(badRequest(`the field "${name}" comes after the file part; send fields first`));
      if (info.valueTruncated || info.nameTruncated)
        return fail(badRequest(`the field "${name}" is too long`));
      fields[name] = value;
    });
    parser.on('file', (name, stream, info) => {
      if (refused) {
        stream.resume();
        return;
      }
      if (name !== 'file') {
        stream.resume();
        return fail(badRequest(`the file part must be named "file", not "${name}"`));
      }
      // An error before the consumer attaches is kept by the stream (its `errored`), not thrown.
      stream.on('error', () => undefined);
      try {
        checkFields(fields);
      } catch (error) {
        stream.resume();
        return fail(error);
      }
      const mimeType = info.mimeType && info.mimeType !== 'application/octet-stream' ? info.mimeType : null;
      file = { stream, filename: info.filename || null, mimeType, fields, finished };
      resolve(file);
    });
    parser.on('filesLimit', () => fail(badRequest('send one file per upload')));
    parser.on('fieldsLimit', () => fail(badRequest('too many fields')));
    parser.on('partsLimit', () => fail(badRequest('too many parts')));
    parser.on('error', (error: Error) => fail(badRequest(`malformed multipart body: ${error.message}`)));
    parser.on('close', () => {
      if (!file) reject(badRequest('the multipart body has no "file" part'));
      else settle.resolve();
    });
    body.on('error', (error) => fail(badRequest(`the upload did not complete: ${error.message}`)));
    body.pipe(parser);
  });
}
