import { test } from 'node:test'
import assert from 'node:assert/strict'
import { useDatabase, uniqueName, syncShape, rowKey, plain, ids } from './helpers.mjs'

const db = useDatabase()

async function createItems(table, rows) {
  await db.query(`CREATE TABLE ${table} (id int4 PRIMARY KEY, status text NOT NULL, score int4 NOT NULL)`)
  for (const [id, status, score] of rows) {
    await db.query(`INSERT INTO ${table} (id, status, score) VALUES ($1, $2, $3)`, [id, status, score])
  }
}

const select = async (table, where, values) =>
  (await db.query(`SELECT id, status, score FROM ${table} WHERE ${where} ORDER BY id`, values)).rows

test('where with params (object form) syncs only matching rows, live too', { timeout: 120_000 }, async (t) => {
  const table = uniqueName('where_obj')
  await createItems(table, [
    [1, 'active', 10],
    [2, 'inactive', 20],
    [3, 'active', 30],
    [4, 'pending', 40],
  ])

  // The client sends this as params[1]=active.
  const sync = syncShape(t, { table, where: 'status = $1', params: { 1: 'active' } })
  const initial = await sync.initialRows()
  assert.deepStrictEqual(ids(initial), [1, 3])
  assert.deepStrictEqual(plain(initial), plain(await select(table, 'status = $1', ['active'])))

  // Non-matching changes, each in its own transaction, committed before the
  // matching one: since the log is in commit order, once id 6 is visible any
  // message for them would already have been delivered.
  await db.query(`UPDATE ${table} SET score = score + 1 WHERE id = 2`)
  await db.query(`INSERT INTO ${table} (id, status, score) VALUES (5, 'inactive', 50)`)
  await db.query(`INSERT INTO ${table} (id, status, score) VALUES (6, 'active', 60)`)
  await sync.untilRowsEqual('the matching live insert of id 6', await select(table, 'status = $1', ['active']))

  for (const id of [2, 4, 5]) {
    assert.deepStrictEqual(sync.changesFor(rowKey(table, id)), [], `no message for non-matching row ${id}`)
  }
})

test('where with several params (array form) compares typed values', { timeout: 120_000 }, async (t) => {
  const table = uniqueName('where_arr')
  await createItems(table, [
    [1, 'active', 10],
    [2, 'active', 50],
    [3, 'deleted', 90],
    [4, 'other', 99],
  ])

  // `$1` against an int4 column: the server must compare 50 and 9 as
  // integers, not as text ('9' > '50').
  const where = 'score >= $1 AND status <> $2'
  const sync = syncShape(t, { table, where, params: ['50', 'deleted'] })
  const initial = await sync.initialRows()
  assert.deepStrictEqual(ids(initial), [2, 4])

  await db.query(`INSERT INTO ${table} (id, status, score) VALUES (5, 'ok', 9)`)
  await db.query(`INSERT INTO ${table} (id, status, score) VALUES (6, 'deleted', 70)`)
  await db.query(`INSERT INTO ${table} (id, status, score) VALUES (7, 'ok', 51)`)
  await sync.untilRowsEqual('the matching live insert of id 7', await select(table, where, [50, 'deleted']))
  assert.deepStrictEqual(ids(sync.rows()), [2, 4, 7])
  for (const id of [1, 3, 5, 6]) {
    assert.deepStrictEqual(sync.changesFor(rowKey(table, id)), [], `no message for non-matching row ${id}`)
  }
})

test('updates move rows into and out of a where clause', { timeout: 120_000 }, async (t) => {
  const table = uniqueName('move')
  await createItems(table, [
    [1, 'active', 10],
    [2, 'inactive', 20],
    [3, 'active', 30],
  ])
  const where = `status = 'active'`

  const sync = syncShape(t, { table, where })
  assert.deepStrictEqual(ids(await sync.initialRows()), [1, 3])

  // Moves in: the Shape has never seen id 2, so it needs the whole row.
  await db.query(`UPDATE ${table} SET status = 'active', score = 21 WHERE id = 2`)
  await sync.untilRowsEqual('id 2 to move into the shape', await select(table, where))

  // Moves out.
  await db.query(`UPDATE ${table} SET status = 'archived' WHERE id = 1`)
  await sync.untilRowsEqual('id 1 to move out of the shape', await select(table, where))

  // Stays in: an ordinary update.
  await db.query(`UPDATE ${table} SET score = 31 WHERE id = 3`)
  await sync.untilRowsEqual('the in-shape update of id 3', await select(table, where))

  // Electric turns a move-in into an insert and a move-out into a delete; the
  // client's changes_only mode drops updates for keys it saw no insert for,
  // so an `update` here would lose the row for such clients.
  const ops = (id) => sync.changesFor(rowKey(table, id)).map((message) => message.headers.operation)
  assert.deepStrictEqual(ops(2), ['insert'], 'move-in is an insert')
  assert.deepStrictEqual(ops(1), ['insert', 'delete'], 'move-out is a delete')
  assert.deepStrictEqual(ops(3), ['insert', 'update'], 'in-shape change is an update')
  const moveIn = sync.changesFor(rowKey(table, 2))[0]
  assert.deepStrictEqual({ ...moveIn.value }, { id: 2, status: 'active', score: 21 }, 'move-in carries the whole row')
})
