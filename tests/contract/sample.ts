// A small client written against the types openapi-typescript generates from docs/openapi.json
// (typecheck.sh). It is type-checked, never run: it shows the generated client is usable, and
// the @ts-expect-error lines prove the types are strict (a wrong field does not compile).
import type { components, operations, paths, webhooks } from './segue-api';

type Schemas = components['schemas'];
type Extension = Schemas['Extension'];
type Event = Schemas['Event'];
type Problem = Schemas['Problem'];
type CreateBody = NonNullable<operations['createExtension']['requestBody']>['content']['application/json'];
type Created = paths['/v1/extensions']['post']['responses']['202']['content']['application/json'];

class SegueError extends Error {
  constructor(readonly problem: Problem) {
    super(`${problem.status} ${problem.code}: ${problem.detail ?? problem.title}`);
  }
}

async function call<T>(base: string, key: string, method: string, path: string, body?: unknown): Promise<T> {
  const init: RequestInit = { method, headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' } };
  if (body !== undefined) init.body = JSON.stringify(body);
  const res = await fetch(base + path, init);
  if (!res.ok) throw new SegueError((await res.json()) as Problem);
  return (await res.json()) as T;
}

export async function extend(base: string, key: string): Promise<Extension> {
  const body: CreateBody = { audio_url: 'https://example.com/song.mp3', extend_after: 30, length: 20, num_outputs: 2, metadata: { order: '42' } };
  // @ts-expect-error num_outputs is 1 or 2
  const tooMany: CreateBody = { audio_url: 'https://example.com/song.mp3', extend_after: 30, num_outputs: 3 };
  void tooMany;
  const created: Created = await call<Created>(base, key, 'POST', '/v1/extensions', body);
  return call<Extension>(base, key, 'GET', created.links.self);
}

// The outputs' audio URLs of a finished task.
export function audioUrls(task: Extension): string[] {
  const urls: string[] = [];
  for (const output of task.outputs) {
    if (output.status === 'ready' && output.audio?.mp3_url) urls.push(output.audio.mp3_url);
    // @ts-expect-error an output has no `url` field
    void output.url;
  }
  return urls;
}

// Events narrow on `type`: each carries its own data.
export function describe(event: Event): string {
  switch (event.type) {
    case 'extension.queued':
      return `queued, ${event.data.num_outputs} output(s)`;
    case 'extension.retrying':
      return `retrying at ${event.data.next_provider} after ${event.data.error.code} (${event.data.decision})`;
    case 'extension.output.ready':
      return `output ${event.data.index} ready: ${event.data.output.audio?.mp3_url ?? '(no mp3)'}`;
    case 'extension.lyrics.ready':
      return `${event.data.lyrics_timestamped.length} timestamped lines`;
    case 'extension.credits.refunded':
      return `${event.data.amount} ${event.data.unit} refunded`;
    case 'extension.succeeded':
    case 'extension.partially_succeeded':
    case 'extension.failed':
      return `${event.type}: ${event.data.outputs_ready} ready`;
    default:
      return `${event.type} (${event.data.status})`;
  }
}

// Every problem code is known to the client: a new one makes this switch fail to compile.
export function retryable(problem: Problem): boolean {
  switch (problem.code) {
    case 'request_timeout':
    case 'too_many_requests':
    case 'internal':
    case 'upstream_failed':
    case 'unavailable':
    case 'insufficient_storage':
      return true;
    case 'bad_request':
    case 'unauthorized':
    case 'insufficient_credits':
    case 'not_found':
    case 'method_not_allowed':
    case 'not_acceptable':
    case 'conflict':
    case 'gone':
    case 'payload_too_large':
    case 'unsupported_media_type':
    case 'range_not_satisfiable':
    case 'validation_failed':
    case 'unprocessable_audio':
    case 'header_too_large':
    case 'link_expired':
    case 'file_expired':
      return false;
    default: {
      const unknown: never = problem.code;
      return unknown;
    }
  }
}

// A webhook receiver: the payload of each event type is typed.
type SucceededHook = NonNullable<webhooks['extension.succeeded']['post']['requestBody']>['content']['application/json'];
export function onSucceeded(payload: SucceededHook): string {
  return `${payload.data.task_id} #${payload.data.seq} (${payload.data.event_id}) at ${payload.timestamp}`;
}
