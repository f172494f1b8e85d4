/**
 * The details tab of one work (main area): ids and times, why it waits, progress, input
 * and output, the error with its exception line first, images, the chain as a graph of
 * clickable nodes, and its log tailed live.
 */
import { Notification } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { FINISHED, IChainNode, IDetails, apiUrl, request } from './api';
import { badge, el, progressBar, replaceChildren, round, when } from './dom';

const LIVE_MS = 1000;
const LOG_TAIL_BYTES = 65536;

export interface IDetailsOptions {
  id: string;
  store: string;
  openDetails: (id: string, store: string) => void;
  insertCode: (code: string) => void;
}

export class DetailsWidget extends Widget {
  constructor(options: IDetailsOptions) {
    super();
    this._options = options;
    this.addClass('nbwork-Details');
    this.node.setAttribute('data-work-id', options.id);
    this.title.label = `nbwork ${options.id.slice(0, 8)}`;
    this.title.caption = `nbwork work ${options.id}`;
    this.title.closable = true;
    this._body = el('div', { className: 'nbwork-DetailsBody' });
    this._log = el('pre', { className: 'nbwork-Log' });
    this._logInfo = el('div', { className: 'nbwork-LogInfo' });
    this.node.appendChild(this._body);
    this.node.appendChild(
      el(
        'div',
        { className: 'nbwork-Section' },
        el('h3', { text: 'Log' }),
        this._logInfo,
        this._log
      )
    );
    this._timer = window.setInterval(() => {
      if (this.isVisible && !this._finished) {
        void this.refresh();
      }
    }, LIVE_MS);
    void this.refresh();
  }

  get workId(): string {
    return this._options.id;
  }

  get store(): string {
    return this._options.store;
  }

  dispose(): void {
    window.clearInterval(this._timer);
    super.dispose();
  }

  async refresh(): Promise<void> {
    const query = { store: this._options.store || undefined };
    try {
      const [info, log] = await Promise.all([
        request<IDetails>(`works/${this._options.id}`, query),
        request<{ text: string; size: number; truncated: boolean }>(
          `works/${this._options.id}/log`,
          { ...query, tail: LOG_TAIL_BYTES }
        )
      ]);
      this._finished = FINISHED.has(info.state);
      this.title.label = `nbwork ${info.worker} ${info.id.slice(0, 8)}`;
      this._render(info);
      this._renderLog(log);
    } catch (error) {
      replaceChildren(
        this._body,
        el('div', {
          className: 'nbwork-Status nbwork-mod-error',
          text: (error as Error).message
        })
      );
      this._finished = true;
    }
  }

  private _renderLog(log: {
    text: string;
    size: number;
    truncated: boolean;
  }): void {
    const atBottom =
      this._log.scrollTop + this._log.clientHeight >= this._log.scrollHeight - 4;
    if (this._log.textContent !== log.text) {
      this._log.textContent = log.text || '';
    }
    this._logInfo.textContent = log.size
      ? `${log.size} bytes${log.truncated ? ' (the last 64 KiB shown)' : ''}${
          this._finished ? '' : ' · live'
        }`
      : 'it printed nothing (yet)';
    if (atBottom) {
      this._log.scrollTop = this._log.scrollHeight;
    }
  }

  private _render(info: IDetails): void {
    const store = this._options.store;
    const actions = el(
      'div',
      { className: 'nbwork-Actions' },
      FINISHED.has(info.state)
        ? null
        : el('button', {
            className: 'nbwork-Cancel jp-mod-styled jp-mod-warn',
            text: 'Cancel',
            onclick: () => void this._cancel()
          }),
      el('button', {
        className: 'nbwork-InsertCode jp-mod-styled',
        text: 'Insert code',
        title: 'insert code that reads this work into the active notebook',
        onclick: () =>
          this._options.insertCode(insertCode(info.id, this._options.store))
      })
    );
    const facts: [string, string][] = [
      ['id', info.id],
      ['worker', info.worker_name],
      ['state', info.state],
      ['attempts', String(info.attempts)],
      ['generation', String(info.generation)],
      ['tags', info.tags.join(', ') || '-'],
      ['unique work', info.unique_work_name ?? '-'],
      ['enqueued', when(info.enqueue_time)],
      ['started', when(info.start_time)],
      ['finished', when(info.finish_time)],
      ['next run', when(info.next_schedule_time)],
      ['stop reason', info.stop_reason ?? '-'],
      ['periodic', info.is_periodic ? 'yes' : 'no'],
      ['constraints', info.constraints || '-'],
      ['store', info.store]
    ];
    const table = el(
      'table',
      { className: 'nbwork-Facts' },
      ...facts.map(([name, value]) =>
        el(
          'tr',
          {},
          el('th', { text: name }),
          el('td', { text: value, attrs: { 'data-fact': name } })
        )
      )
    );
    const sections: (HTMLElement | null)[] = [
      el(
        'div',
        { className: 'nbwork-DetailsHeader' },
        el('span', { className: 'nbwork-Worker', text: info.worker }),
        badge(info.state),
        actions
      ),
      info.why_waiting
        ? el('div', { className: 'nbwork-Why', text: info.why_waiting })
        : null,
      info.state === 'RUNNING'
        ? el(
            'div',
            { className: 'nbwork-Section' },
            el('h3', { text: 'Progress' }),
            progressBar(info.percent),
            el('pre', {
              className: 'nbwork-Data',
              text: dataText(info.progress) || '-'
            })
          )
        : null,
      info.error
        ? el(
            'div',
            { className: 'nbwork-Section nbwork-Error' },
            el('h3', { text: 'Error' }),
            el('div', { className: 'nbwork-Exception', text: info.exception }),
            el(
              'details',
              {},
              el('summary', { text: 'traceback' }),
              el('pre', { text: info.error })
            )
          )
        : null,
      info.images.length ? this._images(info) : null,
      info.chain.length > 1 ? this._graph(info, store) : null,
      table,
      el(
        'div',
        { className: 'nbwork-Section' },
        el('h3', { text: 'Input' }),
        el('pre', {
          className: 'nbwork-Data nbwork-Input',
          text: dataText(info.input) || '-'
        }),
        el('h3', { text: 'Output' }),
        el('pre', {
          className: 'nbwork-Data nbwork-Output',
          text: dataText(info.output) || '-'
        })
      )
    ];
    replaceChildren(this._body, ...sections);
  }

  private _images(info: IDetails): HTMLElement {
    return el(
      'div',
      { className: 'nbwork-Section nbwork-Images' },
      el('h3', { text: 'Images' }),
      ...info.images.map(image => {
        const img = el('img', {
          className: 'nbwork-Image',
          title: image.path,
          attrs: {
            alt: `${image.where} ${image.key}`,
            src: apiUrl(`works/${info.id}/image`, {
              store: this._options.store || undefined,
              where: image.where,
              key: image.key
            })
          }
        });
        return el(
          'figure',
          {},
          img,
          el('figcaption', { text: `${image.where}.${image.key}: ${image.path}` })
        );
      })
    );
  }

  /** The chain in columns by depth (prerequisites to the left); a click opens a node. */
  private _graph(info: IDetails, store: string): HTMLElement {
    const byId = new Map(info.chain.map(n => [n.id, n]));
    const depth = new Map<string, number>();
    const depthOf = (node: IChainNode, seen: Set<string>): number => {
      const known = depth.get(node.id);
      if (known !== undefined) {
        return known;
      }
      let d = 0;
      for (const p of node.prerequisites) {
        const parent = byId.get(p);
        if (parent && !seen.has(p)) {
          d = Math.max(d, depthOf(parent, new Set([...seen, node.id])) + 1);
        }
      }
      depth.set(node.id, d);
      return d;
    };
    const columns: IChainNode[][] = [];
    for (const node of info.chain) {
      const d = depthOf(node, new Set());
      (columns[d] = columns[d] ?? []).push(node);
    }
    const graph = el('div', { className: 'nbwork-Graph' });
    columns.forEach((column, index) => {
      if (index > 0) {
        graph.appendChild(el('div', { className: 'nbwork-Arrow', text: '→' }));
      }
      graph.appendChild(
        el(
          'div',
          { className: 'nbwork-GraphColumn' },
          ...column.map(node =>
            el(
              'button',
              {
                className: `nbwork-Node${node.id === info.id ? ' nbwork-mod-current' : ''}`,
                title: node.id,
                attrs: { 'data-work-id': node.id },
                onclick: () => this._options.openDetails(node.id, store)
              },
              el('span', { className: 'nbwork-Worker', text: node.worker }),
              badge(node.state)
            )
          )
        )
      );
    });
    return el(
      'div',
      { className: 'nbwork-Section' },
      el('h3', {
        text: `Chain (${info.chain.length} works${info.chain_truncated ? ', cut' : ''})`
      }),
      graph
    );
  }

  private async _cancel(): Promise<void> {
    try {
      await request(
        'cancel',
        {},
        { store: this._options.store || undefined, id: this._options.id }
      );
    } catch (error) {
      Notification.error(`nbwork: ${(error as Error).message}`, {
        autoClose: 8000
      });
    }
    this._finished = false;
    await this.refresh();
  }

  private _options: IDetailsOptions;
  private _body: HTMLElement;
  private _log: HTMLElement;
  private _logInfo: HTMLElement;
  private _timer: number;
  private _finished = false;
}

function dataText(data: Record<string, unknown>): string {
  return Object.entries(data)
    .map(
      ([key, value]) =>
        `${key} = ${typeof value === 'number' ? round(value) : JSON.stringify(value)}`
    )
    .join('\n');
}

/** Python that reads the work back in a notebook. */
export function insertCode(id: string, store: string): string {
  const manager = store
    ? `WorkManager(${JSON.stringify(store)})`
    : 'WorkManager.get_instance()';
  return [
    'from nbwork import WorkManager',
    '',
    `wm = ${manager}`,
    `wm.get_work_info_by_id(${JSON.stringify(id)})`
  ].join('\n');
}
