import { apiBasePath } from '../services/platform.js';
import type { Handler, Reply } from '../http/operation.js';
import { DomainError } from '../errors.js';
import { fileEtag, type UploadRequest } from '../services/files.js';
import { pageOf } from './paging.js';
import { page, presentFile } from './present.js';

export const listFiles: Handler<'listFiles'> = async ({ params, query }, { principal, services }) => ({
  status: 200,
  body: page(
    await services.files.list(
      principal,
      params.projectId,
      {
        kind: query.kind,
        mediaType: query.media_type,
        name: query.name,
        tags: query.tag,
        runId: query.run_id,
        parentId: query.parent_id,
      },
      pageOf(query),
    ),
    presentFile,
  ),
});

const splitTags = (value: string | undefined) =>
  (value ?? '')
    .split(',')
    .map((tag) => tag.trim())
    .filter(Boolean);

/**
 * Multipart (fields, then the file part) or a raw application/octet-stream body. What a multipart
 * body gives in place of query parameters (its fields, the part's filename and media type) is
 * checked as the query is, so that both forms store only what the contract allows.
 */
export const uploadFile: Handler<'uploadFile'> = async (
  { params, query, headers, stream, multipart, checkAsQuery },
  ctx,
) => {
  const declared = headers['content-length'] === undefined ? null : Number(headers['content-length']);
  let request: UploadRequest;
  if (headers['content-type']?.toLowerCase().startsWith('multipart/form-data')) {
    const part = await multipart();
    const name = query.name ?? part.fields.name ?? part.filename;
    if (!name)
      throw new DomainError(
        'bad-request',
        'name the file: a "name" field, ?name=, or a filename on the part',
      );
    const mediaType = query.media_type ?? part.fields.media_type ?? part.mimeType;
    const tags = [...(query.tag ?? []), ...splitTags(part.fields.tags)];
    const parentId = query.parent_id ?? part.fields.parent_id ?? null;
    // Where each value came from, for the errors: a field, or the file part itself.
    const from = (field: string, fromPart: string) =>
      query[field as keyof typeof query] === undefined && part.fields[field] === undefined
        ? fromPart
        : `/${field}`;
    try {
      checkAsQuery(
        { name, media_type: mediaType, tag: tags, parent_id: parentId },
        {
          name: from('name', '/file (its filename)'),
          media_type: from('media_type', '/file (its media type)'),
          tag: '/tags',
          parent_id: '/parent_id',
        },
      );
    } catch (error) {
      part.stream.resume();
      throw error;
    }
    request = {
      content: part.stream,
      declaredSize: declared,
      name,
      mediaType,
      tags,
      parentId,
      finished: part.finished,
    };
  } else {
    if (!query.name) throw new DomainError('bad-request', 'a raw upload needs its name in ?name=');
    // A client that goes away mid-upload fails the upload through the stream, not the process.
    stream.on('error', () => undefined);
    request = {
      content: stream,
      declaredSize: declared,
      name: query.name,
      mediaType: query.media_type ?? null,
      tags: query.tag ?? [],
      parentId: query.parent_id ?? null,
    };
  }
  const file = await ctx.services.files.upload(ctx.principal, params.projectId, request);
  return {
    status: 201,
    body: presentFile(file),
    etag: fileEtag(file),
    location: `${apiBasePath}/projects/${file.projectId}/files/${file.id}`,
  };
};

export const getFile: Handler<'getFile'> = async ({ params }, { principal, services }) => {
  const file = await services.files.get(principal, params.projectId, params.fileId);
  return { status: 200, body: presentFile(file), etag: fileEtag(file) };
};

export const updateFile: Handler<'updateFile'> = async (
  { params, body, headers },
  { principal, services },
) => {
  const file = await services.files.update(
    principal,
    params.projectId,
    params.fileId,
    body,
    headers['if-match'],
  );
  return { status: 200, body: presentFile(file), etag: fileEtag(file) };
};

export const deleteFile: Handler<'deleteFile'> = async ({ params, headers }, { principal, services }) => {
  await services.files.delete(principal, params.projectId, params.fileId, headers['if-match']);
  return { status: 204 };
};

/** RFC 6266: an ASCII fallback and the exact name in UTF-8. */
function contentDisposition(name: string): string {
  const ascii = name.replace(/[^\x20-\x7e]|["\\]/g, '_');
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(name)}`;
}

export const downloadFile: Handler<'downloadFile'> = async (
  { params, headers },
  { principal, services },
): Promise<Reply<'downloadFile'>> => {
  const { file, range, content } = await services.files.download(
    principal,
    params.projectId,
    params.fileId,
    headers.range,
  );
  const common = {
    etag: `"${file.sha256}"`,
    stream: content,
    contentType: file.mediaType,
  };
  if (range) {
    return {
      status: 206 as const,
      ...common,
      headers: {
        'Content-Range': `bytes ${range.start}-${range.end}/${file.size}`,
        'Content-Length': String(range.end - range.start + 1),
        'Accept-Ranges': 'bytes',
      },
    };
  }
  return {
    status: 200 as const,
    ...common,
    headers: {
      'Content-Length': String(file.size),
      'Content-Disposition': contentDisposition(file.name),
      'Accept-Ranges': 'bytes',
    },
  };
};
