/**
 * Building DOM nodes with text only: everything user-supplied (worker names, tags, data,
 * logs) goes through textContent or text nodes, never innerHTML.
 */

export type Child = Node | string | number | null | undefined | false;

export interface IProps {
  className?: string;
  text?: string;
  title?: string;
  attrs?: Record<string, string>;
  onclick?: (event: MouseEvent) => void;
}

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: IProps = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (props.className) {
    node.className = props.className;
  }
  if (props.title) {
    node.title = props.title;
  }
  for (const [name, value] of Object.entries(props.attrs ?? {})) {
    node.setAttribute(name, value);
  }
  if (props.onclick) {
    node.addEventListener('click', props.onclick as EventListener);
  }
  if (props.text !== undefined) {
    node.textContent = props.text;
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) {
      continue;
    }
    node.appendChild(
      child instanceof Node ? child : document.createTextNode(String(child))
    );
  }
  return node;
}

/** Replace every child of ``node``. */
export function replaceChildren(node: Element, ...children: Child[]): void {
  node.replaceChildren(
    ...children
      .filter(c => c !== null && c !== undefined && c !== false)
      .map(c => (c instanceof Node ? c : document.createTextNode(String(c))))
  );
}

export function badge(state: string): HTMLElement {
  return el('span', {
    className: `nbwork-Badge nbwork-Badge-${state}`,
    text: state
  });
}

export function progressBar(percent: number | null): HTMLElement {
  const bar = el('div', { className: 'nbwork-ProgressFill' });
  bar.style.width = `${Math.max(0, Math.min(100, percent ?? 0))}%`;
  return el(
    'div',
    {
      className: 'nbwork-Progress',
      title: percent === null ? '' : `${round(percent)} %`
    },
    bar
  );
}

export function round(value: number): string {
  return Number.isInteger(value) ? String(value) : value.toFixed(1);
}

/** "4 s", "3 min 12 s", "2 h 5 min", "3 d 4 h". */
export function duration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) {
    return `${s} s`;
  }
  if (s < 3600) {
    return `${Math.floor(s / 60)} min ${s % 60} s`;
  }
  if (s < 86400) {
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  }
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

export function when(epoch: number | null): string {
  return epoch === null ? '-' : new Date(epoch * 1000).toLocaleString();
}
