// Files: streamed uploads (multipart and raw) with a size limit and the storage quota; downloads
// with auth, ETag and ranges; filters; lineage; deletion.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type request from 'supertest';
import { createTestApp, expectProblem, type TestApp } from '../fixtures/app.js';
import { testEngines } from '../fixtures/databases.js';

type Login = Awaited<ReturnType<TestApp['login']>>;

const sha = (data: string | Buffer) => createHash('sha256').update(data).digest('hex');
const csv = 'hours,passed\n1,0\n5,1\n8,1\n';
const maxUploadBytes = 64 * 1024;

/** Collects a binary response body as a Buffer. */
function binary(res: request.Response, callback: (err: Error | null, body: Buffer) => void) {
  const stream = res as unknown as NodeJS.ReadableStream;
  const chunks: Buffer[] = [];
  stream.on('data', (chunk: Buffer) => chunks.push(chunk));
  stream.on('end', () => callback(null, Buffer.concat(chunks)));
}

describe.each(testEngines())('files (%s)', (engine) => {
  let t: TestApp;
  let owner: Login;
  let member: Login;
  let viewer: Login;
  let outsider: Login;
  let admin: Login;
  const base = '/api/v1/projects/data/files';

  beforeAll(async () => {
    t = await createTestApp(engine, { config: { files: { maxUploadBytes } } });
    [owner, member, viewer, outsider, admin] = await Promise.all([
      t.login('fiona'),
      t.login('max'),
      t.login('val'),
      t.login('otto'),
      t.login('root', { admin: true }),
    ]);
    await t.createProject(owner, 'data', { member: [member], viewer: [viewer] });
  });
  afterAll(() => t.close());

  const uploadRaw = (who: Login, name: string, content: string | Buffer, query = '') =>
    t.http
      .post(`${base}?name=${encodeURIComponent(name)}${query}`)
      .set('Authorization', who.auth)
      .set('Content-Type', 'application/octet-stream')
      .send(Buffer.from(content));

  const storageUsed = async () =>
    (await t.http.get('/api/v1/projects/data/quota').set('Authorization', owner.auth).expect(200)).body.usage
      .storage as string;

  describe('uploadFile', () => {
    it('stores a multipart upload with its sha256, size, guessed media type and tags (201)', async () => {
      const res = await t.http
        .post(base)
        .set('Authorization', member.auth)
        .field('tags', 'raw, students')
        .attach('file', Buffer.from(csv), 'students.csv')
        .expect(201);
      expect(res.body).toMatchObject({
        name: 'students.csv',
        size: Buffer.byteLength(csv),
        sha256: sha(csv),
        media_type: 'text/csv',
        tags: ['raw', 'students'],
        kind: 'input',
        parent_id: null,
        created_by: member.user.id,
      });
      expect(res.headers.location).toBe(`${base}/${res.body.id}`);
      const content = join(t.config.dataDir, 'files', 'sha256', sha(csv).slice(0, 2), sha(csv));
      expect(existsSync(content)).toBe(true);
    });

    it('stores a raw body named in the query, with the media type and parent given', async () => {
      const parent = await uploadRaw(member, 'a.txt', 'hello').expect(201);
      const res = await uploadRaw(
        member,
        'b.json',
        '{"a":1}',
        `&media_type=application/json&tag=derived&parent_id=${parent.body.id}`,
      ).expect(201);
      expect(res.body).toMatchObject({
        name: 'b.json',
        media_type: 'application/json',
        tags: ['derived'],
        parent_id: parent.body.id,
      });
    });

    it('counts uploads against the storage quota and refuses one that does not fit (409)', async () => {
      const before = await storageUsed();
      await uploadRaw(member, 'small.txt', 'x'.repeat(100)).expect(201);
      expect(Number(await storageUsed())).toBe(Number(before) + 100);
      await t.http
        .patch('/api/v1/projects/data/quota')
        .set('Authorization', admin.auth)
        .send({ limits: { storage: String(Number(await storageUsed()) + 50) } })
        .expect(200);
      const res = await uploadRaw(member, 'big.txt', 'y'.repeat(200));
      expectProblem(res, 409, 'quota-exceeded');
      expect(res.body).toMatchObject({ resource: 'storage', requested: 200 });
      await t.http
        .patch('/api/v1/projects/data/quota')
        .set('Authorization', admin.auth)
        .send({ limits: { storage: '10Gi' } })
        .expect(200);
    });

    it('refuses a body over the upload limit and keeps nothing of it (413)', async () => {
      const listed = (await t.http.get(base).set('Authorization', owner.auth).query({ limit: 100 })).body
        .items.length;
      const big = Buffer.alloc(maxUploadBytes + 1, 7);
      expectProblem(await uploadRaw(member, 'huge.bin', big), 413, 'payload-too-large');
      expectProblem(
        await t.http.post(base).set('Authorization', member.auth).attach('file', big, 'huge.bin'),
        413,
        'payload-too-large',
      );
      const staging = join(t.config.dataDir, 'files', 'staging');
      expect(existsSync(staging) ? readdirSync(staging) : []).toEqual([]);
      expect(existsSync(join(t.config.dataDir, 'files', 'sha256', sha(big).slice(0, 2), sha(big)))).toBe(
        false,
      );
      const after = (await t.http.get(base).set('Authorization', owner.auth).query({ limit: 100 })).body.items
        .length;
      expect(after).toBe(listed);
    });

    it('refuses a malformed multipart body (400), a body without a file part, and other media types (415)', async () => {
      const malformed = await t.http
        .post(base)
        .set('Authorization', member.auth)
        .set('Content-Type', 'multipart/form-data; boundary=XYZ')
        .send('--XYZ\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nunterminated');
      expectProblem(malformed, 400, 'bad-request');
      const noFile = await t.http.post(base).set('Authorization', member.auth).field('name', 'x.txt');
      expectProblem(noFile, 400, 'bad-request');
      const json = await t.http.post(base).set('Authorization', member.auth).send({ name: 'x' });
      expectProblem(json, 415, 'unsupported-media-type');
    });

    it('refuses a raw body without a name (400) and viewers (403) and outsiders (404)', async () => {
      expectProblem(
        await t.http
          .post(base)
          .set('Authorization', member.auth)
          .set('Content-Type', 'application/octet-stream')
          .send(Buffer.from('x')),
        400,
        'bad-request',
      );
      expectProblem(await uploadRaw(viewer, 'v.txt', 'x'), 403, 'forbidden');
      expectProblem(await uploadRaw(outsider, 'o.txt', 'x'), 404, 'not-found');
    });
  });

  describe('downloadFile', () => {
    let fileId: string;
    const content = Buffer.from(Array.from({ length: 1000 }, (_, i) => i % 251));

    beforeAll(async () => {
      fileId = (await uploadRaw(member, 'bytes.bin', content).expect(201)).body.id;
    });

    it('sends the whole content with its type, length, name and sha256 ETag (200)', async () => {
      const res = await t.http
        .get(`${base}/${fileId}/content`)
        .set('Authorization', viewer.auth)
        .buffer(true)
        .parse(binary)
        .expect(200);
      expect(Buffer.compare(res.body as Buffer, content)).toBe(0);
      expect(res.headers['content-type']).toBe('application/octet-stream');
      expect(res.headers['content-length']).toBe('1000');
      expect(res.headers.etag).toBe(`"${sha(content)}"`);
      expect(res.headers['content-disposition']).toContain('filename="bytes.bin"');
      expect(res.headers['accept-ranges']).toBe('bytes');
    });

    it('sends one byte range (206) and answers 304 to a matching If-None-Match', async () => {
      const res = await t.http
        .get(`${base}/${fileId}/content`)
        .set('Authorization', viewer.auth)
        .set('Range', 'bytes=10-19')
        .buffer(true)
        .parse(binary)
        .expect(206);
      expect(Buffer.compare(res.body as Buffer, content.subarray(10, 20))).toBe(0);
      expect(res.headers['content-range']).toBe('bytes 10-19/1000');
      const suffix = await t.http
        .get(`${base}/${fileId}/content`)
        .set('Authorization', viewer.auth)
        .set('Range', 'bytes=-5')
        .buffer(true)
        .parse(binary)
        .expect(206);
      expect(Buffer.compare(suffix.body as Buffer, content.subarray(995))).toBe(0);
      await t.http
        .get(`${base}/${fileId}/content`)
        .set('Authorization', viewer.auth)
        .set('If-None-Match', `"${sha(content)}"`)
        .expect(304);
    });

    it('refuses a range past the end (416) with the size in Content-Range', async () => {
      const res = await t.http
        .get(`${base}/${fileId}/content`)
        .set('Authorization', viewer.auth)
        .set('Range', 'bytes=5000-');
      expectProblem(res, 416, 'range-not-satisfiable');
      expect(res.headers['content-range']).toBe('bytes */1000');
    });

    it('hides the file from anyone outside the project, and from anonymous callers', async () => {
      expectProblem(
        await t.http.get(`${base}/${fileId}/content`).set('Authorization', outsider.auth),
        404,
        'not-found',
      );
      expectProblem(await t.http.get(`${base}/${fileId}/content`), 401, 'unauthorized');
    });
  });

  describe('listFiles', () => {
    it('filters by kind, media type, name, tag and parent, newest first, in pages', async () => {
      const a = await uploadRaw(owner, 'list-a.csv', 'a\n1\n', '&tag=batch:7&tag=keep').expect(201);
      const b = await uploadRaw(owner, 'list-b.csv', 'b\n2\n', `&tag=batch:7&parent_id=${a.body.id}`).expect(
        201,
      );
      const byTag = await t.http
        .get(base)
        .set('Authorization', viewer.auth)
        .query({ tag: 'batch:7' })
        .expect(200);
      expect(byTag.body.items.map((f: { id: string }) => f.id)).toEqual([b.body.id, a.body.id]);
      const both = await t.http
        .get(`${base}?tag=batch:7&tag=keep`)
        .set('Authorization', viewer.auth)
        .expect(200);
      expect(both.body.items.map((f: { id: string }) => f.id)).toEqual([a.body.id]);
      const children = await t.http
        .get(base)
        .set('Authorization', viewer.auth)
        .query({ parent_id: a.body.id });
      expect(children.body.items.map((f: { id: string }) => f.id)).toEqual([b.body.id]);
      const named = await t.http.get(base).set('Authorization', viewer.auth).query({ name: 'list-a.csv' });
      expect(named.body.items).toHaveLength(1);
      const csvs = await t.http
        .get(base)
        .set('Authorization', viewer.auth)
        .query({ media_type: 'text/csv', kind: 'input', limit: 1 });
      expect(csvs.body.items).toHaveLength(1);
      expect(csvs.body.next_cursor).toEqual(expect.any(String));
      const next = await t.http
        .get(base)
        .set('Authorization', viewer.auth)
        .query({ media_type: 'text/csv', kind: 'input', limit: 1, cursor: csvs.body.next_cursor })
        .expect(200);
      expect(next.body.items[0].id).not.toBe(csvs.body.items[0].id);
    });

    it('refuses unknown filters (400)', async () => {
      expectProblem(
        await t.http.get(base).set('Authorization', viewer.auth).query({ size: 3 }),
        400,
        'validation',
      );
    });
  });

  describe('updateFile', () => {
    it('renames and retags with If-Match, refusing a stale ETag (412) and other members (403)', async () => {
      const created = await uploadRaw(member, 'old.txt', 'rename me').expect(201);
      const path = `${base}/${created.body.id}`;
      const res = await t.http
        .patch(path)
        .set('Authorization', member.auth)
        .set('If-Match', created.headers.etag as string)
        .send({ name: 'new.txt', tags: ['final'] })
        .expect(200);
      expect(res.body).toMatchObject({ name: 'new.txt', tags: ['final'], sha256: sha('rename me') });
      expectProblem(
        await t.http
          .patch(path)
          .set('Authorization', member.auth)
          .set('If-Match', created.headers.etag as string)
          .send({ name: 'again.txt' }),
        412,
        'precondition-failed',
      );
      const other = await t.login('mira');
      await t.http
        .put(`/api/v1/projects/data/members/${other.user.id}`)
        .set('Authorization', owner.auth)
        .send({ role: 'member' })
        .expect(201);
      expectProblem(
        await t.http.patch(path).set('Authorization', other.auth).send({ name: 'x.txt' }),
        403,
        'forbidden',
      );
      await t.http.patch(path).set('Authorization', owner.auth).send({ name: 'owner.txt' }).expect(200);
    });
  });

  describe('deleteFile', () => {
    it('deletes, gives the storage back, and the content goes once nothing refers to it (204)', async () => {
      const one = await uploadRaw(member, 'dup1.txt', 'same content').expect(201);
      const two = await uploadRaw(member, 'dup2.txt', 'same content').expect(201);
      const blob = join(
        t.config.dataDir,
        'files',
        'sha256',
        sha('same content').slice(0, 2),
        sha('same content'),
      );
      const before = Number(await storageUsed());
      await t.http.delete(`${base}/${one.body.id}`).set('Authorization', member.auth).expect(204);
      expect(Number(await storageUsed())).toBe(before - 12);
      expect(await t.services.files.collectGarbage(0)).toBe(0);
      expect(existsSync(blob)).toBe(true);
      await t.http.delete(`${base}/${two.body.id}`).set('Authorization', member.auth).expect(204);
      expect(await t.services.files.collectGarbage(0)).toBe(1);
      expect(existsSync(blob)).toBe(false);
      expectProblem(
        await t.http.get(`${base}/${two.body.id}`).set('Authorization', member.auth),
        404,
        'not-found',
      );
    });

    it('keeps young content the garbage collector finds unreferenced (an upload may be committing)', async () => {
      const one = await uploadRaw(member, 'young.txt', 'young content').expect(201);
      await t.http.delete(`${base}/${one.body.id}`).set('Authorization', member.auth).expect(204);
      expect(await t.services.files.collectGarbage()).toBe(0);
    });

    it('refuses viewers (403)', async () => {
      const one = await uploadRaw(member, 'keep.txt', 'keep').expect(201);
      expectProblem(
        await t.http.delete(`${base}/${one.body.id}`).set('Authorization', viewer.auth),
        403,
        'forbidden',
      );
    });
  });
});
