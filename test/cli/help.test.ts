// Every command of `atrium` has its --help (exit 0, a Usage line, its description), found by walking
// the program's command tree, so that a command added tomorrow is covered without touching this
// file; and the completion scripts written from that same tree work in their shells.
import { spawnSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, describe, expect, it } from '@jest/globals';
import { buildProgram } from '../../src/cli/program.js';
import { commandTree } from '../../src/cli/user/commands/completion.js';
import { cliUser, type CliResult } from '../fixtures/cli.js';
import { requireBuild } from '../fixtures/process.js';

const discard = () =>
  new Writable({
    write(_chunk, _encoding, done) {
      done();
    },
  });
const program = buildProgram({ stdout: discard(), stderr: discard(), env: {} });
const tree = commandTree(program);
const paths = tree.map((node) => node.path.join(' '));
const user = cliUser();

/** Runs `fn` over `items`, `limit` at a time. */
async function mapLimited<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < items.length; i = next++) results[i] = await fn(items[i]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

const oneLine = (text: string) => text.replace(/\s+/g, ' ').trim();

afterAll(() => rmSync(user.home, { recursive: true, force: true }));

describe('atrium --help', () => {
  it('has at least the commands the README documents', () => {
    expect(paths).toEqual(
      expect.arrayContaining([
        '',
        'serve',
        'worker',
        'migrate',
        'token create',
        'login',
        'logout',
        'whoami',
        'catalog ls',
        'catalog show',
        'launch',
        'services ls',
        'services show',
        'services logs',
        'services events',
        'services suspend',
        'services resume',
        'services rm',
        'open',
        'quota',
        'tokens ls',
        'tokens create',
        'tokens revoke',
        'completion',
        'files put',
        'files get',
        'files ls',
        'files rm',
        'pipelines ls',
        'pipelines create',
        'runs start',
        'runs watch',
        'runs logs',
        'runs retry',
        'runs cancel',
        'bench run',
        'bench results',
        'bench compare',
      ]),
    );
  });

  it('describes every command', () => {
    const undescribed = tree.filter(
      (node) => node.path.length > 0 && node.command.description().trim() === '',
    );
    expect(undescribed.map((node) => node.path.join(' '))).toEqual([]);
  });

  it('prints a Usage line and the description of every command and subcommand, with exit 0', async () => {
    requireBuild();
    const results = await mapLimited(tree, 8, async (node) => ({
      path: node.path.join(' '),
      description: oneLine(node.command.description()),
      result: await user.run([...node.path, '--help']),
    }));
    const wrong = results
      .filter(({ path, description, result }: { path: string; description: string; result: CliResult }) => {
        const usage = new RegExp(`^Usage: atrium${path ? ` ${path}` : ''}(\\|\\S+)?( |$)`, 'm');
        return (
          result.code !== 0 || !usage.test(result.stdout) || !oneLine(result.stdout).includes(description)
        );
      })
      .map(({ path, result }) => ({ path, code: result.code, stdout: result.stdout, stderr: result.stderr }));
    expect(wrong).toEqual([]);
    expect(results.length).toBe(tree.length);
  });
});

describe('atrium completion', () => {
  const script = async (shell: string) => {
    const result = await user.run(['completion', shell]);
    expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: '' });
    const file = join(user.home, `atrium.${shell}`);
    writeFileSync(file, result.stdout);
    return file;
  };

  /** What the bash completion offers for each line (the cursor at its end). */
  const bashCompletions = (file: string, lines: string[]): string[] => {
    const run = spawnSync(
      'bash',
      [
        '-c',
        `source "$1"; shift
complete -p atrium >/dev/null || exit 9
for line in "$@"; do
  read -ra COMP_WORDS <<<"$line"
  if [[ "$line" == *" " ]]; then COMP_WORDS+=(""); fi
  COMP_CWORD=$((\${#COMP_WORDS[@]} - 1)); COMP_LINE="$line"; COMP_POINT=\${#line}; COMPREPLY=()
  _atrium
  echo "\${COMPREPLY[*]}"
done`,
        'bash',
        file,
        ...lines,
      ],
      { encoding: 'utf8' },
    );
    expect({ status: run.status, stderr: run.stderr }).toEqual({ status: 0, stderr: '' });
    return run.stdout.split('\n').slice(0, lines.length);
  };

  it('writes a bash script that completes commands, subcommands, aliases, options and choices', async () => {
    requireBuild();
    const file = await script('bash');
    expect(spawnSync('bash', ['-n', file]).status).toBe(0);
    const services = tree.find((n) => n.path.join(' ') === 'services')!.command.commands.map((c) => c.name());
    expect(
      bashCompletions(file, [
        'atrium ser',
        'atrium services ',
        'atrium -p user-admin services s',
        'atrium services logs --f',
        'atrium catalog list --c',
        'atrium completion ',
        'atrium tok',
        'atrium --pro',
      ]),
    ).toEqual([
      'serve services',
      services.join(' '),
      'show suspend',
      '--follow',
      '--catalog',
      'bash zsh',
      'token tokens',
      '--project',
    ]);
  });

  it('offers every command of the tree in bash', async () => {
    const file = await script('bash');
    const parents = tree.filter((n) => n.command.commands.length > 0);
    const offered = bashCompletions(
      file,
      parents.map((n) => `atrium ${n.path.map((p) => `${p} `).join('')}`),
    );
    expect(offered).toEqual(parents.map((n) => n.command.commands.map((c) => c.name()).join(' ')));
  });

  it('writes a zsh script that zsh reads without a syntax error', async () => {
    const file = await script('zsh');
    expect(spawnSync('bash', ['-c', 'head -1 "$1"', 'bash', file], { encoding: 'utf8' }).stdout).toBe(
      '#compdef atrium\n',
    );
    // zsh is on every CI machine (.ci/run installs it): without it this fails, it never skips.
    const checked = spawnSync('zsh', ['-n', file], { encoding: 'utf8' });
    expect({ status: checked.status, stderr: checked.stderr }).toEqual({ status: 0, stderr: '' });
  });
});
