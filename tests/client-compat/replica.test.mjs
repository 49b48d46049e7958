import { test } from 'node:test'
import assert from 'node:assert/strict'
import { useDatabase, uniqueName, syncShape, rowKey, plain } from './helpers.mjs'

const db = useDatabase()

test('replica full sends whole rows and old values; default sends PK + changed columns', { timeout: 120_000 }, async (t) => {
  const table = uniqueName('replica')
  await db.query(`CREATE TABLE ${table} (id int4 PRIMARY KEY, a text, b int4, c text)`)
  await db.query(`INSERT INTO ${table} VALUES (1, 'a0', 1, 'c0'), (2, 'x', 2, 'y')`)

  // Two shapes on one table that differ only in `replica`: they must be
  // distinct shapes on the server, each with its own log format.
  const full = syncShape(t, { table, replica: 'full' })
  const partial = syncShape(t, { table })
  await full.initialRows('the initial sync of the replica=full shape')
  await partial.initialRows('the initial sync of the replica=default shape')

  await db.query(`INSERT INTO ${table} VALUES (3, 'new', 3, 'row')`)
  await db.query(`UPDATE ${table} SET a = 'a1', b = NULL WHERE id = 1`)
  await db.query(`DELETE FROM ${table} WHERE id = 2`)

  const expectedRows = (await db.query(`SELECT id, a, b, c FROM ${table} ORDER BY id`)).rows
  await full.untilRowsEqual('the replica=full shape to apply insert, update and delete', expectedRows)
  await partial.untilRowsEqual('the replica=default shape to apply insert, update and delete', expectedRows)

  const only = (sync, id, operation) => {
    const found = sync.changesFor(rowKey(table, id)).filter((message) => message.headers.operation === operation)
    assert.equal(found.length, 1, `exactly one ${operation} for id ${id}`)
    return found[0]
  }

  const fullInsert = only(full, 3, 'insert')
  assert.deepStrictEqual({ ...fullInsert.value }, { id: 3, a: 'new', b: 3, c: 'row' })
  const fullUpdate = only(full, 1, 'update')
  assert.deepStrictEqual({ ...fullUpdate.value }, { id: 1, a: 'a1', b: null, c: 'c0' }, 'replica=full update value is the whole new row')
  assert.deepStrictEqual({ ...fullUpdate.old_value }, { a: 'a0', b: 1 }, 'old_value holds the old values of the changed columns only')
  const fullDelete = only(full, 2, 'delete')
  assert.deepStrictEqual({ ...fullDelete.value }, { id: 2, a: 'x', b: 2, c: 'y' }, 'replica=full delete value is the whole old row')

  const partialInsert = only(partial, 3, 'insert')
  assert.deepStrictEqual({ ...partialInsert.value }, { id: 3, a: 'new', b: 3, c: 'row' })
  const partialUpdate = only(partial, 1, 'update')
  assert.deepStrictEqual({ ...partialUpdate.value }, { id: 1, a: 'a1', b: null }, 'replica=default update value is PK + changed columns')
  assert.equal('old_value' in partialUpdate, false, 'replica=default update has no old_value')
  const partialDelete = only(partial, 2, 'delete')
  assert.deepStrictEqual({ ...partialDelete.value }, { id: 2 }, 'replica=default delete value is the PK')

  assert.deepStrictEqual(plain(full.rows()), plain(expectedRows))
  assert.notEqual(full.stream.shapeHandle, partial.stream.shapeHandle, 'replica is part of the shape definition')
})
