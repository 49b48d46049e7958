import { test } from 'node:test'
import assert from 'node:assert/strict'
import { isChangeMessage } from '@electric-sql/client'
import { useDatabase, uniqueName, syncShape, rowKey, plain } from './helpers.mjs'

const db = useDatabase()

test('columns limits rows to the chosen columns, PK included', { timeout: 120_000 }, async (t) => {
  const table = uniqueName('columns')
  // "Title" is mixed case: the client always sends columns quoted
  // (columns="id","Title"), so the server must honour quoted identifiers.
  await db.query(`CREATE TABLE ${table} (id int4 PRIMARY KEY, "Title" text, secret text, score int4)`)
  await db.query(`INSERT INTO ${table} VALUES (1, 'a', 's1', 1), (2, 'b', 's2', 2), (3, NULL, 's3', 3)`)
  const current = async () => (await db.query(`SELECT id, "Title" FROM ${table} ORDER BY id`)).rows

  const sync = syncShape(t, { table, columns: ['id', 'Title'] })
  const initial = await sync.initialRows()
  assert.deepStrictEqual(plain(initial), plain(await current()))
  for (const row of initial) {
    assert.deepStrictEqual(Object.keys(row).sort(), ['Title', 'id'], `row ${row.id} has only the chosen columns`)
  }
  const snapshotMessages = sync.messages.length

  await db.query(`INSERT INTO ${table} VALUES (4, 'd', 's4', 4)`)
  // Touches only columns outside the shape: Electric drops such updates.
  await db.query(`UPDATE ${table} SET secret = 'changed', score = 100 WHERE id = 1`)
  await db.query(`UPDATE ${table} SET "Title" = 'b2', secret = 'also changed' WHERE id = 2`)
  await sync.untilRowsEqual('the live insert of id 4 and the update of id 2', await current())

  for (const row of sync.rows()) {
    assert.deepStrictEqual(Object.keys(row).sort(), ['Title', 'id'], `row ${row.id} has only the chosen columns`)
  }
  for (const message of sync.changes()) {
    for (const column of Object.keys(message.value)) {
      assert.ok(['id', 'Title'].includes(column), `${message.key} carries unselected column ${column}`)
    }
  }
  const liveKeys = sync.messages.slice(snapshotMessages).filter(isChangeMessage).map((m) => m.key)
  assert.deepStrictEqual(
    liveKeys,
    [rowKey(table, 4), rowKey(table, 2)],
    'the update that changed only unselected columns produced no message'
  )
})
