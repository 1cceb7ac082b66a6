// atrium completion bash|zsh: a completion script written from the program's own command tree
// (subcommands, aliases, long options, argument choices), so that it never lags behind the commands.
import { Argument, type Command } from 'commander';
import type { RegisterCommands } from '../../program.js';

interface CommandNode {
  /** The canonical names from the program down to this command ([] for the program itself). */
  path: string[];
  command: Command;
}

/** Every command of the tree, the program first, parents before their subcommands. */
export function commandTree(command: Command, path: string[] = []): CommandNode[] {
  return [{ path, command }, ...command.commands.flatMap((sub) => commandTree(sub, [...path, sub.name()]))];
}

interface Word {
  name: string;
  description: string;
}

const oneLine = (text: string) => text.replace(/\s+/g, ' ').trim();

/** What may follow a command: its subcommands, or else the choices of its first argument. */
function wordsAfter(command: Command): Word[] {
  if (command.commands.length > 0)
    return command.commands.map((sub) => ({ name: sub.name(), description: oneLine(sub.description()) }));
  const choices = command.registeredArguments[0]?.argChoices ?? [];
  return choices.map((name) => ({ name, description: '' }));
}

/** Its long options (and --help, which commander adds to every command). */
function optionsOf(command: Command): Word[] {
  const options = command.options
    .filter((o) => o.long && !o.hidden)
    .map((o) => ({ name: o.long!, description: oneLine(o.description) }));
  return [...options, { name: '--help', description: 'display help for command' }];
}

/** The program's own options, which commander accepts after any command too. */
function globalOptions(root: Command): Word[] {
  return optionsOf(root).filter((o) => o.name !== '--help');
}

/** The options, of any command, whose value is the next word (`--project ID`, `-p ID`). */
function valueOptions(nodes: CommandNode[]): string[] {
  const flags = nodes.flatMap(({ command }) =>
    command.options.filter((o) => o.required).flatMap((o) => [o.long, o.short]),
  );
  return [...new Set(flags.filter((f): f is string => Boolean(f)))].sort();
}

const quote = (text: string) => `'${text.replace(/'/g, `'\\''`)}'`;

/** `case` branches that name the canonical subcommand of "PATH:WORD" (WORD a name or an alias). */
function subcommandCases(nodes: CommandNode[]): string {
  return nodes
    .flatMap(({ path, command }) =>
      command.commands.map((sub) => {
        const patterns = [sub.name(), ...sub.aliases()].map((name) => quote(`${path.join(' ')}:${name}`));
        return `    ${patterns.join('|')}) echo ${quote(sub.name())} ;;`;
      }),
    )
    .join('\n');
}

function casesOf(nodes: CommandNode[], body: (node: CommandNode) => string): string {
  return nodes.map((node) => `    ${quote(node.path.join(' '))}) ${body(node)} ;;`).join('\n');
}

export function bashCompletion(root: Command): string {
  const nodes = commandTree(root);
  const names = (words: Word[]) => quote(words.map((w) => w.name).join(' '));
  return `# bash completion for ${root.name()}, written by \`${root.name()} completion bash\` from its commands.
# This shell: source <(${root.name()} completion bash)
# Every shell: ${root.name()} completion bash > ~/.local/share/bash-completion/completions/${root.name()}

_atrium_subcommand() {
  case "$1:$2" in
${subcommandCases(nodes)}
  esac
}

_atrium_words() {
  case "$1" in
${casesOf(nodes, (n) => `echo ${names(wordsAfter(n.command))}`)}
  esac
}

_atrium_options() {
  case "$1" in
${casesOf(nodes, (n) => `echo ${names(optionsOf(n.command))}`)}
  esac
}

_atrium() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" cmdpath="" word sub value="" i options
  for ((i = 1; i < COMP_CWORD; i++)); do
    word="\${COMP_WORDS[i]}"
    if [[ -n "$value" ]]; then
      value=""
      continue
    fi
    case "$word" in
      ${valueOptions(nodes).join('|')}) value=1; continue ;;
      -*) continue ;;
    esac
    sub="$(_atrium_subcommand "$cmdpath" "$word")"
    if [[ -n "$sub" ]]; then cmdpath="\${cmdpath:+$cmdpath }$sub"; fi
  done
  # The value of an option: the shell's default completion (file names).
  if [[ -n "$value" ]]; then
    COMPREPLY=()
    return
  fi
  if [[ "$cur" == -* ]]; then
    options="$(_atrium_options "$cmdpath")"
    # The program's options are accepted after any command.
    if [[ -n "$cmdpath" ]]; then options="$options "${names(globalOptions(root))}; fi
    COMPREPLY=($(compgen -W "$options" -- "$cur"))
  else
    COMPREPLY=($(compgen -W "$(_atrium_words "$cmdpath")" -- "$cur"))
  fi
}

complete -o default -F _atrium ${root.name()}
`;
}

export function zshCompletion(root: Command): string {
  const nodes = commandTree(root);
  // _describe reads NAME:DESCRIPTION, one per line.
  const described = (words: Word[]) =>
    words.length === 0
      ? 'return 0'
      : `print -rl -- ${words.map((w) => quote(w.description ? `${w.name}:${w.description}` : w.name)).join(' ')}`;
  return `#compdef ${root.name()}
# zsh completion for ${root.name()}, written by \`${root.name()} completion zsh\` from its commands.
# This shell (after compinit): source <(${root.name()} completion zsh)
# Every shell: ${root.name()} completion zsh > "\${fpath[1]}/_${root.name()}"

_atrium_subcommand() {
  case "$1:$2" in
${subcommandCases(nodes)}
  esac
}

_atrium_words() {
  case "$1" in
${casesOf(nodes, (n) => described(wordsAfter(n.command)))}
  esac
}

_atrium_options() {
  case "$1" in
${casesOf(nodes, (n) => described(optionsOf(n.command)))}
  esac
}

_atrium() {
  local cmdpath="" word sub value="" i
  local -a items
  for ((i = 2; i < CURRENT; i++)); do
    word="\${words[i]}"
    if [[ -n "$value" ]]; then
      value=""
      continue
    fi
    case "$word" in
      ${valueOptions(nodes).join('|')}) value=1; continue ;;
      -*) continue ;;
    esac
    sub="$(_atrium_subcommand "$cmdpath" "$word")"
    if [[ -n "$sub" ]]; then cmdpath="\${cmdpath:+$cmdpath }$sub"; fi
  done
  if [[ -n "$value" ]]; then
    _default
    return
  fi
  if [[ "\${words[CURRENT]}" == -* ]]; then
    items=("\${(@f)$(_atrium_options "$cmdpath")}")
    # The program's options are accepted after any command.
    if [[ -n "$cmdpath" ]]; then items+=(${globalOptions(root)
      .map((w) => quote(`${w.name}:${w.description}`))
      .join(' ')}); fi
    _describe -t options 'option' items
  else
    items=("\${(@f)$(_atrium_words "$cmdpath")}")
    if [[ -n "\${items[1]}" ]]; then
      _describe -t commands 'command' items
    else
      _default
    fi
  fi
}

if [[ "\${funcstack[1]}" == _atrium ]]; then
  _atrium "$@"
else
  compdef _atrium ${root.name()}
fi
`;
}

export const registerCompletion: RegisterCommands = (program, act) => {
  program
    .command('completion')
    .description('print a completion script for bash or zsh')
    .addArgument(new Argument('<shell>', 'bash or zsh').choices(['bash', 'zsh']))
    .addHelpText(
      'after',
      '\nbash: source <(atrium completion bash), or save it in ~/.local/share/bash-completion/completions/atrium\n' +
        'zsh:  source <(atrium completion zsh) after compinit, or save it as _atrium in a directory of $fpath',
    )
    .action(
      act(async (ctx, [shell], _options, command) => {
        let root = command;
        while (root.parent) root = root.parent;
        ctx.out(shell === 'zsh' ? zshCompletion(root) : bashCompletion(root));
      }),
    );
};
