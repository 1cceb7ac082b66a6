import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ContractError,
  type InputSpec,
  distinctFileNames,
  fileNameProblem,
  maxOutputFiles,
  mediaTypeFor,
  prepareWorkDir,
  readOutput,
} from '../../../src/backends/modules/contract.js';

let base: string;
let workDir: string;

beforeEach(() => {
  base = mkdtempSync(join(tmpdir(), 'atrium-contract-'));
  workDir = join(base, 'work');
});
afterEach(() => rmSync(base, { recursive: true, force: true }));

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

/** A source file outside the work directory, as the file store holds it. */
function source(name: string, content: string): { name: string; path: string } {
  const path = join(base, `store-${name}`);
  writeFileSync(path, content);
  return { name, path };
}

const input = (files: InputSpec['files']): InputSpec => ({ function: 'summary', options: { top: 3 }, files });

/** The problems of the ContractError that `promise` rejects with. */
async function problemsOf(promise: Promise<unknown>): Promise<string[]> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(ContractError);
    return (error as ContractError).problems;
  }
  throw new Error('expected a ContractError');
}

describe('prepareWorkDir', () => {
  it('copies the inputs into input/, makes output/, and writes input.json', async () => {
    const sources = [source('a.csv', 'x,y\n1,2\n'), source('notes.txt', 'hello')];
    const document = await prepareWorkDir(
      workDir,
      input([
        { name: 'a.csv', media_type: 'text/csv', tags: { origin: 'upload', rows: 1 } },
        { name: 'notes.txt', media_type: 'text/plain', sha256: sha256('hello') },
      ]),
      sources,
    );
    const expected = {
      function: 'summary',
      options: { top: 3 },
      files: [
        {
          name: 'a.csv',
          path: 'input/a.csv',
          media_type: 'text/csv',
          size: 8,
          sha256: sha256('x,y\n1,2\n'),
          tags: { origin: 'upload', rows: 1 },
        },
        {
          name: 'notes.txt',
          path: 'input/notes.txt',
          media_type: 'text/plain',
          size: 5,
          sha256: sha256('hello'),
          tags: {},
        },
      ],
    };
    expect(document).toEqual(expected);
    expect(JSON.parse(readFileSync(join(workDir, 'input.json'), 'utf8'))).toEqual(expected);
    expect(readFileSync(join(workDir, 'input', 'a.csv'), 'utf8')).toBe('x,y\n1,2\n');
    expect(statSync(join(workDir, 'input', 'a.csv')).mode & 0o777).toBe(0o444);
    expect(statSync(join(workDir, 'output')).isDirectory()).toBe(true);
    // A copy: the store's file is not the work directory's.
    expect(statSync(join(workDir, 'input', 'a.csv')).ino).not.toBe(statSync(sources[0]!.path).ino);
  });

  it('hard-links the inputs when asked', async () => {
    const sources = [source('a.txt', 'abc')];
    await prepareWorkDir(workDir, input([{ name: 'a.txt', media_type: 'text/plain' }]), sources, {
      hardLink: true,
    });
    expect(statSync(join(workDir, 'input', 'a.txt')).ino).toBe(statSync(sources[0]!.path).ino);
  });

  it('refuses names that are not plain file names, names used twice, and inputs without a source', async () => {
    const problems = await problemsOf(
      prepareWorkDir(
        workDir,
        input([
          { name: '../escape.txt', media_type: 'text/plain' },
          { name: 'a.txt', media_type: 'text/plain' },
          { name: 'a.txt', media_type: 'text/plain' },
          { name: 'orphan.txt', media_type: 'text/plain' },
        ]),
        [{ name: '../escape.txt', path: source('a.txt', 'y').path }, source('a.txt', 'y')],
      ),
    );
    expect(problems).toEqual([
      'input "../escape.txt": must be a plain file name, without a directory',
      'input "a.txt": two inputs have this name',
      'input "orphan.txt": no source given',
    ]);
  });

  it('refuses an input whose content does not have the expected sha256', async () => {
    const problems = await problemsOf(
      prepareWorkDir(workDir, input([{ name: 'a.txt', media_type: 'text/plain', sha256: sha256('other') }]), [
        source('a.txt', 'abc'),
      ]),
    );
    expect(problems).toEqual(['input "a.txt": its content does not have the expected sha256']);
  });

  it('refuses a work directory that is not empty', async () => {
    mkdirSync(workDir);
    writeFileSync(join(workDir, 'left-over'), '');
    expect(await problemsOf(prepareWorkDir(workDir, input([]), []))).toEqual([
      `work directory ${workDir} is not empty`,
    ]);
  });
});

describe('readOutput', () => {
  beforeEach(() => {
    mkdirSync(join(workDir, 'output'), { recursive: true });
  });

  const writeOutputFile = (name: string, content: string) =>
    writeFileSync(join(workDir, 'output', name), content);
  const writeDocument = (document: unknown) =>
    writeFileSync(
      join(workDir, 'output.json'),
      typeof document === 'string' ? document : JSON.stringify(document),
    );

  it('returns the listed files with their sizes, media types (declared or guessed), tags and parents', async () => {
    writeOutputFile('model.json', '{"w":1}');
    writeOutputFile('data.csv', 'a\n1\n');
    writeOutputFile('blob', 'xyz');
    writeDocument({
      files: [
        { name: 'model.json', tags: { accuracy: 0.9, kind: 'logistic' }, parent: 'data.csv' },
        { name: 'data.csv', media_type: 'text/csv; charset=utf-8', parent: 'data.csv' },
        { name: 'blob' },
      ],
      tags: { rows: 1, ok: true },
    });
    expect(await readOutput(workDir, { output: 'creates', inputs: ['data.csv'] })).toEqual({
      files: [
        {
          name: 'model.json',
          path: join(workDir, 'output', 'model.json'),
          media_type: 'application/json',
          size: 7,
          tags: { accuracy: 0.9, kind: 'logistic' },
          parent: 'data.csv',
        },
        {
          name: 'data.csv',
          path: join(workDir, 'output', 'data.csv'),
          media_type: 'text/csv; charset=utf-8',
          size: 4,
          tags: {},
          parent: 'data.csv',
        },
        {
          name: 'blob',
          path: join(workDir, 'output', 'blob'),
          media_type: 'application/octet-stream',
          size: 3,
          tags: {},
          parent: null,
        },
      ],
      tags: { rows: 1, ok: true },
    });
  });

  it('takes a function that wrote nothing and no output.json as having no output', async () => {
    expect(await readOutput(workDir)).toEqual({ files: [], tags: {} });
    rmSync(join(workDir, 'output'), { recursive: true });
    expect(await readOutput(workDir, { output: 'none', inputs: [] })).toEqual({ files: [], tags: {} });
  });

  it('refuses names that reach outside output/', async () => {
    writeFileSync(join(workDir, 'secret.txt'), 'secret');
    writeDocument({ files: [{ name: '../secret.txt' }, { name: 'sub/x' }, { name: '..' }] });
    const problems = await problemsOf(readOutput(workDir));
    expect(problems).toEqual([
      'output.json: files.0.name: must be a plain file name, without a directory',
      'output.json: files.1.name: must be a plain file name, without a directory',
      'output.json: files.2.name: is not a file name',
    ]);
  });

  it('refuses a symbolic link, even to a file inside output/, and a directory', async () => {
    writeFileSync(join(base, 'outside.txt'), 'secret');
    writeOutputFile('real.txt', 'x');
    symlinkSync(join(base, 'outside.txt'), join(workDir, 'output', 'escape.txt'));
    symlinkSync('real.txt', join(workDir, 'output', 'alias.txt'));
    mkdirSync(join(workDir, 'output', 'folder'));
    writeDocument({
      files: [{ name: 'escape.txt' }, { name: 'alias.txt' }, { name: 'folder' }, { name: 'real.txt' }],
    });
    expect(await problemsOf(readOutput(workDir))).toEqual([
      'output/escape.txt: not a regular file (links and directories are refused)',
      'output/alias.txt: not a regular file (links and directories are refused)',
      'output/folder: not a regular file (links and directories are refused)',
    ]);
  });

  it('refuses a listed file that is missing, a file that is not listed, and a file listed twice', async () => {
    writeOutputFile('listed.txt', 'x');
    writeOutputFile('stray.txt', 'y');
    writeDocument({ files: [{ name: 'listed.txt' }, { name: 'listed.txt' }, { name: 'ghost.txt' }] });
    expect(await problemsOf(readOutput(workDir))).toEqual([
      'output.json: "listed.txt" is listed twice',
      'output.json: "ghost.txt" is not in output/',
      'output/stray.txt: not listed in output.json',
    ]);
  });

  it('refuses files in output/ without an output.json', async () => {
    writeOutputFile('a.txt', 'x');
    expect(await problemsOf(readOutput(workDir))).toEqual(['output.json is missing, but output/ has files']);
  });

  it('refuses an output.json that is not JSON, or not of the contract', async () => {
    writeDocument('{"files": [');
    expect((await problemsOf(readOutput(workDir)))[0]).toMatch(/^output.json: not valid JSON/);
    writeDocument({ files: [{ name: 'a', size: 3 }], tags: { nested: { no: 1 } }, extra: 1 });
    const problems = await problemsOf(readOutput(workDir));
    expect(problems).toHaveLength(3);
    expect(problems.join('\n')).toMatch(/files\.0: Unrecognized key: "size"/);
    expect(problems.join('\n')).toMatch(/tags\.nested/);
    expect(problems.join('\n')).toMatch(/Unrecognized key: "extra"/);
    writeDocument({ files: [{ name: 'a', media_type: 'not a type' }] });
    expect(await problemsOf(readOutput(workDir))).toEqual([
      'output.json: files.0.media_type: must be a media type',
    ]);
  });

  it('refuses more files than the contract allows', async () => {
    const names = Array.from({ length: maxOutputFiles + 1 }, (_, i) => `f${i}.txt`);
    for (const name of names) writeOutputFile(name, '');
    writeDocument({ files: names.map((name) => ({ name })) });
    expect(await problemsOf(readOutput(workDir))).toEqual([`output/: more than ${maxOutputFiles} entries`]);
  });

  it('checks parents, and what the function declares it does', async () => {
    writeOutputFile('a.txt', 'x');
    writeOutputFile('b.txt', 'y');
    writeDocument({
      files: [
        { name: 'a.txt', parent: 'a.txt' },
        { name: 'b.txt', parent: 'unknown.txt' },
      ],
    });
    expect(await problemsOf(readOutput(workDir, { output: 'modifies', inputs: ['a.txt', 'b.txt'] }))).toEqual(
      [
        'output.json: "b.txt": parent "unknown.txt" is not an input file',
        `output.json: "b.txt": a function that modifies files keeps the input's name and names it as parent`,
      ],
    );
    writeDocument({
      files: [
        { name: 'a.txt', parent: 'a.txt' },
        { name: 'b.txt', parent: 'b.txt' },
      ],
    });
    expect(
      (await readOutput(workDir, { output: 'modifies', inputs: ['a.txt', 'b.txt'] })).files,
    ).toHaveLength(2);
    expect(await problemsOf(readOutput(workDir, { output: 'none', inputs: ['a.txt', 'b.txt'] }))).toEqual([
      'the function creates no files, but output.json lists 2',
    ]);
  });
});

describe('file names', () => {
  it.each(['a.csv', 'Résumé 2024 (final).txt', 'x'])('accepts %s', (name) => {
    expect(fileNameProblem(name)).toBeNull();
  });

  it.each(['', '.', '..', 'a/b', 'a\\b', '.hidden', ' padded', 'nul\u0000', 'x'.repeat(256)])(
    'refuses %j',
    (name) => {
      expect(fileNameProblem(name)).not.toBeNull();
    },
  );

  it('makes names distinct, keeping their extension', () => {
    expect(distinctFileNames(['data.csv', 'data.csv', 'x', 'data.csv', 'x', 'data-2.csv'])).toEqual([
      'data.csv',
      'data-2.csv',
      'x',
      'data-3.csv',
      'x-2',
      'data-2-2.csv',
    ]);
  });

  it('guesses media types from extensions', () => {
    expect(mediaTypeFor('a.CSV')).toBe('text/csv');
    expect(mediaTypeFor('model.json')).toBe('application/json');
    expect(mediaTypeFor('README')).toBe('application/octet-stream');
  });
});
