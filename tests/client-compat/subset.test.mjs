import { test } from 'node:test'
import assert from 'node:assert/strict'
import { ShapeStream, FetchError } from '@electric-sql/client'
import {
  useDatabase,
  uniqueName,
  syncShape,
  rowKey,
  plain,
  ids,
  baseUrl,
  shapeUrl,
  WAIT_MS,
  waitUntil,
  recordingFetch,
  summarize,
} from './helpers.mjs'

const db = useDatabase()

const SUBSET_TIMEOUT_MS = 120_000

/**
 * 40 rows: status is 'active' for ids divisible by 3, 'pending' for ids
 * 1, 4, 7, …, 'inactive' for the rest; each score 0..9 occurs four times,
 * so ORDER BY score needs a tiebreak.
 */
async function createItems(table) {
  await db.query(`CREATE TABLE ${table} (id int4 PRIMARY KEY, status text NOT NULL, score int4 NOT NULL, big int8)`)
  await db.query(
    `INSERT INTO ${table} (id, status, score, big)
     SELECT i, (ARRAY['active', 'pending', 'inactive'])[1 + i % 3], (i * 7) % 10, i::int8 * 1000000007
     FROM generate_series(1, 40) AS i`
  )
}

/** Rows as the client parses them: int8 as BigInt (node-pg gives strings). */
async function pgRows(sql, values) {
  const { rows } = await db.query(sql, values)
  return rows.map((row) => ('big' in row ? { ...row, big: row.big === null ? null : BigInt(row.big) } : row))
}

const itemsWhere = (table, where, values, tail = 'ORDER BY id') =>
  pgRows(`SELECT id, status, score, big FROM ${table} WHERE ${where} ${tail}`, values)

/** A ShapeStream that is never subscribed: only used for fetchSnapshot. */
function idleStream(t, params, options = {}) {
  const controller = new AbortController()
  const requests = recordingFetch()
  const stream = new ShapeStream({
    url: shapeUrl,
    params,
    signal: controller.signal,
    fetchClient: requests.fetchClient,
    backoffOptions: { initialDelay: 100, maxDelay: 2_000, multiplier: 2, maxRetries: 8 },
    ...options,
  })
  t.after(() => controller.abort())
  return { stream, requests }
}

/**
 * A subset answer: the expected rows in order, every one an insert under
 * its row key marked with the answer's snapshot_mark, and well-formed
 * snapshot metadata.
 */
function assertSnapshot(table, result, expected, what) {
  const { metadata, data } = result
  assert.deepStrictEqual(
    data.map((message) => ({ ...message.value })),
    plain(expected),
    `${what}: the rows, in order`
  )
  assert.equal(typeof metadata.snapshot_mark, 'number', `${what}: snapshot_mark is a number`)
  for (const field of ['xmin', 'xmax', 'database_lsn']) {
    assert.match(String(metadata[field]), /^\d+$/, `${what}: metadata.${field} is a decimal (${metadata[field]})`)
  }
  assert.ok(Array.isArray(metadata.xip_list), `${what}: metadata.xip_list is a list`)
  const xmin = BigInt(metadata.xmin)
  const xmax = BigInt(metadata.xmax)
  assert.ok(xmin <= xmax, `${what}: xmin ${xmin} <= xmax ${xmax}`)
  for (const xip of metadata.xip_list) {
    assert.match(String(xip), /^\d+$/, `${what}: xip ${xip} is a decimal`)
    assert.ok(BigInt(xip) >= xmin && BigInt(xip) < xmax, `${what}: xip ${xip} is in [xmin, xmax)`)
  }
  assert.ok(BigInt(metadata.database_lsn) > 0n, `${what}: database_lsn is a real LSN`)
  for (const message of data) {
    assert.equal(message.key, rowKey(table, message.value.id), `${what}: row key`)
    assert.equal(message.headers.operation, 'insert', `${what}: snapshot rows are inserts`)
    assert.equal(message.headers.snapshot_mark, metadata.snapshot_mark, `${what}: row snapshot_mark matches metadata`)
  }
}

test('fetchSnapshot over GET and POST: where + params, orderBy, limit, offset', { timeout: SUBSET_TIMEOUT_MS }, async (t) => {
  const table = uniqueName('subset_fetch')
  await createItems(table)
  const requests = recordingFetch()
  const sync = syncShape(t, { table }, { fetchClient: requests.fetchClient })
  assert.equal((await sync.initialRows()).length, 40)

  const where = 'status = $1 AND score > $2'
  const params = { 1: 'active', 2: '0' }
  const orderBy = 'score, id DESC'
  const top = await itemsWhere(table, where, ['active', 0], `ORDER BY ${orderBy} LIMIT 5`)
  const page = await itemsWhere(table, where, ['active', 0], `ORDER BY ${orderBy} LIMIT 3 OFFSET 2`)
  assert.equal(top.length, 5, 'the fixture has enough matching rows')
  assert.ok(top.some((row, i) => i > 0 && row.score === top[i - 1].score), 'the fixture has score ties for id DESC to break')

  const marks = new Set()
  for (const method of ['GET', 'POST']) {
    const before = requests.requests.length
    const result = await sync.stream.fetchSnapshot({ where, params, orderBy, limit: 5, method })
    assertSnapshot(table, result, top, `${method} limit 5`)
    marks.add(result.metadata.snapshot_mark)
    // (the stream's own long-poll may be interleaved in the log)
    const request = requests.requests
      .slice(before)
      .find((entry) => entry.method === method && requests.param(entry, 'live') !== 'true')
    assert.ok(request, `the client sent a ${method}\n    ${requests.describe()}`)
    if (method === 'GET') {
      assert.equal(requests.param(request, 'subset__where'), where, 'GET carries the subset in subset__* parameters')
    } else {
      assert.equal(requests.param(request, 'subset__where'), null, 'POST carries the subset in its body')
      assert.equal(JSON.parse(request.body).where, where)
    }
    assert.equal(requests.param(request, 'handle'), sync.stream.shapeHandle, 'the subset is of the synced shape')

    const paged = await sync.stream.fetchSnapshot({ where, params, orderBy, limit: 3, offset: 2, method })
    assertSnapshot(table, paged, page, `${method} limit 3 offset 2`)
    marks.add(paged.metadata.snapshot_mark)
  }
  assert.equal(marks.size, 4, 'each subset snapshot has its own snapshot_mark')
  // Subsets are answered beside the log: the synced shape saw nothing.
  assert.equal(sync.changes().length, 40)
  sync.failIfErrored()
})

test('fetchSnapshot on a stream that never synced, with the shape where ANDed in', { timeout: SUBSET_TIMEOUT_MS }, async (t) => {
  const table = uniqueName('subset_cold')
  await createItems(table)
  const { stream, requests } = idleStream(t, { table, where: 'score < 5' })

  const expected = await itemsWhere(table, `score < 5 AND status = $1`, ['pending'], 'ORDER BY id DESC LIMIT 4')
  for (const method of ['GET', 'POST']) {
    const result = await stream.fetchSnapshot({ where: 'status = $1', params: { 1: 'pending' }, orderBy: 'id DESC', limit: 4, method })
    assertSnapshot(table, result, expected, `${method} on a cold stream`)
    assert.ok(result.data.every((message) => message.value.score < 5), `${method}: the shape's where applies`)
  }
  assert.deepStrictEqual(
    requests.requests.map((entry) => requests.param(entry, 'offset')),
    ['-1', '-1'],
    'a never-synced stream asks at offset -1'
  )
  // Nothing else: no subscription means no sync requests.
  assert.equal(requests.requests.length, 2)
})

test('BigInt params against an int8 column (GET and POST)', { timeout: SUBSET_TIMEOUT_MS }, async (t) => {
  const table = uniqueName('subset_big')
  await db.query(`CREATE TABLE ${table} (id int4 PRIMARY KEY, big int8 NOT NULL)`)
  // 2^53 and 2^53 + 1 are the same IEEE double: a server (or client) that
  // goes through a JS number or a float would match both.
  await db.query(
    `INSERT INTO ${table} VALUES (1, 9007199254740992), (2, 9007199254740993), (3, 9223372036854775807), (4, -9223372036854775808), (5, 42)`
  )
  const { stream, requests } = idleStream(t, { table })
  const rows = (result) => result.data.map((message) => ({ ...message.value }))

  for (const method of ['GET', 'POST']) {
    const before = requests.requests.length
    const exact = await stream.fetchSnapshot({ where: 'big = $1', params: { 1: 9007199254740993n }, method })
    assert.deepStrictEqual(rows(exact), [{ id: 2, big: 9007199254740993n }], `${method}: big = 2^53 + 1 matches exactly one row`)

    // How the client serialises a BigInt: as a JSON string of its digits,
    // in the subset__params query parameter (GET) or in the body (POST).
    const request = requests.requests[before]
    const sent = method === 'GET' ? JSON.parse(requests.param(request, 'subset__params')) : JSON.parse(request.body).params
    assert.deepStrictEqual(sent, { 1: '9007199254740993' }, `${method}: the client sends the BigInt as a decimal string`)

    const range = await stream.fetchSnapshot({
      where: 'big >= $1 AND big <= $2',
      params: { 1: 9007199254740993n, 2: 9223372036854775807n },
      orderBy: 'big DESC',
      method,
    })
    assert.deepStrictEqual(rows(range), [
      { id: 3, big: 9223372036854775807n },
      { id: 2, big: 9007199254740993n },
    ], `${method}: range up to int8 max`)

    const min = await stream.fetchSnapshot({ where: 'big < $1', params: { 1: -9223372036854775807n }, method })
    assert.deepStrictEqual(rows(min), [{ id: 4, big: -9223372036854775808n }], `${method}: int8 min`)
  }
})

test('requestSnapshot on a changes_only stream injects rows that then follow live changes', { timeout: SUBSET_TIMEOUT_MS }, async (t) => {
  const table = uniqueName('subset_inject')
  await createItems(table)
  const sync = syncShape(t, { table }, { log: 'changes_only' })
  assert.deepStrictEqual(await sync.initialRows(), [], 'changes_only starts empty')
  assert.deepStrictEqual(sync.changes(), [], 'changes_only sends no initial rows')

  const where = 'score < $1'
  const expected = await itemsWhere(table, 'score < $1', [6])
  await sync.shape.requestSnapshot({ where, params: { 1: '6' } })
  assert.deepStrictEqual(plain(sync.rows()), plain(expected), 'the snapshot rows are in Shape.rows once requestSnapshot resolves')
  const injected = sync.changes()
  assert.equal(injected.length, expected.length, 'one insert per snapshot row')
  assert.equal(new Set(injected.map((message) => message.headers.snapshot_mark)).size, 1, 'one snapshot_mark')
  // (the changes_only initial response may carry a snapshot-end of its own)
  const end = sync.controls('snapshot-end').filter((message) => message.headers.snapshot_mark !== undefined)
  assert.equal(end.length, 1, 'the client marks the end of the injected snapshot')
  assert.equal(end[0].headers.snapshot_mark, injected[0].headers.snapshot_mark)

  const snapshotIds = ids(expected)
  const [kept, removed] = snapshotIds
  const other = (await itemsWhere(table, 'score >= $1', [6]))[0].id
  await db.query(`UPDATE ${table} SET status = 'edited', score = 100 WHERE id = $1`, [kept])
  await db.query(`DELETE FROM ${table} WHERE id = $1`, [removed])
  await db.query(`UPDATE ${table} SET status = 'edited' WHERE id = $1`, [other])
  await db.query(`INSERT INTO ${table} VALUES (41, 'new', 3, 41)`)
  // Commit order: once 42 is in, everything before it has been processed.
  await db.query(`INSERT INTO ${table} VALUES (42, 'new', 10, NULL)`)
  const visible = await pgRows(`SELECT id, status, score, big FROM ${table} WHERE id = ANY($1) ORDER BY id`, [[...snapshotIds, 41, 42]])
  await sync.untilRowsEqual('the live changes to the snapshot rows and the new rows', visible)

  const opsFor = (id) => sync.changesFor(rowKey(table, id)).map((message) => message.headers.operation)
  assert.deepStrictEqual(opsFor(kept), ['insert', 'update'], 'the snapshot row is updated once, live')
  assert.deepStrictEqual(opsFor(removed), ['insert', 'delete'], 'the snapshot row is deleted once, live')
  assert.deepStrictEqual(opsFor(other), ['update'], 'a change to a row outside the snapshot still arrives')
  assert.ok(!sync.rows().some((row) => row.id === other), 'but the Shape does not invent a row from it')
})

test('requestSnapshot racing concurrent writes: no lost update, no ghost row', { timeout: SUBSET_TIMEOUT_MS }, async (t) => {
  const table = uniqueName('subset_race')
  await createItems(table)
  const where = 'status = $1'
  const params = { 1: 'active' }
  const current = () => itemsWhere(table, 'status = $1', ['active'])
  const sync = syncShape(t, { table }, { log: 'changes_only' })
  await sync.initialRows()

  // A transaction open across the snapshot: it must be in the snapshot's
  // xip_list, and its update must not be filtered out when it arrives.
  const held = await db.connect(t)
  await held.query('BEGIN')
  await held.query(`UPDATE ${table} SET score = score + 100 WHERE id = 3`)
  const heldXid = (await held.query('SELECT pg_current_xact_id()::text AS xid')).rows[0].xid

  const writers = await Promise.all([db.connect(t), db.connect(t), db.connect(t)])
  // Writes that keep rows inside or outside `status = 'active'`, so the
  // Shape must end equal to that where's rows.
  const bursts = [
    [
      `UPDATE ${table} SET score = score + 1 WHERE id = 6`,
      `DELETE FROM ${table} WHERE id = 9`,
      `INSERT INTO ${table} VALUES (100, 'active', 1, 100)`,
      `UPDATE ${table} SET score = score + 1 WHERE id = 100`,
      `INSERT INTO ${table} VALUES (101, 'active', 2, 101)`,
      `DELETE FROM ${table} WHERE id = 101`,
    ],
    [
      `UPDATE ${table} SET score = score + 1 WHERE id = 1`,
      `DELETE FROM ${table} WHERE id = 2`,
      `BEGIN`,
      `UPDATE ${table} SET score = score + 2 WHERE id = 12`,
      `DELETE FROM ${table} WHERE id = 15`,
      `INSERT INTO ${table} VALUES (102, 'active', 3, NULL)`,
      `COMMIT`,
      `UPDATE ${table} SET big = NULL WHERE id = 18`,
    ],
    [
      `INSERT INTO ${table} VALUES (103, 'active', 4, 103)`,
      `UPDATE ${table} SET score = score + 3 WHERE id = 21`,
      `DELETE FROM ${table} WHERE id = 24`,
      `UPDATE ${table} SET score = score + 1 WHERE id IN (27, 30, 33)`,
      `DELETE FROM ${table} WHERE id = 103`,
      `INSERT INTO ${table} VALUES (104, 'active', 5, 104)`,
    ],
  ]
  const run = async (client, statements) => {
    for (const statement of statements) await client.query(statement)
  }
  const [snapshot] = await Promise.all([
    sync.stream.requestSnapshot({ where, params }),
    ...writers.map((client, i) => run(client, bursts[i])),
  ])
  assert.ok(
    snapshot.metadata.xip_list.map(String).includes(heldXid),
    `the transaction open during the snapshot (xid ${heldXid}) is in its xip_list ${JSON.stringify(snapshot.metadata.xip_list)}`
  )
  assert.ok(
    !snapshot.data.some((message) => message.value.id === 3 && message.value.score >= 100),
    'the snapshot does not see the uncommitted update'
  )
  await held.query('COMMIT')

  // Commit order: once 200 is in, every earlier commit has been processed.
  await db.query(`INSERT INTO ${table} VALUES (200, 'active', 0, NULL)`)
  await sync.until('the sentinel insert after the burst', () => sync.rows().some((row) => row.id === 200), {
    detail: () => `shape rows: ${summarize(sync.rows())}`,
  })
  const expected = await current()
  assert.deepStrictEqual(plain(sync.rows()), plain(expected), 'Shape.rows equals the where rows in Postgres')
  const row3 = sync.rows().find((row) => row.id === 3)
  assert.equal(row3?.score, expected.find((row) => row.id === 3).score, 'the held transaction’s update was not lost')
  for (const gone of [9, 101, 103]) {
    assert.ok(!sync.rows().some((row) => row.id === gone), `no ghost of deleted row ${gone}`)
  }
})

test('requestSnapshot after the shape was deleted (409) follows the new handle', { timeout: SUBSET_TIMEOUT_MS }, async (t) => {
  const table = uniqueName('subset_409')
  await createItems(table)
  const requests = recordingFetch()
  const sync = syncShape(t, { table }, { log: 'changes_only', fetchClient: requests.fetchClient })
  await sync.initialRows()

  const whereA = 'score < $1'
  await sync.shape.requestSnapshot({ where: whereA, params: { 1: '3' } })
  assert.deepStrictEqual(plain(sync.rows()), plain(await itemsWhere(table, 'score < 3')), 'the first snapshot')
  // A live change first, so the stream's offset is a real log position of
  // the shape that is about to go.
  await db.query(`UPDATE ${table} SET status = 'moved' WHERE id = 10`) // score 0: in A
  await sync.untilRowsEqual('a live change before the delete', await itemsWhere(table, 'score < 3'))
  const oldHandle = sync.stream.shapeHandle
  assert.match(String(sync.stream.lastOffset), /^[1-9]\d*_\d+$/, 'the stream is at a real log offset before the delete')

  // `log` is part of the shape definition, so the DELETE names it too.
  const deleteUrl = `${baseUrl}/v1/shape?${new URLSearchParams({ table, log: 'changes_only', handle: oldHandle })}`
  const response = await fetch(deleteUrl, { method: 'DELETE', signal: AbortSignal.timeout(WAIT_MS) })
  assert.equal(response.status, 202, `DELETE ${deleteUrl} → ${response.status} ${await response.text()}`)

  const whereB = 'score >= $1'
  await sync.shape.requestSnapshot({ where: whereB, params: { 1: '8' } })
  await sync.until('a new shape handle', () => sync.stream.shapeHandle && sync.stream.shapeHandle !== oldHandle, {
    detail: () => `handle is still ${sync.stream.shapeHandle}\n    ${requests.describe()}`,
  })
  assert.ok(
    requests.requests.some((entry) => entry.status === 409 && requests.param(entry, 'handle') === oldHandle),
    `a request on the deleted handle was answered 409\n    ${requests.describe()}`
  )

  // The stream goes on under the new handle: live changes arrive and the
  // Shape holds both subsets (re-requested if the stream refetched).
  await db.query(`UPDATE ${table} SET status = 'edited' WHERE id = 20`) // score 0: in A
  await db.query(`INSERT INTO ${table} VALUES (41, 'new', 1, NULL)`)
  const expected = await itemsWhere(table, 'score < 3 OR score >= 8 OR id = 41')
  await sync.untilRowsEqual('both subsets and the live changes under the new handle', expected, {
    detail: () => `handle ${sync.stream.shapeHandle}\n  expected ${summarize(expected)}\n  shape rows ${summarize(sync.rows())}\n    ${requests.describe()}`,
  })
  const newHandle = sync.stream.shapeHandle
  assert.ok(
    requests.requests.some((entry) => entry.status === 200 && requests.param(entry, 'handle') === newHandle),
    'requests on the new handle succeed'
  )
  assert.ok(sync.controls('must-refetch').length <= 1, 'at most one must-refetch')
})

test('changes_only + SSE + requestSnapshot: snapshot rows follow live changes over SSE', { timeout: SUBSET_TIMEOUT_MS }, async (t) => {
  const table = uniqueName('subset_sse')
  await createItems(table)
  const requests = recordingFetch()
  const sync = syncShape(t, { table }, { log: 'changes_only', liveSse: true, fetchClient: requests.fetchClient })
  await sync.initialRows()
  const sseOpen = (after) =>
    waitUntil('an SSE stream', () => requests.sseStreams().some((entry) => entry.startedAt >= after), {
      beforeCheck: sync.failIfErrored,
      detail: () => requests.describe(),
    })
  await sseOpen(0)

  const where = 'status = $1'
  const params = { 1: 'pending' }
  const current = () => itemsWhere(table, 'status = $1', ['pending'])

  // A transaction open across the snapshot, committed after it.
  const held = await db.connect(t)
  await held.query('BEGIN')
  await held.query(`UPDATE ${table} SET score = 99 WHERE id = 1`) // 1 % 3 = 1: pending
  const requested = Date.now()
  await sync.shape.requestSnapshot({ where, params })
  // `db` is another connection: it does not see the held update either.
  assert.deepStrictEqual(plain(sync.rows()), plain(await current()), 'the snapshot rows, without the uncommitted update')
  await held.query('COMMIT')
  await sseOpen(requested)

  await db.query(`UPDATE ${table} SET score = score + 1 WHERE id = 4`) // pending
  await db.query(`DELETE FROM ${table} WHERE id = 7`) // pending
  await db.query(`UPDATE ${table} SET score = score + 1 WHERE id = 3`) // active: not in the Shape
  await db.query(`INSERT INTO ${table} VALUES (100, 'pending', 1, 100)`)
  await db.query(`INSERT INTO ${table} VALUES (200, 'pending', 0, NULL)`)
  await sync.until('the sentinel insert over SSE', () => sync.rows().some((row) => row.id === 200))
  assert.deepStrictEqual(plain(sync.rows()), plain(await current()), 'Shape.rows equals the where rows in Postgres')

  const opsFor = (id) => sync.changesFor(rowKey(table, id)).map((message) => message.headers.operation)
  assert.deepStrictEqual(opsFor(1), ['insert', 'update'], 'the held update arrives once and is kept')
  assert.deepStrictEqual(opsFor(4), ['insert', 'update'])
  assert.deepStrictEqual(opsFor(7), ['insert', 'delete'])
  assert.deepStrictEqual(opsFor(3), ['update'], 'changes outside the snapshot arrive too')
  assert.deepStrictEqual(opsFor(100), ['insert'])

  const longPolls = requests.live().filter((entry) => requests.param(entry, 'live_sse') !== 'true')
  assert.equal(longPolls.length, 0, `every live request was SSE\n    ${requests.describe()}`)
  assert.ok(
    requests.sseStreams().some((entry) => entry.startedAt >= requested),
    `the client went back to SSE after the snapshot\n    ${requests.describe()}`
  )
})

test('fetchSnapshot with an unknown column rejects with the 400 Electric sends', { timeout: SUBSET_TIMEOUT_MS }, async (t) => {
  const table = uniqueName('subset_error')
  await createItems(table)
  const expected = { message: 'Invalid request', errors: { subset: { where: ['At location 0: unknown reference nope'] } } }
  const cold = idleStream(t, { table })
  const synced = syncShape(t, { table })
  await synced.initialRows()
  for (const [stream, label] of [
    [cold.stream, 'a cold stream'],
    [synced.stream, 'a synced stream'],
  ]) {
    for (const method of ['GET', 'POST']) {
      await assert.rejects(stream.fetchSnapshot({ where: 'nope = 1', method }), (error) => {
        assert.ok(error instanceof FetchError, `${label} ${method}: a FetchError (got ${error})`)
        assert.equal(error.status, 400, `${label} ${method}: status`)
        assert.deepStrictEqual(error.json, expected, `${label} ${method}: body`)
        return true
      })
    }
  }
  // A bad subset does not disturb the stream it was asked on.
  synced.failIfErrored()
  await db.query(`INSERT INTO ${table} VALUES (41, 'new', 1, NULL)`)
  await synced.untilRowsEqual('a live insert after the failed subsets', await itemsWhere(table, 'true'))
})
