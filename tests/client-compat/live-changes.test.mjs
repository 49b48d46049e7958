import { test } from 'node:test'
import assert from 'node:assert/strict'
import { isChangeMessage, isControlMessage } from '@electric-sql/client'
import { useDatabase, uniqueName, syncShape, rowKey, plain } from './helpers.mjs'

const db = useDatabase()

test('live insert, update and delete reach Shape.rows after the initial sync', { timeout: 120_000 }, async (t) => {
  const table = uniqueName('live')
  await db.query(`CREATE TABLE ${table} (id int4 PRIMARY KEY, title text NOT NULL, n int4, done bool NOT NULL DEFAULT false)`)
  await db.query(`INSERT INTO ${table} (id, title, n, done) VALUES (1, 'one', 10, false), (2, 'two', 20, true), (3, 'three', NULL, false)`)
  const current = async () => (await db.query(`SELECT id, title, n, done FROM ${table} ORDER BY id`)).rows

  const sync = syncShape(t, { table })
  assert.deepStrictEqual(plain(await sync.initialRows()), plain(await current()))
  const snapshotMessages = sync.messages.length
  const notificationsAfterSync = sync.notifications

  await db.query(`INSERT INTO ${table} (id, title, n, done) VALUES (4, 'four', 40, true)`)
  await sync.untilRowsEqual('the live insert of id 4', await current())

  // Changes n from 20 to 21 and title; `done` stays as it was, so the Shape
  // must merge a partial update into the row it already holds.
  await db.query(`UPDATE ${table} SET title = 'two (edited)', n = n + 1 WHERE id = 2`)
  await sync.untilRowsEqual('the live update of id 2', await current())

  await db.query(`DELETE FROM ${table} WHERE id = 3`)
  await sync.untilRowsEqual('the live delete of id 3', await current())

  const live = sync.messages.slice(snapshotMessages).filter(isChangeMessage)
  assert.deepStrictEqual(
    live.map((message) => [message.headers.operation, message.key]),
    [
      ['insert', rowKey(table, 4)],
      ['update', rowKey(table, 2)],
      ['delete', rowKey(table, 3)],
    ],
    'each change arrives once, in commit order, under the snapshot key of its row'
  )
  for (const message of live) {
    // The client feeds `lsn` to BigInt(); anything but a decimal string
    // throws inside the stream.
    assert.match(String(message.headers.lsn), /^\d+$/, `lsn of ${message.key} is a decimal string`)
  }
  for (const message of sync.messages.filter((m) => isControlMessage(m) && m.headers.control === 'up-to-date')) {
    if (message.headers.global_last_seen_lsn !== undefined) {
      assert.match(message.headers.global_last_seen_lsn, /^\d+$/, 'global_last_seen_lsn is a decimal string')
    }
  }

  // Each change was awaited before the next was made, so each one reached
  // subscribers in its own up-to-date batch.
  assert.ok(
    sync.notifications - notificationsAfterSync >= 3,
    `Shape subscribers were notified for each change (got ${sync.notifications - notificationsAfterSync})`
  )
  assert.equal(sync.stream.isUpToDate, true)
})
