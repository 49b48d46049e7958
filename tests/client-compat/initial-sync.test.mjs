import { test } from 'node:test'
import assert from 'node:assert/strict'
import { useDatabase, uniqueName, syncShape, rowKey, plain } from './helpers.mjs'

const db = useDatabase()

test('initial sync of 1,000 rows matches a SELECT', { timeout: 120_000 }, async (t) => {
  const table = uniqueName('initial')
  await db.query(`CREATE TABLE ${table} (id int4 PRIMARY KEY, name text NOT NULL, score int4, active bool NOT NULL)`)
  // Names carry characters that JSON must escape, and every tenth score is
  // NULL, so a server that encodes values loosely cannot pass by luck.
  await db.query(`
    INSERT INTO ${table} (id, name, score, active)
    SELECT g,
           format('row %s: "quoted" back\\slash tab\t é ✓ 😀', g),
           CASE WHEN g % 10 = 0 THEN NULL ELSE (g * 7919) % 100003 - 50000 END,
           g % 3 = 0
    FROM generate_series(1, 1000) AS g`)
  const { rows: expected } = await db.query(`SELECT id, name, score, active FROM ${table} ORDER BY id`)
  assert.equal(expected.length, 1000)

  const sync = syncShape(t, { table })
  const rows = await sync.initialRows('the initial sync of 1,000 rows')

  assert.equal(rows.length, 1000, 'Shape.rows holds every row')
  assert.deepStrictEqual(plain(rows), plain(expected))

  // Each row must arrive exactly once as a snapshot insert under Electric's
  // key format; a duplicate would be hidden by the Shape's Map.
  const changes = sync.changes()
  assert.equal(changes.length, 1000, 'one change message per row')
  assert.ok(
    changes.every((message) => message.headers.operation === 'insert'),
    'snapshot rows are inserts'
  )
  const keys = new Set(changes.map((message) => message.key))
  assert.equal(keys.size, 1000, 'no key is delivered twice')
  for (const { id } of expected) {
    assert.ok(keys.has(rowKey(table, id)), `key ${rowKey(table, id)} is present`)
  }
  assert.equal(typeof sync.stream.shapeHandle, 'string', 'the stream learned a shape handle')
})
