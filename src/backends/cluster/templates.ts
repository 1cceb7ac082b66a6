// The placeholders of a package's run spec, filled in the same way by every backend.
import { DomainError } from '../../errors.js';

/** `${options.x}`, `${ports.x}`, `${service.id}`, `${service.name}`, `${project.id}`, `${package.dir}`. */
export function renderTemplate(text: string, values: Record<string, string>): string {
  return text.replace(/\$\{([^}]*)\}/g, (_whole, ref: string) => {
    const value = values[ref];
    if (value === undefined)
      throw new DomainError('unprocessable', `the package refers to \${${ref}}, which has no value`);
    return value;
  });
}

/** An option as the text a placeholder stands for (JSON for anything but a string; empty when unset). */
export function optionText(value: unknown): string {
  return typeof value === 'string'
    ? value
    : value === undefined || value === null
      ? ''
      : JSON.stringify(value);
}
