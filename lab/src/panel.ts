/**
 * The left-sidebar Work panel: the works of one store, newest chains first, with filters,
 * counts per state, Cancel buttons, "Cancel all shown" and "Prune finished".
 *
 * It fetches pages from the REST API when the server pushes a change (the event bus), and
 * every SLOW_POLL_MS when no push came in a while (the push channel may be down).
 */
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import {
  FINISHED,
  INotice,
  IPage,
  IRow,
  IStore,
  Query,
  STATES,
  request
} from './api';
import { badge, duration, el, progressBar, replaceChildren, round } from './dom';

const PAGE_SIZE = 100;
const MAX_ROWS = 500; // the API's largest page: past it, a filter is the way
const SLOW_POLL_MS = 10000;
const MIN_REFRESH_GAP_MS = 250;
const MAX_TOASTS_AT_ONCE = 3;

export interface IPanelOptions {
  openDetails: (id: string, store: string) => void;
  notificationsEnabled: () => boolean;
}

export class WorkPanel extends Widget {
  constructor(options: IPanelOptions) {
    super();
    this._options = options;
    this.id = 'nbwork-panel';
    this.addClass('nbwork-Panel');
    this.title.caption = 'nbwork: background work';

    this._storePicker = el('select', {
      className: 'nbwork-StorePicker',
      title: 'the store shown'
    });
    this._storePicker.addEventListener('change', () => {
      this.store = this._storePicker.value;
    });
    this._stateFilter = el(
      'select',
      { className: 'nbwork-StateFilter', title: 'show works in this state' },
      el('option', { text: 'all states', attrs: { value: '' } }),
      ...STATES.map(s => el('option', { text: s, attrs: { value: s } }))
    );
    this._stateFilter.addEventListener('change', () => this._filtersChanged());
    this._tagFilter = el(
      'select',
      { className: 'nbwork-TagFilter', title: 'show works with this tag' },
      el('option', { text: 'all tags', attrs: { value: '' } })
    );
    this._tagFilter.addEventListener('change', () => this._filtersChanged());
    this._textFilter = el('input', {
      className: 'nbwork-TextFilter',
      attrs: {
        type: 'search',
        placeholder: 'filter: id, worker, tag, unique name, error'
      }
    });
    let typing = 0;
    this._textFilter.addEventListener('input', () => {
      window.clearTimeout(typing);
      typing = window.setTimeout(() => this._filtersChanged(), 300);
    });
    this._counts = el('div', { className: 'nbwork-Counts' });
    this._status = el('div', { className: 'nbwork-Status' });
    this._list = el('div', { className: 'nbwork-List' });
    this._more = el('button', {
      className: 'nbwork-More jp-mod-styled',
      text: 'Show more',
      onclick: () => {
        this._limit = Math.min(MAX_ROWS, this._limit + PAGE_SIZE);
        void this.refresh();
      }
    });
    const cancelShown = el('button', {
      className: 'nbwork-CancelShown jp-mod-styled jp-mod-warn',
      text: 'Cancel all shown',
      onclick: () => void this._cancelShown()
    });
    const prune = el('button', {
      className: 'nbwork-Prune jp-mod-styled',
      text: 'Prune finished',
      onclick: () => void this._prune()
    });
    this.node.appendChild(
      el(
        'div',
        { className: 'nbwork-Header' },
        el('div', { className: 'nbwork-Title', text: 'nbwork' }),
        this._storePicker
      )
    );
    this.node.appendChild(
      el(
        'div',
        { className: 'nbwork-Filters' },
        this._stateFilter,
        this._tagFilter,
        this._textFilter
      )
    );
    this.node.appendChild(this._counts);
    this.node.appendChild(
      el('div', { className: 'nbwork-Actions' }, cancelShown, prune)
    );
    this.node.appendChild(this._status);
    this.node.appendChild(this._list);
    this.node.appendChild(this._more);
    this._ticker = window.setInterval(() => this._tick(), 1000);
    this._poller = window.setInterval(() => {
      if (Date.now() - this._lastPush > SLOW_POLL_MS) {
        void this.refresh();
      }
    }, SLOW_POLL_MS);
    void this._loadStores();
  }

  /** The store shown ('' for the server's default store). */
  get store(): string {
    return this._store;
  }

  set store(path: string) {
    if (path === this._store) {
      return;
    }
    this._store = path;
    this._noticeSeq = -1;
    this._limit = PAGE_SIZE;
    this._storePicker.value = path;
    void this.refresh();
  }

  /** The server pushed a change of ``store`` (or a change to look at anyway). */
  pushed(store: string | null): void {
    if (store !== null && this._page && store !== this._page.store) {
      return;
    }
    this._lastPush = Date.now();
    this.scheduleRefresh();
  }

  scheduleRefresh(): void {
    if (this._refreshTimer) {
      return;
    }
    const wait = Math.max(
      0,
      this._lastRefresh + MIN_REFRESH_GAP_MS - Date.now()
    );
    this._refreshTimer = window.setTimeout(() => {
      this._refreshTimer = 0;
      void this.refresh();
    }, wait);
  }

  /** Fetch the shown page again, then any notices. */
  async refresh(): Promise<void> {
    this._lastRefresh = Date.now();
    let page: IPage;
    try {
      page = await request<IPage>('works', this._query());
    } catch (error) {
      this._status.textContent = `${(error as Error).message}`;
      this._status.classList.add('nbwork-mod-error');
      return;
    }
    this._status.classList.remove('nbwork-mod-error');
    if (this._sessionStart === null) {
      this._sessionStart = page.now;
    }
    this._clockSkew = page.now - Date.now() / 1000;
    this._page = page;
    this._render(page);
    await this._notices(page);
  }

  dispose(): void {
    window.clearInterval(this._ticker);
    window.clearInterval(this._poller);
    window.clearTimeout(this._refreshTimer);
    super.dispose();
  }

  private _query(): Query {
    return {
      store: this._store || undefined,
      state: this._stateFilter.value || undefined,
      tag: this._tagFilter.value || undefined,
      q: this._textFilter.value.trim() || undefined,
      limit: this._limit
    };
  }

  private _filtersChanged(): void {
    this._limit = PAGE_SIZE;
    void this.refresh();
  }

  private async _loadStores(): Promise<void> {
    try {
      const answer = await request<{ stores: IStore[]; default: string }>(
        'stores'
      );
      replaceChildren(
        this._storePicker,
        ...answer.stores.map(s =>
          el('option', {
            text: s.default ? `${s.path} (default)` : s.path,
            attrs: { value: s.default ? '' : s.path }
          })
        )
      );
      this._storePicker.value = this._store;
    } catch (error) {
      this._status.textContent = (error as Error).message;
    }
    await this.refresh();
  }

  private _render(page: IPage): void {
    const chips = STATES.map(state => {
      const chip = el(
        'button',
        {
          className: `nbwork-Count nbwork-Count-${state}`,
          title: `show only ${state}`,
          attrs: { 'data-state': state },
          onclick: () => {
            this._stateFilter.value =
              this._stateFilter.value === state ? '' : state;
            this._filtersChanged();
          }
        },
        badge(state),
        ` ${page.counts[state] ?? 0}`
      );
      chip.classList.toggle(
        'nbwork-mod-selected',
        this._stateFilter.value === state
      );
      return chip;
    });
    replaceChildren(this._counts, ...chips);
    const selectedTag = this._tagFilter.value;
    const tags = new Set(page.tags);
    if (selectedTag) {
      tags.add(selectedTag);
    }
    replaceChildren(
      this._tagFilter,
      el('option', { text: 'all tags', attrs: { value: '' } }),
      ...[...tags].map(t => el('option', { text: t, attrs: { value: t } }))
    );
    this._tagFilter.value = selectedTag;
    const capped = page.total > page.works.length && this._limit >= MAX_ROWS;
    this._status.textContent =
      page.total === 0
        ? `no work in ${page.store}`
        : `${page.works.length} of ${page.total} works in ${page.store}` +
          (capped ? ' (filter to see others)' : '');
    // Rows are kept by id, so a push does not rebuild (or flicker) the whole list.
    const rows = page.works.map(work => this._row(work));
    replaceChildren(this._list, ...rows);
    this._more.style.display =
      page.total > page.works.length && !capped ? '' : 'none';
  }

  private _row(work: IRow): HTMLElement {
    const finished = FINISHED.has(work.state);
    const age = el('span', { className: 'nbwork-Age' });
    this._ages.set(age, work);
    this._setAge(age, work);
    const details: (string | null)[] = [];
    if (work.attempts > 1) {
      details.push(`${work.attempts} attempts`);
    }
    if (work.stop_reason) {
      details.push(`stopped: ${work.stop_reason}`);
    }
    const percent =
      work.percent ?? (work.state === 'SUCCEEDED' ? 100 : null);
    const cancel = finished
      ? null
      : el('button', {
          className: 'nbwork-Cancel jp-mod-styled',
          text: 'Cancel',
          title: `cancel ${work.worker} ${work.id}`,
          onclick: event => {
            event.stopPropagation();
            void this._cancel({ id: work.id }, cancel as HTMLButtonElement);
          }
        });
    const row = el(
      'div',
      {
        className: `nbwork-Row nbwork-Row-${work.state}`,
        title: `${work.worker_name} ${work.id}`,
        attrs: { 'data-work-id': work.id, 'data-state': work.state },
        onclick: () => this._options.openDetails(work.id, this._store)
      },
      el(
        'div',
        { className: 'nbwork-RowTop' },
        el('span', { className: 'nbwork-Worker', text: work.worker }),
        el('span', { className: 'nbwork-ShortId', text: work.id.slice(0, 8) }),
        badge(work.state),
        age,
        cancel
      ),
      el(
        'div',
        { className: 'nbwork-RowBottom' },
        progressBar(percent),
        el('span', {
          className: 'nbwork-Percent',
          text: work.percent === null ? '' : `${round(work.percent)} %`
        }),
        work.tags.length
          ? el('span', { className: 'nbwork-Tags', text: work.tags.join(', ') })
          : null,
        work.unique_work_name
          ? el('span', {
              className: 'nbwork-Unique',
              text: `unique: ${work.unique_work_name}`
            })
          : null,
        details.length
          ? el('span', { className: 'nbwork-Extra', text: details.join(' · ') })
          : null
      ),
      work.error_line
        ? el('div', { className: 'nbwork-ErrorLine', text: work.error_line })
        : null
    );
    return row;
  }

  private _setAge(node: HTMLElement, work: IRow): void {
    const now = Date.now() / 1000 + this._clockSkew;
    let text = '';
    if (work.state === 'RUNNING' && work.start_time) {
      text = `running ${duration(now - work.start_time)}`;
    } else if (FINISHED.has(work.state) && work.finish_time) {
      const took =
        work.start_time !== null
          ? `took ${duration(work.finish_time - work.start_time)}, `
          : '';
      text = `${took}${duration(now - work.finish_time)} ago`;
    } else if (work.enqueue_time) {
      text = `waiting ${duration(now - work.enqueue_time)}`;
    }
    node.textContent = text;
  }

  private _tick(): void {
    if (!this.isVisible) {
      return;
    }
    for (const [node, work] of this._ages) {
      if (!node.isConnected) {
        this._ages.delete(node);
      } else {
        this._setAge(node, work);
      }
    }
  }

  private async _cancel(
    target: Record<string, unknown>,
    button?: HTMLButtonElement
  ): Promise<void> {
    if (button) {
      button.disabled = true;
    }
    try {
      await request('cancel', {}, { store: this._store || undefined, ...target });
    } catch (error) {
      Notification.error(`nbwork: ${(error as Error).message}`, {
        autoClose: 8000
      });
      if (button) {
        button.disabled = false;
      }
    }
    await this.refresh();
  }

  private async _cancelShown(): Promise<void> {
    const page = this._page;
    if (!page) {
      return;
    }
    const unfinished = STATES.filter(s => !FINISHED.has(s)).reduce(
      (n, s) =>
        n +
        (this._stateFilter.value && this._stateFilter.value !== s
          ? 0
          : page.counts[s] ?? 0),
      0
    );
    if (unfinished === 0) {
      Notification.info('nbwork: no unfinished work is shown', {
        autoClose: 4000
      });
      return;
    }
    const result = await showDialog({
      title: 'Cancel all shown work?',
      body: `Cancel the ${unfinished} unfinished works that match the filter (all pages) in ${page.store}?`,
      buttons: [
        Dialog.cancelButton({ label: 'Keep them' }),
        Dialog.warnButton({ label: 'Cancel work' })
      ]
    });
    if (!result.button.accept) {
      return;
    }
    const query = this._query();
    await this._cancel({
      filter: {
        state: query.state ? [query.state] : [],
        tag: query.tag ? [query.tag] : [],
        q: query.q ?? ''
      }
    });
  }

  private async _prune(): Promise<void> {
    const page = this._page;
    if (!page) {
      return;
    }
    const finished = [...FINISHED].reduce(
      (n, s) => n + (page.counts[s] ?? 0),
      0
    );
    const result = await showDialog({
      title: 'Prune finished work?',
      body: `Forget the finished works of ${page.store} (about ${finished}; works that unfinished work depends on are kept). Their results and logs are gone afterwards.`,
      buttons: [
        Dialog.cancelButton({ label: 'Keep them' }),
        Dialog.warnButton({ label: 'Prune' })
      ]
    });
    if (!result.button.accept) {
      return;
    }
    try {
      const answer = await request<{ pruned: number }>(
        'prune',
        {},
        { store: this._store || undefined }
      );
      Notification.info(`nbwork: pruned ${answer.pruned} finished works`, {
        autoClose: 4000
      });
    } catch (error) {
      Notification.error(`nbwork: ${(error as Error).message}`, {
        autoClose: 8000
      });
    }
    await this.refresh();
  }

  private async _notices(page: IPage): Promise<void> {
    if (this._noticeSeq < 0 || this._noticeStore !== page.store) {
      this._noticeSeq = page.notice_seq; // older ones ended before this page looked
      this._noticeStore = page.store;
      return;
    }
    if (page.notice_seq <= this._noticeSeq) {
      return;
    }
    const answer = await request<{ notices: INotice[]; notice_seq: number }>(
      'notices',
      { store: this._store || undefined, after: this._noticeSeq }
    );
    this._noticeSeq = answer.notice_seq;
    // Tells tests (and the curious) which notices this page has dealt with.
    this.node.dataset.noticeSeq = String(answer.notice_seq);
    if (!this._options.notificationsEnabled()) {
      return;
    }
    const start = this._sessionStart ?? 0;
    const mine = answer.notices.filter(
      n => n.enqueue_time !== null && n.enqueue_time >= start
    );
    for (const notice of mine.slice(0, MAX_TOASTS_AT_ONCE)) {
      this._toast(notice);
    }
    if (mine.length > MAX_TOASTS_AT_ONCE) {
      const rest = mine.slice(MAX_TOASTS_AT_ONCE);
      const failed = rest.filter(n => n.state === 'FAILED').length;
      Notification.emit(
        `nbwork: ${rest.length} more works ended (${failed} failed)`,
        failed ? 'error' : 'success',
        { autoClose: 8000 }
      );
    }
  }

  private _toast(notice: INotice): void {
    const what =
      notice.size > 1
        ? `a chain of ${notice.size} works (${notice.worker})`
        : `${notice.worker} ${notice.id.slice(0, 8)}`;
    const message =
      notice.state === 'FAILED'
        ? `nbwork: ${what} FAILED${notice.error_line ? `: ${notice.error_line}` : ''}`
        : `nbwork: ${what} SUCCEEDED`;
    const storeShown = this._store;
    Notification.emit(
      message,
      notice.state === 'FAILED' ? 'error' : 'success',
      {
        autoClose: notice.state === 'FAILED' ? false : 6000,
        actions: [
          {
            label: 'Details',
            callback: () => this._options.openDetails(notice.id, storeShown)
          }
        ]
      }
    );
  }

  private _options: IPanelOptions;
  private _store = '';
  private _page: IPage | null = null;
  private _limit = PAGE_SIZE;
  private _storePicker: HTMLSelectElement;
  private _stateFilter: HTMLSelectElement;
  private _tagFilter: HTMLSelectElement;
  private _textFilter: HTMLInputElement;
  private _counts: HTMLElement;
  private _status: HTMLElement;
  private _list: HTMLElement;
  private _more: HTMLButtonElement;
  private _ages = new Map<HTMLElement, IRow>();
  private _ticker: number;
  private _poller: number;
  private _refreshTimer = 0;
  private _lastRefresh = 0;
  private _lastPush = 0;
  private _sessionStart: number | null = null;
  private _clockSkew = 0;
  private _noticeSeq = -1;
  private _noticeStore = '';
}
