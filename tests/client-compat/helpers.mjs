// Shared plumbing for the client-compat suite: configuration, the Postgres
// connection used for mutations, and a wrapper around Electric's own
// ShapeStream/Shape that records everything the client delivers so tests can
// assert on it. Nothing here reimplements the protocol: the point of the
// suite is that the unmodified client does the talking.

import { before, after } from 'node:test'
import assert from 'node:assert/strict'
import pg from 'pg'
import { ShapeStream, Shape, isChangeMessage, isControlMessage } from '@electric-sql/client'

// Long enough for a live change to travel Postgres → replication → shape log
// → long-poll on a loaded 2-core CI box; short enough that a hang is reported
// well inside the per-test timeout.
export const WAIT_MS = Number(process.env.CLIENT_COMPAT_WAIT_MS || 30_000)

// The runner passes the threshold it started the server with, so paging
// assertions can bound page sizes; 10 000 is what tests/it/client_compat.rs uses.
export const CHUNK_BYTES = Number(process.env.ELECTRIC_SHAPE_CHUNK_BYTES_THRESHOLD || 10_000)

function requiredEnv(name) {
  const value = process.env[name]
  if (!value) {
    throw new Error(
      `${name} is not set. Run this suite through \`cargo test --test it client_compat\` ` +
        `(tests/it/client_compat.rs), or set SHAPESHARD_URL and DATABASE_URL yourself.`
    )
  }
  return value
}

export const baseUrl = requiredEnv('SHAPESHARD_URL').replace(/\/+$/, '')
export const shapeUrl = `${baseUrl}/v1/shape`
const databaseUrl = requiredEnv('DATABASE_URL')

function describeError(error) {
  // fetch() hides the useful part (ECONNREFUSED etc.) in `cause`.
  const cause = error?.cause
  return cause ? `${error.message} (${cause.code ?? cause.message ?? cause})` : String(error?.message ?? error)
}

// The client retries network errors forever by default, so without this a
// suite pointed at a dead server would sit in backoff until the test timeout
// instead of saying what is wrong.
async function assertServerUp() {
  let response
  try {
    response = await fetch(`${baseUrl}/v1/health`, { signal: AbortSignal.timeout(5_000) })
  } catch (error) {
    throw new Error(`shapeshard is not reachable at ${baseUrl}: ${describeError(error)}`)
  }
  const body = await response.text()
  if (response.status !== 200) {
    throw new Error(`shapeshard at ${baseUrl} is not active: GET /v1/health → ${response.status} ${body}`)
  }
}

/**
 * Registers per-file setup: checks the server and opens one Postgres
 * connection for the file's mutations. Returns a handle whose `query` is
 * usable once the `before` hook has run.
 */
export function useDatabase() {
  const db = { client: null }
  before(async () => {
    await assertServerUp()
    const client = new pg.Client({
      connectionString: databaseUrl,
      connectionTimeoutMillis: 5_000,
      application_name: 'shapeshard-client-compat',
    })
    try {
      await client.connect()
    } catch (error) {
      throw new Error(`cannot connect to DATABASE_URL ${databaseUrl}: ${describeError(error)}`)
    }
    // A dropped connection would otherwise surface as an unhandled 'error'
    // event and kill the file without naming the test.
    client.on('error', (error) => console.error('pg client error:', error))
    db.client = client
  })
  after(async () => {
    await db.client?.end()
  })
  db.query = (text, values) => db.client.query(text, values)
  /**
   * A second connection, for transactions held open beside `db.query` or
   * statements that must really run concurrently; closed when `t` ends.
   */
  db.connect = async (t) => {
    const client = new pg.Client({
      connectionString: databaseUrl,
      connectionTimeoutMillis: 5_000,
      application_name: 'shapeshard-client-compat',
    })
    await client.connect()
    client.on('error', (error) => console.error('pg client error:', error))
    t.after(() => client.end())
    return client
  }
  return db
}

let nameCounter = 0
/** A table name unique across concurrently running files and reruns. */
export function uniqueName(prefix) {
  const stamp = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`
  return `cc_${prefix}_${process.pid}_${stamp}_${nameCounter++}`
}

/** The Electric row key for a single-column primary key in `public`. */
export function rowKey(table, id) {
  return `"public"."${table}"/"${id}"`
}

export function byId(rows) {
  return [...rows].sort((a, b) => Number(a.id) - Number(b.id))
}

export function ids(rows) {
  return byId(rows).map((row) => row.id)
}

/** Plain objects, so deepStrictEqual compares values rather than prototypes. */
export function plain(rows) {
  return rows.map((row) => ({ ...row }))
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/**
 * Starts a ShapeStream plus a Shape on it and records every message and
 * error the client delivers. The stream is aborted when the test ends so the
 * process can exit.
 */
export function syncShape(t, params, options = {}) {
  const controller = new AbortController()
  const stream = new ShapeStream({
    url: shapeUrl,
    params,
    signal: controller.signal,
    // Retry transient failures a few times, then surface them as errors
    // instead of backing off for the rest of the test.
    backoffOptions: { initialDelay: 100, maxDelay: 2_000, multiplier: 2, maxRetries: 8 },
    ...options,
  })
  const sync = {
    stream,
    shape: null,
    messages: [],
    errors: [],
    notifications: 0,
  }
  stream.subscribe(
    (batch) => {
      sync.messages.push(...batch)
    },
    (error) => {
      sync.errors.push(error)
    }
  )
  sync.shape = new Shape(stream)
  sync.shape.subscribe(() => {
    sync.notifications++
  })
  sync.stop = () => {
    controller.abort()
    sync.shape.unsubscribeAll()
    stream.unsubscribeAll()
  }
  t.after(sync.stop)

  sync.changes = () => sync.messages.filter(isChangeMessage)
  sync.changesFor = (key) => sync.changes().filter((message) => message.key === key)
  sync.controls = (control) =>
    sync.messages.filter((message) => isControlMessage(message) && message.headers.control === control)
  sync.rows = () => byId(sync.shape.currentRows)

  sync.failIfErrored = () => {
    if (sync.errors.length > 0) {
      const error = sync.errors[0]
      const detail = error?.status ? ` (HTTP ${error.status}: ${error.text ?? JSON.stringify(error.json)})` : ''
      throw new Error(`the client reported an error: ${describeError(error)}${detail}`, { cause: error })
    }
  }

  /** Waits for `check()` to be truthy; fails early on client errors. */
  sync.until = (what, check, { timeout = WAIT_MS, detail } = {}) =>
    waitUntil(what, check, {
      timeout,
      detail: detail ?? (() => `shape rows: ${summarize(sync.rows())}`),
      beforeCheck: sync.failIfErrored,
    })

  /** Resolves with the rows once the first up-to-date has been processed. */
  sync.initialRows = async (what = 'the initial sync') => {
    await sync.until(what, () => stream.isUpToDate, {
      detail: () => `stream offset ${stream.lastOffset}, handle ${stream.shapeHandle}, ${sync.messages.length} messages so far`,
    })
    // Shape.rows is the documented way to read a synced shape; it must
    // resolve immediately now that the stream is up to date.
    const rows = await withTimeout(sync.shape.rows, 5_000, `Shape.rows after ${what}`)
    return byId(rows)
  }

  /** Waits until the Shape's rows, sorted by id, deep-equal `expected`. */
  sync.untilRowsEqual = async (what, expected, options = {}) => {
    const want = byId(plain(expected))
    await sync.until(
      what,
      () => {
        try {
          assert.deepStrictEqual(plain(sync.rows()), want)
          return true
        } catch {
          return false
        }
      },
      { detail: () => `expected ${summarize(want)}\n  shape rows ${summarize(sync.rows())}`, ...options }
    )
  }

  return sync
}

export function summarize(value) {
  const text = JSON.stringify(value, (_, v) => (typeof v === 'bigint' ? `${v}n` : v))
  return text.length > 2_000 ? `${text.slice(0, 2_000)}… (${text.length} chars)` : text
}

export async function waitUntil(what, check, { timeout = WAIT_MS, detail, beforeCheck } = {}) {
  const deadline = Date.now() + timeout
  for (;;) {
    beforeCheck?.()
    if (await check()) return
    if (Date.now() > deadline) {
      const extra = detail ? `\n  ${detail()}` : ''
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${extra}`)
    }
    await sleep(25)
  }
}

export async function withTimeout(promise, ms, what) {
  let timer
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)
  })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}

/**
 * GET on the shape endpoint without the client, for assertions on the wire
 * itself (headers, paging). Bounded by a timeout so a hung server fails the test.
 */
export async function rawGet(query) {
  const url = `${shapeUrl}?${new URLSearchParams(query)}`
  let response
  try {
    response = await fetch(url, { signal: AbortSignal.timeout(WAIT_MS) })
  } catch (error) {
    throw new Error(`GET ${url} failed: ${describeError(error)}`)
  }
  const text = await response.text()
  return { url, status: response.status, headers: response.headers, text }
}

/**
 * A `fetchClient` for ShapeStream that records every request the client
 * makes and what came back, so tests can tell how the client talked (SSE or
 * long-poll, which handle, GET or POST) without reimplementing any of it.
 */
export function recordingFetch() {
  const requests = []
  const fetchClient = async (input, init = {}) => {
    const href = typeof input === 'string' || input instanceof URL ? String(input) : input.url
    const entry = {
      url: new URL(href),
      method: init.method ?? 'GET',
      body: typeof init.body === 'string' ? init.body : undefined,
      startedAt: Date.now(),
    }
    requests.push(entry)
    try {
      const response = await fetch(input, init)
      entry.status = response.status
      entry.contentType = response.headers.get('content-type')
      entry.handle = response.headers.get('electric-handle')
      return response
    } catch (error) {
      entry.error = error
      throw error
    }
  }
  const param = (entry, name) => entry.url.searchParams.get(name)
  return {
    fetchClient,
    requests,
    param,
    /** Requests for live updates (long-poll or SSE). */
    live: () => requests.filter((entry) => param(entry, 'live') === 'true'),
    /** Requests the client made in SSE mode. */
    sse: () => requests.filter((entry) => param(entry, 'live_sse') === 'true'),
    /** SSE requests the server answered with an event stream. */
    sseStreams: () =>
      requests.filter(
        (entry) =>
          param(entry, 'live_sse') === 'true' &&
          entry.status === 200 &&
          String(entry.contentType).startsWith('text/event-stream')
      ),
    describe: () =>
      requests
        .map((entry) => {
          const outcome = entry.error ? `error ${entry.error.message}` : `${entry.status ?? 'pending'} ${entry.contentType ?? ''}`
          return `+${entry.startedAt - requests[0].startedAt}ms ${entry.method} ${entry.url.search} → ${outcome}`
        })
        .join('\n    '),
  }
}
