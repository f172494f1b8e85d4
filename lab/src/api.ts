/**
 * The panel's REST API (``/nbwork/api/``). Requests go through ServerConnection, which
 * sends the server's token and the XSRF header.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export const EVENT_SCHEMA_ID =
  'https://github.com/nbwork/nbwork/events/work-changed';

export const STATES = [
  'ENQUEUED',
  'RUNNING',
  'BLOCKED',
  'SUCCEEDED',
  'FAILED',
  'CANCELLED'
];
export const FINISHED = new Set(['SUCCEEDED', 'FAILED', 'CANCELLED']);

export interface IRow {
  id: string;
  state: string;
  worker: string;
  worker_name: string;
  tags: string[];
  unique_work_name: string | null;
  attempts: number;
  progress: Record<string, unknown>;
  percent: number | null;
  stop_reason: string | null;
  error_line: string;
  enqueue_time: number | null;
  start_time: number | null;
  finish_time: number | null;
  next_schedule_time: number | null;
  is_periodic: boolean;
  prerequisites: string[];
  dependents: string[];
}

export interface IPage {
  store: string;
  counter: number | null;
  total: number;
  offset: number;
  limit: number;
  counts: Record<string, number>;
  works: IRow[];
  tags: string[];
  notice_seq: number;
  now: number;
}

export interface IChainNode {
  id: string;
  state: string;
  worker: string;
  prerequisites: string[];
}

export interface IDetails extends IRow {
  store: string;
  input: Record<string, unknown>;
  output: Record<string, unknown>;
  error: string;
  exception: string;
  generation: number;
  why_waiting: string;
  constraints: string;
  images: { where: string; key: string; path: string }[];
  log_path: string | null;
  chain: IChainNode[];
  chain_truncated: boolean;
}

export interface INotice {
  seq: number;
  id: string;
  state: string;
  worker: string;
  size: number;
  enqueue_time: number | null;
  error_line: string;
  ids: string[];
}

export interface IStore {
  path: string;
  default: boolean;
  exists: boolean;
}

export type Query = Record<string, string | string[] | number | undefined>;

export function apiUrl(path: string, query: Query = {}): string {
  const settings = ServerConnection.makeSettings();
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    for (const item of Array.isArray(value) ? value : [value]) {
      if (item !== undefined && item !== '') {
        params.append(key, String(item));
      }
    }
  }
  const search = params.toString();
  return (
    URLExt.join(settings.baseUrl, 'nbwork', 'api', path) +
    (search ? `?${search}` : '')
  );
}

export async function request<T>(
  path: string,
  query: Query = {},
  body?: unknown
): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const init: RequestInit =
    body === undefined
      ? { method: 'GET' }
      : { method: 'POST', body: JSON.stringify(body) };
  const response = await ServerConnection.makeRequest(
    apiUrl(path, query),
    init,
    settings
  );
  const text = await response.text();
  let data: any;
  try {
    data = JSON.parse(text);
  } catch {
    throw new Error(`nbwork API ${path}: ${response.status} (not JSON)`);
  }
  if (!response.ok) {
    throw new Error(data.error ?? `nbwork API ${path}: ${response.status}`);
  }
  return data as T;
}
