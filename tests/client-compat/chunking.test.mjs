import { test } from 'node:test'
import assert from 'node:assert/strict'
import { useDatabase, uniqueName, syncShape, rawGet, rowKey, plain, CHUNK_BYTES, WAIT_MS } from './helpers.mjs'

const db = useDatabase()
const ROWS = 1000

// ~100-byte rows: with the runner's 10 000-byte chunk threshold the snapshot
// spans tens of chunks.
async function createWideTable(prefix) {
  const table = uniqueName(prefix)
  await db.query(`CREATE TABLE ${table} (id int4 PRIMARY KEY, payload text NOT NULL)`)
  await db.query(`
    INSERT INTO ${table} (id, payload)
    SELECT g, rpad(format('row %s ', g), 90, md5(g::text)) FROM generate_series(1, ${ROWS}) AS g`)
  return table
}

test('a shape spanning many chunks reaches the client once per row', { timeout: 120_000 }, async (t) => {
  const table = await createWideTable('chunks_client')
  const expected = (await db.query(`SELECT id, payload FROM ${table} ORDER BY id`)).rows

  const sync = syncShape(t, { table })
  const rows = await sync.initialRows(`the initial sync of ${ROWS} rows over many chunks`)
  assert.deepStrictEqual(plain(rows), plain(expected))

  const perKey = new Map()
  for (const message of sync.changes()) perKey.set(message.key, (perKey.get(message.key) ?? 0) + 1)
  assert.equal(perKey.size, ROWS, 'every row arrived')
  const repeated = [...perKey].filter(([, count]) => count !== 1)
  assert.deepStrictEqual(repeated, [], 'no row arrived twice')
})

test('raw paging follows electric-offset/electric-handle until up-to-date', { timeout: 120_000 }, async () => {
  const table = await createWideTable('chunks_raw')

  const seen = new Map() // key → page index
  const pages = []
  let offset = '-1'
  let handle = null
  let upToDate = false
  const deadline = Date.now() + WAIT_MS * 2
  // Bounded: 1,000 rows at the threshold would need ~25 pages; 500 means the
  // server is not advancing.
  for (let request = 0; request < 500; request++) {
    assert.ok(Date.now() < deadline, `paging did not reach up-to-date within ${WAIT_MS * 2} ms (${pages.length} pages)`)
    const query = { table, offset }
    if (handle) query.handle = handle
    const response = await rawGet(query)
    assert.equal(response.status, 200, `${response.url} → ${response.status} ${response.text}`)

    const responseHandle = response.headers.get('electric-handle')
    const nextOffset = response.headers.get('electric-offset')
    assert.ok(responseHandle, `${response.url} has electric-handle`)
    assert.ok(nextOffset, `${response.url} has electric-offset`)
    assert.ok(response.headers.get('electric-schema'), `${response.url} (non-live) has electric-schema`)
    if (handle) assert.equal(responseHandle, handle, 'the handle stays the same while paging')
    handle = responseHandle

    const body = JSON.parse(response.text)
    assert.ok(Array.isArray(body), 'the body is a JSON array')
    const keys = body.filter((item) => 'key' in item).map((item) => item.key)
    for (const key of keys) {
      assert.equal(seen.has(key), false, `${key} repeats: first on page ${seen.get(key)}, again on page ${pages.length}`)
      seen.set(key, pages.length)
    }
    pages.push({ offset, nextOffset, rows: keys.length, bytes: Buffer.byteLength(response.text) })

    if (response.headers.has('electric-up-to-date')) {
      upToDate = true
      break
    }
    assert.notEqual(nextOffset, offset, `electric-offset must advance (stuck at ${offset})`)
    offset = nextOffset
  }

  const summary = JSON.stringify(pages)
  assert.ok(upToDate, `no response carried electric-up-to-date after ${pages.length} requests: ${summary}`)
  assert.ok(pages.length > 1, `more than one request was needed: ${summary}`)
  assert.equal(seen.size, ROWS, `all ${ROWS} rows arrived: ${summary}`)
  for (let id = 1; id <= ROWS; id++) assert.ok(seen.has(rowKey(table, id)), `row ${id} arrived`)
  const withRows = pages.filter((page) => page.rows > 0)
  assert.ok(withRows.length >= 2, `rows were split across pages: ${summary}`)
  // A page may overshoot the threshold by one row; twice the threshold means
  // the server ignored it.
  for (const page of withRows) {
    assert.ok(page.bytes <= 2 * CHUNK_BYTES, `a page of ${page.bytes} bytes exceeds twice the ${CHUNK_BYTES}-byte threshold: ${summary}`)
  }
})
