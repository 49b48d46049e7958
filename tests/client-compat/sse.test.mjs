import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  useDatabase,
  uniqueName,
  syncShape,
  rowKey,
  plain,
  baseUrl,
  WAIT_MS,
  sleep,
  waitUntil,
  recordingFetch,
} from './helpers.mjs'

const db = useDatabase()

// How long the server under test keeps one SSE response open. The runner
// starts it with ELECTRIC_SSE_TIMEOUT=5000 and passes the same value here so
// the timeout test stays quick; 60 000 is the server's default.
const SSE_TIMEOUT_MS = Number(process.env.ELECTRIC_SSE_TIMEOUT || 60_000)

/** syncShape with `liveSse: true`, recording every request the client makes. */
function syncSse(t, params, options = {}) {
  const requests = recordingFetch()
  const sync = syncShape(t, params, { liveSse: true, fetchClient: requests.fetchClient, ...options })
  sync.requests = requests
  // Waits for an SSE request made at or after `after` to be answered with an
  // event stream; a reconnect can take one whole SSE timeout.
  sync.untilSseStream = (what, after = 0) =>
    waitUntil(what, () => requests.sseStreams().some((entry) => entry.startedAt >= after), {
      timeout: WAIT_MS + SSE_TIMEOUT_MS,
      beforeCheck: sync.failIfErrored,
      detail: () => `requests so far:\n    ${requests.describe()}`,
    })
  return sync
}

/**
 * The client's live requests were all SSE (it never fell back to
 * long-polling, which it does after SSE responses that end within a second
 * three times running) and the server answered at least one as an event stream.
 */
function assertOnlySse(sync, what) {
  const { requests } = sync
  assert.ok(
    requests.sseStreams().length > 0,
    `${what}: no live_sse=true request was answered 200 text/event-stream\n    ${requests.describe()}`
  )
  const longPolls = requests.live().filter((entry) => requests.param(entry, 'live_sse') !== 'true')
  assert.equal(
    longPolls.length,
    0,
    `${what}: the client fell back to long-polling (live requests without live_sse=true)\n    ${requests.describe()}`
  )
}

/**
 * Live changes split into the distinct ones, in arrival order, and any
 * repeats (a change delivered twice).
 */
function distinctChanges(changes) {
  const seen = new Set()
  const distinct = []
  const repeats = []
  for (const message of changes) {
    const id = `${message.key} ${message.headers.lsn} ${message.headers.op_position}`
    if (seen.has(id)) repeats.push(message)
    else {
      seen.add(id)
      distinct.push(message)
    }
  }
  return { distinct, repeats }
}

const ops = (messages) => messages.map((message) => [message.headers.operation, message.key])

test('live insert, update and delete reach Shape.rows over SSE, each once and in order', { timeout: SSE_TIMEOUT_MS + 120_000 }, async (t) => {
  const table = uniqueName('sse_live')
  await db.query(`CREATE TABLE ${table} (id int4 PRIMARY KEY, title text NOT NULL, n int4)`)
  await db.query(`INSERT INTO ${table} VALUES (1, 'one', 10), (2, 'two', 20), (3, 'three', NULL)`)
  const current = async () => (await db.query(`SELECT id, title, n FROM ${table} ORDER BY id`)).rows

  const sync = syncSse(t, { table })
  assert.deepStrictEqual(plain(await sync.initialRows()), plain(await current()))
  const snapshotChanges = sync.changes().length
  // Changes made once the stream is open travel as events on it.
  await sync.untilSseStream('the client to open an SSE stream after the initial sync')

  await db.query(`INSERT INTO ${table} VALUES (4, 'four', 40)`)
  await sync.untilRowsEqual('the live insert of id 4 over SSE', await current())
  await db.query(`UPDATE ${table} SET title = 'two (edited)', n = n + 1 WHERE id = 2`)
  await sync.untilRowsEqual('the live update of id 2 over SSE', await current())
  await db.query(`DELETE FROM ${table} WHERE id = 3`)
  await sync.untilRowsEqual('the live delete of id 3 over SSE', await current())
  assertOnlySse(sync, 'single-statement changes')

  // One transaction with several operations: one event each, one up-to-date.
  await db.query('BEGIN')
  await db.query(`INSERT INTO ${table} VALUES (5, 'five', 50)`)
  await db.query(`UPDATE ${table} SET n = 11 WHERE id = 1`)
  await db.query(`DELETE FROM ${table} WHERE id = 4`)
  await db.query('COMMIT')
  await sync.untilRowsEqual('the multi-operation transaction over SSE', await current())
  const txnArrived = Date.now()
  assertOnlySse(sync, 'the multi-operation transaction')

  // The client resumes a stream at `<global_last_seen_lsn>_0`; the server
  // names an LSN past the transaction's last operation, so the resume
  // repeats nothing (Electric names the transaction's own LSN, and its
  // client re-reads the later operations in a loop of short responses).

  // Let the server end the stream at its SSE timeout so the client resumes
  // after that transaction, then change once more.
  await sync.untilSseStream('the client to reconnect over SSE after the server timeout', txnArrived)
  await db.query(`INSERT INTO ${table} VALUES (6, 'six', 60)`)
  await sync.untilRowsEqual('the live insert of id 6 after an SSE reconnect', await current())
  assertOnlySse(sync, 'the reconnect after a multi-operation transaction')

  const live = sync.changes().slice(snapshotChanges)
  const { distinct, repeats } = distinctChanges(live)
  assert.deepStrictEqual(
    ops(distinct),
    [
      ['insert', rowKey(table, 4)],
      ['update', rowKey(table, 2)],
      ['delete', rowKey(table, 3)],
      ['insert', rowKey(table, 5)],
      ['update', rowKey(table, 1)],
      ['delete', rowKey(table, 4)],
      ['insert', rowKey(table, 6)],
    ],
    'each change arrives once, in commit order'
  )
  const txn = distinct.slice(3, 6)
  assert.equal(new Set(txn.map((m) => m.headers.lsn)).size, 1, 'the three operations of one transaction share its lsn')
  assert.deepStrictEqual(
    repeats.map((m) => m.headers),
    [],
    'no change is delivered twice, not even after the resume at <lsn>_0'
  )
  for (const message of distinct) {
    assert.match(String(message.headers.lsn), /^\d+$/, `lsn of ${message.key} is a decimal string`)
  }
  assert.deepStrictEqual(plain(sync.rows()), plain(await current()))
  assert.ok(sync.requests.sseStreams().length >= 2, `the client reconnected over SSE\n    ${sync.requests.describe()}`)
})

test('offset "now" with SSE delivers only changes made after the stream started', { timeout: 120_000 }, async (t) => {
  const table = uniqueName('sse_now')
  await db.query(`CREATE TABLE ${table} (id int4 PRIMARY KEY, title text NOT NULL)`)
  await db.query(`INSERT INTO ${table} VALUES (1, 'one'), (2, 'two')`)

  const sync = syncSse(t, { table }, { offset: 'now' })
  assert.deepStrictEqual(await sync.initialRows('the offset=now request'), [], 'offset=now syncs no existing rows')
  assert.deepStrictEqual(sync.changes(), [], 'no message for rows that existed before the stream')
  assert.equal(sync.requests.param(sync.requests.requests[0], 'offset'), 'now', 'the first request asked for offset=now')
  assert.equal(typeof sync.stream.shapeHandle, 'string', 'offset=now still answers with a shape handle')
  await sync.untilSseStream('the client to open an SSE stream')

  await db.query(`INSERT INTO ${table} VALUES (3, 'three')`)
  await sync.untilRowsEqual('the live insert of id 3', [{ id: 3, title: 'three' }])
  await db.query(`UPDATE ${table} SET title = 'one (edited)' WHERE id = 1`)
  await db.query(`DELETE FROM ${table} WHERE id = 2`)
  await sync.until('the update of id 1 and the delete of id 2', () => sync.changesFor(rowKey(table, 2)).length > 0)

  assert.deepStrictEqual(
    ops(sync.changes()),
    [
      ['insert', rowKey(table, 3)],
      ['update', rowKey(table, 1)],
      ['delete', rowKey(table, 2)],
    ],
    'exactly the later changes, once each, in commit order'
  )
  const [insert, update, del] = sync.changes()
  assert.deepStrictEqual({ ...insert.value }, { id: 3, title: 'three' })
  assert.deepStrictEqual({ ...update.value }, { id: 1, title: 'one (edited)' })
  assert.deepStrictEqual({ ...del.value }, { id: 2 })
  assertOnlySse(sync, 'offset=now')
})

test('replica full over SSE: updates carry the whole row and old_value', { timeout: 120_000 }, async (t) => {
  const table = uniqueName('sse_full')
  await db.query(`CREATE TABLE ${table} (id int4 PRIMARY KEY, a text, b int4, c text)`)
  await db.query(`INSERT INTO ${table} VALUES (1, 'a0', 1, 'c0'), (2, 'x', 2, 'y')`)
  const current = async () => (await db.query(`SELECT id, a, b, c FROM ${table} ORDER BY id`)).rows

  const sync = syncSse(t, { table, replica: 'full' })
  assert.deepStrictEqual(plain(await sync.initialRows()), plain(await current()))
  await sync.untilSseStream('the client to open an SSE stream')

  await db.query(`INSERT INTO ${table} VALUES (3, 'new', 3, 'row')`)
  await db.query(`UPDATE ${table} SET a = 'a1', b = NULL WHERE id = 1`)
  await db.query(`DELETE FROM ${table} WHERE id = 2`)
  await sync.untilRowsEqual('insert, update and delete over SSE', await current())

  const only = (id, operation) => {
    const found = sync.changesFor(rowKey(table, id)).filter((message) => message.headers.operation === operation)
    assert.equal(found.length, 1, `exactly one ${operation} for id ${id}`)
    return found[0]
  }
  assert.deepStrictEqual({ ...only(3, 'insert').value }, { id: 3, a: 'new', b: 3, c: 'row' })
  const update = only(1, 'update')
  assert.deepStrictEqual({ ...update.value }, { id: 1, a: 'a1', b: null, c: 'c0' }, 'the update value is the whole new row')
  assert.deepStrictEqual({ ...update.old_value }, { a: 'a0', b: 1 }, 'old_value holds the old values of the changed columns')
  assert.deepStrictEqual({ ...only(2, 'delete').value }, { id: 2, a: 'x', b: 2, c: 'y' }, 'the delete value is the whole old row')
  assertOnlySse(sync, 'replica=full')
})

test('an SSE stream outlives the server SSE timeout without falling back to long-polling', { timeout: 3 * SSE_TIMEOUT_MS + 90_000 }, async (t) => {
  const table = uniqueName('sse_timeout')
  await db.query(`CREATE TABLE ${table} (id int4 PRIMARY KEY, v text NOT NULL)`)
  await db.query(`INSERT INTO ${table} VALUES (1, 'one')`)
  const current = async () => (await db.query(`SELECT id, v FROM ${table} ORDER BY id`)).rows

  const sync = syncSse(t, { table })
  await sync.initialRows()
  const snapshotChanges = sync.changes().length
  await sync.untilSseStream('the client to open an SSE stream')
  const first = sync.requests.sseStreams()[0]

  // A change on the first stream, well inside its timeout.
  await db.query(`INSERT INTO ${table} VALUES (2, 'two')`)
  await sync.untilRowsEqual('a change on the first SSE stream', await current())

  // Past the first timeout: the server must have ended that response and the
  // client must have opened another SSE stream, not a long-poll.
  await sleep(Math.max(0, first.startedAt + 1.5 * SSE_TIMEOUT_MS - Date.now()))
  await sync.untilSseStream('an SSE stream opened after the first one timed out', first.startedAt + 1)
  const second = sync.requests.sseStreams().find((entry) => entry !== first)
  assert.ok(
    second.startedAt - first.startedAt >= 0.8 * SSE_TIMEOUT_MS,
    `the first SSE response stayed open for about ELECTRIC_SSE_TIMEOUT (${SSE_TIMEOUT_MS} ms); ` +
      `the next SSE request came after ${second.startedAt - first.startedAt} ms\n    ${sync.requests.describe()}`
  )
  await db.query(`UPDATE ${table} SET v = 'one (edited)' WHERE id = 1`)
  await db.query(`INSERT INTO ${table} VALUES (3, 'three')`)
  await sync.untilRowsEqual('changes made after one SSE timeout', await current())

  // And past a second timeout.
  await sleep(Math.max(0, first.startedAt + 2.5 * SSE_TIMEOUT_MS - Date.now()))
  await db.query(`DELETE FROM ${table} WHERE id = 2`)
  await sync.untilRowsEqual('a change made after two SSE timeouts', await current())

  assertOnlySse(sync, 'across SSE timeouts')
  assert.ok(
    sync.requests.sseStreams().length >= 3,
    `one SSE stream per timeout period\n    ${sync.requests.describe()}`
  )
  const failed = sync.requests.sse().filter((entry) => entry.status !== 200 && entry.status !== undefined)
  assert.deepStrictEqual(failed.map((entry) => entry.status), [], `SSE reconnects were answered 200\n    ${sync.requests.describe()}`)
  assert.deepStrictEqual(
    ops(sync.changes().slice(snapshotChanges)),
    [
      ['insert', rowKey(table, 2)],
      ['update', rowKey(table, 1)],
      ['insert', rowKey(table, 3)],
      ['delete', rowKey(table, 2)],
    ],
    'each change once: a reconnect after single-operation transactions repeats nothing'
  )
})

test('a shape deleted while the client streams over SSE is refetched under a new handle', { timeout: SSE_TIMEOUT_MS + 150_000 }, async (t) => {
  const table = uniqueName('sse_refetch')
  await db.query(`CREATE TABLE ${table} (id int4 PRIMARY KEY, v text NOT NULL)`)
  await db.query(`INSERT INTO ${table} VALUES (1, 'one'), (2, 'two'), (3, 'three')`)
  const current = async () => (await db.query(`SELECT id, v FROM ${table} ORDER BY id`)).rows

  const sync = syncSse(t, { table })
  await sync.initialRows()
  const oldHandle = sync.stream.shapeHandle
  assert.equal(typeof oldHandle, 'string', 'the first sync produced a handle')
  await sync.untilSseStream('the client to open an SSE stream')

  const deleteUrl = `${baseUrl}/v1/shape?${new URLSearchParams({ table, handle: oldHandle })}`
  const response = await fetch(deleteUrl, { method: 'DELETE', signal: AbortSignal.timeout(WAIT_MS) })
  assert.equal(response.status, 202, `DELETE ${deleteUrl} → ${response.status} ${await response.text()}`)

  await db.query(`INSERT INTO ${table} VALUES (4, 'four')`)
  await db.query(`UPDATE ${table} SET v = 'one (edited)' WHERE id = 1`)

  // The open stream may only notice at its timeout; allow for one.
  const recoveryMs = WAIT_MS + SSE_TIMEOUT_MS
  await sync.until('the client to receive must-refetch', () => sync.controls('must-refetch').length > 0, {
    timeout: recoveryMs,
    detail: () => `handle ${sync.stream.shapeHandle}, offset ${sync.stream.lastOffset}\n    ${sync.requests.describe()}`,
  })
  await sync.until('a new shape handle', () => sync.stream.shapeHandle && sync.stream.shapeHandle !== oldHandle, {
    timeout: recoveryMs,
    detail: () => `handle is still ${sync.stream.shapeHandle}`,
  })
  await sync.untilRowsEqual('Shape.rows to be rebuilt from the new shape', await current(), { timeout: recoveryMs })
  const newHandle = sync.stream.shapeHandle

  // The new shape is live over SSE.
  await waitUntil(
    'an SSE stream on the new handle',
    () => sync.requests.sseStreams().some((entry) => sync.requests.param(entry, 'handle') === newHandle),
    { beforeCheck: sync.failIfErrored, detail: () => sync.requests.describe() }
  )
  await db.query(`INSERT INTO ${table} VALUES (5, 'five')`)
  await db.query(`DELETE FROM ${table} WHERE id = 2`)
  await sync.untilRowsEqual('a live change on the new shape', await current())
  assert.equal(sync.stream.shapeHandle, newHandle, 'the handle stays stable after recovery')
  assert.equal(sync.controls('must-refetch').length, 1, 'exactly one must-refetch')
  assert.ok(
    sync.requests.requests.some((entry) => entry.status === 409 && sync.requests.param(entry, 'handle') === oldHandle),
    `a request on the deleted handle was answered 409\n    ${sync.requests.describe()}`
  )
  assertOnlySse(sync, 'after the must-refetch')
})
