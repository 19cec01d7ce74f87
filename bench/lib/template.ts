/**
 * `{{NAME}}` templates for the nginx and haproxy configs under bench/e2e/conf/.
 * Every placeholder must have a value and every value must be used: a typo fails loudly
 * instead of producing a config that silently does something else.
 */
import { readFileSync } from 'node:fs';

export function render(text: string, values: Readonly<Record<string, string | number>>): string {
  const used = new Set<string>();
  const out = text.replace(/\{\{([A-Z0-9_]+)\}\}/g, (_m, key: string) => {
    const v = values[key];
    if (v === undefined) throw new Error(`template: no value for {{${key}}}`);
    used.add(key);
    return String(v);
  });
  for (const key of Object.keys(values)) {
    if (!used.has(key)) throw new Error(`template: value ${key} is not used by the template`);
  }
  return out;
}

export function renderFile(path: string, values: Readonly<Record<string, string | number>>): string {
  return render(readFileSync(path, 'utf8'), values);
}
