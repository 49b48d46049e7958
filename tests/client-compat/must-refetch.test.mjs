import { test } from 'node:test'
import assert from 'node:assert/strict'
import { useDatabase, uniqueName, syncShape, baseUrl, WAIT_MS, sleep } from './helpers.mjs'

const db = useDatabase()

test('a deleted shape makes the client refetch under a new handle (409 recovery)', { timeout: 180_000 }, async (t) => {
  const table = uniqueName('refetch')
  await db.query(`CREATE TABLE ${table} (id int4 PRIMARY KEY, v text NOT NULL)`)
  await db.query(`INSERT INTO ${table} VALUES (1, 'one'), (2, 'two'), (3, 'three')`)
  const current = async () => (await db.query(`SELECT id, v FROM ${table} ORDER BY id`)).rows

  const sync = syncShape(t, { table })
  await sync.initialRows()
  const oldHandle = sync.stream.shapeHandle
  assert.equal(typeof oldHandle, 'string', 'the first sync produced a handle')
  // Let the client settle into its live long-poll, the state in which a
  // rotation is normally discovered.
  await sleep(200)

  const deleteUrl = `${baseUrl}/v1/shape?${new URLSearchParams({ table, handle: oldHandle })}`
  const response = await fetch(deleteUrl, { method: 'DELETE', signal: AbortSignal.timeout(WAIT_MS) })
  assert.equal(response.status, 202, `DELETE ${deleteUrl} → ${response.status} ${await response.text()}`)

  await db.query(`INSERT INTO ${table} VALUES (4, 'four')`)
  await db.query(`UPDATE ${table} SET v = 'one (edited)' WHERE id = 1`)

  // A server may answer the held long-poll with 409 at once or only when it
  // times out (20 s), so allow for one full long-poll on top of the usual wait.
  const recoveryMs = WAIT_MS + 25_000
  await sync.until('the client to receive must-refetch', () => sync.controls('must-refetch').length > 0, {
    timeout: recoveryMs,
    detail: () => `handle ${sync.stream.shapeHandle}, offset ${sync.stream.lastOffset}`,
  })
  await sync.until('a new shape handle', () => sync.stream.shapeHandle && sync.stream.shapeHandle !== oldHandle, {
    timeout: recoveryMs,
    detail: () => `handle is still ${sync.stream.shapeHandle}`,
  })
  await sync.untilRowsEqual('Shape.rows to be rebuilt from the new shape', await current(), { timeout: recoveryMs })
  const newHandle = sync.stream.shapeHandle

  // The new shape is live, not just a fresh snapshot.
  await db.query(`INSERT INTO ${table} VALUES (5, 'five')`)
  await db.query(`DELETE FROM ${table} WHERE id = 2`)
  await sync.untilRowsEqual('a live change on the new shape', await current())
  assert.equal(sync.stream.shapeHandle, newHandle, 'the handle stays stable after recovery')
  assert.equal(sync.controls('must-refetch').length, 1, 'exactly one must-refetch')
})
